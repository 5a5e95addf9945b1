"""Input ``dir_videos``: video files dropped into a folder become frames, each frame exactly once.

A restart resumes a file at the first frame not yet published (the ledger records progress).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import av
from pydantic import ByteSize, Field

from ..config import registry
from ..errors import BadInput, IncompleteFile
from ..vision.codec import encode_frame, shrink
from .files import OpenedFile
from .folder import FolderInput, FolderOptions, Progress, max_file_size_field, patterns_field
from .images import check_pixels
from .video import Decoded, frame_to_bgr

DEFAULT_PATTERNS = ["*.mp4", "*.mkv", "*.avi", "*.mov", "*.webm", "*.ts"]
PTS_TOLERANCE_S = 1e-6  # timestamps are rationals turned to floats


def too_soon(pts: float | None, last: float | None, min_gap: float) -> bool:
    """The ``fps`` limit: a frame less than ``min_gap`` seconds after the last one published is skipped."""
    return bool(min_gap) and pts is not None and last is not None and pts - last < min_gap - PTS_TOLERANCE_S


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
        picker = _Picker(start, 1.0 / self.options.fps if self.options.fps else 0.0)
        frames = (item for item in enumerate(decoded) if picker.wants(*item))
        clock = _Pacer() if self.options.realtime else None
        while True:
            with file.reading():  # decoding, converting and encoding; not waiting for the bus
                item = next(frames, None)
                if item is None:
                    return True
                index, frame = item
                data, kwargs = self._encode(frame)
            pts = float(frame.time) if frame.time is not None else None
            if clock and pts is not None and stop.wait(clock.delay(pts)):
                return False
            if not self.publisher.publish(data, **kwargs, source=file.source, stop=stop, pts=pts, frame_index=index):
                return False
            picker.last_pts = pts
            progress(index + 1)

    def _encode(self, frame: av.VideoFrame) -> tuple[bytes, dict[str, Any]]:
        """The frame as the store keeps it, and the publish arguments that describe it."""
        frames_cfg, fmt = self.ctx.service.frames, self.ctx.service.frame_format
        image = frame_to_bgr(frame)
        height, width = image.shape[:2]
        stored, scale = shrink(image, frames_cfg.max_side)
        return encode_frame(stored, fmt, frames_cfg.quality), {
            "fmt": fmt,
            "width": width,
            "height": height,
            "scale": scale,
        }


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


class _Picker:
    """Which decoded frames to publish: none before ``start`` (published before a restart), and with ``min_gap``
    (the fps limit) none too soon after the last one published."""

    def __init__(self, start: int, min_gap: float) -> None:
        self.start, self.min_gap = start, min_gap
        self.last_pts: float | None = None

    def wants(self, index: int, frame: av.VideoFrame) -> bool:
        if index < self.start:
            return False
        pts = float(frame.time) if frame.time is not None else None
        return not too_soon(pts, self.last_pts, self.min_gap)


class _Pacer:
    """Seconds to wait so that a frame with timestamp ``pts`` leaves when it would in real time."""

    def __init__(self) -> None:
        self.origin: tuple[float, float] | None = None  # (first pts, wall clock then)

    def delay(self, pts: float) -> float:
        now = time.monotonic()
        if self.origin is None:
            self.origin = (pts, now)
        return max(0.0, self.origin[1] + (pts - self.origin[0]) - now)
