"""A small synchronous NATS client for requests made from plain threads: no event loop, no thread hop.

nats-py is asyncio-only, so a thread that sends a request through it hands it to the link's loop thread and
sleeps until that thread wakes it with the reply: two thread switches per request, which on a busy machine
cost more than the request itself (bench/README.md). A caller that waits for the reply anyway, as a JetStream
publish does, is better served by a plain socket: write the request, read the reply.

It speaks what requests need and nothing more: INFO, CONNECT (user and password, or a token, from the URL;
TLS for ``tls://`` or when the server requires it), SUB to its reply inbox, PUB/HPUB, MSG/HMSG, PING/PONG and
-ERR. Failures raise nats-py's own errors, so callers handle them as they handle the link's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import secrets
import socket
import ssl
import threading
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import nats.errors

CRLF = b"\r\n"
HEADER_LINE = b"NATS/1.0"
DEFAULT_PORT = 4222
INBOX_PREFIX = "_INBOX.ff"
MAX_CONTROL_LINE = 4096  # a longer line is not a NATS protocol line
NO_RESPONDERS = "503"


class Reply(NamedTuple):
    data: bytes
    status: str | None  # the status of a status reply ("503": no responders, "404": not found), else None
    headers: dict[str, str]


class WireConnection:
    """One socket to one server; one request at a time (Wire keeps one per thread that needs one)."""

    def __init__(self, server: str, *, name: str, timeout: float) -> None:
        url = urlsplit(server)
        self.timeout = timeout
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (url.hostname or "127.0.0.1", url.port or DEFAULT_PORT), timeout=timeout
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        info = self._info()
        if url.scheme == "tls" or info.get("tls_required"):
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=url.hostname)
            self.reader = self.sock.makefile("rb")
        self.max_payload = int(info.get("max_payload", 1024 * 1024))
        self.inbox = f"{INBOX_PREFIX}.{secrets.token_hex(8)}"
        self._ids = itertools.count()
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, "protocol": 1}
        connect.update(name=name, lang="python", version="framefarm", **_credentials(url))
        self.sock.sendall(b"CONNECT %s\r\nSUB %s.* 1\r\nPING\r\n" % (json.dumps(connect).encode(), self.inbox.encode()))
        self._await_pong()

    def _info(self) -> dict[str, Any]:
        line = self._line()
        if not line.startswith(b"INFO "):
            raise nats.errors.ProtocolError
        return json.loads(line[5:])

    def _line(self) -> bytes:
        line = self.reader.readline(MAX_CONTROL_LINE)
        if not line.endswith(CRLF):
            raise nats.errors.ConnectionClosedError
        return line[:-2]

    def _await_pong(self) -> None:
        """Read until the PONG that answers CONNECT's PING: an -ERR before it means the server refused us."""
        while (line := self._line()) != b"PONG":
            self._control(line)

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.sock.sendall(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            raise nats.errors.Error(line[5:].decode(errors="replace").strip(" '"))

    def request(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Reply:
        """Send ``data`` to ``subject`` and wait for the one reply."""
        if len(data) > self.max_payload:
            raise nats.errors.MaxPayloadError
        reply_to = f"{self.inbox}.{next(self._ids)}"
        if headers:
            head = HEADER_LINE + CRLF + b"".join(f"{k}: {v}".encode() + CRLF for k, v in headers.items()) + CRLF
            line = b"HPUB %s %s %d %d\r\n" % (subject.encode(), reply_to.encode(), len(head), len(head) + len(data))
            self.sock.sendall(b"".join((line, head, data, CRLF)))
        else:
            self.sock.sendall(
                b"".join((b"PUB %s %s %d\r\n" % (subject.encode(), reply_to.encode(), len(data)), data, CRLF))
            )
        return self._reply(reply_to.encode())

    def _reply(self, reply_to: bytes) -> Reply:
        """The next message on ``reply_to``; replies to earlier requests that timed out are skipped."""
        while True:
            line = self._line()
            if not line.startswith((b"MSG ", b"HMSG ")):
                self._control(line)
                continue
            parts = line.split()
            size, head_size = int(parts[-1]), int(parts[-2]) if parts[0] == b"HMSG" else 0
            body = self.reader.read(size + 2)[:-2]
            if len(body) != size:
                raise nats.errors.ConnectionClosedError
            if parts[1] == reply_to:
                return Reply(body[head_size:], *_headers(body[:head_size]))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
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
    """Synchronous requests to the first of ``servers`` that answers, over pooled connections.

    A thread takes an idle connection (or makes one), sends its request, reads the reply and gives the connection
    back, so there are as many connections as requests ever ran at once. A connection that fails is dropped; the
    error (nats-py's: ConnectionClosedError, TimeoutError, NoRespondersError...) goes to the caller, who retries
    as it would after a failure of the link; the next request connects again.
    """

    def __init__(self, servers: list[str], *, name: str, timeout: float) -> None:
        self.servers = servers
        self.name = name
        self.timeout = timeout
        self._idle: queue.LifoQueue[WireConnection] = queue.LifoQueue()
        self._next_server = itertools.count()
        self._closed = threading.Event()

    def request(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Reply:
        """Raises NoRespondersError when nothing listens on ``subject``, nats-py's errors for a failed connection.

        An idle connection the server dropped meanwhile (it restarted, or closed it after unanswered pings) is
        found out by this request: it is sent again, once, on a new connection."""
        connection = self._idle_connection()
        if connection is not None:
            with contextlib.suppress(_Dropped):
                return self._answer(connection, self._send(connection, subject, data, headers, idle=True))
        connection = self._connect()
        return self._answer(connection, self._send(connection, subject, data, headers))

    def _send(
        self,
        connection: WireConnection,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        *,
        idle: bool = False,
    ) -> Reply:
        try:
            return connection.request(subject, data, headers)
        except (OSError, nats.errors.Error) as exc:
            connection.close()
            if idle and _dropped(exc):
                raise _Dropped from exc
            raise _translated(exc) from exc

    def _answer(self, connection: WireConnection, reply: Reply) -> Reply:
        """Give ``connection`` back; ``reply``, unless it says nothing listens on the subject."""
        self._give_back(connection)
        if reply.status == NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return reply

    def max_payload(self) -> int:
        """The server's largest message, as its INFO says."""
        connection = self._idle_connection() or self._connect()
        self._give_back(connection)
        return connection.max_payload

    def _idle_connection(self) -> WireConnection | None:
        if self._closed.is_set():
            raise nats.errors.ConnectionClosedError
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def _connect(self) -> WireConnection:
        """A new connection, to the next server of the list that answers."""
        failure: Exception = nats.errors.NoServersError()
        for _ in self.servers:
            server = self.servers[next(self._next_server) % len(self.servers)]
            try:
                return WireConnection(server, name=self.name, timeout=self.timeout)
            except (OSError, ValueError, nats.errors.Error) as exc:
                failure = _translated(exc)
        raise failure

    def _give_back(self, connection: WireConnection) -> None:
        self._idle.put(connection)
        if self._closed.is_set():
            self.close()

    def close(self) -> None:
        """Close the idle connections; one in use is closed when it comes back."""
        self._closed.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._idle.get_nowait().close()


class _Dropped(Exception):
    """An idle connection turned out closed: worth one more try on a new one."""


def _dropped(exc: Exception) -> bool:
    """The connection was closed under us (not a timeout: a request that timed out may have been done)."""
    return isinstance(exc, nats.errors.ConnectionClosedError) or (
        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    )


def _translated(exc: Exception) -> Exception:
    """nats-py's error for a failure of the socket; nats-py's own errors as they are."""
    if isinstance(exc, nats.errors.Error):
        return exc
    if isinstance(exc, TimeoutError):
        return nats.errors.TimeoutError()
    return nats.errors.ConnectionClosedError()
