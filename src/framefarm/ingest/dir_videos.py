"""Input ``dir_videos``: video files dropped into a folder become frames, each frame exactly once.

A restart resumes a file at the first frame not yet published (the ledger records progress).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Literal

import av
from pydantic import Field

from ..config import registry
from ..errors import BadInput, IncompleteFile
from ..vision.codec import encode_frame, shrink
from .folder import FolderInput, FolderOptions, Progress, patterns_field

DEFAULT_PATTERNS = ["*.mp4", "*.mkv", "*.avi", "*.mov", "*.webm", "*.ts"]
PTS_TOLERANCE_S = 1e-6  # timestamps are rationals turned to floats


def too_soon(pts: float | None, last: float | None, min_gap: float) -> bool:
    """The ``fps`` limit: a frame less than ``min_gap`` seconds after the last one published is skipped."""
    return bool(min_gap) and pts is not None and last is not None and pts - last < min_gap - PTS_TOLERANCE_S


class DirVideosOptions(FolderOptions):
    name: Literal["dir_videos"] = Field(description="Watch a folder for video files and publish their frames.")
    patterns: list[str] = patterns_field(DEFAULT_PATTERNS)
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
    def publish_file(self, path: Path, source: str, start: int, progress: Progress, stop: threading.Event) -> bool:
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise IncompleteFile(f"cannot open as video: {exc}") from exc
        with container:
            if not container.streams.video:
                raise BadInput("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                return self._publish_frames(container.decode(stream), source, start, progress, stop)
            except av.FFmpegError as exc:
                raise BadInput(f"video stream broken after some frames: {exc}") from exc

    def _publish_frames(self, frames, source: str, start: int, progress: Progress, stop: threading.Event) -> bool:
        frames_cfg, fmt = self.ctx.service.frames, self.ctx.service.frame_format
        min_gap = 1.0 / self.options.fps if self.options.fps else 0.0
        last_pts: float | None = None
        clock = _Pacer() if self.options.realtime else None
        for index, frame in enumerate(frames):
            if index < start:
                continue
            pts = float(frame.time) if frame.time is not None else None
            if too_soon(pts, last_pts, min_gap):
                continue
            if clock and pts is not None and stop.wait(clock.delay(pts)):
                return False
            image = frame.to_ndarray(format="bgr24")
            height, width = image.shape[:2]
            stored, scale = shrink(image, frames_cfg.max_side)
            data = encode_frame(stored, fmt, frames_cfg.quality)
            kwargs = {"fmt": fmt, "width": width, "height": height, "source": source, "scale": scale}
            if not self.publisher.publish(data, **kwargs, stop=stop, pts=pts, frame_index=index):
                return False
            last_pts = pts
            progress(index + 1)
        return True


class _Pacer:
    """Seconds to wait so that a frame with timestamp ``pts`` leaves when it would in real time."""

    def __init__(self) -> None:
        self.origin: tuple[float, float] | None = None  # (first pts, wall clock then)

    def delay(self, pts: float) -> float:
        now = time.monotonic()
        if self.origin is None:
            self.origin = (pts, now)
        return max(0.0, self.origin[1] + (pts - self.origin[0]) - now)
