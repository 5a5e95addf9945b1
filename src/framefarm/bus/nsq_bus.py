"""NSQ backend: ``service.broker: nsq://host:4150[?lookupd=http://host:4161]``.

Messages go through NsqBroker (a Dramatiq broker written for NSQ; none is maintained). nsqd keeps no
payloads beside its queues, so frames travel inline in the messages (``frames.store: broker`` or
``inline``) with flow state kept by NsqFlow, or live in Redis (``frames.store: redis://...``) with the
Redis backend's frame store and flow state.
"""

from __future__ import annotations

from dataclasses import replace

import redis
from dramatiq.errors import BrokerConnectionError

from ..config.schema import ServiceOptions
from ..errors import BusError
from .base import Bus, register_backend
from .middleware import ReleaseFailedFrames, stage_middleware
from .nsq_broker import NsqBroker
from .nsq_flow import NsqFlow
from .nsq_http import NsqEndpoints
from .nsq_store import InlineFrameStore
from .redis_bus import RedisBus, RedisFlow, RedisFrameStore

MIN_MSG_TIMEOUT_MS = 1000  # nsqd refuses less


@register_backend("nsq")
class NsqBus(Bus):
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
            self.redis = redis.Redis.from_url(service.frames.store, health_check_interval=30)
            self.frames = RedisFrameStore(self.redis)
            self.flow = RedisFlow(self.redis)
            self.transient_errors = (BrokerConnectionError, *RedisBus.transient_errors)
        self.broker.add_middleware(ReleaseFailedFrames(self.frames, self.flow))

    def ping(self) -> None:
        """Raise BusError unless nsqd (and nsqlookupd, and the Redis frame store) answer."""
        self.endpoints.ping()
        if self.redis is not None:
            try:
                self.redis.ping()
            except redis.RedisError as exc:
                raise BusError(f"frame store does not answer: {exc}") from exc

    def pending(self, queue: str) -> int:
        return self.broker.backlog(queue)[0]

    def close(self) -> None:
        self.flush_counts()
        if isinstance(self.flow, NsqFlow):
            self.flow.close()
        self.broker.close()
        if self.redis is not None:
            self.redis.close()
