"""NATS JetStream backend (``service.broker: nats://host:4222``): queues, frame store and flow state.

One NatsLink per process: one nats-py connection driven by one asyncio loop in a daemon thread. Dramatiq's
consumer and worker threads and the modules' threads submit coroutines to it and wait for their results.

- Delays and retries use Dramatiq's ``q.DQ`` convention, as its Redis and RabbitMQ brokers do: Retries puts a
  failed message on the delay queue with an ``eta``, the worker holds it until then and moves it to ``q``,
  exhausted retries are nacked into the dead-letter stream. Not JetStream's nak-with-delay: each nak counts
  as a delivery and holds an ack-pending slot of the shared consumer while it waits, so a backlog of retries
  (a receiver down for minutes) would starve fresh frames.
- ``ack_wait`` defaults to ``service.heartbeat_timeout``: held deliveries get in-progress acks, so it means
  what it means for Redis: how long a dead worker's messages wait.
- Server restarts: nats-py reconnects; file storage keeps streams, consumers and pending acks; consumers
  raise ConnectionClosed on a disconnect and Dramatiq rebuilds them.
- Frames (nats_store.py) and flow state (NatsFlow) live on streams used as maps, with compare-and-set writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dramatiq.errors
import nats
import nats.errors
import nats.js.errors
import redis
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from ..config.schema import ServiceOptions
from ..errors import BusError
from .base import Bus, Flow, register_backend
from .middleware import ReleaseFailedFrames, stage_middleware
from .nats_broker import CONSUMER, DEFAULT_MAX_DELIVERIES, NatsBroker
from .nats_store import (
    NAMESPACE,
    TRANSIENT_ERRORS,
    NatsFrameStore,
    SubjectMap,
    run_for_store,
    stream_name,
    token,
    untoken,
)
from .redis_bus import RedisBus, RedisFlow, RedisFrameStore

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_REQUEST_TIMEOUT_S = 5.0  # one request to the server
DEFAULT_CALL_TIMEOUT_S = 30.0  # one call from a thread: several requests, or a connect
DEFAULT_RECONNECT_WAIT_S = 0.5
CONNECT_TIMEOUT_S = 2.0  # one attempt; a first connect tries until the call timeout
PING_INTERVAL_S = 5.0  # with MAX_OUTSTANDING_PINGS, a dead connection is noticed within about 15 s
MAX_OUTSTANDING_PINGS = 3
MIN_ACK_WAIT_S = 1.0
CLOSE_TIMEOUT_S = 5.0
COUNT_FLUSH_S = 0.5  # counters are summed in-process and written this often (and on read and close)


class NatsLink:
    """One NATS connection, driven by an asyncio loop in a daemon thread; other threads submit coroutines."""

    def __init__(
        self,
        servers: list[str],
        *,
        name: str = "framefarm",
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
        reconnect_wait: float = DEFAULT_RECONNECT_WAIT_S,
    ) -> None:
        self.servers = servers
        self.name = name
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.reconnect_wait = reconnect_wait
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nats-link", daemon=True)
        self._thread.start()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._closed = False

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result; raises what it raises (TimeoutError past the timeout)."""
        if self._closed:
            coro.close()
            raise nats.errors.ConnectionClosedError
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("NatsLink.call from the link's own loop would wait for itself forever")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout or self.call_timeout)
        except TimeoutError:
            if not future.cancel():  # it finished: the timeout is its own
                raise
            raise nats.errors.TimeoutError from None

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Start ``coro`` on the loop without waiting for it."""
        if self._closed:
            coro.close()
            raise nats.errors.ConnectionClosedError
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, callback: Callable[[], Any]) -> None:
        if not self._closed:
            self.loop.call_soon_threadsafe(callback)

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        """Run ``listener`` on the loop whenever the connection drops (nats-py then reconnects by itself)."""
        self._disconnect_listeners.append(listener)

    async def client(self) -> Client:
        """The connection, made on first use: building a bus never fails because the server is down."""
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await self._connect()
                self._js = self._nc.jetstream(timeout=self.timeout)
        return self._nc

    async def jetstream(self) -> JetStreamContext:
        await self.client()
        assert self._js is not None
        return self._js

    async def _connect(self) -> Client:
        nc = Client()
        try:
            await nc.connect(
                servers=self.servers,
                name=self.name,
                connect_timeout=CONNECT_TIMEOUT_S,
                reconnect_time_wait=self.reconnect_wait,
                max_reconnect_attempts=-1,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except BaseException:  # cancelled by the call timeout, or refused
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return nc

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._closed:
            return
        log.warning("NATS connection lost; reconnecting")
        for listener in self._disconnect_listeners:
            listener()

    async def _on_reconnected(self) -> None:
        log.info("NATS connection re-established")

    def close(self) -> None:
        """Flush and close the connection, then stop the loop thread."""
        if self._closed:
            return
        try:
            self.call(self._shutdown(), timeout=CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.debug("NATS connection closed uncleanly: %r", exc)
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        self._closed = True  # from here on, call() refuses new work and a disconnect is no news
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _live(data: bytes | None, now: float) -> dict[str, float]:
    return {k: v for k, v in json.loads(data).items() if v > now} if data else {}


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _admit(key: str, limit: int, now: float, ttl: float, data: bytes | None) -> tuple[bytes | None, bool]:
    entries = _live(data, now)
    if key not in entries and len(entries) >= limit:
        return None, False
    entries[key] = now + ttl
    return _dump(entries), True


def _remove(key: str, now: float, data: bytes | None) -> tuple[bytes | None, None]:
    entries = _live(data, now)
    return (_dump(entries), None) if entries.pop(key, None) is not None else (None, None)


def _increment(data: bytes | None) -> tuple[bytes, int]:
    value = int(data or 0) + 1
    return str(value).encode(), value


def _add_counts(amounts: Counter[str], data: bytes | None) -> tuple[bytes, None]:
    counters = Counter(json.loads(data)) if data else Counter()
    counters.update(amounts)
    return _dump(dict(counters)), None


class NatsFlow(Flow):
    """``framefarm.flow.{inflight,seq,stats}.<stream>``: in-flight set (key -> deadline), last seq, counters.

    Counters are summed in-process and written every COUNT_FLUSH_S (and before ``counters`` reads them, and
    on close): two CAS round trips per frame would halve an input's rate. A process killed with SIGKILL loses
    at most that half second of counts; frames, messages and in-flight state are never deferred.
    """

    def __init__(self, link: NatsLink) -> None:
        self.link = link
        self.map = SubjectMap(link, f"{NAMESPACE}-flow", f"{NAMESPACE}.flow")
        self._lock = threading.Lock()
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._flush_armed = False

    def _subject(self, kind: str, stream: str) -> str:
        return f"{self.map.prefix}.{kind}.{token(stream)}"

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        change = partial(_admit, key, limit, time.time(), ttl)
        return run_for_store(self.link, self.map.update(self._subject("inflight", stream), change, cached=True))

    async def remove(self, stream: str, key: str) -> None:
        """End ``key``'s in-flight entry (its frame was released or discarded)."""
        await self.map.update(self._subject("inflight", stream), partial(_remove, key, time.time()))

    def next_seq(self, stream: str) -> int:
        return run_for_store(self.link, self.map.update(self._subject("seq", stream), _increment, cached=True))

    def in_flight(self, stream: str | None = None) -> int:
        now, sets = time.time(), run_for_store(self.link, self._read("inflight", stream))
        return sum(len(_live(data, now)) for data in sets.values())

    async def _read(self, kind: str, stream: str | None = None) -> dict[str, bytes]:
        """The latest ``kind`` value of ``stream``, or of every stream, by stream."""
        prefix = f"{self.map.prefix}.{kind}."
        subjects = [prefix + token(stream)] if stream else await self.map.subjects(prefix + "*")
        messages = await asyncio.gather(*(self.map.get(subject) for subject in subjects))
        return {untoken(s[len(prefix) :]): m.data for s, m in zip(subjects, messages, strict=True) if m}

    def count(self, stream: str, counter: str, amount: int = 1) -> None:
        with self._lock:
            self._pending[stream][counter] += amount
            if self._flush_armed:
                return
            self._flush_armed = True
        try:
            self.link.submit(self._flush_later())
        except nats.errors.ConnectionClosedError:  # counting after close: nothing will write it
            log.debug("bus closed: count of %s.%s dropped", stream, counter)

    async def _flush_later(self) -> None:
        while True:
            await asyncio.sleep(COUNT_FLUSH_S)
            with self._lock:
                self._flush_armed = False
            try:
                await self.flush()
                return
            except Exception as exc:  # a background task: log, keep the counts and try again
                log.warning("counters not written yet (%r); retrying in %.1fs", exc, COUNT_FLUSH_S)
            with self._lock:
                if self._flush_armed:  # a newer count() armed another flush
                    return
                self._flush_armed = True

    async def flush(self) -> None:
        """Write the counts summed since the last flush; on failure they stay pending."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Counter)
        try:
            for stream, amounts in list(pending.items()):
                await self.map.update(self._subject("stats", stream), partial(_add_counts, amounts))
                del pending[stream]
        finally:
            with self._lock:
                for stream, amounts in pending.items():
                    self._pending[stream].update(amounts)

    def counters(self) -> dict[str, dict[str, int]]:
        return {stream: json.loads(data) for stream, data in run_for_store(self.link, self._counters()).items()}

    async def _counters(self) -> dict[str, bytes]:
        await self.flush()
        return await self._read("stats")


def servers_of(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` (or ``nats://a:4222,b:4222``) -> the server list nats-py takes."""
    servers = []
    for part in url.split(","):
        part = part.strip()
        servers.append(part if "://" in part else f"{urlsplit(url).scheme}://{part}")
    return servers


@register_backend("nats")
class NatsBus(Bus):
    """Dramatiq on JetStream, with the frame store and flow state on JetStream too; one connection."""

    transient_errors: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, dramatiq.errors.ConnectionClosed)
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
        store = service.frames.store
        if store == "inline":
            raise BusError("frames.store: inline is for NSQ; with NATS keep frames in the broker or in Redis")
        self.link = NatsLink(servers_of(url), reconnect_wait=reconnect_wait)
        ack_wait = max(MIN_ACK_WAIT_S, service.heartbeat_timeout if ack_wait is None else ack_wait)
        self.broker = NatsBroker(
            self.link, ack_wait=ack_wait, max_deliveries=max_deliveries, middleware=stage_middleware()
        )
        if store == "broker":
            self.flow = NatsFlow(self.link)
            frame_max_age = max(service.frames.ttl, service.frames.lossless_ttl)
            self.frames = NatsFrameStore(self.link, self.flow, max_age=frame_max_age)
        else:  # a redis:// URL: frames and the flow state that their release updates live there together
            self.redis = redis.Redis.from_url(store, health_check_interval=30)
            self.frames, self.flow = RedisFrameStore(self.redis), RedisFlow(self.redis)
            self.transient_errors = (*self.transient_errors, *RedisBus.transient_errors)
        self.broker.add_middleware(ReleaseFailedFrames(self.frames, self.flow))

    def ping(self) -> None:
        try:
            run_for_store(self.link, self._account())
            if self.redis is not None:
                self.redis.ping()
        except (BusError, redis.RedisError) as exc:
            raise BusError(f"broker or frame store does not answer: {exc}") from exc

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
        self.broker.close()
        self.flush_counts()  # a Redis flow's batched counts
        if isinstance(self.flow, NatsFlow):
            with contextlib.suppress(Exception):
                self.link.call(self.flow.flush(), timeout=CLOSE_TIMEOUT_S)
        if self.redis is not None:
            self.redis.close()
        self.link.close()
