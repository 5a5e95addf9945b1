"""What the folder inputs share: watch a folder, wait for files to settle, publish each file's frames
exactly once (across restarts too), then move, delete or keep the file; bad files go aside with a reason.

Nothing a folder can hold may stop the input or keep it from the other files: each entry's trouble (a special
file, a name that is not UTF-8, a file that vanishes, one that is still being written, one that crashed the
process before) ends with that entry set aside or skipped, with a log line. See files.py and watcher.py.
"""

from __future__ import annotations

import os
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ByteSize, Field
from watchdog.observers import Observer

from ..config.registry import CheckContext, FolderUse
from ..config.schema import InputOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..errors import SourceUnavailable
from .base import Input
from .files import OpenedFile, shown
from .ledger import open_ledger
from .watcher import FolderWatcher

DEFAULT_SETTLE_S = 0.5
DEFAULT_RESCAN_S = 10.0
DEFAULT_INCOMPLETE_TIMEOUT_S = 10.0
DEFAULT_MAX_PIXELS = 50_000_000  # a 50 MP picture is 150 MB as BGR pixels, in each module it reaches
DEFAULT_MAX_CRASHES = 2

FO = TypeVar("FO", bound="FolderOptions")

Progress = Callable[[int], None]  # called with the next frame index after each published frame


def patterns_field(defaults: list[str]) -> Any:
    """The ``patterns`` option of a folder kind, with that kind's default globs."""
    return Field(
        default_factory=lambda: list(defaults), min_length=1, description="File name globs to take, case-insensitive."
    )


def max_file_size_field(default: str | None, why: str) -> Any:
    """The ``max_file_size`` option of a folder kind, with that kind's default."""
    return Field(
        default,
        validate_default=True,
        description=f"Larger files go to failed_dir; a number of bytes or a size such as 64MiB. {why}",
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
        None,
        description="Where unusable files go, with <name>.error.txt; default <path>/.failed. Entries that are not "
        "regular files (FIFOs, sockets, devices, links to them) go there too; directories are skipped.",
    )
    settle: Duration = Field(
        DEFAULT_SETTLE_S, description="A file is taken once its size and mtime have not changed for this long."
    )
    incomplete_timeout: Duration = Field(
        DEFAULT_INCOMPLETE_TIMEOUT_S,
        description="A truncated, empty or too short file is waited for (a slow writer may finish it) until it "
        "has not changed for this long; then it goes to failed_dir.",
    )
    rescan: Duration = Field(
        DEFAULT_RESCAN_S, gt=0, description="Full rescan period, for file systems that miss change events."
    )
    max_file_size: ByteSize | None = max_file_size_field(None, "Unset: no limit.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="Pictures (and video frames) with more pixels go to failed_dir, judged from the header before "
        "anything is decoded: a small file can hold a huge picture.",
    )
    max_crashes: int = Field(
        DEFAULT_MAX_CRASHES,
        ge=1,
        description="A file whose reading killed the process this many times in a row, without progress between "
        "(a decoder crash, the OOM killer), goes to failed_dir instead of being taken again.",
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

    @classmethod
    def folders(cls, options: FolderOptions, ctx: CheckContext) -> Iterator[FolderUse]:
        """The watched folder (its sub-folders too when recursive), and done_dir, where files are moved."""
        folder = ctx.resolve(options.path)
        yield FolderUse(("path",), folder, writes=False, tree=options.recursive)
        if options.after == "move":
            yield FolderUse(("done_dir",), ctx.resolve(options.done_dir or folder / ".done"), writes=True, tree=True)

    @abstractmethod
    def publish_file(self, file: OpenedFile, start: int, progress: Progress, stop: threading.Event) -> bool:
        """Publish the frames of ``file`` from frame ``start`` on; False if ``stop`` came first.

        Raise IncompleteFile for a file that may still be being written, BadInput for one that is unusable (an
        error of the file, its reading or decoding must become one of these: anything else stops the input).
        """

    def read(self, stop: threading.Event) -> None:
        folder = self.ctx.resolve(self.options.path)
        if not folder.is_dir():
            raise SourceUnavailable(f"{shown(folder)} is not a folder (not mounted yet? removed?)")
        watcher = FolderWatcher(self, folder)
        ledger = open_ledger(self.ctx.state_dir() / f"{self.ctx.alias}.sqlite", self.ctx.log)
        observer = Observer()
        try:
            observer.schedule(watcher, str(folder), recursive=self.options.recursive)
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches: rescans still find every file, only later
            self.ctx.log.warning(
                "no change events for %s (%s): rescanning every %gs", shown(folder), exc, watcher.rescan
            )
        self.ctx.log.info("watching %s (%s)", shown(folder), ", ".join(self.options.patterns))
        try:
            watcher.loop(ledger, stop)
        finally:
            if observer.is_alive():
                observer.stop()
                observer.join(timeout=5)
            ledger.close()
