"""Output ``rtsp``: push each stream to an RTSP server that records (ANNOUNCE and RECORD over TCP), such as
MediaMTX, or GStreamer's RTSP server with a RECORD mount."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import registry
from .push import US, PushOptions, PushOutput


class RtspOutputOptions(PushOptions):
    name: Literal["rtsp"] = Field(description="Push annotated video to an RTSP server (ANNOUNCE/RECORD).")
    url: str = Field(
        pattern=r"^rtsps?://", description="rtsp://[user:password@]server[:port]/path/{tag}; TCP interleaved."
    )


@registry.outputs.register
class RtspOutput(PushOutput[RtspOutputOptions]):
    container_format = "rtsp"

    def protocol_options(self) -> dict[str, str]:
        """TCP, and ffmpeg's socket timeout (µs), which bounds the connection, the handshake and every write."""
        return {"rtsp_transport": "tcp", "timeout": str(int(self.options.write_timeout * US))}
