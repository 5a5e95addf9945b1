"""Output ``rtmp``: push each stream as FLV to an RTMP server (nginx-rtmp, MediaMTX, a streaming service's ingest).

ffmpeg's RTMP client takes no timeout through PyAV, so the server's port is tried first with one (``reach``): a
server that is down or a host that does not answer fails in ``open_timeout`` instead of blocking the process
for the kernel's minutes. That try is a TCP connection closed at once: a receiver that takes one connection and
then exits (``ffmpeg -listen 1``) would take it for its publisher; push to a server. A server that stops reading
in the middle of a stream holds only that stream's writer, until the kernel gives the connection up.
"""

from __future__ import annotations

import socket
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field

from ..config import registry
from .push import PushOptions, PushOutput

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


class RtmpOutputOptions(PushOptions):
    name: Literal["rtmp"] = Field(description="Push annotated video to an RTMP server.")
    url: str = Field(pattern=r"^rtmps?://", description="rtmp://server[:port]/app/{tag} (the stream key).")


@registry.outputs.register
class RtmpOutput(PushOutput[RtmpOutputOptions]):
    container_format = "flv"

    def protocol_options(self) -> dict[str, str]:
        return {}

    def reach(self, url: str) -> None:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        socket.create_connection((parts.hostname or "", port), timeout=self.options.open_timeout).close()
