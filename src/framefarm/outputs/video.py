"""What the video outputs share (``video_file``, ``rtsp``, ``rtmp``): frames drawn, put back in order, timed, and
encoded per stream, in one writer thread per tag.

A worker thread takes a frame's message, draws it (the drawing ``image_files`` and ``mjpeg`` use), releases the
frame from the store and hands the picture to its tag's writer through a bounded queue: a writer that falls
behind drops frames (counted), never memory. The writer puts frames back in ``seq`` order, waiting at most
``reorder_ms`` for a missing one (later frames are dropped and counted), then times them:

- files keep the frames' own clock (their pts, else their capture time): every frame is written at its time,
  or, with ``fps``, at a constant rate, one frame per slot (frames too close to the last are skipped);
- live pushes run on the wall clock at a constant rate: a frame leaves on each tick, the last one is repeated
  when none came so that players do not stall, and bursts (a batch of detections) wait in a short jitter buffer.

A stream that sends nothing for ``end_after`` is ended cleanly (a file is closed, a push ends) and started again
when frames come back. A container that fails (a server away, a full disk) is closed, and opened again after a
backoff; frames meanwhile are dropped and counted.
"""

from __future__ import annotations

import contextlib
import heapq
import queue
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import av
import numpy as np
from pydantic import Field

from ..backoff import Backoff
from ..config.registry import CheckContext
from ..config.schema import OutputOptions, ReconnectOptions
from ..config.types import Duration
from ..config.urls import redact_text
from ..config.yamlpos import Loc
from ..message import FrameMessage
from ..modules import counters
from ..vision.draw import draw_timestamp
from ..vision.picture import picture
from .base import Output
from .encoder import (
    MIN_STEP,
    NVENC,
    TIME_BASE,
    X264,
    EncoderFailed,
    EncoderOptions,
    Encoding,
    nvenc_refusal,
    pick_encoder,
)

LIVE_REORDER_MS = 500  # a live push waits no longer: it would show as delay
DEFAULT_RATE = 25.0  # frames a second when neither the output nor the source says
DEFAULT_QUEUE = 64
DEFAULT_END_AFTER_S = 10.0
DEFAULT_LATEST_FOR_S = 2.0
FINISH_S = 4.0  # at a stop, the writers' time to finish: within supervisord's 5 s past the drain's stop_timeout
SEQ_RESTART = 1000  # a seq this far below the last one written: the input started its count over
TICKS = int(1 / TIME_BASE)  # timestamp units a second
IDLE_POLL_S = 0.2


class VideoOptions(OutputOptions, EncoderOptions):
    """Options of every video output kind."""

    fps: float | None = Field(
        None,
        gt=0,
        description="A constant frame rate to write. Default: files keep each frame's own timestamp; live pushes "
        "run at the source's rate (25 when it does not say).",
    )
    annotated: bool = Field(True, description="Draw the boxes, class names and confidences.")
    timestamp: bool = Field(False, description="Draw each frame's capture time in a corner.")
    reorder_ms: int = Field(
        LIVE_REORDER_MS, ge=0, description="How long a frame waits for an earlier one that is late (ms)."
    )
    boxes: Literal["exact", "latest"] = Field(
        "exact",
        description="exact: the frames the detector saw, with their boxes. latest: every frame of a live input, "
        "with the latest boxes known (the output then also takes the frames before detection, and shows them "
        "when the detector is slower than the camera).",
    )
    latest_for: Duration = Field(
        DEFAULT_LATEST_FOR_S,
        gt=0,
        description="boxes: latest: boxes older than this (no detection since) are no longer drawn.",
    )
    queue: int = Field(DEFAULT_QUEUE, ge=1, description="Frames per stream waiting for the encoder; more are dropped.")
    end_after: Duration = Field(
        DEFAULT_END_AFTER_S, gt=0, description="A stream without frames this long is ended (and started again later)."
    )
    reconnect: ReconnectOptions = Field(
        default_factory=ReconnectOptions, description="Backoff before opening a failed file or server again."
    )


VO = TypeVar("VO", bound=VideoOptions)


@dataclass(order=True)
class Shot:
    """A drawn frame on its way to the encoder, ordered by ``seq``."""

    seq: int
    time: float = field(compare=False)  # the frame's own clock: its pts, else its capture time (seconds)
    source: str = field(compare=False)
    input: str = field(compare=False)  # whose counters it counts in
    captured_at: float = field(compare=False)
    rate: float | None = field(compare=False)
    image: np.ndarray = field(compare=False, repr=False)


class Reorder:
    """One stream's frames back in ``seq`` order: a frame waits at most ``window`` seconds for earlier ones."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.waiting: list[tuple[Shot, float]] = []  # a heap by seq, with each frame's arrival
        self.seqs: set[int] = set()  # of the frames waiting
        self.last: int | None = None  # seq of the last frame let out

    def push(self, shot: Shot, now: float) -> bool:
        """Take ``shot``; False when it is late (a later frame already left) or there already (a message delivered
        again): the caller drops it."""
        if self.last is not None and shot.seq < self.last - SEQ_RESTART:
            self.last = None  # the input counts from 0 again (its state was lost): not late, a new count
        if (self.last is not None and shot.seq <= self.last) or shot.seq in self.seqs:
            return False
        heapq.heappush(self.waiting, (shot, now))
        self.seqs.add(shot.seq)
        return True

    def ready(self, now: float) -> list[Shot]:
        """The frames that may leave now, in order: the next seq at once, others once they waited ``window``."""
        out = []
        while self.waiting:
            shot, arrived = self.waiting[0]
            if not (self.last is not None and shot.seq == self.last + 1) and now - arrived < self.window:
                break
            heapq.heappop(self.waiting)
            self.seqs.discard(shot.seq)
            self.last = shot.seq
            out.append(shot)
        return out

    def drain(self) -> list[Shot]:
        """Every frame still waiting, in order (the stream ends)."""
        out = [heapq.heappop(self.waiting)[0] for _ in range(len(self.waiting))]
        self.seqs.clear()
        if out:
            self.last = out[-1].seq
        return out

    def next_due(self) -> float | None:
        """Arrival time after which the first waiting frame leaves even if earlier ones never come."""
        return self.waiting[0][1] + self.window if self.waiting else None


class FileClock:
    """Timestamps for a file: each frame at its own time (``rate`` None), or at a constant ``rate``, one frame per
    slot. A new source, or a clock that goes back or jumps more than ``max_gap``, starts a new run, which goes on
    one frame after the last timestamp written (a frame lasts 1/``hint`` s without a ``rate``)."""

    def __init__(self, rate: float | None, hint: float, max_gap: float) -> None:
        self.rate, self.max_gap = rate, max_gap
        self.step = TICKS / (rate or hint)  # one frame, in timestamp units
        self.origin: float | None = None  # the clock time of timestamp 0 in the current run
        self.last: tuple[str, float] | None = None  # source and clock time of the last frame placed
        self.floor = 0  # the first timestamp still free
        self.resume = 0  # where a new run starts

    def place(self, shot: Shot) -> int | None:
        """The frame's timestamp (1/90000 s), or None when the constant rate has no slot left for it."""
        if self.origin is None or self._new_run(shot):
            self.origin = shot.time - self.resume / TICKS
        self.last = (shot.source, shot.time)
        offset = (shot.time - self.origin) * TICKS
        if self.rate:
            slot = round(offset / self.step)
            pts = round(slot * self.step)
            if pts < self.floor:
                return None
            self.floor, self.resume = pts + 1, round((slot + 1) * self.step)
            return pts
        pts = max(round(offset), self.floor)
        self.floor, self.resume = pts + MIN_STEP, pts + round(self.step)
        return pts

    def _new_run(self, shot: Shot) -> bool:
        source, time_ = self.last or (shot.source, shot.time)
        return source != shot.source or shot.time < time_ or shot.time - time_ > self.max_gap


class LiveClock:
    """Ticks at ``rate`` on the wall clock from the stream's start: one frame per tick, the newest kept at most
    ``depth`` frames behind; the last frame is shown again on a tick that has none."""

    def __init__(self, rate: float, depth: int) -> None:
        self.rate, self.depth = rate, depth
        self.start = time.monotonic()
        self.tick = 0
        self.buffer: deque[Shot] = deque()

    def add(self, shot: Shot) -> Shot | None:
        """Queue ``shot`` for a tick; returns the oldest queued frame dropped to make room, if one was."""
        self.buffer.append(shot)
        return self.buffer.popleft() if len(self.buffer) > self.depth else None

    def due(self, now: float) -> bool:
        return (now - self.start) * self.rate >= self.tick

    def take(self, now: float) -> tuple[Shot | None, int]:
        """The frame for the tick that is due (None: show the last one again) and its timestamp; a tick missed
        because the encoder was busy is skipped, not caught up."""
        self.tick = max(self.tick, int((now - self.start) * self.rate))
        pts = round(self.tick * TICKS / self.rate)
        self.tick += 1
        return (self.buffer.popleft() if self.buffer else None), pts

    def wait(self, now: float) -> float:
        return max(0.0, self.start + self.tick / self.rate - now)


STOP = object()  # queued to a writer: finish the stream and end


class StreamWriter:
    """One tag's writer thread: queue, reorder, clock, encoding, the container's failures and backoff."""

    def __init__(self, output: VideoOutput[Any], tag: str) -> None:
        self.output, self.tag = output, tag
        self.options: VideoOptions = output.options
        self.queue: queue.Queue[Any] = queue.Queue(self.options.queue)
        self.reorder = Reorder(self.options.reorder_ms / 1000)
        self.codec = pick_encoder(self.options.encoder)
        self.encoding: Encoding | None = None
        self.clock: FileClock | LiveClock | None = None
        self.last_image: np.ndarray | None = None
        self.last_frame = time.monotonic()  # when the last real frame was written or dropped
        self.backoff = Backoff(self.options.reconnect.initial, self.options.reconnect.max)
        self.retry_at = 0.0  # after a failure: frames are dropped until then
        self.failure = ""  # why, for the frames dropped meanwhile
        self.thread = threading.Thread(target=self.run, name=f"video-{tag}", daemon=True)
        self.thread.start()

    def put(self, shot: Shot) -> None:
        try:
            self.queue.put_nowait(shot)
        except queue.Full:
            self.output.lost(shot, f"the encoder of {self.tag} is {self.options.queue} frames behind")

    def finish(self, deadline: float) -> None:
        """Let the writer write what it holds and end its stream, by ``deadline`` (monotonic): a writer stuck
        in a write to a server that stopped reading is left behind (its thread is a daemon), not waited for."""
        with contextlib.suppress(queue.Full):
            self.queue.put(STOP, timeout=max(0.0, deadline - time.monotonic()))
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            self.output.ctx.log.warning("%s: the writer is still in a write; left unfinished", self.tag)

    def run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self.wait())
            except queue.Empty:
                item = None
            try:
                if self.step(item):
                    return
            except Exception as exc:  # a bug must not leave the stream without a writer: log, start over later
                self.output.ctx.log.exception("%s: the writer failed; the stream starts over", self.tag)
                self.abandon()
                self.fail(item if isinstance(item, Shot) else None, exc)
                if item is STOP:
                    self.drop_queued()
                    return

    def step(self, item: Any) -> bool:
        """Take one item from the queue (None: nothing came) and do what is due; True when the writer ends."""
        now = time.monotonic()
        if item is STOP:
            for shot in self.reorder.drain():
                self.place(shot, now)
            self.end("the output stops")
            self.drop_queued()
            return True
        if item is not None and not self.reorder.push(item, now):
            self.output.lost(item, f"late or repeated: frames up to seq {self.reorder.last} were written")
        for shot in self.reorder.ready(now):
            self.place(shot, now)
        self.tick(now)
        return False

    def drop_queued(self) -> None:
        """Frames still queued when the writer ends (a worker thread was still busy at the stop): lost."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Shot):
                self.output.lost(item, "the output stopped")

    def wait(self) -> float:
        """How long the writer may sleep: until a reorder deadline, the next tick, or a look at the idle clock."""
        now = time.monotonic()
        waits = [IDLE_POLL_S]
        if (due := self.reorder.next_due()) is not None:
            waits.append(due - now)
        if isinstance(self.clock, LiveClock):
            waits.append(self.clock.wait(now))
        return max(0.0, min(waits))

    def place(self, shot: Shot, now: float) -> None:
        """A frame in order: timed and written (a file), or queued for its tick (live)."""
        self.last_frame = now
        if now < self.retry_at:
            self.output.lost(shot, f"{self.failure}; trying again soon")
            return
        if self.encoding is None and not self.open(shot):
            return
        if isinstance(self.clock, LiveClock):
            if (dropped := self.clock.add(shot)) is not None:
                self.output.skipped(dropped)
            return
        assert isinstance(self.clock, FileClock)
        pts = self.clock.place(shot)
        if pts is None:
            self.output.skipped(shot)
            return
        if self.encoding is not None and self.output.segment_over(self.encoding, pts):
            self.end("segment complete")
            if not self.open(shot):
                return
        self.write(shot, shot.image, pts)

    def tick(self, now: float) -> None:
        """Live: the frames whose tick came (the last one again when none is new). Any: end an idle stream."""
        if isinstance(self.clock, LiveClock):
            while self.encoding is not None and self.clock.due(now):
                shot, pts = self.clock.take(now)
                if shot is not None:
                    self.write(shot, shot.image, pts)
                elif self.last_image is not None:
                    self.write(None, self.last_image, pts)
                now = time.monotonic()
        if self.encoding is not None and now - self.last_frame > self.options.end_after:
            self.end(f"no frame for {self.options.end_after:g}s")

    def open(self, shot: Shot) -> bool:
        rate = self.options.fps or shot.rate or DEFAULT_RATE
        container = None
        try:
            container = self.output.open_container(self.tag, shot)
            size = (shot.image.shape[1], shot.image.shape[0])
            self.encoding = Encoding.start(container, self.options, self.codec, size, rate, live=self.output.live)
        except (av.FFmpegError, OSError) as exc:
            if container is not None:
                with contextlib.suppress(av.FFmpegError, OSError):
                    container.close()
            self.fail(shot, exc)
            return False
        live_depth = max(1, round(self.output.jitter_buffer * rate))
        self.clock = LiveClock(rate, live_depth) if self.output.live else self.file_clock(rate)
        where = redact_text(container.name)
        self.output.ctx.log.info("%s: started %s (%s, %.4g fps)", self.tag, where, self.codec, rate)
        return True

    def file_clock(self, rate: float) -> FileClock:
        """A file keeps its clock across segments: each segment's timestamps continue the last one's."""
        if isinstance(self.clock, FileClock):
            return self.clock
        return FileClock(self.options.fps, rate, self.options.end_after)

    def write(self, shot: Shot | None, image: np.ndarray, pts: int) -> None:
        assert self.encoding is not None
        try:
            self.encoding.write(image, pts)
        except (av.FFmpegError, OSError, EncoderFailed) as exc:
            if isinstance(exc, EncoderFailed) and self.codec == NVENC and self.options.encoder == "auto":
                self.output.ctx.log.warning("%s: h264_nvenc does not start (%s); libx264 instead", self.tag, exc)
                self.codec = X264
            self.abandon()
            self.fail(shot, exc)
            return
        self.last_image = image
        if shot is not None:
            self.backoff.reset()
            self.output.written(shot)

    def fail(self, shot: Shot | None, exc: Exception) -> None:
        """The container failed: drop ``shot``, wait a backoff before the next try."""
        delay = self.backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        self.failure = self.output.describe_failure(self.tag, exc)
        self.output.ctx.log.warning("%s; trying again in %.1fs", self.failure, delay)
        if shot is not None:
            self.output.lost(shot, self.failure)

    def abandon(self) -> None:
        """Give the stream up where it is (writing failed): the frames waiting for a tick are lost."""
        encoding, self.encoding = self.encoding, None
        self.drop_ticks("the stream failed before their tick")
        if encoding is not None:
            encoding.abandon()

    def drop_ticks(self, reason: str) -> None:
        if isinstance(self.clock, LiveClock):
            for shot in self.clock.buffer:
                self.output.lost(shot, reason)
            self.clock = None

    def end(self, why: str) -> None:
        """Finish the stream cleanly (flush, trailer); the next frame starts a new one."""
        encoding, self.encoding = self.encoding, None
        self.drop_ticks("the stream ended before their tick")
        if encoding is None:
            return
        try:
            encoding.close()
        except (av.FFmpegError, OSError) as exc:
            self.output.ctx.log.warning("%s: closing after %d frames: %s", self.tag, encoding.frames, exc)
            return
        self.output.ctx.log.info("%s: ended after %d frames (%s)", self.tag, encoding.frames, why)


class VideoOutput(Output[VO]):
    """A video output kind implements ``open_container``; ``live`` kinds push at a constant rate."""

    live: ClassVar[bool] = False
    jitter_buffer: ClassVar[float] = 1.0  # live: seconds of frames that may wait for their tick

    @classmethod
    def frame_side(cls, options: VideoOptions, ctx: CheckContext) -> int | None:
        """The whole frame, or what a fixed ``size`` needs."""
        fixed = options.fixed_size
        return max(fixed) if fixed else None

    @classmethod
    def takes_raw_frames(cls, options: VideoOptions) -> bool:
        return options.boxes == "latest"

    @abstractmethod
    def open_container(self, tag: str, shot: Shot) -> av.container.OutputContainer:
        """The container the stream of ``tag`` goes to, open for writing, starting with ``shot``."""

    def describe_failure(self, tag: str, exc: Exception) -> str:
        return f"{tag}: {getattr(exc, 'strerror', None) or exc}"

    @classmethod
    def check(cls, options: VideoOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        if options.encoder == NVENC and (refusal := nvenc_refusal()):
            yield ("encoder",), f"h264_nvenc does not open on this machine ({refusal}); use auto or libx264"

    def segment_over(self, encoding: Encoding, pts: int) -> bool:
        """Whether the frame at ``pts`` starts a new file (``video_file``'s segments)."""
        return False

    def setup(self) -> None:
        self.writers: dict[str, StreamWriter] = {}
        self.latest: dict[str, tuple[int, float, list[dict[str, Any]]]] = {}  # tag -> (seq, captured_at, boxes)
        self.lock = threading.Lock()
        self.closed = False  # set at teardown: a frame that comes later (a worker still busy) is counted lost

    def teardown(self) -> None:
        with self.lock:
            self.closed = True
        deadline = time.monotonic() + min(FINISH_S, self.ctx.service.stop_timeout)
        for writer in list(self.writers.values()):
            writer.finish(deadline)

    def deliver(self, message: FrameMessage) -> None:
        raise NotImplementedError("video outputs take frames in handle")  # pragma: no cover

    def handle(self, message: FrameMessage) -> None:
        if self.skipped_event(message):
            return
        if self.options.boxes == "latest":
            message = self.with_latest_boxes(message)
            if message.tapped:  # the detector's copy: the frame was shown when it came undetected; its boxes are news
                self.ctx.bus.frames.release(message.key, message.input)
                self.delivery.succeeded(filtered=True)
                self.ctx.bus.flow.count(message.input, counters.filtered(self.ctx.alias))
                return
        options = self.options
        frame = self.ctx.bus.frames.fetch(message)
        image = picture(frame, message, annotated=options.annotated, original_size=options.fixed_size is None)
        if options.timestamp:
            image = draw_timestamp(image, message.captured_at)
        self.ctx.bus.frames.release(message.key, message.input)
        clock = message.pts if message.pts is not None else message.captured_at
        shot = Shot(message.seq, clock, message.source, message.input, message.captured_at, message.rate, image)
        writer = self.writer(message.stream)
        if writer is None:
            self.lost(shot, "the output stopped")
            return
        writer.put(shot)

    def with_latest_boxes(self, message: FrameMessage) -> FrameMessage:
        """``boxes: latest``: a detected frame's boxes become its stream's latest (if no later ones came first);
        a frame that comes undetected gets the latest boxes."""
        with self.lock:
            seq, seen_at, boxes = self.latest.get(message.stream, (-1, 0.0, []))
            if message.detections is None:
                fresh = message.captured_at - seen_at <= self.options.latest_for
                return message.model_copy(update={"detections": boxes if fresh else []})
            if message.seq > seq or message.seq < seq - SEQ_RESTART:
                self.latest[message.stream] = (message.seq, message.captured_at, message.detections)
            return message

    def writer(self, tag: str) -> StreamWriter | None:
        with self.lock:
            if self.closed:
                return None
            if tag not in self.writers:
                self.writers[tag] = StreamWriter(self, tag)
            return self.writers[tag]

    # -- outcomes, from the writers --

    def written(self, shot: Shot) -> None:
        self.delivery.succeeded()
        self.ctx.bus.flow.count(shot.input, counters.delivered(self.ctx.alias))
        self.count_latency(shot.input, shot.captured_at)

    def skipped(self, shot: Shot) -> None:
        """Not written, as wanted: the constant frame rate had no slot for it."""
        self.delivery.succeeded(filtered=True)
        self.ctx.bus.flow.count(shot.input, counters.filtered(self.ctx.alias))

    def lost(self, shot: Shot, reason: str) -> None:
        self.delivery.gave_up(reason, dropped=True)
        self.ctx.bus.flow.count(shot.input, counters.dropped(self.ctx.alias))
