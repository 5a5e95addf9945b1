"""What ``rtsp`` and ``rtmp`` share: push each stream to a server at a constant frame rate, ``{tag}`` in the URL.

Every call into ffmpeg is bounded (PyAV's ``timeout=(open, write)``): a server that stops reading fails the
stream instead of blocking it. A failed push is closed and opened again after a backoff (``reconnect``), frames
meanwhile dropped and counted; errors name the URL without its password.
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

DEFAULT_OPEN_TIMEOUT_S = 5.0
DEFAULT_WRITE_TIMEOUT_S = 5.0


class PushOptions(VideoOptions):
    """Options of the kinds that push to a server."""

    url: str = Field(description="Where to push; {tag} is replaced by the stream's tag.")
    open_timeout: Duration = Field(DEFAULT_OPEN_TIMEOUT_S, gt=0, description="Longest wait to connect and start.")
    write_timeout: Duration = Field(
        DEFAULT_WRITE_TIMEOUT_S, gt=0, description="Longest wait for the server to take a frame."
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
        """The muxer's own options (transport)."""

    def open_container(self, tag: str, shot: Shot) -> av.container.OutputContainer:
        timeouts = (self.options.open_timeout, self.options.write_timeout)
        url = self.options.target(tag)
        return av.open(url, "w", format=self.container_format, options=self.protocol_options(), timeout=timeouts)

    def describe_failure(self, tag: str, exc: Exception) -> str:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return redact_text(f"{redact_url(self.options.target(tag))}: {reason}")  # ffmpeg quotes the URL
