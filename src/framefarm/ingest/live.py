"""What every live input shares: a reader thread that decodes continuously, the newest frame handed to the sender,
a stall watchdog, and the state it reports. Kinds (rtsp, rtmp, mjpeg) only open, read and encode.

Why a reader thread: a camera does not wait. If the thread that reads the socket also waited for the pipeline,
frames would pile up in the socket and the decoder, and latency would grow with every second of overload. Here the
reader decodes every frame as it comes and puts it in a one-frame hand-off; the sender takes the newest frame
whenever the stream has room under ``max_in_flight`` and publishes it. A frame replaced in the hand-off before it
was sent is dropped and counted: ``dropped_full`` while the sender waited for room, ``dropped_stale`` while it was
busy encoding or publishing the one before. Nothing is queued, so a frame is never older than one frame interval
plus the time it takes to send one.

The sender is also the watchdog: no frame for ``stall_timeout`` (since the last frame, or since frames were
expected) raises SourceStalled, even while the reader sits in a read that a half-dead peer keeps open, and the
Input base reconnects with backoff. The reader is told to stop and is not waited for longer than READER_JOIN_S:
every blocking call it makes is bounded by ``open_timeout`` or ``read_timeout``, so it ends soon after on its own.

Each frame a live input decodes is counted once in ``frames_in``: by the publisher when it is sent (``published``
or, in a race for the last slot, ``dropped_full``), else here with the reason it was not (``dropped_full``,
``dropped_stale``, ``skipped_fps``, ``failed``).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field

from ..config.schema import InputOptions
from ..config.types import Duration
from ..errors import BadInput, SourceStalled
from ..modules import counters
from ..modules.context import ModuleContext
from .base import Input
from .livestate import CONNECTING, LiveState
from .video import FpsLimiter, capped_rate

DEFAULT_STALL_TIMEOUT_S = 10.0
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 5.0
DEFAULT_FAILED_AFTER = 3
DEFAULT_LOG_EVERY_S = 60.0
ROOM_POLL_S = 0.02  # how often a sender waiting for room under max_in_flight looks again
READER_JOIN_S = 1.0  # how long an ending attempt waits for its reader before leaving it to its timeouts


class LiveOptions(InputOptions):
    """Options every live input has; a kind adds its ``name``, its URL and its protocol's options."""

    fps: float | None = Field(
        None, gt=0, description="Send at most this many frames per second (by timestamp); all if unset."
    )
    stall_timeout: Duration = Field(
        DEFAULT_STALL_TIMEOUT_S,
        gt=0,
        description="No frame for this long means reconnect, even while the connection stays open.",
    )
    open_timeout: Duration = Field(
        DEFAULT_OPEN_TIMEOUT_S, gt=0, description="Longest wait to connect and get the stream's description."
    )
    read_timeout: Duration = Field(
        DEFAULT_READ_TIMEOUT_S, gt=0, description="Longest wait for any read on an open connection."
    )
    failed_after: int = Field(
        DEFAULT_FAILED_AFTER,
        ge=1,
        description="Attempts in a row without a frame before the state says `failed` (it keeps retrying).",
    )
    log_every: Duration = Field(
        DEFAULT_LOG_EVERY_S,
        ge=0,
        description="Log a line with the state, rates and drops this often; 0: only when the state changes.",
    )


@dataclass(frozen=True)
class Captured:
    """A frame as the reader decoded it: what the kind's ``encode`` takes, and when it was captured."""

    item: Any  # an av.VideoFrame, the bytes of a JPEG: whatever the kind's encode takes
    captured_at: float  # wall clock when it was decoded
    pts: float | None = None  # its timestamp in the stream, when the stream has them
    rate: float | None = None  # the stream's frame rate, when it says
    detail: str = ""  # what streams (codec, size): logged with the first frame of an attempt

    @property
    def clock(self) -> float:
        """The time the fps limit spaces frames by: the stream's own, else the capture time."""
        return self.pts if self.pts is not None else self.captured_at


class Session:
    """One attempt at the source: the hand-off between reader and sender, the stall clock, how it ended."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # set by the sender: the reader ends at its next chance
        self._cond = threading.Condition()
        self._latest: Captured | None = None
        self._ended = False
        self.error: BaseException | None = None
        self.expecting = True  # frames are due: False while a listener waits for its publisher
        self.watched_since = time.monotonic()  # the stall clock: last frame, or when frames became due
        self.full = False  # the sender is waiting for room: a frame replaced now is dropped_full

    def hand(self, captured: Captured) -> Captured | None:
        """Make ``captured`` the newest frame; returns the one it replaced, never sent."""
        with self._cond:
            replaced, self._latest = self._latest, captured
            self.watched_since = time.monotonic()
            self._cond.notify()
            return replaced

    def expect(self, due: bool) -> None:
        """Frames are due from now (a publisher connected), or not (a listener waits): restarts the stall clock."""
        with self._cond:
            self.expecting, self.watched_since = due, time.monotonic()

    def finish(self, error: BaseException | None) -> None:
        """The reader is done: the source ended (``None``) or failed."""
        with self._cond:
            self._ended, self.error = True, error
            self._cond.notify()

    def wait(self, timeout: float) -> Captured | None:
        """The newest frame, left in place, after waiting up to ``timeout`` for one; None if none came."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self._ended, max(0.0, timeout))
            return self._latest

    def take(self) -> Captured | None:
        with self._cond:
            captured, self._latest = self._latest, None
            return captured

    @property
    def ended(self) -> bool:
        return self._ended

    def stalled_for(self) -> float:
        """Seconds without a frame while frames were due; 0 while none are due."""
        return time.monotonic() - self.watched_since if self.expecting else 0.0


LO = TypeVar("LO", bound=LiveOptions)


class LiveInput(Input[LO]):
    """A live source: a kind implements ``source``, ``capture`` and ``encode``; this base does the rest."""

    def __init__(self, ctx: ModuleContext[LO]) -> None:
        super().__init__(ctx)
        self.state = LiveState(
            ctx.bus.flow,
            ctx.alias,
            self.source,
            ctx.log,
            failed_after=self.options.failed_after,
            log_every=self.options.log_every,
        )
        self.limiter = FpsLimiter(self.options.fps)

    @property
    @abstractmethod
    def source(self) -> str:
        """The source as results and logs name it: its URL without the password."""

    @abstractmethod
    def capture(self, session: Session) -> Iterator[Captured]:
        """Open the source and yield its frames as they are decoded, until it ends or ``session.stop`` is set.

        Runs in the reader thread. Bound every blocking call by ``open_timeout`` or ``read_timeout``. Raise
        SourceUnavailable (cannot open, connection lost) or another SourceError, with a message that holds no
        password; returning means the source ended. Call ``session.expect(False)`` while waiting for a peer
        that may take its time (a listener), ``session.expect(True)`` once it is there.
        """

    @abstractmethod
    def encode(self, captured: Captured) -> tuple[bytes, dict[str, Any]]:
        """The frame as the store keeps it, and ``fmt``, ``width``, ``height`` and ``scale`` for publish.
        Raise BadInput for a frame that cannot be encoded: it is dropped and counted ``failed``."""

    def first_state(self) -> str:
        """The state an attempt starts in: ``connecting``, or ``listening`` for a listener."""
        return CONNECTING

    def read(self, stop: threading.Event) -> None:
        session = Session()
        self.state.attempt(self.first_state())
        reader = threading.Thread(target=self._read_source, args=(session,), name=f"{self.ctx.alias}-reader")
        reader.daemon = True  # a reader blocked in a read ends with its read timeout, never keeps the process
        reader.start()
        error: BaseException | None = None
        try:
            self._send(session, stop)
        except BaseException as exc:
            error = exc
            raise
        finally:
            session.stop.set()
            reader.join(READER_JOIN_S)
            left = session.take()
            if left is not None:
                self._drop(counters.DROPPED_STALE)
            if not stop.is_set():
                self.state.ended(error or session.error)
            elif reader.is_alive():
                self.ctx.log.info("the reader is still in a read; its read_timeout ends it")

    # -- reader thread --

    def _read_source(self, session: Session) -> None:
        try:
            for captured in self.capture(session):
                if session.stop.is_set():  # the attempt was given up (a stall): its late frames count for nothing
                    break
                self._take_in(session, captured)
        except Exception as exc:  # handed to the sender, which raises it in the input's own thread
            session.finish(exc)
        else:
            session.finish(None)

    def _take_in(self, session: Session, captured: Captured) -> None:
        self.state.decoded_frame(captured.detail)
        if not self.limiter.wants(captured.clock):
            self._drop(counters.SKIPPED_FPS)
            return
        self.limiter.taken(captured.clock)
        if session.hand(captured) is not None:
            self._drop(counters.DROPPED_FULL if session.full else counters.DROPPED_STALE)

    def _drop(self, reason: str) -> None:
        """A frame that will not reach ``publish``: counted in ``frames_in`` here, with the reason."""
        flow, alias = self.ctx.bus.flow, self.ctx.alias
        flow.count(alias, counters.FRAMES_IN)
        flow.count(alias, reason)
        self.state.dropped(reason)

    # -- sender (the input's own thread) --

    def _send(self, session: Session, stop: threading.Event) -> None:
        while not stop.is_set():
            captured = self._next(session, stop)
            if captured is None:
                break
            try:
                data, kwargs = self.encode(captured)
            except BadInput as exc:
                self.ctx.log.warning("%s: a frame cannot be encoded: %s", self.source, exc)
                self._drop(counters.FAILED)
                continue
            sent = self.publisher.publish(
                data, **kwargs, source=self.source, stop=stop, pts=captured.pts, captured_at=captured.captured_at,
                rate=capped_rate(captured.rate, self.options.fps),
            )  # fmt: skip
            if sent:
                self.state.published()
            else:
                self.state.dropped(sent.value)
            self.state.tick()

    def _next(self, session: Session, stop: threading.Event) -> Captured | None:
        """The newest frame once the stream has room; None when the reader ended (raising what it raised) or
        ``stop`` came. SourceStalled when frames were due and none came for ``stall_timeout``."""
        stall_timeout = self.options.stall_timeout
        while not stop.is_set():
            captured = session.wait(min(ROOM_POLL_S * 10, stall_timeout - session.stalled_for()))
            self.state.tick()
            if captured is None and session.ended:
                return self._ended(session)
            if session.stalled_for() >= stall_timeout:  # also while a frame waits for room: it is that old
                raise SourceStalled(f"no frame for {stall_timeout:g}s from {self.source}")
            if captured is None:
                continue
            if not self._room():
                session.full = True
                stop.wait(ROOM_POLL_S)
                continue
            session.full = False
            return session.take()
        return None

    def _ended(self, session: Session) -> None:
        if session.error is not None:
            raise session.error
        return None

    def _room(self) -> bool:
        """Whether the stream has fewer than ``max_in_flight`` frames in the pipeline (checked before encoding,
        so a full pipeline costs no encoding; ``publish`` still enforces the bound). With outputs that show every
        frame (taps), a frame is always worth encoding: ``publish`` sends it to them when the detectors are full."""
        return self.publisher.taps or self.ctx.bus.flow.in_flight(self.ctx.alias) < self.options.max_in_flight
