"""Input ``dir_images``: images dropped into a folder become frames, each exactly once."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

from pydantic import Field
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import InputOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..errors import BadInput, IncompleteImage
from .base import Input
from .images import inspect_image
from .ledger import Ledger

DEFAULT_PATTERNS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.webp"]
DEFAULT_SETTLE_S = 0.5
DEFAULT_RESCAN_S = 10.0
DEFAULT_INCOMPLETE_TIMEOUT_S = 10.0
TICK_S = 0.1


class DirImagesOptions(InputOptions):
    lossless = True
    name: Literal["dir_images"] = Field(description="Watch a folder for image files.")
    path: Path = Field(description="The folder to watch.")
    patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PATTERNS),
        min_length=1,
        description="File name globs to take, case-insensitive.",
    )
    recursive: bool = Field(False, description="Also watch sub-folders.")
    after: Literal["move", "delete", "keep"] = Field(
        "move", description="What to do with a file once its frame is on the bus."
    )
    done_dir: Path | None = Field(None, description="Where `after: move` puts files; default <path>/.done.")
    failed_dir: Path | None = Field(
        None, description="Where unreadable files go, with <name>.error.txt; default <path>/.failed."
    )
    settle: Duration = Field(
        DEFAULT_SETTLE_S,
        description="A file is taken once its size and mtime have not changed for this long.",
    )
    incomplete_timeout: Duration = Field(
        DEFAULT_INCOMPLETE_TIMEOUT_S,
        description="A truncated image is waited for (a slow writer may finish it) until it has not changed "
        "for this long; then it goes to failed_dir.",
    )
    rescan: Duration = Field(
        DEFAULT_RESCAN_S, gt=0, description="Full rescan period, for file systems that miss change events."
    )


@registry.inputs.register
class DirImages(Input):
    Options = DirImagesOptions

    @classmethod
    def check(cls, options: DirImagesOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        folder = ctx.resolve(options.path)
        if not folder.is_dir():
            yield ("path",), f"{folder} is not a folder"
        elif not os.access(folder, os.R_OK | os.X_OK):
            yield ("path",), f"{folder} is not readable"
        elif options.after != "keep" and not os.access(folder, os.W_OK):
            yield ("after",), f"after: {options.after} needs write access to {folder}"

    def run(self, stop: threading.Event) -> None:
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
    """Collects candidate files from events and rescans, and publishes each once it has settled."""

    def __init__(self, owner: DirImages, folder: Path) -> None:
        self.owner = owner
        self.options: DirImagesOptions = owner.options
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
            data = path.read_bytes()
        except FileNotFoundError:
            return
        identity = (path, stat.st_size, stat.st_mtime_ns)
        if not ledger.seen(*identity):
            try:
                fmt, width, height = inspect_image(data)
            except IncompleteImage as exc:
                if time.time() - stat.st_mtime < self.options.incomplete_timeout:
                    self.offer(path)  # perhaps a slow writer paused longer than `settle`: look again later
                else:
                    self.fail(path, str(exc))
                return
            except BadInput as exc:
                self.fail(path, str(exc))
                return
            source = str(path.relative_to(self.folder))
            published = self.owner.publisher.publish(
                data, fmt=fmt, width=width, height=height, source=source, stop=stop, captured_at=stat.st_mtime
            )
            if not published:
                return  # stopping: the file stays and is taken at the next start
            ledger.add(*identity)
        self.finish(path)
        if self.options.after != "keep":
            ledger.forget(*identity)

    def finish(self, path: Path) -> None:
        if self.options.after == "delete":
            path.unlink(missing_ok=True)
        elif self.options.after == "move":
            _move_aside(path, self.done_dir / path.relative_to(self.folder))

    def fail(self, path: Path, reason: str) -> None:
        self.owner.ctx.log.warning("%s moved to %s: %s", path.name, self.failed_dir, reason)
        self.owner.ctx.bus.flow.count(self.owner.ctx.alias, "failed")
        target = _move_aside(path, self.failed_dir / path.relative_to(self.folder))
        target.with_name(target.name + ".error.txt").write_text(reason + "\n", encoding="utf-8")


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
