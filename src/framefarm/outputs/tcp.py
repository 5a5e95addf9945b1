"""Output ``tcp``: results over one persistent connection (optionally TLS), one record each.

``framing: jsonl`` ends each record with a newline (compact JSON holds none); ``length`` puts a 4-byte big-endian
length before it. A record counts as delivered once the receiver's TCP stack has acknowledged its last byte (the
socket's unacknowledged bytes, SIOCOUTQ, read back), not when it was handed to the kernel: a receiver that
vanished without closing is noticed within ``timeout`` and the record is sent again. Before each record a closed
connection (the receiver's FIN) is noticed and opened again. What TCP cannot tell is whether the receiving
program read what its kernel acknowledged: a receiver that exits with unread bytes in its socket loses them.

While the receiver is away, results wait in the queue, retried with the kind's backoff (which is also the
reconnect backoff); past ``max_pending`` waiting results newer ones are dropped and counted, so a receiver that
never returns cannot fill the broker.
"""

from __future__ import annotations

import array
import fcntl
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import RetryOptions
from ..config.yamlpos import Loc
from ..errors import SinkFull, SinkUnavailable
from ..message import FrameMessage
from ..tls import client_context
from .network import NetworkOutput, NetworkOutputOptions

DEFAULT_MAX_PENDING = 1000
PATIENT_RETRIES = 1_000_000  # with backoff capped at max_backoff: a receiver may stay away for days
ACK_POLL_S = (0.0005, 0.05)  # first and longest wait between two looks at the unacknowledged bytes
LENGTH = struct.Struct(">I")
DISCARD_CHUNK = 65536


class TcpOutputOptions(NetworkOutputOptions):
    name: Literal["tcp"] = Field(description="Send results over a persistent TCP (or TLS) connection.")
    host: str = Field(description="The receiver's host name or address.")
    port: int = Field(ge=1, le=65535, description="The receiver's port.")
    framing: Literal["jsonl", "length"] = Field(
        "jsonl", description="jsonl: a newline after each record; length: a 4-byte big-endian length before it."
    )
    tls: bool = Field(False, description="Speak TLS to the receiver.")
    verify: bool = Field(True, description="With tls: check the receiver's certificate and host name.")
    ca_file: Path | None = Field(None, description="With tls: a PEM file of the CAs to trust instead of the system's.")
    max_pending: int = Field(
        DEFAULT_MAX_PENDING, ge=1, description="Results waiting for the receiver at most; newer ones are dropped."
    )
    threads: int | None = Field(1, ge=1, le=64, description="Worker threads; 1 keeps results in order.")
    retry: RetryOptions = Field(
        default_factory=lambda: RetryOptions(max_retries=PATIENT_RETRIES),
        description="Backoff between attempts while the receiver is away (the results wait, up to max_pending).",
    )


@registry.outputs.register
class TcpOutput(NetworkOutput[TcpOutputOptions]):
    @classmethod
    def check(cls, options: TcpOutputOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from super().check(options, ctx)
        if options.format == "yolo" and options.framing == "jsonl":
            yield ("framing",), "YOLO results are several lines: use framing: length with format: yolo"
        if options.ca_file is not None and not ctx.resolve(options.ca_file).is_file():
            yield ("ca_file",), f"{ctx.resolve(options.ca_file)} is not a file"

    def setup(self) -> None:
        options = self.options
        self.address = f"{options.host}:{options.port}"
        self.context: ssl.SSLContext | None = None
        if options.tls:
            ca_file = self.ctx.resolve(options.ca_file) if options.ca_file else None
            self.context = client_context(verify=options.verify, ca_file=ca_file)
        self.lock = threading.Lock()  # one writer at a time on the one connection
        self.sock: socket.socket | None = None
        self.written = 0  # bytes written on this connection: a record is acknowledged when written - unacked >= its end
        self.waiting: set[str] = set()  # keys of results that failed and wait for a retry
        self.waiting_lock = threading.Lock()

    def teardown(self) -> None:
        with self.lock:
            self.disconnect()

    def send(self, message: FrameMessage) -> None:
        with self.waiting_lock:
            full = message.key not in self.waiting and len(self.waiting) >= self.options.max_pending
        if full:
            raise SinkFull(f"{self.options.max_pending} results (max_pending) already wait for {self.address}")
        body = self.body(message)
        record = LENGTH.pack(len(body)) + body if self.options.framing == "length" else body + b"\n"
        try:
            self.write(record)
        except SinkUnavailable:
            with self.waiting_lock:
                self.waiting.add(message.key)
            raise
        self.no_longer_waiting(message.key)

    def dropped(self, message: FrameMessage, reason: str) -> None:
        self.no_longer_waiting(message.key)

    def on_dead(self, payload: dict[str, Any], error: str) -> None:
        super().on_dead(payload, error)
        self.no_longer_waiting(payload["key"])

    def no_longer_waiting(self, key: str) -> None:
        with self.waiting_lock:
            self.waiting.discard(key)

    def write(self, record: bytes) -> None:
        with self.lock:
            try:
                sock = self.connected()
                sock.sendall(record)
            except OSError as exc:
                self.disconnect()
                raise SinkUnavailable(f"{self.address}: {exc.strerror or exc}") from exc
            self.written += len(record)
            end, connection = self.written, sock
        self.acknowledged(connection, end)

    def acknowledged(self, sock: socket.socket, end: int) -> None:
        """Return once the receiver acknowledged every byte up to ``end``; SinkUnavailable after ``timeout``."""
        deadline, pause = time.monotonic() + self.options.timeout, ACK_POLL_S[0]
        while True:
            with self.lock:
                if self.sock is not sock:
                    raise SinkUnavailable(f"{self.address}: the connection was lost before the receiver took it")
                acked = self.written - unacknowledged(sock) if self.context is None else None
                if (acked is not None and acked >= end) or (acked is None and unacknowledged(sock) == 0):
                    return
                if time.monotonic() > deadline:
                    self.disconnect()
                    raise SinkUnavailable(f"{self.address}: not acknowledged within {self.options.timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, ACK_POLL_S[1])

    def connected(self) -> socket.socket:
        """The open connection, opened anew when there is none or the receiver closed it."""
        if self.sock is not None and closed_by_peer(self.sock):
            self.ctx.log.info("%s closed the connection", self.address)
            self.disconnect()
        if self.sock is None:
            sock = socket.create_connection((self.options.host, self.options.port), timeout=self.options.timeout)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.options.host)
            self.sock, self.written = sock, 0
            self.ctx.log.info("connected to %s", self.address)
        return self.sock

    def disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the receiver closed (or reset) the connection. What it sent (a TLS session ticket, anything) is read
    and thrown away, so that it can neither hide the end of the stream nor fill the socket's buffer."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while sock.recv(DISCARD_CHUNK):
            pass
        return True  # the end of the stream
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False  # nothing more to read now: still open
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that the receiver has not acknowledged yet (Linux SIOCOUTQ)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, count, True)
    return count[0]
