"""Dramatiq's consumer of a JetStream queue on a socket of its own (wire.py): pulls, deliveries and acks.

The consumer thread asks for as many messages as it has room for (Dramatiq's prefetch, less the deliveries it
holds, queued in Dramatiq or with a worker thread), reads the deliveries from the socket itself and hands them
to Dramatiq; worker threads ack on the same socket without waiting for a reply. No event loop and no queue
between threads: with nats-py every delivery and every ack crossed to and from its loop thread, which cost more
CPU than the message (bench/README.md).

A lost ack only brings its message back after ``ack_wait`` (at-least-once still holds: acks are sent after the
work). Held deliveries get ``+WPI`` every ``ack_wait / 3`` from the broker's keeper thread, whatever Dramatiq's
threads are doing, so ``ack_wait`` acts as a heartbeat timeout: a SIGKILLed worker's messages come back
``ack_wait`` later. A pull request silent for longer than its heartbeats allow, or a closed socket, raises
ConnectionClosed and Dramatiq builds a new consumer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import dramatiq
import nats.errors
from dramatiq.broker import MessageProxy
from dramatiq.errors import ConnectionClosed, DecodeError
from nats.aio.msg import Msg

from ..codec import decode, encode
from .jetstream import CONSUMER, stream_name
from .wire import Received, Wire

log = logging.getLogger(__name__)

PULL_EXPIRES_S = 5.0  # a pull request lasts this long, then the next one is sent
PULL_HEARTBEAT_S = 1.0  # the server confirms a waiting pull request this often
PULL_STALL_S = 5.0  # silence on a waiting pull request for this long means it was lost: rebuild the consumer
PULL_RETRY_S = 0.5  # after the server turned a pull request down (e.g. max ack pending reached)
CLOSE_DRAIN_S = 0.05  # at close, deliveries already on their way are read this long and handed back
IDLE_HEARTBEAT = "100"
PULL_ENDED = frozenset({"408", "409", "404"})  # expired; turned down for now (max ack pending...); nothing there
ACK, NAK, IN_PROGRESS = b"", b"-NAK", b"+WPI"


@dataclass(frozen=True)
class Delivery:
    """How a consumer treats deliveries: how often a message may be delivered, and where it goes after that."""

    max_deliveries: int
    dead_letter: Callable[[str, bytes], None]  # (queue, body): keep it in the dead letters, raise if not kept


class NatsMessage(MessageProxy):
    def __init__(self, message: dramatiq.Message, msg: Msg) -> None:
        super().__init__(message)
        self._msg = msg


@contextlib.contextmanager
def _lost_connection() -> Iterator[None]:
    """A failed socket as Dramatiq's ConnectionClosed, which makes its consumer thread build a new consumer."""
    try:
        yield
    except (OSError, nats.errors.Error) as exc:
        raise ConnectionClosed(exc) from exc


class NatsConsumer(dramatiq.Consumer):
    """Dramatiq's consumer thread calls ``__next__``; worker threads call ``ack`` and ``nack``."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        wire: Wire,
        queue_name: str,
        *,
        prefetch: int,
        timeout_ms: int,
        delivery: Delivery,
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout = timeout_ms / 1000
        self.delivery = delivery
        self._lock = threading.Lock()  # guards the three below: worker threads settle and pull too
        self.held: dict[str, Msg] = {}  # reply subject -> delivery not yet settled
        self._requested = 0  # messages asked for and not delivered yet
        self._pull_after = 0.0  # after the server turned a pull request down, the next waits until then
        self._heard = time.monotonic()
        self.closed = False
        with _lost_connection():
            self.conn = wire.connect()
        self.inbox = f"{self.conn.inbox}.pull"
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream_name(queue_name)}.{CONSUMER}"
        self._pull()

    def __next__(self) -> NatsMessage | None:
        deadline = time.monotonic() + self.timeout
        while True:
            self._pull()
            with _lost_connection():
                received = self.conn.receive(self._wake_at(deadline))
            if received is not None:
                message = self._accept(received)
                if message is not None:
                    return message
            elif time.monotonic() >= deadline:
                return None

    def _wake_at(self, deadline: float) -> float:
        """When to stop waiting for the socket: the caller's deadline, or sooner to retry a pull or to give up
        on a pull request gone silent (raises ConnectionClosed once it has)."""
        with self._lock:
            requested, pull_after = self._requested, self._pull_after
        if not requested:  # a pull to retry later; or none, for want of room: a settle that makes room pulls,
            # and its deliveries wake the socket wait (returning at once here would spin the thread)
            return min(deadline, pull_after) if pull_after > time.monotonic() else deadline
        silent_until = self._heard + PULL_STALL_S
        if time.monotonic() > silent_until:
            raise ConnectionClosed(TimeoutError(f"pull request silent for {PULL_STALL_S}s"))
        return min(deadline, silent_until)

    def send_progress(self) -> None:
        """Tell the server the held deliveries are still worked on (the broker's keeper calls this)."""
        if self.closed:
            return
        with self._lock:
            held = list(self.held)
        try:
            for reply in held:
                self.conn.publish(reply, IN_PROGRESS)
        except nats.errors.Error as exc:
            log.debug("progress not sent (%r); ack_wait runs on until a new consumer takes over", exc)

    def _pull(self) -> None:
        """Ask for as many messages as there is room for, unless a request is open; while busy, wait to ask for
        a bigger batch. Called by the consumer thread, and by a worker thread whose settle made room."""
        with self._lock:
            holding = len(self.held)
            room = self.prefetch - holding
            if self.closed or self._requested or room <= 0 or time.monotonic() < self._pull_after:
                return
            if holding and room < self.prefetch // 2:
                return
            request = {
                "batch": room,
                "expires": int(PULL_EXPIRES_S * 1e9),
                "idle_heartbeat": int(PULL_HEARTBEAT_S * 1e9),
            }
            with _lost_connection():
                self.conn.publish(self._next_subject, json.dumps(request).encode(), reply=self.inbox)
            self._requested, self._heard = room, time.monotonic()

    def _accept(self, received: Received) -> NatsMessage | None:
        """A delivery for Dramatiq, or None for a status of the pull request (or a delivery dead-lettered)."""
        self._heard = time.monotonic()
        if received.status is None and received.reply:
            msg = Msg(None, received.subject, received.reply, received.data, received.headers or None)  # type: ignore[arg-type]
            with self._lock:
                self._requested = max(0, self._requested - 1)
                self.held[msg.reply] = msg
            return self._delivered(msg)
        if received.status == IDLE_HEARTBEAT:
            return None
        if received.status in PULL_ENDED:
            with self._lock:
                self._requested = 0
                if received.status != "408":
                    self._pull_after = time.monotonic() + PULL_RETRY_S
            return None
        raise ConnectionClosed(RuntimeError(f"pull request failed with status {received.status}"))

    def _delivered(self, msg: Msg) -> NatsMessage | None:
        try:
            message = NatsMessage(decode(msg.data), msg)
        except DecodeError:
            log.exception("undecodable message on %s: dead-lettered", self.queue_name)
            self._dead_letter(msg, msg.data)
            return None
        if msg.metadata.num_delivered <= self.delivery.max_deliveries:
            return message
        log.warning("message %s delivered %d times: dead-lettered", message.message_id, msg.metadata.num_delivered)
        message.fail()  # as Dramatiq's worker does, so that nack middleware (frame release) runs
        self.broker.emit_before("nack", message)
        self.nack(message)
        self.broker.emit_after("nack", message)
        return None

    def _settle(self, msg: Msg, answer: bytes) -> None:
        """Ack (or nak) without waiting for a reply, then ask for more if that made room; an answer that cannot go
        out is left to ``ack_wait``."""
        with self._lock:
            self.held.pop(msg.reply, None)
        try:
            self.conn.publish(msg.reply, answer)
            self._pull()
        except (nats.errors.Error, ConnectionClosed) as exc:
            log.debug("%r not sent (%r): the message comes back after ack_wait", answer or b"+ACK", exc)

    def _dead_letter(self, msg: Msg, body: bytes) -> None:
        self.delivery.dead_letter(self.queue_name, body)
        self._settle(msg, ACK)

    def ack(self, message: NatsMessage) -> None:  # type: ignore[override]
        self._settle(message._msg, ACK)

    def nack(self, message: NatsMessage) -> None:  # type: ignore[override]
        """Dead-letter the message (Dramatiq's meaning of nack), with the options Retries added, then ack it."""
        self._dead_letter(message._msg, b"".join(encode(message._message)))

    def requeue(self, messages: Iterable[NatsMessage]) -> None:  # type: ignore[override]
        """Hand deliveries back for immediate redelivery (offline, ``ack_wait`` does it)."""
        for message in messages:
            self._settle(message._msg, NAK)

    def close(self) -> None:
        """Hand back the deliveries already on their way that Dramatiq never saw, then close the socket."""
        self.closed = True
        with contextlib.suppress(OSError, nats.errors.Error, ConnectionClosed):
            deadline = time.monotonic() + CLOSE_DRAIN_S
            while self._requested and (received := self.conn.receive(deadline)) is not None:
                if received.status is None and received.reply:
                    with self._lock:
                        self._requested -= 1
                    self.conn.publish(received.reply, NAK)
        self.conn.close()
