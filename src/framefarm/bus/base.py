"""The seam between modules and a queue backend: one Bus per process, chosen by the broker URL's scheme.

A backend provides three things with the same face: a plain Dramatiq broker (messages), a FrameStore (the
bytes of frames, beside the broker or inside its messages) and a Flow (per-stream in-flight bounds,
sequence numbers, counters and each stream's latest reported state). Nothing here knows module kinds or routing.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import dramatiq

from ..config.schema import ServiceOptions
from ..config.yamlpos import Loc
from ..errors import BadInput, BusError
from ..message import FrameMessage
from .counts import BatchedCounts, Deltas, Reports

#: Every key, subject and stream framefarm creates on a broker starts with this.
NAMESPACE = "framefarm"

#: The message field that carries an inline frame's bytes (FrameMessage.frame).
INLINE_FIELD = "frame"

DEFAULT_MAX_RETRIES = 8
DEFAULT_MIN_BACKOFF_MS = 500
DEFAULT_MAX_BACKOFF_MS = 30_000


def frame_key(stream: str) -> str:
    """A new, unique frame-store key for a frame of ``stream``; its last ``:``-part is the frame's id."""
    return f"{NAMESPACE}:frame:{stream}:{uuid.uuid4().hex}"


class FrameTooLarge(BadInput):
    """An encoded frame is larger than ``frames.max_inline``: it cannot travel inside a message."""


class FrameStore(ABC):
    """Frame bytes with a TTL, released when the last consumer is done."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        """Store ``data`` under ``key`` for at most ``ttl`` seconds, to be released ``refs`` times.

        Returns fields to merge into the frame's message: empty for a real store, the bytes themselves
        for a store that keeps frames inline in the message.
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The frame's bytes. Raises FrameMissing when it expired or was released."""

    def fetch(self, message: FrameMessage) -> bytes:
        """The frame of ``message``: carried inline, or looked up by its key. Modules always use this."""
        return message.frame if message.frame is not None else self.get(message.key)

    @abstractmethod
    def release(self, key: str, stream: str) -> bool:
        """One consumer is done; on the last release delete the frame and end its in-flight entry."""

    @abstractmethod
    def discard(self, key: str, stream: str) -> None:
        """Delete the frame now, whoever still holds it (a stale frame skipped before the outputs)."""


class Flow(ABC):
    """Per-stream bound on frames in flight, the counters and the latest state shown by ``pipectl status``.

    Counts and reports are batched in the process (bus/counts.py); a backend writes a batch of counts in
    ``write_counts`` and of reports in ``write_reports``.
    """

    def __init__(self) -> None:
        self.counts = BatchedCounts(self.write_counts, name=type(self).__name__, write_reports=self.write_reports)

    @abstractmethod
    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        """Count ``key`` as in flight unless ``stream`` already has ``limit`` frames in flight."""

    @abstractmethod
    def next_seq(self, stream: str) -> int:
        """The stream's next sequence number, unique across restarts of its input."""

    def admit_numbered(self, stream: str, key: str, *, limit: int, ttl: float) -> int | None:
        """``admit``, then the frame's ``next_seq``; None (and no number taken) when there is no room. A backend
        that can do both in one round trip does."""
        return self.next_seq(stream) if self.admit(stream, key, limit=limit, ttl=ttl) else None

    @abstractmethod
    def in_flight(self, stream: str | None = None) -> int:
        """Frames in flight for ``stream``, or for every stream."""

    def count(self, stream: str, counter: str, amount: int = 1) -> None:
        """Add to one of ``stream``'s counters (names in framefarm.modules.counters); written within a period."""
        self.counts.add(stream, counter, amount)

    def flush_counts(self) -> None:
        """Write the counts this process still holds now."""
        self.counts.flush()

    @abstractmethod
    def write_counts(self, deltas: Deltas) -> None:
        """Add ``deltas`` to the shared totals; raise to keep them for the next try."""

    @abstractmethod
    def counters(self) -> dict[str, dict[str, int]]:
        """Every stream's counters, including what this process had not written yet."""

    def report(self, stream: str, fields: dict[str, Any]) -> None:
        """Make ``fields`` (JSON values) ``stream``'s latest state, stamped ``at`` (wall clock); written within a
        period, like the counts. A live input reports its connection state, rates and last error this way; a
        newer report replaces an older one whole, it is never merged."""
        self.counts.report(stream, {**fields, "at": time.time()})

    @abstractmethod
    def write_reports(self, reports: Reports) -> None:
        """Make each of ``reports`` its stream's latest state where it is newer (its ``at``) than the one kept;
        raise to keep them for the next try."""

    @abstractmethod
    def reports(self) -> Reports:
        """Every stream's latest state, including what this process had not written yet."""

    def close(self) -> None:
        """Write the remaining counts and stop background work; the bus closes the connection after."""
        self.counts.close()


class Bus(ABC):
    """A Dramatiq broker plus its frame store and flow state."""

    broker: dramatiq.Broker
    frames: FrameStore
    flow: Flow
    #: The backend library's errors that mean "down for now, try again": reconnect loops catch these.
    transient_errors: tuple[type[Exception], ...] = ()
    #: The ``frames.store`` kinds this backend supports: broker, inline, redis.
    frame_stores: ClassVar[tuple[str, ...]] = ("broker", "redis")

    @classmethod
    def check(cls, service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
        """Yield what this backend cannot do of ``service`` (``pipectl -t``, start and reload run it)."""
        kind = service.frames.store_kind
        if kind not in cls.frame_stores:
            yield (
                ("service", "frames", "store"),
                f"{kind} is not a frame store of {cls.__name__} (it has: {', '.join(cls.frame_stores)})",
            )

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        """Enqueue ``payload`` for the stage whose actor and queue are both named ``queue``."""
        self.broker.enqueue(
            dramatiq.Message(queue_name=queue, actor_name=queue, args=(payload,), kwargs={}, options={})
        )

    def declare_actor(self, queue: str, fn: Callable[[dict[str, Any]], None], **options: Any) -> dramatiq.Actor:
        """Declare the consuming actor of ``queue`` (options: Dramatiq's, e.g. max_retries, min_backoff)."""
        options.setdefault("max_retries", DEFAULT_MAX_RETRIES)
        options.setdefault("min_backoff", DEFAULT_MIN_BACKOFF_MS)
        options.setdefault("max_backoff", DEFAULT_MAX_BACKOFF_MS)
        return dramatiq.actor(fn, broker=self.broker, actor_name=queue, queue_name=queue, **options)

    @abstractmethod
    def ping(self) -> None:
        """Raise BusError unless the broker answers."""

    @abstractmethod
    def pending(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not counting delayed or in-progress ones)."""

    def close(self) -> None:
        """Write the flow's last counts, then close the broker; with the broker gone the counts are lost."""
        with contextlib.suppress(*self.transient_errors, BusError):
            self.flow.close()
        self.broker.close()
