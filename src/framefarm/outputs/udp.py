"""Output ``udp``: one datagram per result to a host (IPv4 or IPv6) or a multicast group.

A result larger than ``max_datagram`` is split, never truncated, into datagrams that each stand alone:
JSON results into ``{"id", "part", "parts", "data"}`` objects whose ``data`` strings, joined in ``part`` order,
are the whole result's JSON text; YOLO results into pieces that each start with the header line (with ``part``
and ``parts`` added) followed by whole YOLO lines. UDP has no delivery receipt: a result counts as delivered
when the kernel took its datagrams.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ..config import registry
from ..errors import SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..results import yolo_header, yolo_text
from .network import NetworkOutput, NetworkOutputOptions

DEFAULT_MAX_DATAGRAM = 1400  # fits an Ethernet MTU with the IP and UDP headers
MIN_MAX_DATAGRAM = 256
MAX_UDP_PAYLOAD = 65_507


class UdpOutputOptions(NetworkOutputOptions):
    name: Literal["udp"] = Field(description="Send each result as JSON datagrams (UDP), unicast or multicast.")
    host: str = Field(description="The receiver's address or name, or a multicast group.")
    port: int = Field(ge=1, le=65535, description="The receiver's port.")
    max_datagram: int = Field(
        DEFAULT_MAX_DATAGRAM,
        ge=MIN_MAX_DATAGRAM,
        le=MAX_UDP_PAYLOAD,
        description="The largest datagram sent, in bytes; a larger result is split into several.",
    )
    ttl: int = Field(1, ge=0, le=255, description="Multicast: how many router hops the datagrams may cross.")
    multicast_interface: str | None = Field(
        None, description="Multicast: the IPv4 address of the interface to send from (default: the route's)."
    )


@registry.outputs.register
class UdpOutput(NetworkOutput[UdpOutputOptions]):
    def setup(self) -> None:
        self.sock: socket.socket | None = None
        self.address: tuple[Any, ...] = ()

    def teardown(self) -> None:
        self.close()

    def send(self, message: FrameMessage) -> None:
        sock = self.sock or self.open()
        for datagram in self.datagrams(message):
            try:
                sock.sendto(datagram, self.address)
            except OSError as exc:
                self.close()  # resolved again on the next try: the host's address may have changed
                raise SinkUnavailable(f"{self.address[0]} port {self.address[1]}: {exc.strerror or exc}") from exc

    def open(self) -> socket.socket:
        """A socket for the receiver's address, resolved now (a failure is retried like a receiver that is down)."""
        options = self.options
        try:
            family, _, _, _, address = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise SinkUnavailable(f"cannot resolve {options.host}: {exc.strerror or exc}") from exc
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if ipaddress.ip_address(address[0].split("%")[0]).is_multicast:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, options.ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, options.ttl)
                if options.multicast_interface:
                    interface = socket.inet_aton(options.multicast_interface)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
        self.ctx.log.info("sending results to %s port %d", address[0], address[1])
        self.sock, self.address = sock, address
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def datagrams(self, message: FrameMessage) -> list[bytes]:
        whole = self.body(message)
        if len(whole) <= self.options.max_datagram:
            return [whole]
        if self.options.format == "yolo":
            return yolo_parts(message, self.options.max_datagram)
        return json_parts(message.frame_id, whole.decode(), self.options.max_datagram)


def json_parts(frame_id: str, text: str, limit: int) -> list[bytes]:
    """``text`` in envelopes of at most ``limit`` bytes each; their ``data`` joined are ``text``."""
    pieces = list(_pieces(frame_id, text, limit))
    return [_envelope(frame_id, part, len(pieces), piece) for part, piece in enumerate(pieces)]


def _pieces(frame_id: str, text: str, limit: int) -> Iterator[str]:
    # The envelope's size is measured with a part count of the same width as the final one could have.
    room = limit - len(_envelope(frame_id, len(text), len(text), ""))
    if room <= 0:
        raise SinkRejected(f"max_datagram {limit} cannot hold even an empty part")
    start = 0
    while start < len(text):
        low, high = start + 1, min(len(text), start + room)  # the largest end whose escaped piece fits
        while low < high:
            middle = (low + high + 1) // 2
            if len(_escaped(text[start:middle])) <= room:
                low = middle
            else:
                high = middle - 1
        yield text[start:low]
        start = low


def _escaped(piece: str) -> bytes:
    return json.dumps(piece, ensure_ascii=False).encode()[1:-1]


def _envelope(frame_id: str, part: int, parts: int, data: str) -> bytes:
    fields = {"id": frame_id, "part": part, "parts": parts, "data": data}
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def yolo_parts(message: FrameMessage, limit: int) -> list[bytes]:
    """The YOLO lines in pieces of at most ``limit`` bytes, each after its own header line."""
    lines = yolo_text(message).splitlines(keepends=True)
    overhead = len(yolo_header(message, part=len(lines), parts=len(lines)).encode())
    groups: list[list[str]] = [[]]
    for line in lines:
        if overhead + len("".join(groups[-1]) + line) > limit and groups[-1]:
            groups.append([])
        groups[-1].append(line)
    if any(overhead + len("".join(group)) > limit for group in groups):
        raise SinkRejected(f"max_datagram {limit} cannot hold a header and one YOLO line")
    return [
        (yolo_header(message, part=part, parts=len(groups)) + "".join(group)).encode()
        for part, group in enumerate(groups)
    ]
