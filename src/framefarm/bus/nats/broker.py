"""A Dramatiq broker on NATS JetStream (Dramatiq itself ships only Redis and RabbitMQ brokers).

A queue ``q`` is a work-queue stream ``framefarm-q-<q>`` (file storage, subject ``framefarm.q.<q>``), the same
for its delay queue ``q.DQ``, and a dead-letter stream ``framefarm-xq-<q>``; each work stream has one durable
pull consumer, ``workers``, shared by every worker process. Held deliveries get ``+WPI`` every ``ack_wait / 3``,
so ``ack_wait`` acts as a heartbeat timeout: a SIGKILLed worker's messages come back ``ack_wait`` later.
Delays, retries and dead letters follow Dramatiq's own conventions; the package's docstring says why.

Bodies are Dramatiq's JSON, or, for a message that carries bytes (an inline frame), NSQ's binary framing: a
JSON header and the raw bytes after it, never base64. Acks are sent without waiting for the server's reply:
a lost ack only brings its message back after ``ack_wait`` (at-least-once still holds, since the ack is only
sent after the work), and waiting would cost every message a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import dramatiq
import nats.errors
import nats.js.errors
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import BrokerError, ConnectionClosed, DecodeError, QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ..nsq.broker import decode, encode
from .jetstream import TRANSIENT_ERRORS, ensure_stream, publish, publish_from_thread, stream_name, subject_name

if TYPE_CHECKING:
    from .link import NatsLink

log = logging.getLogger(__name__)
T = TypeVar("T")

CONSUMER = "workers"
DEFAULT_MAX_DELIVERIES = 20  # graceful stops nak prefetched messages, which counts: leave room for restarts
DEAD_LETTER_TTL_S = 7 * 86400.0  # as Dramatiq's dead-letter queues
MAX_ACK_PENDING = 65_536  # cluster-wide cap; each process's prefetch is enforced by its own pull sizes
HEARTBEATS_PER_ACK_WAIT = 3
JOIN_CHECKS = 3  # consecutive empty looks before join() believes a queue drained
JOIN_IDLE_MS = 50
PULL_EXPIRES_S = 5.0  # a pull request lasts this long, then the next one is sent
PULL_HEARTBEAT_S = 1.0  # the server confirms a waiting pull request this often
PULL_STALL_S = 5.0  # silence on a waiting pull request for this long means it was lost: rebuild the consumer
PULL_RETRY_S = 0.5  # after the server turned a pull request down (e.g. max ack pending reached)


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
    """Dramatiq broker over one NatsLink: consumers, acks and declarations run on the link's loop thread,
    publishes go over its wire from the thread that enqueues."""

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
        # loop thread only: queues whose streams exist, unsettled deliveries by reply subject, live pullers
        self.ready: set[str] = set()
        self.held: dict[str, Msg] = {}
        self.pullers: set[Puller] = set()
        self._acks: list[tuple[Msg, Puller]] = []  # any thread, under _acks_lock: acks the loop has yet to send
        self._acks_lock = threading.Lock()
        self._keep_alive: asyncio.Task[None] | None = None
        link.on_disconnect(self._connection_lost)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; NATS failures become Dramatiq's errors (ConnectionClosed: try again)."""
        with _dramatiq_errors():
            return self.link.call(coro)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> NatsConsumer:
        self.declare_queue(queue_name)
        return NatsConsumer(self, queue_name, prefetch, timeout)

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

    def close(self) -> None:
        if self._keep_alive is not None:
            self.link.call_soon(self._keep_alive.cancel)
            self._keep_alive = None

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
        if self._keep_alive is None or self._keep_alive.done():
            self._keep_alive = asyncio.get_running_loop().create_task(self._send_progress())

    def _publish(self, queue_name: str, data: bytes) -> None:
        """Publish over the link's wire, from the calling thread; the queue's streams are declared on the loop."""
        canonical, subject = q_name(queue_name), subject_name(queue_name)
        if canonical not in self.ready:
            self.call(self.ensure(canonical))
        with _dramatiq_errors():
            try:
                publish_from_thread(self.link.wire, subject, data)
            except nats.js.errors.NoStreamResponseError:  # the server lost its store: declare again, once
                self.call(self.ensure(canonical, again=True))
                publish_from_thread(self.link.wire, subject, data)

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

    def ack_soon(self, msg: Msg, puller: Puller) -> None:
        """Queue an ack for the loop and return: the first of a batch wakes the loop, the others ride along."""
        with self._acks_lock:
            self._acks.append((msg, puller))
            if len(self._acks) > 1:
                return
        try:
            self.link.submit(self._send_acks())
        except TRANSIENT_ERRORS as exc:  # closed: the server redelivers them after ack_wait
            with self._acks_lock:
                self._acks.clear()
            raise ConnectionClosed(exc) from exc

    async def _send_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        for msg, puller in acks:
            await self.settle_ack(msg, puller)

    async def settle_ack(self, msg: Msg, puller: Puller) -> None:
        """Ack without waiting for the reply; an ack that cannot go out is left to ``ack_wait`` (a redelivery)."""
        try:
            await msg.ack()
        except nats.errors.MsgAlreadyAckdError:
            pass
        except (*TRANSIENT_ERRORS, nats.errors.Error) as exc:
            log.debug("ack not sent (%r): the message comes back after ack_wait", exc)
        finally:
            await self.forget(msg, puller)

    async def dead_letter(self, queue_name: str, msg: Msg, data: bytes, puller: Puller) -> None:
        """Keep ``data`` in the dead-letter stream, then ack the delivery."""
        await self.ensure(q_name(queue_name))
        await publish(self.link, subject_name(q_name(queue_name), "xq"), data)
        await self.settle_ack(msg, puller)

    async def requeue(self, deliveries: Iterable[tuple[Msg, Puller]]) -> None:
        """Hand deliveries back for immediate redelivery (nak without delay); offline, ack_wait does it."""
        nc, naked = await self.link.client(), False
        for msg, puller in deliveries:
            if nc.is_connected:
                with contextlib.suppress(nats.errors.MsgAlreadyAckdError):
                    await msg.nak()
                    naked = True
            await self.forget(msg, puller)
        if naked:
            await nc.flush(timeout=self.link.timeout)

    async def forget(self, msg: Msg, puller: Puller) -> None:
        self.held.pop(msg.reply, None)
        await puller.settled(msg.reply)

    async def _send_progress(self) -> None:
        """Tell the server every held delivery is still worked on, so ack_wait only fires for dead workers."""
        while True:
            await asyncio.sleep(self.ack_wait / HEARTBEATS_PER_ACK_WAIT)
            try:
                for msg in list(self.held.values()):
                    await msg.in_progress()
            except (*TRANSIENT_ERRORS, nats.errors.Error) as exc:
                log.debug("progress not sent (%r); ack_wait runs on until the connection is back", exc)

    def _connection_lost(self) -> None:
        """Pull requests die with the connection: make every consumer raise ConnectionClosed to be rebuilt."""
        for puller in list(self.pullers):
            puller.fail(ConnectionClosed(nats.errors.ConnectionClosedError()))
        self.ready.clear()


class Puller:
    """Keeps one pull request open for as many messages as the consumer has room for (loop thread only).

    Room is ``prefetch`` minus the deliveries not yet settled (buffered or with a worker thread), as Dramatiq's
    prefetch counts in-progress messages; a request ends when filled or by a status (408 on expiry).
    """

    def __init__(self, broker: NatsBroker, queue_name: str, prefetch: int, inbox: queue.SimpleQueue[Any]) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.inbox = inbox
        self.holding: set[str] = set()
        self.requested = 0
        self.heard = time.monotonic()
        self.failure: BaseException | None = None
        self.closed = False
        self._sub: Any = None
        self._reply = ""

    async def start(self) -> None:
        await self.broker.ensure(q_name(self.queue_name))
        nc = await self.broker.link.client()
        self._reply = nc.new_inbox()
        self._sub = await nc.subscribe(self._reply, cb=self._on_msg)
        self.broker.pullers.add(self)
        await self._pull()

    async def _on_msg(self, msg: Msg) -> None:
        if self.closed:
            return
        self.heard = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            await self._deliver(msg)
        elif status == "100":  # idle heartbeat: the request is alive
            return
        elif status in ("408", "409", "404"):  # expired, or turned down for now (max ack pending...)
            self.requested = 0
            if status != "408":
                await asyncio.sleep(PULL_RETRY_S)
        else:  # 503: the consumer or stream is gone; others: a request we did not mean to send
            self.broker.ready.discard(q_name(self.queue_name))
            self.fail(ConnectionClosed(RuntimeError(f"pull request failed with status {status}")))
            return
        await self._pull()

    async def _deliver(self, msg: Msg) -> None:
        self.requested = max(0, self.requested - 1)
        self.holding.add(msg.reply)
        self.broker.held[msg.reply] = msg
        self.inbox.put(msg)

    async def _pull(self) -> None:
        room = self.prefetch - len(self.holding) - self.requested
        if self.closed or self.failure or self.requested or room <= 0:
            return
        if self.holding and room < self.prefetch // 2:  # still busy: wait to ask for a bigger batch
            return
        request = {"batch": room, "expires": int(PULL_EXPIRES_S * 1e9), "idle_heartbeat": int(PULL_HEARTBEAT_S * 1e9)}
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream_name(self.queue_name)}.{CONSUMER}"
        try:
            await (await self.broker.link.client()).publish(subject, json.dumps(request).encode(), reply=self._reply)
        except TRANSIENT_ERRORS as exc:
            self.fail(ConnectionClosed(exc))
            return
        self.requested, self.heard = room, time.monotonic()

    async def settled(self, reply: str) -> None:
        self.holding.discard(reply)
        await self._pull()

    def stalled(self) -> BaseException | None:  # called from the consumer thread
        if self.failure is None and self.requested and time.monotonic() - self.heard > PULL_STALL_S:
            self.failure = ConnectionClosed(TimeoutError(f"pull request silent for {PULL_STALL_S}s"))
        return self.failure

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            self.inbox.put(exc)

    async def close(self) -> None:
        """Stop pulling; give back deliveries Dramatiq never saw, and stop keeping alive those it drops."""
        self.closed = True
        self.broker.pullers.discard(self)
        unseen = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, Msg):
                unseen.append(item)
        if self.queue_name != q_name(self.queue_name):  # a delay consumer: Dramatiq forgets what it held
            for reply in self.holding - {m.reply for m in unseen}:
                self.broker.held.pop(reply, None)
        try:
            await self.broker.requeue([(msg, self) for msg in unseen])
            if self._sub is not None:
                await self._sub.unsubscribe()
        except (*TRANSIENT_ERRORS, nats.errors.Error) as exc:  # unseen ones come back after ack_wait
            log.debug("consumer of %s closed without the server: %r", self.queue_name, exc)


class NatsMessage(MessageProxy):
    def __init__(self, message: Message, msg: Msg, puller: Puller) -> None:
        super().__init__(message)
        self._msg = msg
        self._puller = puller


class NatsConsumer(dramatiq.Consumer):
    """Dramatiq's view of a Puller: the consumer thread takes messages, worker threads settle them."""

    def __init__(self, broker: NatsBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.timeout = timeout / 1000
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.puller = Puller(broker, queue_name, prefetch, self.inbox)
        broker.call(self.puller.start())

    def __next__(self) -> NatsMessage | None:
        try:
            item = self.inbox.get(timeout=self.timeout)
        except queue.Empty:
            failure = self.puller.stalled()
            if failure is not None:
                raise ConnectionClosed(failure) from failure
            return None
        if isinstance(item, BaseException):
            raise ConnectionClosed(item) from item
        try:
            message = NatsMessage(decode(item.data), item, self.puller)
        except DecodeError:
            log.exception("undecodable message on %s: dead-lettered", self.queue_name)
            self.broker.call(self.broker.dead_letter(self.queue_name, item, item.data, self.puller))
            return None
        if item.metadata.num_delivered <= self.broker.max_deliveries:
            return message
        log.warning("message %s delivered %d times: dead-lettered", message.message_id, item.metadata.num_delivered)
        message.fail()  # as Dramatiq's worker does, so that nack middleware (frame release) runs
        self.broker.emit_before("nack", message)
        self.nack(message)
        self.broker.emit_after("nack", message)
        return None

    def ack(self, message: NatsMessage) -> None:  # type: ignore[override]
        """Hand the ack to the loop and return: the work is done, so nothing is left to wait for."""
        self.broker.ack_soon(message._msg, message._puller)

    def nack(self, message: NatsMessage) -> None:  # type: ignore[override]
        data = b"".join(encode(message._message))  # with the options Retries added (traceback, retries)
        self.broker.call(self.broker.dead_letter(self.queue_name, message._msg, data, message._puller))

    def requeue(self, messages: Iterable[NatsMessage]) -> None:  # type: ignore[override]
        self.broker.call(self.broker.requeue([(message._msg, message._puller) for message in messages]))

    def close(self) -> None:
        self.broker.call(self.puller.close())
