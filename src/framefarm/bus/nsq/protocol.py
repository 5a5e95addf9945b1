"""NSQ's TCP protocol V2 on one blocking socket: framing, IDENTIFY, commands and their responses.

framefarm speaks the protocol itself (it is a handful of line commands and length-prefixed frames) rather
than through pynsq (tornado), gnsq (gevent) or ansq (asyncio): each of those spent about 0.4 ms of CPU per
100 KB message on this kind of machine, five times what a plain socket read costs, and they hide RDY and
reconnects behind their own loops where Dramatiq wants to own them.

Thread-safety: any thread may send (a lock keeps frames whole, so worker threads FIN while the consumer
thread reads); one thread at a time reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import select
import socket
import struct
import time
from dataclasses import dataclass
from threading import Lock
from typing import Any

from dramatiq.errors import ConnectionClosed, ConnectionFailed

from ...errors import BusError
from ..rxbuffer import ReceiveBuffer

log = logging.getLogger(__name__)

MAGIC_V2 = b"  V2"
FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2
HEARTBEAT = b"_heartbeat_"
CONNECT_TIMEOUT_S = 5.0
IO_TIMEOUT_S = 30.0  # a send or an awaited response slower than this means nsqd is gone
MAX_NAME_LENGTH = 64  # nsqd's limit on topic and channel names, "#ephemeral" included
USER_AGENT = "framefarm-nsq/1"
# Errors after which nsqd keeps the connection open (a late FIN/REQ/TOUCH for a message that timed out).
NON_FATAL_ERRORS = frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"})

_INT = struct.Struct(">l")
_MESSAGE_HEADER = struct.Struct(">qH16s")
_NAME = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")


class NsqServerError(BusError):
    """nsqd answered a command with an error frame (``code`` is its E_* name)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"nsqd refused: {code} {text}".strip())
        self.code = code


def nsq_name(base: str, *, prefix: str = "", suffix: str = "") -> str:
    """A valid topic/channel name for ``prefix + base + suffix``; a too-long ``base`` is shortened with a hash."""
    name = prefix + base + suffix
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.blake2b(base.encode(), digest_size=5).hexdigest()
        keep = MAX_NAME_LENGTH - len(prefix) - len(suffix) - len(digest) - 1
        name = f"{prefix}{base[:keep]}-{digest}{suffix}"
    if not _NAME.match(name):
        raise BusError(f'"{name}" is not a valid NSQ topic or channel name')
    return name


@dataclass(slots=True)
class RawMessage:
    """One delivery of a message: FIN, REQ and TOUCH go back on the connection it came from."""

    id: bytes
    attempts: int
    timestamp_ns: int
    body: bytes
    conn: NsqConnection


class NsqConnection(ReceiveBuffer):
    """One TCP connection to one nsqd. Socket errors surface as Dramatiq's ConnectionClosed."""

    def __init__(self, host: str, port: int, *, heartbeats: bool = True, msg_timeout_ms: int | None = None) -> None:
        self.host, self.port = host, port
        self.heartbeats = heartbeats
        self.msg_timeout_ms = msg_timeout_ms
        self.settings: dict[str, Any] = {}
        self.closed = True
        self._sock: socket.socket | None = None
        self._send_lock = Lock()
        super().__init__()

    def __repr__(self) -> str:
        return f"<NsqConnection {self.host}:{self.port}{' closed' if self.closed else ''}>"

    def open(self) -> NsqConnection:
        """Connect and IDENTIFY; raises ConnectionFailed when nsqd cannot be reached."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to nsqd at {self.host}:{self.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IO_TIMEOUT_S)
        self._sock, self.closed = sock, False
        identify = {
            "client_id": socket.gethostname(),
            "hostname": socket.getfqdn(),
            "user_agent": USER_AGENT,
            "feature_negotiation": True,
            # Unbuffered output: small messages are not held back for nsqd's 250 ms flush tick.
            "output_buffer_size": -1,
            # Publishing connections sit idle between bursts; without heartbeats nsqd never drops them.
            "heartbeat_interval": None if self.heartbeats else -1,
            # A consumer that dies without FIN gets its messages redelivered after this long.
            "msg_timeout": self.msg_timeout_ms,
        }
        body = json.dumps({k: v for k, v in identify.items() if v is not None}).encode()
        self.send(MAGIC_V2, b"IDENTIFY\n", _INT.pack(len(body)), body)
        response = self.response()
        self.settings = json.loads(response) if response.startswith(b"{") else {}
        return self

    @property
    def msg_timeout_s(self) -> float:
        """How long nsqd waits for FIN or TOUCH before it redelivers a message to someone else."""
        return float(self.settings.get("msg_timeout", 60_000)) / 1000

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock else -1

    def send(self, *parts: bytes) -> None:
        """Send one command's parts without joining them (a frame's bytes are not copied)."""
        if self._sock is None or self.closed:
            raise ConnectionClosed(f"connection to nsqd at {self.host}:{self.port} is closed")
        with self._send_lock:
            try:
                _send_all(self._sock, parts)
            except OSError as exc:
                raise self._lost(exc) from exc

    def command(self, name: bytes, *args: bytes, body: bytes | None = None) -> None:
        """Send a command nsqd does not answer on success (FIN, REQ, TOUCH, RDY, NOP)."""
        line = b" ".join((name, *args)) + b"\n"
        if body is None:
            self.send(line)
        else:
            self.send(line, _INT.pack(len(body)), body)

    def request(self, name: bytes, *args: bytes, body: list[bytes] | None = None) -> bytes:
        """Send a command and wait for its response (PUB, DPUB, SUB, CLS); error frames raise NsqServerError."""
        line = b" ".join((name, *args)) + b"\n"
        if body is None:
            self.send(line)
        else:
            self.send(line, _INT.pack(sum(map(len, body))), *body)
        return self.response()

    def response(self) -> bytes:
        deadline = time.monotonic() + IO_TIMEOUT_S
        while True:
            frame = self.read_frame(deadline)
            if frame is None:
                raise self._lost(TimeoutError(f"no answer within {IO_TIMEOUT_S}s"))
            kind, data = frame
            if kind == FRAME_RESPONSE and data == HEARTBEAT:
                self.command(b"NOP")
            elif kind == FRAME_RESPONSE:
                return data
            elif kind == FRAME_ERROR:
                raise self.error(data)
            else:
                raise self._lost(BusError("nsqd sent a message on a connection that subscribes to nothing"))

    def error(self, data: bytes) -> NsqServerError:
        """The error an error frame carries; after a fatal one nsqd closes the connection, and so do we."""
        code, _, text = data.decode(errors="replace").partition(" ")
        if code not in NON_FATAL_ERRORS:
            self.close()
        return NsqServerError(code, text)

    def read_frame(self, deadline: float | None) -> tuple[int, bytes] | None:
        """The next frame, or None when ``deadline`` (monotonic) passes first."""
        while (frame := self.next_frame()) is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.wait_readable(remaining):
                return None
            self.fill()
        return frame

    def wait_readable(self, timeout: float | None) -> bool:
        if self._sock is None or self.closed:
            raise ConnectionClosed(f"connection to nsqd at {self.host}:{self.port} is closed")
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))

    def next_frame(self) -> tuple[int, bytes] | None:
        """A whole frame from what was already received, or None when more bytes are needed."""
        available = self._end - self._start
        if available < 8:
            return None
        size = _INT.unpack_from(self._buf, self._start)[0]
        if available < 4 + size:
            self._make_room(4 + size)
            return None
        kind = _INT.unpack_from(self._buf, self._start + 4)[0]
        data = bytes(self._view[self._start + 8 : self._start + 4 + size])
        self._start += 4 + size
        if self._start == self._end:
            self._start = self._end = 0
        return kind, data

    def fill(self) -> None:
        """Receive what the socket has (after ``wait_readable`` said so); EOF and errors raise ConnectionClosed."""
        if self._sock is None or self.closed:
            raise ConnectionClosed(f"connection to nsqd at {self.host}:{self.port} is closed")
        if self._end == len(self._buf):
            self._make_room(len(self._buf) - self._start + 1)
        try:
            received = self._sock.recv_into(self._view[self._end :])
        except OSError as exc:
            raise self._lost(exc) from exc
        if received == 0:
            raise self._lost(None)
        self._end += received

    def _lost(self, exc: BaseException | None) -> ConnectionClosed:
        self.close()
        reason = f": {exc}" if exc else " by nsqd"
        return ConnectionClosed(f"connection to nsqd at {self.host}:{self.port} closed{reason}")

    def close(self) -> None:
        self.closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already gone: nothing left to release
                self._sock.close()


def _send_all(sock: socket.socket, parts: tuple[bytes, ...]) -> None:
    """``sendmsg`` until every part is out; the socket's timeout makes partial sends possible."""
    views = [memoryview(part) for part in parts if len(part)]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def parse_message(data: bytes, conn: NsqConnection) -> RawMessage:
    timestamp_ns, attempts, message_id = _MESSAGE_HEADER.unpack_from(data)
    return RawMessage(message_id, attempts, timestamp_ns, data[_MESSAGE_HEADER.size :], conn)
