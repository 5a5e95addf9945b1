"""Retention for outputs that write files: remove what is older than ``max_age``, then the oldest files until the
folder holds at most ``max_size`` bytes; a background sweep every ``interval``, so writing a file never waits."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from pydantic import ByteSize, Field

from ..config.schema import StrictModel
from ..config.types import Duration

DEFAULT_INTERVAL_S = 60.0

log = logging.getLogger(__name__)


class RetentionOptions(StrictModel):
    max_age: Duration | None = Field(None, gt=0, description="Files older than this are removed.")
    max_size: ByteSize | None = Field(
        None, ge=1, description="The oldest files are removed while the folder holds more than this."
    )
    interval: Duration = Field(DEFAULT_INTERVAL_S, gt=0, description="Time between two sweeps.")

    @property
    def enabled(self) -> bool:
        return self.max_age is not None or self.max_size is not None


def sweep(root: Path, options: RetentionOptions, now: float | None = None) -> list[Path]:
    """Apply ``options`` to the files under ``root`` once; return what was removed, oldest first."""
    files = sorted(_files(root))  # (mtime, size, path), oldest first
    now = time.time() if now is None else now
    total = sum(size for _, size, _ in files)
    removed = []
    for mtime, size, path in files:
        too_old = options.max_age is not None and now - mtime > options.max_age
        too_big = options.max_size is not None and total > options.max_size
        if not (too_old or too_big):
            break  # sorted by age: nothing after this one is older, and the rest fits
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    _remove_empty_folders(root, {path.parent for path in removed})
    return removed


def _files(root: Path) -> list[tuple[float, int, Path]]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                status = path.lstat()
            except FileNotFoundError:
                continue  # removed meanwhile
            found.append((status.st_mtime, status.st_size, path))
    return found


def _remove_empty_folders(root: Path, folders: set[Path]) -> None:
    """Folders emptied by a sweep (a day's folder of a ``%Y-%m-%d`` path) go too, up to ``root``."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty, or gone
            folder = folder.parent


class Sweeper:
    """Sweeps ``root`` every ``options.interval`` in a thread, from ``start`` until ``stop``."""

    def __init__(self, root: Path, options: RetentionOptions) -> None:
        self.root, self.options = root, options
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="retention", daemon=True)

    def start(self) -> None:
        if self.options.enabled:
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                removed = sweep(self.root, self.options)
            except OSError as exc:
                log.warning("retention of %s: %s", self.root, exc)
            else:
                if removed:
                    log.info("retention removed %d files from %s", len(removed), self.root)
            self.stopping.wait(self.options.interval)
