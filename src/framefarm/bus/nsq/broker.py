"""A Dramatiq broker on NSQ: one topic per queue, one channel per consumer group (the queue's name).

Mapping of Dramatiq onto NSQ:

- enqueue: PUB, or DPUB (deferred publish) when Dramatiq asks for a delay, so retries wait in nsqd rather
  than in the worker's memory; there are no delay queues.
- consume: SUB with RDY = Dramatiq's prefetch; ack = FIN; requeue (shutdown) = REQ 0; nack (retries
  exhausted) = PUB to the dead-letter topic ``<queue>.XQ`` (kept by nsqd until someone reads it), then FIN.
  Dramatiq's Retries middleware re-enqueues a failed message itself (with its retry count and traceback in
  the body, which REQ could not change) and then acks the original.
- Work that runs long is kept alive with TOUCH at half of nsqd's msg-timeout; a worker killed without
  FIN leaves its messages to nsqd, which redelivers them after msg-timeout.
- Bodies are Dramatiq's JSON, except when a message carries ``bytes`` (inline frames): then a small JSON
  header and the raw bytes after it, never base64 (which would cost more CPU than the whole hop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from threading import Lock

from dramatiq import Broker, Consumer, Message, MessageProxy
from dramatiq.errors import BrokerConnectionError, DecodeError, QueueJoinTimeout
from dramatiq.middleware import Middleware

from ..codec import decode, encode
from .client import Producer, Subscription
from .http import NsqEndpoints, backlog, http_post
from .protocol import RawMessage, nsq_name

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = ".XQ"  # Dramatiq's name for a queue's dead letters
MAX_DELIVERIES = 25  # a message redelivered this often (its workers keep dying on it) is dead-lettered
JOIN_INTERVAL_MS = 100


class NsqMessageProxy(MessageProxy):
    """A Dramatiq message and the NSQ delivery it came in (FIN/REQ/TOUCH go back on that connection)."""

    def __init__(self, message: Message, delivery: RawMessage) -> None:
        super().__init__(message)
        self.delivery = delivery


class NsqConsumer(Consumer):
    """Dramatiq's consumer thread calls ``__next__``; worker threads call ``ack`` and ``nack``.

    Sends are serialised per connection, so FIN from a worker thread and TOUCH/NOP from the consumer thread
    never interleave. A message whose connection died can no longer be FINed: nsqd redelivers it after
    msg-timeout (at-least-once), so ack and nack never raise for it (Dramatiq would retry them forever).
    """

    def __init__(self, broker: NsqBroker, queue_name: str, prefetch: int, timeout_ms: int) -> None:
        self.broker, self.queue_name = broker, queue_name
        self.timeout_s = timeout_ms / 1000
        topic = nsq_name(queue_name)
        self.subscription = Subscription(broker.endpoints, topic, topic, max_in_flight=prefetch).open()
        self.touch_every_s = self.subscription.msg_timeout_s / 2
        self._next_touch = time.monotonic() + self.touch_every_s
        self._pending: dict[int, RawMessage] = {}  # id(delivery): not yet FINed or REQed
        self._lock = Lock()

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            if time.monotonic() >= self._next_touch:
                self._touch_pending()
            delivery = self.subscription.next(min(deadline, self._next_touch))
            if delivery is not None:
                proxy = self._accept(delivery)
                if proxy is not None:
                    return proxy
            elif time.monotonic() >= deadline:
                return None

    def _accept(self, delivery: RawMessage) -> NsqMessageProxy | None:
        problem = None
        if delivery.attempts > MAX_DELIVERIES:
            problem = f"delivered {delivery.attempts} times without being finished"
        else:
            try:
                message = decode(delivery.body)
            except DecodeError as exc:
                problem = f"undecodable ({exc.error})"
        if problem is not None:
            log.error("%s: message %s %s; moved to the dead letters", self.queue_name, delivery.id.decode(), problem)
            self.broker.publish(self.queue_name + DEAD_LETTER_SUFFIX, [delivery.body])
            self._send(delivery, b"FIN")
            return None
        with self._lock:
            self._pending[id(delivery)] = delivery
        return NsqMessageProxy(message, delivery)

    def ack(self, message: MessageProxy) -> None:
        self._finish(message, b"FIN")

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter the message (Dramatiq's meaning of nack), then FIN it; a failed publish raises first."""
        self.broker.publish(self.queue_name + DEAD_LETTER_SUFFIX, encode(message._message))
        self._finish(message, b"FIN")

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        for message in messages:
            self._finish(message, b"REQ", b"0")

    def _finish(self, message: MessageProxy, command: bytes, *args: bytes) -> None:
        delivery: RawMessage = message.delivery  # type: ignore[attr-defined]
        with self._lock:
            self._pending.pop(id(delivery), None)
        self._send(delivery, command, *args)

    def _send(self, delivery: RawMessage, command: bytes, *args: bytes) -> None:
        try:
            delivery.conn.command(command, delivery.id, *args)
        except BrokerConnectionError:
            log.debug("%s %s: its connection is gone; nsqd redelivers it", command.decode(), delivery.id.decode())

    def _touch_pending(self) -> None:
        """Reset nsqd's timeout of every message still held (queued in Dramatiq or being worked on)."""
        with self._lock:
            pending = list(self._pending.values())
        for delivery in pending:
            self._send(delivery, b"TOUCH")
        self._next_touch = time.monotonic() + self.touch_every_s

    def close(self) -> None:
        """Give back what this consumer still holds (REQ 0: redelivered now, not after msg-timeout)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for delivery in pending:
            self._send(delivery, b"REQ", b"0")
        self.subscription.close()


class NsqBroker(Broker):
    """Dramatiq broker on nsqd; see the module docstring for how Dramatiq's operations map onto NSQ."""

    def __init__(self, endpoints: NsqEndpoints, *, middleware: list[Middleware] | None = None) -> None:
        super().__init__(middleware=middleware)
        self.endpoints = endpoints
        self.queues: set[str] = set()
        self.producer = Producer(endpoints)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> NsqConsumer:
        """Raises ConnectionFailed when no nsqd answers (Dramatiq's consumer thread tries again)."""
        return NsqConsumer(self, queue_name, prefetch, timeout)

    def declare_queue(self, queue_name: str) -> None:
        """Topics and channels are created by the first PUB and SUB; declaring only records the name."""
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues.add(queue_name)
            self.emit_after("declare_queue", queue_name)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """PUB (DPUB with ``delay`` ms, at most nsqd's max-req-timeout); returns when nsqd holds the message."""
        self.emit_before("enqueue", message, delay)
        self.publish(message.queue_name, encode(message), delay_ms=delay)
        self.emit_after("enqueue", message, delay)
        return message

    def publish(self, queue_name: str, body: list[bytes], *, delay_ms: int | None = None) -> None:
        self.producer.publish(nsq_name(queue_name), body, delay_ms=delay_ms)

    def get_declared_queues(self) -> set[str]:
        return self.queues.copy()

    def backlog(self, queue_name: str) -> tuple[int, int]:
        """(waiting, in flight or deferred) for the queue, summed over every nsqd."""
        topic = nsq_name(queue_name)
        totals = [backlog(entry, topic) for entry in self.endpoints.topics(topic)]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def flush(self, queue_name: str) -> None:
        """Drop the queue's messages (waiting, deferred and in flight) on every nsqd."""
        topic = nsq_name(queue_name)
        for base in self.endpoints.http_addresses():
            http_post(base, "/channel/empty", topic=topic, channel=topic)
            http_post(base, "/topic/empty", topic=topic)

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def join(self, queue_name: str, *, interval: int = JOIN_INTERVAL_MS, timeout: int | None = None) -> None:
        """Wait until the queue has nothing waiting, deferred or in flight (nsqd's /stats); for tests and drains."""
        deadline = timeout and time.monotonic() + timeout / 1000
        while sum(self.backlog(queue_name)):
            if deadline and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    def close(self) -> None:
        self.producer.close()
