"""NATS JetStream backend (``service.broker: nats://host:4222``): queues, frame store and flow state.

One NatsLink per process: a nats-py connection driven by an asyncio loop in a daemon thread for JetStream's
management API, and a small synchronous client of framefarm's own (wire.py) for everything done per message:
publishes, pull consumers and acks, frames and flow state, each from the thread that needs it.

- Delays and retries use Dramatiq's ``q.DQ`` convention, as its Redis and RabbitMQ brokers do: Retries puts a
  failed message on the delay queue with an ``eta``, the worker holds it until then and moves it to ``q``,
  exhausted retries are nacked into the dead-letter stream. Not JetStream's nak-with-delay: each nak counts
  as a delivery and holds an ack-pending slot of the shared consumer while it waits, so a backlog of retries
  (a receiver down for minutes) would starve fresh frames.
- ``ack_wait`` defaults to ``service.heartbeat_timeout``: held deliveries get in-progress acks, so it means
  what it means for Redis: how long a dead worker's messages wait.
- Server restarts: file storage keeps streams, consumers and pending acks; nats-py reconnects the link, the
  wire connects again at the next request, consumers raise ConnectionClosed when their socket closes and
  Dramatiq builds new ones.
- Frames travel inline in their messages when they fit (frames.py), else on a stream used as a map
  (chunks.py); flow state (flow.py) lives on another, with compare-and-set writes. ``frames.store: inline``
  refuses a frame that does not fit instead of storing it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import dramatiq.errors
import nats.js.errors
import redis

from ...config.schema import ServiceOptions
from ...config.yamlpos import Loc
from ...errors import BusError
from ..base import Bus
from ..middleware import stage_middleware
from ..redis import TRANSIENT_ERRORS as REDIS_TRANSIENT_ERRORS
from ..redis import RedisFlow, RedisFrameStore, ping_redis, redis_client
from .broker import CONSUMER, DEFAULT_MAX_DELIVERIES, NatsBroker
from .flow import NatsFlow
from .frames import NatsFrameStore
from .jetstream import TRANSIENT_ERRORS, run_for_store, stream_name
from .link import DEFAULT_RECONNECT_WAIT_S, NatsLink, servers_of

MIN_ACK_WAIT_S = 1.0
RAW_BYTES_PER_PIXEL = 3  # BGR


class NatsBus(Bus):
    """Dramatiq on JetStream, with the frame store and flow state on JetStream too; one connection."""

    transient_errors: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, dramatiq.errors.ConnectionClosed)
    frame_stores = ("broker", "inline", "redis")
    redis: redis.Redis | None = None

    def __init__(
        self,
        url: str,
        service: ServiceOptions,
        *,
        ack_wait: float | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        reconnect_wait: float = DEFAULT_RECONNECT_WAIT_S,
    ) -> None:
        self.link = NatsLink(servers_of(url), reconnect_wait=reconnect_wait)
        ack_wait = max(MIN_ACK_WAIT_S, service.heartbeat_timeout if ack_wait is None else ack_wait)
        self.broker = NatsBroker(
            self.link, ack_wait=ack_wait, max_deliveries=max_deliveries, middleware=stage_middleware()
        )
        frames = service.frames
        if frames.inline:
            self.flow = NatsFlow(self.link)
            self.frames = NatsFrameStore(
                self.link,
                self.flow,
                max_age=max(frames.ttl, frames.lossless_ttl),
                max_inline=frames.max_inline,
                inline_only=frames.store == "inline",
            )
        else:  # a redis:// URL: frames and the flow state that their release updates live there together
            self.redis = redis_client(service.frames.store)
            self.frames, self.flow = RedisFrameStore(self.redis), RedisFlow(self.redis)
            self.transient_errors = (*self.transient_errors, *REDIS_TRANSIENT_ERRORS)

    @classmethod
    def check(cls, service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
        yield from super().check(service)
        if service.frames.store == "inline":
            yield from _check_inline_only(service)

    def ping(self) -> None:
        try:
            run_for_store(self.link, self._account())
        except BusError as exc:
            raise BusError(f"broker does not answer: {exc}") from exc
        if self.redis is not None:
            ping_redis(self.redis, "frame store")

    async def _account(self) -> None:
        await (await self.link.jetstream()).account_info()  # fails unless JetStream is enabled

    def pending(self, queue: str) -> int:
        return run_for_store(self.link, self._pending(queue))

    async def _pending(self, queue: str) -> int:
        """Stored messages minus those delivered and not acked (the consumer's own count of undelivered ones
        lags a publish that just returned)."""
        js = await self.link.jetstream()
        try:
            stored = (await js.stream_info(stream_name(queue))).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        try:
            return max(0, stored - (await js.consumer_info(stream_name(queue), CONSUMER)).num_ack_pending)
        except nats.js.errors.NotFoundError:
            return stored

    def close(self) -> None:
        """Counts first (they need the connection), then the broker, the Redis store and the connection."""
        with contextlib.suppress(Exception):
            self.flow.close()
        self.broker.close()
        if self.redis is not None:
            self.redis.close()
        self.link.close()


def _check_inline_only(service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
    """With ``frames.store: inline`` every frame must fit under frames.max_inline: raw frames need a bounding
    ``frames.max_side`` (the server's max payload is only known once connected; put checks it too)."""
    frames = service.frames
    if service.frame_format != "raw":
        return
    largest_side = math.isqrt(frames.max_inline // RAW_BYTES_PER_PIXEL)
    if frames.max_side is not None and frames.max_side <= largest_side:
        return
    yield (
        ("service", "frames", "format"),
        f"raw frames would not fit inside NATS messages under frames.max_inline ({frames.max_inline}) with "
        f"frames.store: inline; use frames.format: jpeg, set frames.max_side to {largest_side} or less, or use "
        "frames.store: broker (inline when a frame fits, else on a JetStream stream)",
    )


__all__ = ["NatsBus"]
