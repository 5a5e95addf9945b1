"""What ``rtsp`` and ``rtmp`` share: push each stream to a server at a constant frame rate, ``{tag}`` in the URL.

A failed push is closed and opened again after a backoff (``reconnect``), frames meanwhile dropped and counted;
errors name the URL without its password. PyAV (18) connects an output when the first packet is written, holding
Python's lock, and passes no timeout to it; so a kind bounds that itself (see ``RtspOutput.protocol_options`` and
``RtmpOutput.reach``), or a server that accepts and never answers would stop the whole process.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, TypeVar

import av
from pydantic import Field

from ..config.types import Duration
from ..config.urls import redact_text, redact_url
from .paths import TAG
from .video import Shot, VideoOptions, VideoOutput

US = 1_000_000  # ffmpeg's timeouts are in microseconds
DEFAULT_OPEN_TIMEOUT_S = 5.0
DEFAULT_WRITE_TIMEOUT_S = 5.0


class PushOptions(VideoOptions):
    """Options of the kinds that push to a server."""

    url: str = Field(description="Where to push; {tag} is replaced by the stream's tag.")
    open_timeout: Duration = Field(DEFAULT_OPEN_TIMEOUT_S, gt=0, description="Longest wait to connect.")
    write_timeout: Duration = Field(
        DEFAULT_WRITE_TIMEOUT_S, gt=0, description="Longest wait for the server to answer or take a frame (rtsp)."
    )

    def target(self, tag: str) -> str:
        return self.url.replace(TAG, tag)


PO = TypeVar("PO", bound=PushOptions)


class PushOutput(VideoOutput[PO]):
    """A push kind names ffmpeg's muxer (``container_format``) and its protocol options."""

    live = True
    container_format: ClassVar[str]

    @abstractmethod
    def protocol_options(self) -> dict[str, str]:
        """The muxer's own options (transport, timeouts)."""

    def reach(self, url: str) -> None:
        """Raise OSError when the server cannot be reached, before ffmpeg tries (and blocks): nothing by default."""

    def open_container(self, tag: str, shot: Shot) -> av.container.OutputContainer:
        url = self.options.target(tag)
        self.reach(url)
        return av.open(url, "w", format=self.container_format, options=self.protocol_options())

    def describe_failure(self, tag: str, exc: Exception) -> str:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return redact_text(f"{redact_url(self.options.target(tag))}: {reason}")  # ffmpeg quotes the URL
