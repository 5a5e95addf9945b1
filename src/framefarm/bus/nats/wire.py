"""A small synchronous NATS client for plain threads: no event loop, no thread hop.

nats-py is asyncio-only, so a thread that sends a request through it hands it to the link's loop thread and
sleeps until that thread wakes it with the reply, and a delivery reaches a worker through the loop and a queue:
two thread switches per request or message, which on a busy machine cost more than the NATS work itself
(bench/README.md). A plain socket does better: write the request, read the reply; read the deliveries in the
thread that hands them to Dramatiq.

It speaks what framefarm needs and nothing more: INFO, CONNECT (user and password, or a token, from the URL;
TLS for ``tls://`` or when the server requires it), SUB, UNSUB, PUB/HPUB, MSG/HMSG, PING/PONG and -ERR.
Failures raise nats-py's own errors, so callers handle them as they handle the link's; after one the
connection is closed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import secrets
import select
import socket
import ssl
import threading
import time
import weakref
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import nats.errors

from ..rxbuffer import ReceiveBuffer

CRLF = b"\r\n"
HEADER_LINE = b"NATS/1.0"
DEFAULT_PORT = 4222
DEFAULT_MAX_PAYLOAD = 1024 * 1024
INBOX_PREFIX = "_INBOX.ff"
MAX_CONTROL_LINE = 4096  # a longer line is not a NATS protocol line
NO_RESPONDERS = "503"
REPLIES_SID = b"1"  # a connection's subscription to its own reply inbox


class Received(NamedTuple):
    subject: str
    reply: str
    data: bytes
    status: str | None  # the status of a status message ("503": no responders, "404": not found), else None
    headers: dict[str, str]


class WireConnection(ReceiveBuffer):
    """One socket to one server. Any thread may send (a lock keeps commands whole); one thread at a time reads."""

    def __init__(self, server: str, *, name: str, timeout: float) -> None:
        url = urlsplit(server)
        self.timeout = timeout
        self.inbox = f"{INBOX_PREFIX}.{secrets.token_hex(8)}"
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        super().__init__()
        self._pongs = 0
        self.sock: socket.socket = socket.create_connection(
            (url.hostname or "127.0.0.1", url.port or DEFAULT_PORT), timeout=timeout
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._handshake(url, name)
        except BaseException:
            self.close()
            raise

    def _handshake(self, url: Any, name: str) -> None:
        info = self._server_info(time.monotonic() + self.timeout)
        if url.scheme == "tls" or info.get("tls_required"):
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=url.hostname)
        self.max_payload = int(info.get("max_payload", DEFAULT_MAX_PAYLOAD))
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, "protocol": 1}
        connect.update(name=name, lang="python", version="framefarm", **_credentials(url))
        self.send(
            b"CONNECT %s\r\nSUB %s.* %s\r\nPING\r\n" % (json.dumps(connect).encode(), self.inbox.encode(), REPLIES_SID)
        )
        self._await_pong(time.monotonic() + self.timeout)

    def _await_pong(self, deadline: float) -> None:
        """Read until the PONG that answers CONNECT's PING: an -ERR before it means the server refused us."""
        while True:
            while self._parse() is not None:  # nothing can be addressed to a connection this new: dropped
                pass
            if self._pongs:
                return
            if time.monotonic() >= deadline:
                raise nats.errors.TimeoutError
            if self._readable(deadline):
                self._fill(deadline)

    def _server_info(self, deadline: float) -> dict[str, Any]:
        while (end := self._buf.find(CRLF, self._start, self._end)) < 0:
            self._fill(deadline)
        line, self._start = bytes(self._view[self._start : end]), end + 2
        if not line.startswith(b"INFO "):
            raise nats.errors.ProtocolError
        return json.loads(line[5:])

    # -- sending --

    def send(self, *parts: bytes) -> None:
        """Send one or more whole commands; a failure closes the connection (ConnectionClosedError)."""
        try:
            with self._send_lock:
                self.sock.sendall(b"".join(parts))
        except OSError as exc:
            self.close()
            raise nats.errors.ConnectionClosedError from exc

    def publish(
        self, subject: str, data: bytes = b"", *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if len(data) > self.max_payload:
            raise nats.errors.MaxPayloadError
        target = f"{subject} {reply}".strip().encode()
        if not headers:
            self.send(b"PUB %s %d\r\n" % (target, len(data)), data, CRLF)
            return
        head = HEADER_LINE + CRLF + b"".join(f"{k}: {v}".encode() + CRLF for k, v in headers.items()) + CRLF
        self.send(b"HPUB %s %d %d\r\n" % (target, len(head), len(head) + len(data)), head, data, CRLF)

    def request(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Received:
        """Send ``data`` to ``subject`` and wait for the one reply (replies to earlier requests are skipped)."""
        reply_to = f"{self.inbox}.{next(self._ids)}"
        self.publish(subject, data, reply=reply_to, headers=headers)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self.receive(deadline)
            if message is None:
                self.close()  # the reply may still come: this connection cannot tell it from the next one's
                raise nats.errors.TimeoutError
            if message.subject == reply_to:
                return message

    # -- receiving --

    def receive(self, deadline: float | None) -> Received | None:
        """The next message (pings answered, errors raised on the way), or None once ``deadline`` passes."""
        while True:
            message = self._parse()
            if message is not None:
                return message
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if self._readable(deadline):
                self._fill(deadline)

    def _parse(self) -> Received | None:
        """A whole message from what was received (control lines handled on the way), or None for more bytes."""
        while (end := self._buf.find(CRLF, self._start, self._end)) >= 0:
            line = bytes(self._view[self._start : end])
            if not line.startswith((b"MSG ", b"HMSG ")):
                self._start = end + 2
                self._control(line)
                continue
            parts = line.split()
            size, head_size = int(parts[-1]), (int(parts[-2]) if parts[0] == b"HMSG" else 0)
            stop = end + 2 + size + 2
            if stop > self._end:
                self._make_room(stop - self._start)
                return None
            body = bytes(self._view[end + 2 : end + 2 + size])
            self._start = stop
            reply = parts[3].decode() if len(parts) == (6 if parts[0] == b"HMSG" else 5) else ""
            return Received(parts[1].decode(), reply, body[head_size:], *_headers(body[:head_size]))
        if self._end - self._start > MAX_CONTROL_LINE:
            raise nats.errors.ProtocolError
        return None

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.send(b"PONG\r\n")
        elif line == b"PONG":
            self._pongs += 1
        elif line.startswith(b"-ERR"):
            self.close()
            raise nats.errors.Error(line[5:].decode(errors="replace").strip(" '"))

    def _readable(self, deadline: float | None) -> bool:
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
        return bool(poller.poll(timeout))

    def _fill(self, deadline: float | None) -> None:
        """Receive what the socket has; EOF and errors close the connection (ConnectionClosedError)."""
        if self._start == self._end:
            self._start = self._end = 0
        if self._end == len(self._buf):
            self._make_room(len(self._buf) - self._start + 1)
        try:
            received = self.sock.recv_into(self._view[self._end :])
        except OSError as exc:
            self.close()
            raise nats.errors.ConnectionClosedError from exc
        if received == 0:
            self.close()
            raise nats.errors.ConnectionClosedError
        self._end += received

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _credentials(url: Any) -> dict[str, str]:
    """CONNECT's credentials from ``nats://user:password@host`` or ``nats://token@host``, as nats-py reads them."""
    if url.username is None:
        return {}
    if url.password is None:
        return {"auth_token": url.username}
    return {"user": url.username, "pass": url.password}


def _headers(head: bytes) -> tuple[str | None, dict[str, str]]:
    """A header block's status code (``NATS/1.0 404``; None without one) and headers."""
    if not head:
        return None, {}
    first, *lines = head.decode(errors="replace").split("\r\n")
    status = first.split()[1] if len(first.split()) > 1 else None
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    return status, headers


class Wire:
    """Synchronous requests to the first of ``servers`` that answers, over pooled connections; and connections
    of their own for consumers (``connect``).

    A thread takes an idle connection (or makes one), sends its request, reads the reply and gives the connection
    back, so there are as many connections as requests ever ran at once. A connection that fails is dropped; the
    error (nats-py's: ConnectionClosedError, TimeoutError, NoRespondersError...) goes to the caller, who retries
    as it would after a failure of the link; the next request connects again.
    """

    def __init__(self, servers: list[str], *, name: str, timeout: float, reconnect_wait: float) -> None:
        self.servers = servers
        self.name = name
        self.timeout = timeout
        self.reconnect_wait = reconnect_wait
        self._idle: queue.LifoQueue[WireConnection] = queue.LifoQueue()
        self._next_server = itertools.count()
        self._made: weakref.WeakSet[WireConnection] = weakref.WeakSet()  # every connection still open
        self.closed = threading.Event()

    def request(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Received:
        """Raises NoRespondersError when nothing listens on ``subject``, nats-py's errors for a failed connection.

        Requests ride through a short server restart, as nats-py's do: an idle connection the server dropped
        meanwhile (it restarted, or closed it after unanswered pings) is found out by the request, which is sent
        again on a new connection; while no server answers, or nothing listens yet (JetStream still loading its
        streams), it is tried again every ``reconnect_wait`` until its timeout is spent."""
        deadline = time.monotonic() + self.timeout
        while (reply := self._request_once(subject, data, headers, deadline)).status == NO_RESPONDERS:
            if time.monotonic() + self.reconnect_wait > deadline:
                raise nats.errors.NoRespondersError
            self.closed.wait(self.reconnect_wait)
        return reply

    def _request_once(self, subject: str, data: bytes, headers: dict[str, str] | None, deadline: float) -> Received:
        connection = self._idle_connection()
        if connection is not None:
            with contextlib.suppress(_Dropped):
                return self._answer(connection, self._send(connection, subject, data, headers, idle=True))
        connection = self.connect(deadline)
        return self._answer(connection, self._send(connection, subject, data, headers))

    def _send(
        self,
        connection: WireConnection,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        *,
        idle: bool = False,
    ) -> Received:
        try:
            return connection.request(subject, data, headers)
        except (OSError, nats.errors.Error) as exc:
            connection.close()
            if idle and isinstance(exc, nats.errors.ConnectionClosedError):
                raise _Dropped from exc
            raise _translated(exc) from exc

    def _answer(self, connection: WireConnection, reply: Received) -> Received:
        self._give_back(connection)
        return reply

    def max_payload(self) -> int:
        """The server's largest message, as its INFO says."""
        connection = self._idle_connection() or self.connect()
        self._give_back(connection)
        return connection.max_payload

    def _give_back(self, connection: WireConnection) -> None:
        self._idle.put(connection)
        if self.closed.is_set():  # closed while it was in use
            connection.close()

    def _idle_connection(self) -> WireConnection | None:
        if self.closed.is_set():
            raise nats.errors.ConnectionClosedError
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def connect(self, deadline: float | None = None) -> WireConnection:
        """A new connection, to the next server of the list that answers (a consumer keeps its own); while none
        does, try again every ``reconnect_wait`` until ``deadline`` (monotonic; None: one round of the list)."""
        while True:
            if self.closed.is_set():
                raise nats.errors.ConnectionClosedError
            failure: Exception = nats.errors.NoServersError()
            for _ in self.servers:
                server = self.servers[next(self._next_server) % len(self.servers)]
                try:
                    connection = WireConnection(server, name=self.name, timeout=self.timeout)
                except (OSError, ValueError, nats.errors.Error) as exc:
                    failure = _translated(exc)
                    continue
                self._made.add(connection)
                return connection
            if deadline is None or time.monotonic() + self.reconnect_wait > deadline:
                raise failure
            self.closed.wait(self.reconnect_wait)

    def close(self) -> None:
        """Close every connection, consumers' included: what they were doing fails as on a lost connection."""
        self.closed.set()
        for connection in list(self._made):
            connection.close()


class _Dropped(Exception):
    """An idle connection turned out closed: worth one more try on a new one."""


def _translated(exc: Exception) -> Exception:
    """nats-py's error for a failure of the socket; nats-py's own errors as they are."""
    if isinstance(exc, nats.errors.Error):
        return exc
    if isinstance(exc, TimeoutError):
        return nats.errors.TimeoutError()
    return nats.errors.ConnectionClosedError()
