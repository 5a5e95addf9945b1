"""Output ``image_files``: results (JSON + YOLO text, or one JSON line) and optionally the image, per frame."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Literal

from pydantic import Field

from ..atomic import append_line, write_atomic
from ..config import registry
from ..config.registry import CheckContext, FolderUse
from ..config.schema import OutputOptions
from ..config.yamlpos import Loc
from ..errors import SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..results import result_json, yolo_text
from ..vision.codec import encode_frame
from ..vision.picture import JPEG_QUALITY, picture
from .base import Output
from .paths import TAG, fill, fixed_part, is_template
from .retention import RetentionOptions, Sweeper

SEQ_DIGITS = 9
FRAME_INDEX_DIGITS = 6
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}
JSONL_NAME = "results.jsonl"
# Write errors about the frame's own path (a name too long, a folder or a file in the way, bytes the file system
# refuses): dropped and counted at once. Any other (ENOSPC, EACCES, EROFS, EIO) is retried with backoff.
NEVER_WRITABLE = frozenset({errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EINVAL})


class ImageFilesOptions(OutputOptions):
    name: Literal["image_files"] = Field(description="Write results (and images) as files.")
    path: Path = Field(
        description="Folder of each frame's files: {tag} and strftime codes of the frame's capture time are filled "
        "in (%% for a %); without {tag}, the files go to <path>/<tag>."
    )
    save_image: Literal["none", "raw", "annotated"] = Field(
        "none", description="Also write the frame: as received, or with boxes drawn."
    )
    results: Literal["files", "jsonl"] = Field(
        "files",
        description="files: <stem>.json and .txt per frame, written atomically, a redelivered frame's replaced; "
        "jsonl: one JSON line per frame appended to results.jsonl in the folder (cheaper; a frame redelivered "
        "after a crash can appear twice, with the same id).",
    )
    every_n: int = Field(1, ge=1, description="Write one frame in n of each stream (by its seq).")
    only_with_detections: bool = Field(False, description="Write nothing for a frame without detections.")
    retention: RetentionOptions = Field(
        default_factory=RetentionOptions, description="Remove old files: by age and by the folder's total size."
    )

    @property
    def root(self) -> Path:
        """Where the files are, and retention looks."""
        return fixed_part(self.path)

    def folder(self, tag: str, captured_at: float) -> str:
        """``path`` filled in for a frame of ``tag`` captured at ``captured_at``."""
        return fill(self.path if TAG in str(self.path) else self.path / TAG, tag, captured_at)


def file_stem(message: FrameMessage) -> str:
    """The source file's stem for images, ``<stem>_<frame index>`` for video frames, else the seq."""
    if message.frame_index is not None:
        return f"{PurePath(message.source).stem}_{message.frame_index:0{FRAME_INDEX_DIGITS}d}"
    if "://" not in message.source and PurePath(message.source).suffix:
        return PurePath(message.source).stem
    return f"{message.seq:0{SEQ_DIGITS}d}"


@registry.outputs.register
class ImageFiles(Output[ImageFilesOptions]):
    @classmethod
    def check(cls, options: ImageFilesOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        folder = ctx.resolve(options.root)
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            yield ("path",), f"{existing} is not a folder, so {folder} cannot be created"
        if options.results == "jsonl" and options.retention.enabled and "%" not in str(options.path).replace("%%", ""):
            yield (
                ("retention",),
                (
                    "with results: jsonl, retention would remove a whole results.jsonl at once (it is always fresh): "
                    "put a date in path (out/{tag}/%Y-%m-%d) so that each day's file ages on its own"
                ),
            )

    @classmethod
    def frame_side(cls, options: ImageFilesOptions, ctx: CheckContext) -> int | None:
        """No frame for results alone; the whole frame when it is saved."""
        return 0 if options.save_image == "none" else None

    @classmethod
    def folders(cls, options: ImageFilesOptions, ctx: CheckContext) -> Iterator[FolderUse]:
        """A frame's files go to ``<path>/<tag>`` (one folder per tag that reaches this output), or anywhere under
        the fixed part of a templated path."""
        if not is_template(options.path):
            for tag in ctx.tags:
                yield FolderUse(("path",), ctx.resolve(options.path) / tag, writes=True)
            return
        yield FolderUse(("path",), ctx.resolve(options.root), writes=True, tree=True)

    def setup(self) -> None:
        self.sweeper = Sweeper(self.ctx.resolve(self.options.root), self.options.retention)
        self.sweeper.start()

    def teardown(self) -> None:
        self.sweeper.stop()

    def deliver(self, message: FrameMessage) -> bool:
        options = self.options
        if message.seq % options.every_n or (options.only_with_detections and not message.detections):
            return False
        folder = self.ctx.resolve(options.folder(message.stream, message.captured_at))
        try:
            self.write(message, folder)
        except OSError as exc:
            reason = f"{folder}: {exc.strerror or exc}"
            if exc.errno in NEVER_WRITABLE:  # this frame's name or folder: no retry would help
                raise SinkRejected(reason) from exc
            raise SinkUnavailable(reason) from exc  # a full disk, a lost mount, permissions: retried, then dead
        return True

    def write(self, message: FrameMessage, folder: Path) -> None:
        options, stem = self.options, file_stem(message)
        if options.save_image != "none":
            name, data = self.image(message)
            write_atomic(folder / f"{stem}{name}", data)
        if options.results == "jsonl":
            append_line(folder / JSONL_NAME, json.dumps(result_json(message), separators=(",", ":")).encode())
            return
        write_atomic(folder / f"{stem}.txt", yolo_text(message).encode())
        # JSON last: its presence means the frame's files are all there.
        write_atomic(folder / f"{stem}.json", json.dumps(result_json(message), indent=1).encode())

    def image(self, message: FrameMessage) -> tuple[str, bytes]:
        """(file suffix, bytes) of the frame as asked by ``save_image``; raw pixels are written as PNG."""
        frame = self.ctx.bus.frames.fetch(message)
        if self.options.save_image == "raw" and message.format in EXTENSIONS:
            return EXTENSIONS[message.format], frame
        if self.options.save_image == "raw":
            return ".png", encode_frame(picture(frame, message, annotated=False), "png", JPEG_QUALITY)
        return ".jpg", encode_frame(picture(frame, message, annotated=True), "jpeg", JPEG_QUALITY)
