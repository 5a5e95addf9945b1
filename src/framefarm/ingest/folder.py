"""What the folder inputs share: watch a folder, wait for files to settle, publish each file's frames
exactly once (across restarts too), then move, delete or keep the file; bad files go aside with a reason.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..atomic import write_atomic
from ..config.registry import CheckContext
from ..config.schema import InputOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..errors import BadInput, IncompleteFile
from .base import Input
from .ledger import FileId, Ledger

DEFAULT_SETTLE_S = 0.5
DEFAULT_RESCAN_S = 10.0
DEFAULT_INCOMPLETE_TIMEOUT_S = 10.0
TICK_S = 0.1

FO = TypeVar("FO", bound="FolderOptions")

Progress = Callable[[int], None]  # called with the next frame index after each published frame


def patterns_field(defaults: list[str]) -> Any:
    """The ``patterns`` option of a folder kind, with that kind's default globs."""
    return Field(
        default_factory=lambda: list(defaults), min_length=1, description="File name globs to take, case-insensitive."
    )


class FolderOptions(InputOptions):
    lossless = True
    path: Path = Field(description="The folder to watch.")
    recursive: bool = Field(False, description="Also watch sub-folders.")
    after: Literal["move", "delete", "keep"] = Field(
        "move", description="What to do with a file once all its frames are on the bus."
    )
    done_dir: Path | None = Field(None, description="Where `after: move` puts files; default <path>/.done.")
    failed_dir: Path | None = Field(
        None, description="Where unreadable files go, with <name>.error.txt; default <path>/.failed."
    )
    settle: Duration = Field(
        DEFAULT_SETTLE_S, description="A file is taken once its size and mtime have not changed for this long."
    )
    incomplete_timeout: Duration = Field(
        DEFAULT_INCOMPLETE_TIMEOUT_S,
        description="A truncated file is waited for (a slow writer may finish it) until it has not changed "
        "for this long; then it goes to failed_dir.",
    )
    rescan: Duration = Field(
        DEFAULT_RESCAN_S, gt=0, description="Full rescan period, for file systems that miss change events."
    )


class FolderInput(Input[FO]):
    @classmethod
    def check(cls, options: FolderOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        folder = ctx.resolve(options.path)
        if not folder.is_dir():
            yield ("path",), f"{folder} is not a folder"
        elif not os.access(folder, os.R_OK | os.X_OK):
            yield ("path",), f"{folder} is not readable"
        elif options.after != "keep" and not os.access(folder, os.W_OK):
            yield ("after",), f"after: {options.after} needs write access to {folder}"

    @abstractmethod
    def publish_file(self, path: Path, source: str, start: int, progress: Progress, stop: threading.Event) -> bool:
        """Publish the frames of ``path`` from frame ``start`` on; False if ``stop`` came first.

        Raise IncompleteFile for a file that may still be being written, BadInput for one that is unusable.
        """

    def read(self, stop: threading.Event) -> None:
        folder = self.ctx.resolve(self.options.path)
        watcher = FolderWatcher(self, folder)
        ledger = Ledger(self.ctx.state_dir() / f"{self.ctx.alias}.sqlite")
        observer = Observer()
        observer.schedule(watcher, str(folder), recursive=self.options.recursive)
        observer.start()
        self.ctx.log.info("watching %s (%s)", folder, ", ".join(self.options.patterns))
        try:
            watcher.loop(ledger, stop)
        finally:
            observer.stop()
            observer.join(timeout=5)
            ledger.close()


class FolderWatcher(FileSystemEventHandler):
    """Collects candidate files from events and rescans, and hands each on once it has settled."""

    def __init__(self, owner: FolderInput[Any], folder: Path) -> None:
        self.owner = owner
        self.options: FolderOptions = owner.options
        self.folder = folder
        self.done_dir = owner.ctx.resolve(self.options.done_dir or folder / ".done")
        self.failed_dir = owner.ctx.resolve(self.options.failed_dir or folder / ".failed")
        self.patterns = [p.lower() for p in self.options.patterns]
        self.pending: dict[Path, tuple[tuple[int, int], float]] = {}
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "closed", "moved"):
            target = getattr(event, "dest_path", "") or event.src_path
            self.offer(Path(os.fsdecode(target)))

    def offer(self, path: Path) -> None:
        if self.wanted(path):
            with self.lock:
                self.pending.setdefault(path, ((-1, -1), 0.0))

    def wanted(self, path: Path) -> bool:
        if self.done_dir in path.parents or self.failed_dir in path.parents:
            return False
        if not self.options.recursive and path.parent != self.folder:
            return False
        return any(fnmatch(path.name.lower(), pattern) for pattern in self.patterns)

    def scan(self) -> None:
        walker = self.folder.rglob("*") if self.options.recursive else self.folder.iterdir()
        for path in sorted(walker, key=_mtime):
            if path.is_file():
                self.offer(path)

    def loop(self, ledger: Ledger, stop: threading.Event) -> None:
        next_scan = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_scan:
                self.scan()
                next_scan = time.monotonic() + self.options.rescan
            for path in self.settled():
                if stop.is_set():
                    return
                self.take(path, ledger, stop)
            stop.wait(TICK_S)

    def settled(self) -> list[Path]:
        """Pending files unchanged for ``settle`` seconds; vanished ones are forgotten."""
        now, ready = time.monotonic(), []
        with self.lock:
            for path, (signature, since) in list(self.pending.items()):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    del self.pending[path]
                    continue
                current = (stat.st_size, stat.st_mtime_ns)
                if current != signature:
                    self.pending[path] = (current, now)
                elif now - since >= self.options.settle:
                    ready.append(path)
                    del self.pending[path]
        return ready

    def take(self, path: Path, ledger: Ledger, stop: threading.Event) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        file = FileId(path, stat.st_size, stat.st_mtime_ns)
        start, complete = ledger.state(file)
        if not complete:
            try:
                source = str(path.relative_to(self.folder))
                if not self.owner.publish_file(path, source, start, partial(ledger.advance, file), stop):
                    return  # stopping: the file stays, and the next start resumes where this one left off
            except IncompleteFile as exc:
                if time.time() - stat.st_mtime < self.options.incomplete_timeout:
                    self.offer(path)  # perhaps a slow writer paused for longer than `settle`: look again
                else:
                    self.fail(path, str(exc))
                return
            except BadInput as exc:
                self.fail(path, str(exc))
                return
            ledger.advance(file, start, complete=True)
        self.finish(path)
        if self.options.after != "keep":
            ledger.forget(file)

    def finish(self, path: Path) -> None:
        if self.options.after == "delete":
            path.unlink(missing_ok=True)
        elif self.options.after == "move":
            _move_aside(path, self.done_dir / path.relative_to(self.folder))

    def fail(self, path: Path, reason: str) -> None:
        self.owner.ctx.log.warning("%s moved to %s: %s", path.name, self.failed_dir, reason)
        self.owner.ctx.bus.flow.count(self.owner.ctx.alias, "failed")
        target = _move_aside(path, self.failed_dir / path.relative_to(self.folder))
        write_atomic(target.with_name(target.name + ".error.txt"), (reason + "\n").encode())


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _move_aside(path: Path, target: Path) -> Path:
    """Move ``path`` to ``target``, adding a numeric suffix rather than overwriting an earlier file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
        n += 1
    shutil.move(path, candidate)
    return candidate
