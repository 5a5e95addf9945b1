"""Redis backend: Dramatiq's RedisBroker for messages, Redis keys with TTL for frames and flow state."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker

from ..config.schema import ServiceOptions
from ..errors import BusError, FrameMissing
from .base import Bus, Flow, FrameStore, register_backend
from .middleware import ReleaseFailedFrames, stage_middleware

NAMESPACE = "framefarm"
COUNTER_FLUSH_S = 0.5  # counters reach Redis at most this late (pipectl status)
MAINTENANCE_CHANCE = 50_000  # per million commands: reclaims a dead worker's messages within seconds

# KEYS: frame, refs, inflight zset. Deletes the frame on the last release and ends its in-flight entry.
# A frame stored for one consumer has no refs key: DECR of a missing key gives -1, the last release.
_RELEASE = """
local left = redis.call('decr', KEYS[2])
if left <= 0 then
  redis.call('del', KEYS[1], KEYS[2])
  redis.call('zrem', KEYS[3], KEYS[1])
  return 1
end
return 0
"""

# KEYS: inflight zset, scored by expiry. ARGV: now, expires_at, limit, member.
# Entries whose frame expired (nobody released it) are pruned first.
_ADMIT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[4])
return 1
"""


def _key(*parts: str) -> str:
    return ":".join((NAMESPACE, *parts))


class RedisFrameStore(FrameStore):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE)

    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        """One SET for a frame with one consumer (the release script counts a missing refs key as 1)."""
        ttl_ms = max(1, int(ttl * 1000))
        if refs == 1:
            self.client.set(key, data, px=ttl_ms)
            return {}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(key, data, px=ttl_ms)
            pipe.set(key + ":refs", refs, px=ttl_ms)
            pipe.execute()
        return {}

    def get(self, key: str) -> bytes:
        data = self.client.get(key)
        if data is None:
            raise FrameMissing(f"frame {key} expired or was released")
        return data

    def release(self, key: str, stream: str) -> bool:
        return bool(self._release(keys=[key, key + ":refs", _key("inflight", stream)]))

    def discard(self, key: str, stream: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key, key + ":refs")
            pipe.zrem(_key("inflight", stream), key)
            pipe.execute()


class RedisFlow(Flow):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(_ADMIT)
        self._pending: Counter[tuple[str, str]] = Counter()
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        now = time.time()
        return bool(self._admit(keys=[_key("inflight", stream)], args=[now, now + ttl, limit, key]))

    def next_seq(self, stream: str) -> int:
        return int(self.client.incr(_key("seq", stream)))

    def in_flight(self, stream: str | None = None) -> int:
        keys = [_key("inflight", stream)] if stream else list(self.client.scan_iter(_key("inflight", "*")))
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcard(key)
            return sum(pipe.execute()[1::2])

    def count(self, stream: str, counter: str, amount: int = 1) -> None:
        """Counted in this process and written every COUNTER_FLUSH_S: no round trip per frame."""
        with self._lock:
            self._pending[(stream, counter)] += amount
            due = time.monotonic() - self._flushed >= COUNTER_FLUSH_S
        if due:
            self.flush_counts()

    def flush_counts(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed = time.monotonic()
        if pending:
            with self.client.pipeline(transaction=False) as pipe:
                for (stream, counter), amount in pending.items():
                    pipe.hincrby(_key("stats", stream), counter, amount)
                pipe.execute()

    def counters(self) -> dict[str, dict[str, int]]:
        self.flush_counts()
        prefix = _key("stats", "")
        return {
            key.decode()[len(prefix) :]: {k.decode(): int(v) for k, v in self.client.hgetall(key).items()}
            for key in self.client.scan_iter(prefix + "*")
        }


class ReclaimingRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker that takes a new worker id after a lost connection.

    A message whose ack failed (the server was restarting) stays in this worker's set of fetched messages;
    with an unchanged id the worker keeps heartbeating and nobody would ever requeue it. Under a new id the
    old one falls silent, and maintenance (in any worker) requeues its messages after heartbeat_timeout:
    at-least-once, with at most a duplicate for a message that was in progress.
    """

    def _dispatch(self, command: str) -> Any:
        dispatch = super()._dispatch(command)

        def dispatch_or_rotate(queue_name: str, *args: Any) -> Any:
            try:
                return dispatch(queue_name, *args)
            except redis.ConnectionError:
                self.broker_id = str(uuid.uuid4())
                raise

        return dispatch_or_rotate


@register_backend("redis", "rediss", "unix")
class RedisBus(Bus):
    transient_errors = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

    def __init__(self, url: str, service: ServiceOptions) -> None:
        self.client = redis.Redis.from_url(url, health_check_interval=30)
        self.broker = ReclaimingRedisBroker(
            middleware=stage_middleware(),
            client=self.client,
            namespace=NAMESPACE,
            heartbeat_timeout=int(service.heartbeat_timeout * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
        )
        self.frames = RedisFrameStore(self.client)
        self.flow = RedisFlow(self.client)
        self.broker.add_middleware(ReleaseFailedFrames(self.frames, self.flow))

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise BusError(f"broker does not answer: {exc}") from exc

    def pending(self, queue: str) -> int:
        return int(self.client.llen(f"{NAMESPACE}:{queue}"))
