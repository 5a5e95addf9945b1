"""Input ``dir_images``: images dropped into a folder become frames, each exactly once."""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import ByteSize, Field

from ..config import registry
from .files import OpenedFile, read_bounded
from .folder import FolderInput, FolderOptions, Progress, max_file_size_field, patterns_field
from .images import check_image

DEFAULT_PATTERNS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.webp"]
DEFAULT_MAX_FILE_SIZE = "64MiB"


class DirImagesOptions(FolderOptions):
    name: Literal["dir_images"] = Field(description="Watch a folder for image files.")
    patterns: list[str] = patterns_field(DEFAULT_PATTERNS)
    max_file_size: ByteSize | None = max_file_size_field(
        DEFAULT_MAX_FILE_SIZE, "An image is read whole, and its bytes are the frame on the bus."
    )


@registry.inputs.register
class DirImages(FolderInput[DirImagesOptions]):
    """The file's bytes are the frame, unless the image is larger than its route needs (Publisher.stored_image)."""

    def publish_file(self, file: OpenedFile, start: int, progress: Progress, stop: threading.Event) -> bool:
        with file.reading():
            data = read_bounded(file.handle, self.options.max_file_size)
            image = self.publisher.stored_image(check_image(data, self.options.max_pixels))
        return self.publisher.publish_image(image, source=file.source, stop=stop, captured_at=file.status.st_mtime)
