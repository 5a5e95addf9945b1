"""Input ``dir_videos``: video files dropped into a folder become frames, each frame exactly once.

A restart resumes a file at the first frame not yet published (the ledger records progress). While a file is
read, its progress (frames done of total, rate, time left) is reported through the flow for ``pipectl status`` and
the status page, and logged every ``LOG_EVERY_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

import av
from pydantic import ByteSize, Field

from ..bus.base import Flow
from ..config import registry
from ..config.types import say_duration
from ..errors import BadInput, IncompleteFile
from ..modules.context import ModuleContext
from .files import OpenedFile
from .folder import FolderInput, FolderOptions, Progress, max_file_size_field, patterns_field
from .images import check_pixels
from .video import Decoded, FpsLimiter, Pacer, encode_for_store, frame_pts, nominal_rate, too_soon

DEFAULT_PATTERNS = ["*.mp4", "*.mkv", "*.avi", "*.mov", "*.webm", "*.ts"]
FILES_ROLE = "files"  # the role of its progress reports, by which the status views tell them apart
READING = "reading"
IDLE = "idle"
REPORT_PERIOD_S = 1.0  # progress is reported through the flow at most this often while a file is read
LOG_EVERY_S = 10.0  # and logged at most this often per file
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


class FileProgress:
    """How far an input is through the file it reads, for the operator: reported through the flow (``pipectl
    status``, the status page) when a file starts, at most every ``REPORT_PERIOD_S`` while it is read and when it
    ends; logged every ``LOG_EVERY_S`` and once when it is done.

    ``done`` is the position in the file (a resumed file counts from where it resumes), but the rate counts only the
    frames this process went through, so that a resumed file does not seem to have been read in no time.
    """

    def __init__(self, flow: Flow, alias: str, log: logging.Logger) -> None:
        self.flow, self.alias, self.log = flow, alias, log
        self.files_done = 0  # files this process read to their end
        self.state = IDLE
        self.file = ""
        self.start = 0  # the position the file was resumed at (0: read from its first frame)
        self.done = 0
        self.total: int | None = None
        self.since = 0.0  # wall clock when the file started
        self._began = self._reported = self._logged = 0.0  # monotonic

    def begin(self, file: str, start: int, total: int | None) -> None:
        """``file`` starts being read at frame ``start`` of ``total`` (None: unknown)."""
        self.state, self.file, self.start, self.done, self.total = READING, file, start, start, total
        self.since = time.time()
        self._began = self._logged = time.monotonic()
        self.report()

    def advance(self, done: int) -> None:
        """The frame before position ``done`` was published: report and log if their periods passed."""
        self.done = done
        now = time.monotonic()
        if now - self._reported >= REPORT_PERIOD_S:
            self.report()
        if now - self._logged >= LOG_EVERY_S:
            self._logged = now
            self.log.info("%s", self.summary())

    def end(self, position: int | None) -> None:
        """The file ended: read to ``position`` (its end), or None if reading stopped or failed before."""
        self.state = IDLE
        if position is not None:
            self.done = max(self.done, position)
            self.files_done += 1
            read = f", the last {self.done - self.start}" if self.start else ""
            resumed = f" after resuming at frame {self.start}" if self.start else ""
            self.log.info(
                "%s: done, %d frames%s in %.1fs (%.1f fps)%s",
                self.file,
                self.done,
                read,
                self.elapsed(),
                self.fps(),
                resumed,
            )
        self.report()

    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def fps(self) -> float:
        """Frames of the file gone through per second since this process started reading it."""
        elapsed = self.elapsed()
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None when the total or the rate is unknown."""
        fps = self.fps()
        if self.total is None or fps <= 0:
            return None
        return max(0, self.total - self.done) / fps

    def fields(self) -> dict[str, Any]:
        eta = self.eta_s()
        return {
            "role": FILES_ROLE,
            "state": self.state,
            "file": self.file,
            "done": self.done,
            "total": self.total,
            "fps": round(self.fps(), 2),
            "eta_s": None if eta is None else round(eta, 1),
            "since": self.since,
            "files_done": self.files_done,
        }

    def report(self) -> None:
        self._reported = time.monotonic()
        self.flow.report(self.alias, self.fields())

    def summary(self) -> str:
        """The progress line: ``clip.mp4: 1200 of 4500 frames (26.7%), 85.3 fps, about 39s left``."""
        eta = self.eta_s()
        share = f" of {self.total} frames ({100 * self.done / self.total:.1f}%)" if self.total else " frames"
        left = f", about {say_duration(eta)} left" if eta is not None else ""
        return f"{self.file}: {self.done}{share}, {self.fps():.1f} fps{left}"


@registry.inputs.register
class DirVideos(FolderInput[DirVideosOptions]):
    def __init__(self, ctx: ModuleContext[DirVideosOptions]) -> None:
        super().__init__(ctx)
        self.files = FileProgress(ctx.bus.flow, ctx.alias, ctx.log)

    def publish_file(self, file: OpenedFile, start: int, progress: Progress, stop: threading.Event) -> bool:
        with file.reading():
            container = _open(file)
        finished: int | None = None  # the position reached once the file is read to its end
        with container:
            with file.reading():
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                check_pixels(stream.codec_context.width, stream.codec_context.height, self.options.max_pixels)
                decoded = Decoded(container, stream, self.options.max_pixels)
                total = total_frames(decoded)
            self.files.begin(file.source, start, total)
            try:
                if not self._publish_frames(file, decoded, start, progress, stop):
                    return False
                trouble = decoded.trouble()
                if trouble and decoded.decoded == 0:
                    raise BadInput(f"no frame decodes: {trouble}")
                finished = decoded.decoded
            finally:
                self.files.end(finished)
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
            self.files.advance(index + 1)


def total_frames(decoded: Decoded) -> int | None:
    """The video stream's frames as its container counts them, else as its own duration (then the container's)
    says at its average rate; None when unknown (a stream without a duration, as some .ts files are)."""
    stream = decoded.stream
    if not stream.frames and stream.duration and stream.time_base and stream.average_rate:
        total: int | None = round(float(stream.duration * stream.time_base * stream.average_rate))
    else:
        total = decoded.expected()
    return total if total and total > 0 else None


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
