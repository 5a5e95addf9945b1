"""The loop of a folder input: find entries (change events and rescans), wait for each to settle, take it.

Every entry's trouble ends with that entry: it goes to failed_dir with a reason, or is skipped with a log line
(and, when it cannot even be moved, left where it is until it changes), and the loop goes on to the next one.
Only the bus failing, or the folder itself going away, ends the loop (the input base then reconnects).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from ..atomic import write_atomic
from ..errors import BadInput, FramefarmError, IncompleteFile, SourceUnavailable
from ..modules.context import ModuleContext
from .files import NotRegular, OpenedFile, Vanished, move_aside, open_regular, shown
from .ledger import FileId, Ledger

TICK_S = 0.1

Signature = tuple[int, int, int]  # (size, mtime_ns, inode): an entry that keeps it has not changed


class FileKind(Protocol):
    """What the watcher needs of the input that owns it (a FolderInput)."""

    ctx: ModuleContext[Any]
    options: Any  # FolderOptions

    def publish_file(
        self, file: OpenedFile, start: int, progress: Callable[[int], None], stop: threading.Event
    ) -> bool: ...


@dataclass
class Watch:
    """What the watcher knows of one entry it has not taken yet."""

    signature: Signature | None = None  # when it was last looked at
    since: float = 0.0  # monotonic time that signature was first seen
    due: float = 0.0  # when to take it, if it stays unchanged till then


class FolderWatcher(FileSystemEventHandler):
    """Collects candidate entries from events and rescans, and hands each on once it has settled."""

    def __init__(self, owner: FileKind, folder: Path) -> None:
        self.owner = owner
        self.options = owner.options
        self.log = owner.ctx.log
        self.folder = folder
        self.done_dir = owner.ctx.resolve(self.options.done_dir or folder / ".done")
        self.failed_dir = owner.ctx.resolve(self.options.failed_dir or folder / ".failed")
        self.patterns = [p.lower() for p in self.options.patterns]
        self.rescan = self.options.rescan
        self.pending: dict[Path, Watch] = {}
        self.ignored: dict[Path, Signature | None] = {}  # left where they are until they change
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ finding entries

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "closed", "moved"):
            target = getattr(event, "dest_path", "") or event.src_path
            self.offer(Path(os.fsdecode(target)))

    def offer(self, path: Path) -> None:
        if self.wanted(path):
            with self.lock:
                self.pending.setdefault(path, Watch())

    def wanted(self, path: Path) -> bool:
        if self.done_dir in path.parents or self.failed_dir in path.parents:
            return False
        if not self.options.recursive and path.parent != self.folder:
            return False
        return any(fnmatch(path.name.lower(), pattern) for pattern in self.patterns)

    def scan(self) -> None:
        """Offer every entry whose name is wanted, oldest first; whatever kind of entry it is, take() will say."""
        if not self.folder.is_dir():
            raise SourceUnavailable(f"{shown(self.folder)} is gone (removed? unmounted?)")
        for path in sorted(self._entries(), key=_mtime):
            self.offer(path)

    def _entries(self) -> Iterator[Path]:
        """Every entry below the folder; sub-folders that vanish or cannot be read are passed over."""
        if not self.options.recursive:
            try:
                with os.scandir(self.folder) as entries:
                    yield from (Path(entry.path) for entry in entries)
            except OSError as exc:
                raise SourceUnavailable(f"cannot list {shown(self.folder)}: {exc.strerror}") from exc
            return
        for parent, folders, names in os.walk(self.folder):  # errors ignored: a vanished sub-folder is no entry
            here = Path(parent)
            folders[:] = [f for f in folders if here / f not in (self.done_dir, self.failed_dir)]
            yield from (here / name for name in (*names, *folders))

    # ------------------------------------------------------------------ settling

    def loop(self, ledger: Ledger, stop: threading.Event) -> None:
        next_scan = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_scan:
                self.scan()
                next_scan = time.monotonic() + self.rescan
            for path, watch in self.settled():
                if stop.is_set():
                    return
                self.take(path, watch, ledger, stop)
            stop.wait(TICK_S)

    def settled(self) -> list[tuple[Path, Watch]]:
        """Pending entries that are due: unchanged for ``settle`` (or, once found incomplete, till the deadline)."""
        now, ready = time.monotonic(), []
        with self.lock:
            for path, watch in list(self.pending.items()):
                signature = _signature(path)
                if signature is None:
                    del self.pending[path]
                    self.ignored.pop(path, None)
                    self.log.info("%s vanished before it was taken", self.name(path))
                elif signature != watch.signature:
                    watch.signature, watch.since, watch.due = signature, now, now + self.options.settle
                elif now >= watch.due:
                    del self.pending[path]
                    if self.ignored.get(path, ()) != signature:
                        self.ignored.pop(path, None)
                        ready.append((path, watch))
        return ready

    # ------------------------------------------------------------------ taking

    def name(self, path: Path) -> str:
        return shown(path.relative_to(self.folder))

    def take(self, path: Path, watch: Watch, ledger: Ledger, stop: threading.Event) -> None:
        """Open the entry as a regular file and publish it, or say why not; never raise for the entry's sake."""
        try:
            handle, status = open_regular(path)
        except NotRegular as exc:
            if exc.directory:
                self.ignore(path, watch, f"{self.name(path)} is a directory, not a file: skipped")
            else:
                self.fail(path, watch, str(exc))
            return
        except Vanished:
            self.log.info("%s vanished before it was read (taken by another process?)", self.name(path))
            return
        except BadInput as exc:
            self.fail(path, watch, str(exc))
            return
        file = FileId(path, status.st_size, status.st_mtime_ns)
        with handle:
            opened = OpenedFile(path, self.name(path), handle, status, partial(_reading, ledger, file, self.log))
            self.take_open(opened, file, watch, ledger, stop)

    def take_open(self, opened: OpenedFile, file: FileId, watch: Watch, ledger: Ledger, stop: threading.Event) -> None:
        try:
            if not self.publish(opened, file, ledger, stop):
                return  # stopping: the file stays, and the next start resumes where this one left off
        except Vanished as exc:
            self.log.info("%s skipped: %s", opened.source, exc)
            return
        except IncompleteFile as exc:
            self.incomplete(opened.path, watch, file, ledger, str(exc))
            return
        except BadInput as exc:
            self.fail(opened.path, watch, str(exc))
            ledger.forget(file)
            return
        self.finish(opened.path, watch, file, ledger)

    def publish(self, opened: OpenedFile, file: FileId, ledger: Ledger, stop: threading.Event) -> bool:
        """True once every frame of the file is on the bus (now or before); False if ``stop`` came first."""
        limit = self.options.max_file_size
        if limit is not None and file.size > limit:
            raise BadInput(f"{file.size} bytes, over max_file_size ({limit} bytes)")
        state = ledger.state(file)
        if state.complete:
            return True
        if state.died >= self.options.max_crashes:
            raise BadInput(f"the input died {state.died} times in a row while reading this file (a decoder crash?)")
        if not self.owner.publish_file(opened, state.next_frame, partial(ledger.advance, file), stop):
            return False
        ledger.advance(file, state.next_frame, complete=True)
        return True

    def incomplete(self, path: Path, watch: Watch, file: FileId, ledger: Ledger, reason: str) -> None:
        """Wait for a writer to finish the file: look again when it changes, or once incomplete_timeout is up."""
        if ledger.state(file).next_frame == 0:
            ledger.forget(file)  # a grown file is a new FileId: nothing worth keeping under this one
        timeout = self.options.incomplete_timeout
        if time.monotonic() - watch.since >= timeout:
            self.fail(path, watch, f"{reason} (unchanged for {timeout:g}s)")
            return
        watch.due = watch.since + timeout
        with self.lock:
            self.pending.setdefault(path, watch)

    # ------------------------------------------------------------------ after

    def finish(self, path: Path, watch: Watch, file: FileId, ledger: Ledger) -> None:
        try:
            if self.options.after == "delete":
                path.unlink()
            elif self.options.after == "move":
                move_aside(path, self.done_dir / path.relative_to(self.folder))
        except FileNotFoundError:
            self.log.info("%s vanished after its frames were published", self.name(path))
        except OSError as exc:  # the ledger keeps it complete: a restart will not publish it again
            message = f"{self.name(path)} is published but cannot be {self.options.after}d ({exc})"
            self.ignore(path, watch, f"{message}; left in place until it changes")
            return
        if self.options.after != "keep":
            ledger.forget(file)

    def fail(self, path: Path, watch: Watch, reason: str) -> None:
        """Count the entry as failed and move it to failed_dir with <name>.error.txt holding ``reason``."""
        name = self.name(path)
        self.owner.ctx.bus.flow.count(self.owner.ctx.alias, "failed")
        try:
            target = move_aside(path, self.failed_dir / path.relative_to(self.folder))
        except FileNotFoundError:
            self.log.info("%s vanished before it could be moved aside (%s)", name, reason)
            return
        except OSError as exc:
            message = f"{name} cannot be moved to {shown(self.failed_dir)} ({exc}): {reason}"
            self.ignore(path, watch, f"{message}; left in place until it changes")
            return
        self.log.warning("%s moved to %s: %s", name, shown(self.failed_dir), reason)
        try:
            write_atomic(
                target.with_name(target.name + ".error.txt"), (reason + "\n").encode("utf-8", "backslashreplace")
            )
        except OSError as exc:
            self.log.error("cannot write why %s failed: %s", name, exc)

    def ignore(self, path: Path, watch: Watch, message: str) -> None:
        """Pass over the entry until it changes; say so once, not at every rescan."""
        if path not in self.ignored:
            self.log.warning("%s", message)
        self.ignored[path] = watch.signature


@contextmanager
def _reading(ledger: Ledger, file: FileId, log: logging.Logger) -> Iterator[None]:
    """Mark ``file`` as being read while the block runs: a process that dies in there leaves the mark.

    An unforeseen error in there (a decoder's bug, memory running out) is the file's doing: it becomes BadInput,
    so the file goes aside, instead of stopping the input only to meet the same file again after the restart.
    """
    ledger.mark(file)
    try:
        yield
    except FramefarmError:
        ledger.unmark(file)
        raise
    except Exception as exc:
        ledger.unmark(file)
        log.exception("unforeseen error while reading %s", shown(file.path))
        raise BadInput(f"{type(exc).__name__} while reading it: {exc}") from exc
    ledger.unmark(file)


def _signature(path: Path) -> Signature | None:
    """What tells a change; None once the entry is gone.

    A link that leads nowhere (or round in a loop) has its own, so it can be set aside; a directory's is its
    inode alone, as what happens inside it does not change what it is (a directory, skipped).
    """
    for look in (os.stat, os.lstat):
        try:
            status = look(path)
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode):
            return -1, 0, status.st_ino
        return status.st_size, status.st_mtime_ns, status.st_ino
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
