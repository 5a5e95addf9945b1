"""Output ``rtmp``: push each stream as FLV to an RTMP server (nginx-rtmp, MediaMTX, a streaming service's ingest)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import registry
from .push import PushOptions, PushOutput


class RtmpOutputOptions(PushOptions):
    name: Literal["rtmp"] = Field(description="Push annotated video to an RTMP server.")
    url: str = Field(pattern=r"^rtmps?://", description="rtmp://server[:port]/app/{tag} (the stream key).")


@registry.outputs.register
class RtmpOutput(PushOutput[RtmpOutputOptions]):
    container_format = "flv"

    def protocol_options(self) -> dict[str, str]:
        return {}
