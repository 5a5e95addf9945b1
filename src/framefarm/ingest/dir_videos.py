"""Input ``dir_videos``: video files dropped into a folder become frames, each frame exactly once.

A restart resumes a file at the first frame not yet published (the ledger records progress).
"""

from __future__ import annotations

import threading
from typing import Literal

import av
from pydantic import ByteSize, Field

from ..config import registry
from ..errors import BadInput, IncompleteFile
from .files import OpenedFile
from .folder import FolderInput, FolderOptions, Progress, max_file_size_field, patterns_field
from .images import check_pixels
from .video import Decoded, FpsLimiter, Pacer, encode_for_store, frame_pts, nominal_rate, too_soon

DEFAULT_PATTERNS = ["*.mp4", "*.mkv", "*.avi", "*.mov", "*.webm", "*.ts"]
__all__ = ["DirVideos", "DirVideosOptions", "too_soon"]  # too_soon: bench/pipeline.py counts frames with it


class DirVideosOptions(FolderOptions):
    name: Literal["dir_videos"] = Field(description="Watch a folder for video files and publish their frames.")
    patterns: list[str] = patterns_field(DEFAULT_PATTERNS)
    max_file_size: ByteSize | None = max_file_size_field(
        None, "Unset: no limit (a video is decoded as it is read, never held whole)."
    )
    fps: float | None = Field(
        None, gt=0, description="Publish at most this many frames per second of video (by timestamp); all if unset."
    )
    realtime: bool = Field(
        False,
        description="Publish frames at the video's own pace, as a camera would (replaying recordings, "
        "measuring latency); default: as fast as the pipeline takes them.",
    )


@registry.inputs.register
class DirVideos(FolderInput[DirVideosOptions]):
    def publish_file(self, file: OpenedFile, start: int, progress: Progress, stop: threading.Event) -> bool:
        with file.reading():
            container = _open(file)
        with container:
            with file.reading():
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                check_pixels(stream.codec_context.width, stream.codec_context.height, self.options.max_pixels)
                decoded = Decoded(container, stream, self.options.max_pixels)
            if not self._publish_frames(file, decoded, start, progress, stop):
                return False
        trouble = decoded.trouble()
        if trouble and decoded.decoded == 0:
            raise BadInput(f"no frame decodes: {trouble}")
        if trouble:
            self.ctx.log.warning("%s %s", file.source, trouble)
        return True

    def _publish_frames(
        self, file: OpenedFile, decoded: Decoded, start: int, progress: Progress, stop: threading.Event
    ) -> bool:
        """Publish the frames from ``start`` on that the fps limit keeps, each as soon as it is encoded."""
        limiter = FpsLimiter(self.options.fps)
        frames = (item for item in enumerate(decoded) if item[0] >= start and limiter.wants(frame_pts(item[1])))
        clock = Pacer() if self.options.realtime else None
        rate = nominal_rate(decoded.stream, self.options.fps)
        while True:
            with file.reading():  # decoding, converting and encoding; not waiting for the bus
                item = next(frames, None)
                if item is None:
                    return True
                index, frame = item
                data, kwargs = encode_for_store(frame, self.ctx.service, self.publisher.max_side)
            pts = frame_pts(frame)
            if clock and pts is not None and stop.wait(clock.delay(pts)):
                return False
            sent = self.publisher.publish(
                data, **kwargs, source=file.source, stop=stop, pts=pts, frame_index=index, rate=rate
            )
            if not sent:
                return False
            limiter.taken(pts)
            progress(index + 1)


def _open(file: OpenedFile) -> av.container.InputContainer:
    """The file as a container with a video stream; IncompleteFile if it does not open (yet), BadInput if it has
    no video."""
    try:
        container = av.open(file.handle)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise IncompleteFile(f"cannot open as video: {getattr(exc, 'strerror', None) or exc}") from exc
    if not container.streams.video:
        container.close()
        raise BadInput("no video stream")
    return container
