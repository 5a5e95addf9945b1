"""What every input kind shares: the reconnect loop around ``read`` and the publisher that puts frames on the bus."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import TypeVar

from ..backoff import Backoff
from ..bus.base import frame_key
from ..config.schema import InputOptions
from ..errors import BusError, SourceError
from ..message import FrameMessage
from ..modules import counters
from ..modules.base import Module
from ..modules.context import ModuleContext

ADMIT_POLL_S = 0.02  # how often a lossless input that hit max_in_flight looks again

IO = TypeVar("IO", bound=InputOptions)


class Input(Module[IO]):
    """An input kind implements ``read``; the base reconnects it with backoff whenever its source fails.

    The backoff grows with jitter up to ``reconnect.max`` while attempts publish nothing, and starts over at
    ``reconnect.initial`` once a frame was published: a dead camera is not hammered, a flaky one recovers fast.
    """

    def __init__(self, ctx: ModuleContext[IO]) -> None:
        super().__init__(ctx)
        self.publisher = Publisher(ctx)

    @abstractmethod
    def read(self, stop: threading.Event) -> None:
        """Read the source and publish its frames until ``stop`` is set.

        Raise SourceUnavailable (cannot open), SourceStalled (open but silent) or another SourceError to be
        reconnected with backoff; returning before ``stop`` means the source ended, and it is opened again.
        """

    def run(self, stop: threading.Event) -> None:
        reconnect = self.options.reconnect
        backoff = Backoff(initial=reconnect.initial, maximum=reconnect.max)
        retryable = (SourceError, BusError, *self.ctx.bus.transient_errors)
        while not stop.is_set():
            published = self.publisher.published
            try:
                self.ctx.bus.ping()
                self.read(stop)
                reason = "the source ended"
            except retryable as exc:
                reason = str(exc) or type(exc).__name__
            if stop.is_set():
                return
            if self.publisher.published > published:
                backoff.reset()
            delay = backoff.next_delay()
            self.ctx.bus.flow.count(self.ctx.alias, counters.RECONNECTS)
            self.ctx.log.warning("%s; reconnecting in %.1fs (attempt %d)", reason, delay, backoff.attempts)
            stop.wait(delay)


class Publisher:
    """Stores a frame's bytes and sends its message to the first stage of its route.

    Live inputs drop a frame (and count it) when the stream already has ``max_in_flight`` frames in the
    pipeline; lossless (file) inputs wait instead, so nothing is lost and memory stays bounded.
    """

    def __init__(self, ctx: ModuleContext[InputOptions]) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.lossless = type(self.options).lossless
        self.ttl = ctx.service.frames.lossless_ttl if self.lossless else ctx.service.frames.ttl
        self.first_hop = ctx.routes.first_hop(self.options.tag)
        self.refs = len(ctx.routes.outputs_for(self.options.tag))
        self.published = 0  # frames put on the bus by this process: progress, for the reconnect backoff

    def publish(
        self,
        data: bytes,
        *,
        fmt: str,
        width: int,
        height: int,
        source: str,
        stop: threading.Event,
        pts: float | None = None,
        frame_index: int | None = None,
        captured_at: float | None = None,
        scale: float = 1.0,
    ) -> bool:
        """Put one encoded frame on the bus; False when it was dropped (live) or ``stop`` came first."""
        bus, alias = self.ctx.bus, self.ctx.alias
        key = frame_key(alias)
        bus.flow.count(alias, counters.FRAMES_IN)
        while not bus.flow.admit(alias, key, limit=self.options.max_in_flight, ttl=self.ttl):
            if not self.lossless:
                bus.flow.count(alias, counters.DROPPED_FULL)
                return False
            if stop.wait(ADMIT_POLL_S):
                return False
        captured_at = captured_at or time.time()
        message = FrameMessage(
            stream=self.options.tag,
            input=alias,
            source=source,
            seq=bus.flow.next_seq(alias),
            pts=pts,
            frame_index=frame_index,
            captured_at=captured_at,
            width=width,
            height=height,
            scale=scale,
            key=key,
            format=fmt,
            expires_at=captured_at + self.options.max_age if self.options.max_age else None,
        )
        inline = bus.frames.put(key, data, ttl=self.ttl, refs=self.refs)
        payload = {**message.model_dump(exclude_none=True), **inline}
        for queue in self.first_hop:
            bus.send(queue, payload)
        bus.flow.count(alias, counters.PUBLISHED)
        self.published += 1
        return True
