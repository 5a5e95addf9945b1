"""Publishing to one nsqd, and reading one topic/channel from every nsqd that carries it."""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable
from threading import Lock

from dramatiq.errors import BrokerConnectionError, ConnectionClosed, ConnectionFailed

from .http import NsqEndpoints
from .protocol import (
    FRAME_ERROR,
    FRAME_MESSAGE,
    HEARTBEAT,
    NsqConnection,
    RawMessage,
    parse_message,
)

log = logging.getLogger(__name__)

MAX_IDLE_PUBLISHERS = 8  # connections kept open for reuse; more threads publishing at once open more
LOOKUPD_POLL_S = 15.0  # how often a subscription asks nsqlookupd for new nsqd daemons
CLOSE_GRACE_S = 0.05  # how long a closing subscription waits for messages already on their way
MAX_DEFER_MS = 3_600_000  # nsqd's default --max-req-timeout: the longest DPUB and REQ delay it accepts


class Producer:
    """PUB and DPUB to one nsqd through a small pool of connections, so threads publish concurrently.

    A publish waits for nsqd's OK: when ``publish`` returns, nsqd holds the message. A pooled connection that
    died while idle (nsqd restarted) is replaced and the publish tried once more on a fresh one.
    """

    def __init__(self, endpoints: NsqEndpoints) -> None:
        self.endpoints = endpoints
        self._idle: list[NsqConnection] = []
        self._lock = Lock()

    def publish(self, topic: str, body: list[bytes], *, delay_ms: int | None = None) -> None:
        command = (b"PUB", topic.encode())
        if delay_ms:
            command = (b"DPUB", topic.encode(), str(min(max(0, int(delay_ms)), MAX_DEFER_MS)).encode())
        for attempt in (1, 2):
            conn, reused = self._take()
            try:
                conn.request(*command, body=body)
            except BrokerConnectionError:
                if attempt == 2 or not reused:
                    raise
                log.debug("idle connection to nsqd lost; publishing on a new one")
            else:
                self._give(conn)
                return

    def _take(self) -> tuple[NsqConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        endpoints = self.endpoints
        return NsqConnection(
            endpoints.host, endpoints.port, heartbeats=False, msg_timeout_ms=endpoints.msg_timeout_ms
        ).open(), False

    def _give(self, conn: NsqConnection) -> None:
        with self._lock:
            if not conn.closed and len(self._idle) < MAX_IDLE_PUBLISHERS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Subscription:
    """SUB to ``topic``/``channel`` on every nsqd that carries it, with ``max_in_flight`` split as RDY.

    nsqd sends a connection at most RDY messages that are not yet FINed or REQed, so RDY is Dramatiq's
    prefetch. With a single nsqd a lost connection raises ConnectionClosed; with nsqlookupd the others
    keep going and lost daemons come back at the next lookup.
    """

    def __init__(self, endpoints: NsqEndpoints, topic: str, channel: str, *, max_in_flight: int) -> None:
        self.endpoints, self.topic, self.channel = endpoints, topic, channel
        self.max_in_flight = max(1, max_in_flight)
        self.conns: dict[int, NsqConnection] = {}
        self._poller = select.poll()
        self._next_lookup = 0.0

    def open(self) -> Subscription:
        self._discover(required=True)
        return self

    @property
    def msg_timeout_s(self) -> float:
        return min((conn.msg_timeout_s for conn in self.conns.values()), default=60.0)

    def next(self, deadline: float) -> RawMessage | None:
        """The next message from any connection, or None when ``deadline`` (monotonic) passes first."""
        while True:
            if self.endpoints.lookupd and time.monotonic() >= self._next_lookup:
                self._discover(required=False)
            for conn in list(self.conns.values()):
                message = self._drain(conn)
                if message is not None:
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for fd, _ in self._poller.poll(remaining * 1000):
                conn = self.conns.get(fd)
                if conn is not None:
                    self._guard(conn, conn.fill)

    def _drain(self, conn: NsqConnection) -> RawMessage | None:
        """The first message already received on ``conn``; answers heartbeats and logs errors on the way."""
        while (frame := conn.next_frame()) is not None:
            kind, data = frame
            if kind == FRAME_MESSAGE:
                return parse_message(data, conn)
            if kind == FRAME_ERROR:
                error = conn.error(data)
                log.log(logging.WARNING if conn.closed else logging.DEBUG, "%s on %s: %s", self.topic, conn, error)
            elif data == HEARTBEAT:
                self._guard(conn, conn.command, b"NOP")
            if conn.closed:
                self._guard(conn)
                return None
        return None

    def _guard(self, conn: NsqConnection, action: Callable[..., object] | None = None, *args: bytes) -> None:
        """Run ``action(*args)`` for ``conn``; a lost connection is dropped, and raised if it was the last one."""
        try:
            if conn.closed:
                raise ConnectionClosed(f"{conn} closed by nsqd")
            if action is not None:
                action(*args)
        except ConnectionClosed:
            self._drop(conn)
            if not self.conns or not self.endpoints.lookupd:
                raise
            log.warning("lost %s; reading %s from %d other nsqd", conn, self.topic, len(self.conns))

    def _discover(self, *, required: bool) -> None:
        """Connect to every producer of the topic not yet connected; ``required``: fail if none answers."""
        self._next_lookup = time.monotonic() + LOOKUPD_POLL_S
        try:
            addresses = self.endpoints.producers(self.topic)
        except BrokerConnectionError as exc:
            log.warning("nsqlookupd: %s", exc)
            addresses = [(self.endpoints.host, self.endpoints.port)]
        connected = {(conn.host, conn.port) for conn in self.conns.values()}
        failures = []
        for host, port in addresses:
            if (host, port) not in connected:
                try:
                    self._subscribe(NsqConnection(host, port, msg_timeout_ms=self.endpoints.msg_timeout_ms).open())
                except BrokerConnectionError as exc:
                    failures.append(exc)
        if not self.conns and failures and (required or not self.endpoints.lookupd):
            raise ConnectionFailed(f"no nsqd to read {self.topic} from: {failures[0]}") from failures[0]
        self._spread_rdy()

    def _subscribe(self, conn: NsqConnection) -> None:
        conn.request(b"SUB", self.topic.encode(), self.channel.encode())
        self.conns[conn.fileno()] = conn
        self._poller.register(conn.fileno(), select.POLLIN)

    def _spread_rdy(self) -> None:
        share = max(1, self.max_in_flight // max(1, len(self.conns)))
        for conn in list(self.conns.values()):
            rdy = min(share, int(conn.settings.get("max_rdy_count", share)))
            self._guard(conn, conn.command, b"RDY", str(rdy).encode())

    def _drop(self, conn: NsqConnection) -> None:
        for fd, known in list(self.conns.items()):
            if known is conn:
                del self.conns[fd]
                self._poller.unregister(fd)
        conn.close()

    def pause(self) -> None:
        """RDY 0 everywhere: nsqd sends nothing more (what is already on the way still arrives)."""
        for conn in list(self.conns.values()):
            with contextlib.suppress(BrokerConnectionError):
                conn.command(b"RDY", b"0")

    def close(self) -> None:
        """Stop deliveries, give back (REQ 0) what arrived but was never handed out, and disconnect.

        Without the REQ, such messages would wait for nsqd's msg-timeout before anyone else got them.
        """
        self.pause()
        deadline = time.monotonic() + CLOSE_GRACE_S
        with contextlib.suppress(BrokerConnectionError):
            while self.conns and (message := self.next(deadline)) is not None:
                message.conn.command(b"REQ", message.id, b"0")
        for conn in list(self.conns.values()):
            self._drop(conn)
