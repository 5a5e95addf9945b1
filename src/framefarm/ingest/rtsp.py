"""Input ``rtsp``: an IP camera or RTSP server (H.264, H.265, anything ffmpeg decodes), pulled with PyAV."""

from __future__ import annotations

from typing import Any, Literal

import av
from pydantic import Field, model_validator

from ..config import registry
from ..config.urls import redact_url
from ..onvif.client import OnvifCameraOptions, stream_url
from .avstream import US, AvStream, AvStreamOptions


class RtspOptions(AvStreamOptions):
    name: Literal["rtsp"] = Field(description="Pull a live RTSP stream (IP cameras, RTSP servers).")
    url: str | None = Field(
        None,
        pattern=r"^rtsps?://",
        description="rtsp://[user:password@]host[:port]/path; percent-encode @ / : # ? % in the password. Give url "
        "or onvif.",
    )
    onvif: OnvifCameraOptions | None = Field(
        None,
        description="The camera by its ONVIF address: its profile's stream URL is asked for (GetProfiles, "
        "GetStreamUri) at each connection, with the login put in it.",
    )
    transport: Literal["tcp", "udp", "auto"] = Field(
        "tcp",
        description="RTP over the RTSP connection (tcp: no loss, passes NAT and firewalls), over udp (less "
        "delay on a clean network, loses packets on a busy one), or auto (ffmpeg tries udp, then tcp).",
    )

    @model_validator(mode="after")
    def _url_or_onvif(self) -> RtspOptions:
        if (self.url is None) == (self.onvif is None):
            raise ValueError("give either url or onvif (the camera's ONVIF address), not both or neither")
        return self


@registry.inputs.register
class Rtsp(AvStream[RtspOptions]):
    def __init__(self, ctx: Any) -> None:
        self.resolved: str | None = None  # the URL the camera's ONVIF service gave last (onvif)
        super().__init__(ctx)

    @property
    def source(self) -> str:
        if self.options.onvif is not None:
            return redact_url(self.resolved) if self.resolved else self.options.onvif.address
        return redact_url(self.options.url or "")

    def url(self) -> str:
        return self.resolved or self.options.url or ""

    def open(self) -> av.container.InputContainer:
        """With ``onvif``, the stream URL is asked for once per connection, before any decoder is tried."""
        if self.options.onvif is not None:
            self.resolved = stream_url(self.options.onvif)
        return super().open()

    def protocol_options(self) -> dict[str, str]:
        # ffmpeg's rtsp "timeout": the socket I/O timeout in microseconds, so a half-open TCP connection ends
        options = {"timeout": str(int(self.options.read_timeout * US))}
        if self.options.transport != "auto":
            options["rtsp_transport"] = self.options.transport
        return options
