"""NSQ backend: ``service.broker: nsq://host:4150[?lookupd=http://host:4161&http_port=4151]``.

Messages go through NsqBroker (a Dramatiq broker written for NSQ; none is maintained). nsqd keeps no
payloads beside its queues, so frames travel inline in the messages (``frames.store: broker`` or
``inline``) with flow state kept by NsqFlow, or live in Redis (``frames.store: redis://...``) with the
Redis backend's frame store and flow state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import redis
from dramatiq.errors import BrokerConnectionError

from ...config.schema import NSQD_DEFAULT_MAX_MSG_SIZE, ServiceOptions
from ...config.yamlpos import Loc
from ..base import Bus
from ..middleware import stage_middleware
from ..redis import TRANSIENT_ERRORS as REDIS_TRANSIENT_ERRORS
from ..redis import RedisFlow, RedisFrameStore, ping_redis, redis_client
from .broker import NsqBroker
from .flow import NsqFlow
from .frames import InlineFrameStore
from .http import NsqEndpoints

MIN_MSG_TIMEOUT_MS = 1000  # nsqd refuses less
RAW_BYTES_PER_PIXEL = 3  # BGR
REDIS_STORE_HINT = "keep frames in Redis with frames.store: redis://host:6379/0"


class NsqBus(Bus):
    frame_stores = ("broker", "inline", "redis")

    def __init__(self, url: str, service: ServiceOptions) -> None:
        self.endpoints = replace(
            NsqEndpoints.from_url(url), msg_timeout_ms=max(MIN_MSG_TIMEOUT_MS, int(service.heartbeat_timeout * 1000))
        )
        self.broker = NsqBroker(self.endpoints, middleware=stage_middleware())
        self.redis: redis.Redis | None = None
        if service.frames.inline:
            self.flow = NsqFlow(self.broker)
            self.frames = InlineFrameStore(self.flow, max_inline=service.frames.max_inline)
            self.transient_errors = (BrokerConnectionError,)
        else:
            self.redis = redis_client(service.frames.store)
            self.frames = RedisFrameStore(self.redis)
            self.flow = RedisFlow(self.redis)
            self.transient_errors = (BrokerConnectionError, *REDIS_TRANSIENT_ERRORS)

    @classmethod
    def check(cls, service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
        yield from super().check(service)
        if service.frames.inline:
            yield from _check_inline_frames(service)

    def ping(self) -> None:
        """Raise BusError unless nsqd (and nsqlookupd, and the Redis frame store) answer."""
        self.endpoints.ping()
        if self.redis is not None:
            ping_redis(self.redis, "frame store")

    def pending(self, queue: str) -> int:
        return self.broker.backlog(queue)[0]

    def close(self) -> None:
        super().close()
        if self.redis is not None:
            self.redis.close()


def _check_inline_frames(service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
    """Frames inside NSQ messages must fit under frames.max_inline, and that under nsqd's message size."""
    frames = service.frames
    if frames.max_inline > frames.max_message:
        limit = f"frames.max_message ({frames.max_message}, nsqd's --max-msg-size)"
        if "max_message" not in frames.model_fields_set:
            limit = f"nsqd's default --max-msg-size ({NSQD_DEFAULT_MAX_MSG_SIZE} bytes)"
        yield (
            ("service", "frames", "max_inline"),
            f"{frames.max_inline} is more than {limit}: nsqd would refuse frames that large; lower it, or run "
            "nsqd with a larger --max-msg-size and set frames.max_message to it, or " + REDIS_STORE_HINT,
        )
    if frames.format != "raw":
        return
    largest_side = math.isqrt(frames.max_inline // RAW_BYTES_PER_PIXEL)
    if frames.max_side is None:
        hd = 1280 * 720 * RAW_BYTES_PER_PIXEL
        reason = f"frames.max_side is not set, so nothing bounds their size (a 1280x720 frame is {hd} bytes)"
    elif frames.max_side > largest_side:
        worst = frames.max_side**2 * RAW_BYTES_PER_PIXEL
        reason = f"with frames.max_side: {frames.max_side} one can be {worst} bytes"
    else:
        return
    yield (
        ("service", "frames", "format"),
        f"raw frames travel inside NSQ messages and would not fit under frames.max_inline ({frames.max_inline}): "
        f"{reason}; use frames.format: jpeg (or auto), set frames.max_side to {largest_side} or less, or "
        + REDIS_STORE_HINT,
    )


__all__ = ["NsqBus"]
