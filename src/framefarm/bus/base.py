"""The seam between modules and a queue backend: one Bus per process, chosen by the broker URL's scheme."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import dramatiq

from ..config.schema import ServiceOptions
from ..errors import BusError
from .message import FrameMessage

DEFAULT_MAX_RETRIES = 8
DEFAULT_MIN_BACKOFF_MS = 500
DEFAULT_MAX_BACKOFF_MS = 30_000


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
        """The frame of ``message``: carried inline, or looked up by its key."""
        return message.frame if message.frame is not None else self.get(message.key)

    @abstractmethod
    def release(self, key: str, stream: str) -> bool:
        """One consumer is done; on the last release delete the frame and end its in-flight entry."""

    @abstractmethod
    def discard(self, key: str, stream: str) -> None:
        """Delete the frame now, whoever still holds it (a stale frame skipped before the outputs)."""


class Flow(ABC):
    """Per-stream bound on frames in flight, and the counters shown by ``pipectl status``."""

    @abstractmethod
    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        """Count ``key`` as in flight unless ``stream`` already has ``limit`` frames in flight."""

    @abstractmethod
    def next_seq(self, stream: str) -> int:
        """The stream's next sequence number, unique across restarts of its input."""

    @abstractmethod
    def in_flight(self, stream: str | None = None) -> int:
        """Frames in flight for ``stream``, or for every stream."""

    @abstractmethod
    def count(self, stream: str, counter: str, amount: int = 1) -> None:
        """Add to one of ``stream``'s counters (frames, dropped, stale, failed, delivered...)."""

    @abstractmethod
    def counters(self) -> dict[str, dict[str, int]]:
        """Every stream's counters."""

    def flush_counts(self) -> None:  # noqa: B027  (a hook: most backends write counts at once)
        """Write counts this process still holds (backends that batch them override this)."""


class Bus(ABC):
    """A Dramatiq broker plus its frame store and flow state."""

    broker: dramatiq.Broker
    frames: FrameStore
    flow: Flow
    #: The backend library's errors that mean "down for now, try again": reconnect loops catch these.
    transient_errors: tuple[type[Exception], ...] = ()

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        """Enqueue ``payload`` for the stage whose actor and queue are both named ``queue``."""
        self.broker.enqueue(
            dramatiq.Message(queue_name=queue, actor_name=queue, args=(payload,), kwargs={}, options={})
        )

    def declare_actor(self, queue: str, fn: Callable[[dict[str, Any]], None], **options: Any) -> dramatiq.Actor:
        """Declare the consuming actor of ``queue``; FrameMissing and stale frames are not retried."""
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

    def flush_counts(self) -> None:
        """Write the counts the flow still holds in this process; with the broker gone they are lost."""
        with contextlib.suppress(*self.transient_errors):
            self.flow.flush_counts()

    def close(self) -> None:
        self.flush_counts()
        self.broker.close()


BACKENDS: dict[str, Callable[[str, ServiceOptions], Bus]] = {}


def register_backend(*schemes: str) -> Callable[[Any], Any]:
    def decorate(factory: Any) -> Any:
        for scheme in schemes:
            BACKENDS[scheme] = factory
        return factory

    return decorate


def connect(url: str, service: ServiceOptions) -> Bus:
    """Build the Bus for ``url``; the scheme picks the backend."""
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        raise BusError(f'unsupported broker URL scheme "{scheme}" (supported: {", ".join(sorted(BACKENDS))})')
    return BACKENDS[scheme](url, service)
