"""Redis backend (``redis://``, ``rediss://``, ``unix://``): Dramatiq's RedisBroker for messages, Redis keys with
a TTL for frames, and flow state in Redis too."""

from __future__ import annotations

import redis

from ...config.schema import ServiceOptions
from ...errors import BusError
from ..base import NAMESPACE, Bus
from ..middleware import stage_middleware
from .broker import ReclaimingRedisBroker
from .flow import RedisFlow
from .frames import RedisFrameStore

MAINTENANCE_CHANCE = 50_000  # per million commands: reclaims a dead worker's messages within seconds
HEALTH_CHECK_INTERVAL_S = 30

#: redis-py errors that mean "down for now, try again".
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=HEALTH_CHECK_INTERVAL_S)


def ping_redis(client: redis.Redis, what: str) -> None:
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BusError(f"{what} does not answer: {exc}") from exc


class RedisBus(Bus):
    transient_errors = TRANSIENT_ERRORS
    frame_stores = ("broker", "redis")

    def __init__(self, url: str, service: ServiceOptions) -> None:
        self.client = redis_client(url)
        self.broker = ReclaimingRedisBroker(
            middleware=stage_middleware(),
            client=self.client,
            namespace=NAMESPACE,
            heartbeat_timeout=int(service.heartbeat_timeout * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
        )
        store = self.client if service.frames.store_kind == "broker" else redis_client(service.frames.store)
        self.frames = RedisFrameStore(store)
        self.flow = RedisFlow(store)

    def ping(self) -> None:
        ping_redis(self.client, "broker")

    def pending(self, queue: str) -> int:
        return int(self.client.llen(f"{NAMESPACE}:{queue}"))


__all__ = ["RedisBus", "RedisFlow", "RedisFrameStore", "ping_redis", "redis_client"]
