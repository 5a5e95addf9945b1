"""Input ``dir_images``: images dropped into a folder become frames, each exactly once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import registry
from .folder import FolderInput, FolderOptions, Progress, patterns_field
from .images import inspect_image

DEFAULT_PATTERNS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.webp"]


class DirImagesOptions(FolderOptions):
    name: Literal["dir_images"] = Field(description="Watch a folder for image files.")
    patterns: list[str] = patterns_field(DEFAULT_PATTERNS)


@registry.inputs.register
class DirImages(FolderInput[DirImagesOptions]):
    """The file's bytes are the frame: no decode and re-encode, the detector decodes it once."""

    def publish_file(self, path: Path, source: str, start: int, progress: Progress, stop: threading.Event) -> bool:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        fmt, width, height = inspect_image(data)
        mtime = path.stat().st_mtime
        return self.publisher.publish(
            data, fmt=fmt, width=width, height=height, source=source, stop=stop, captured_at=mtime
        )
