"""A Dramatiq broker on NATS JetStream (Dramatiq itself ships only Redis and RabbitMQ brokers).

A queue ``q`` is a work-queue stream ``framefarm-q-<q>`` (file storage, subject ``framefarm.q.<q>``), the same
for its delay queue ``q.DQ``, and a dead-letter stream ``framefarm-xq-<q>``; each work stream has one durable
pull consumer, ``workers``, shared by every worker process (consumer.py). Delays, retries and dead letters
follow Dramatiq's own conventions; the package's docstring says why.

Messages are published over the link's wire from the thread that enqueues and consumed on sockets of their
own; the link's loop only declares streams and reads their counts. Bodies are Dramatiq's JSON, or, for a
message that carries bytes (an inline frame), NSQ's binary framing: a JSON header and the raw bytes after it,
never base64.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import dramatiq
import nats.errors
import nats.js.errors
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import BrokerError, ConnectionClosed, QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ..codec import encode
from .consumer import Delivery, NatsConsumer, NatsMessage
from .jetstream import CONSUMER, TRANSIENT_ERRORS, ensure_stream, publish_from_thread, stream_name, subject_name

if TYPE_CHECKING:
    from .link import NatsLink

T = TypeVar("T")

DEFAULT_MAX_DELIVERIES = 20  # graceful stops nak prefetched messages, which counts: leave room for restarts
DEAD_LETTER_TTL_S = 7 * 86400.0  # as Dramatiq's dead-letter queues
MAX_ACK_PENDING = 65_536  # cluster-wide cap; each process's prefetch is enforced by its own pull sizes
JOIN_CHECKS = 3  # consecutive empty looks before join() believes a queue drained
JOIN_IDLE_MS = 50
HEARTBEATS_PER_ACK_WAIT = 3

__all__ = ["CONSUMER", "DEFAULT_MAX_DELIVERIES", "NatsBroker", "NatsConsumer", "NatsMessage"]


def _queue_streams(canonical: str) -> tuple[str, str, str]:
    # the delay queue first: a delayed message reaches the queue before it leaves the delay queue
    return stream_name(dq_name(canonical)), stream_name(canonical), stream_name(canonical, "xq")


@contextlib.contextmanager
def _dramatiq_errors() -> Iterator[None]:
    """NATS failures as Dramatiq's errors: ConnectionClosed (try again) or BrokerError."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise ConnectionClosed(exc) from exc
    except nats.errors.Error as exc:
        raise BrokerError(f"NATS refused the request: {exc!r}") from exc


class NatsBroker(dramatiq.Broker):
    """Dramatiq broker over one NatsLink: publishes over its wire, declarations and counts on its loop."""

    def __init__(
        self,
        link: NatsLink,
        *,
        ack_wait: float,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        middleware: list[Middleware] | None = None,
    ) -> None:
        super().__init__(middleware=middleware)
        self.link = link
        self.ack_wait = ack_wait
        self.max_deliveries = max_deliveries
        self.queues: set[str] = set()
        self.ready: set[str] = set()  # queues whose streams this process declared
        self._consumers: weakref.WeakSet[NatsConsumer] = weakref.WeakSet()
        self._keeper: threading.Thread | None = None
        self._keeper_lock = threading.Lock()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; NATS failures become Dramatiq's errors (ConnectionClosed: try again)."""
        with _dramatiq_errors():
            return self.link.call(coro)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> NatsConsumer:
        self.declare_queue(queue_name)
        self.call(self.ensure(q_name(queue_name)))
        delivery = Delivery(self.max_deliveries, self.dead_letter)
        consumer = NatsConsumer(
            self, self.link.wire, queue_name, prefetch=prefetch, timeout_ms=timeout, delivery=delivery
        )
        self._consumers.add(consumer)
        with self._keeper_lock:
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_held_alive, name="nats-progress", daemon=True)
                self._keeper.start()
        return consumer

    def _keep_held_alive(self) -> None:
        """Tell the server every held delivery is still worked on, so ``ack_wait`` only fires for dead workers;
        until the link closes (the process is going, or a test plays a dying worker)."""
        while not self.link.wire.closed.wait(self.ack_wait / HEARTBEATS_PER_ACK_WAIT):
            for consumer in list(self._consumers):
                consumer.send_progress()

    def declare_queue(self, queue_name: str) -> None:
        canonical = q_name(queue_name)
        if canonical in self.queues:
            return
        self.emit_before("declare_queue", canonical)
        self.queues.add(canonical)
        self.emit_after("declare_queue", canonical)
        self.delay_queues.add(dq_name(canonical))
        self.emit_after("declare_delay_queue", dq_name(canonical))

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        canonical = q_name(message.queue_name)
        if delay is not None:
            message = message.copy(queue_name=dq_name(canonical), options={"eta": current_millis() + delay})
        self.declare_queue(canonical)
        self.emit_before("enqueue", message, delay)
        self._publish(message.queue_name, b"".join(encode(message)))
        self.emit_after("enqueue", message, delay)
        return message

    def dead_letter(self, queue_name: str, body: bytes) -> None:
        """Keep ``body`` in the queue's dead-letter stream (7 days); raises ConnectionClosed when it was not kept."""
        self._publish(queue_name, body, kind="xq")

    def _publish(self, queue_name: str, data: bytes, *, kind: str = "q") -> None:
        """Publish over the link's wire, from the calling thread; the queue's streams are declared on the loop."""
        canonical = q_name(queue_name)
        subject = subject_name(queue_name) if kind == "q" else subject_name(canonical, kind)
        if canonical not in self.ready:
            self.call(self.ensure(canonical))
        with _dramatiq_errors():
            try:
                publish_from_thread(self.link.wire, subject, data)
            except nats.js.errors.NoStreamResponseError:  # the server lost its store: declare again, once
                self.call(self.ensure(canonical, again=True))
                publish_from_thread(self.link.wire, subject, data)

    def get_declared_queues(self) -> set[str]:
        return self.queues.copy()

    def flush(self, queue_name: str) -> None:
        """Drop every message of the queue, of its delay queue and its dead letters."""
        self.call(self._streams(_queue_streams(q_name(queue_name)), purge=True))

    def flush_all(self) -> None:
        for queue_name in self.get_declared_queues():
            self.flush(queue_name)

    def join(
        self,
        queue_name: str,
        min_successes: int = JOIN_CHECKS,
        idle_time: int = JOIN_IDLE_MS,
        *,
        timeout: int | None = None,
    ) -> None:
        """Wait until the queue and its delay queue are empty: nothing waiting, delayed or unacked (for tests).

        ``min_successes`` empty looks in a row cover a retry passing from one stream to the other."""
        deadline = timeout and time.monotonic() + timeout / 1000
        successes = 0
        while successes < min_successes:
            if deadline and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            queued, delayed, _ = self.get_queue_message_counts(queue_name)
            successes = successes + 1 if queued + delayed == 0 else 0
            time.sleep(idle_time / 1000)

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        """Messages (unacked ones included) in the queue, in its delay queue, and dead letters."""
        delayed, queued, dead = self.call(self._streams(_queue_streams(q_name(queue_name))))
        return queued, delayed, dead

    async def ensure(self, canonical: str, *, again: bool = False) -> None:
        """Create the queue's streams and durable consumers, once per process (idempotent on the server), or
        ``again`` when the server lost them."""
        if canonical in self.ready and not again:
            return
        js = await self.link.jetstream()
        consumer = ConsumerConfig(
            name=CONSUMER,
            durable_name=CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # counted here instead, so that the last delivery can be dead-lettered
            max_ack_pending=MAX_ACK_PENDING,
        )
        for name in (canonical, dq_name(canonical)):
            work = StreamConfig(name=stream_name(name), subjects=[subject_name(name)], storage=StorageType.FILE)
            await ensure_stream(js, work.evolve(retention=RetentionPolicy.WORK_QUEUE))
            await js.add_consumer(stream_name(name), consumer)
        dead = StreamConfig(name=stream_name(canonical, "xq"), subjects=[subject_name(canonical, "xq")])
        await ensure_stream(js, dead.evolve(storage=StorageType.FILE, max_age=DEAD_LETTER_TTL_S))
        self.ready.add(canonical)

    async def _streams(self, names: Iterable[str], *, purge: bool = False) -> list[int]:
        """Each stream's message count (0 where it does not exist), after purging it if ``purge``."""
        js, counts = await self.link.jetstream(), []
        for name in names:
            try:
                if purge:
                    await js.purge_stream(name)
                counts.append((await js.stream_info(name)).state.messages)
            except nats.js.errors.NotFoundError:
                counts.append(0)
        return counts
