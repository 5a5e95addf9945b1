"""Input ``rtsp``: an IP camera or RTSP server (H.264, H.265, anything ffmpeg decodes), pulled with PyAV."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import registry
from ..config.urls import redact_url
from .avstream import US, AvStream, AvStreamOptions


class RtspOptions(AvStreamOptions):
    name: Literal["rtsp"] = Field(description="Pull a live RTSP stream (IP cameras, RTSP servers).")
    url: str = Field(
        pattern=r"^rtsps?://",
        description="rtsp://[user:password@]host[:port]/path; percent-encode @ / : # ? % in the password.",
    )
    transport: Literal["tcp", "udp", "auto"] = Field(
        "tcp",
        description="RTP over the RTSP connection (tcp: no loss, passes NAT and firewalls), over udp (less "
        "delay on a clean network, loses packets on a busy one), or auto (ffmpeg tries udp, then tcp).",
    )


@registry.inputs.register
class Rtsp(AvStream[RtspOptions]):
    @property
    def source(self) -> str:
        return redact_url(self.options.url)

    def url(self) -> str:
        return self.options.url

    def protocol_options(self) -> dict[str, str]:
        # ffmpeg's rtsp "timeout": the socket I/O timeout in microseconds, so a half-open TCP connection ends
        options = {"timeout": str(int(self.options.read_timeout * US))}
        if self.options.transport != "auto":
            options["rtsp_transport"] = self.options.transport
        return options
