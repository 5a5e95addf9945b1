"""Input ``rtmp``: pull a stream from an RTMP server, or be the endpoint an encoder (OBS, a camera) pushes to.

Listen mode serves one publisher at a time, as ffmpeg does. While nobody pushes, the state is ``listening`` and
no stall is counted; when the publisher leaves (ffmpeg reports an I/O error, not an end of stream) it listens
again at once, without backoff: the next push may come any second. Only a listener that cannot listen (the port
is taken) backs off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Literal

from pydantic import Field, model_validator

from ..config import registry
from ..config.urls import MASK, redact_url
from ..errors import SourceUnavailable
from .avstream import US, AvStream, AvStreamOptions, NoPeer
from .live import Captured, Session
from .livestate import CONNECTING, LISTENING

LISTEN_POLL_S = 1  # a listener nobody pushed to starts over this often (whole seconds: ffmpeg's unit), noticing stop


class RtmpOptions(AvStreamOptions):
    name: Literal["rtmp"] = Field(description="Pull an RTMP stream, or listen for an encoder that pushes one.")
    url: str | None = Field(
        None,
        pattern=r"^rtmps?://",
        description="Pull: rtmp://[user:password@]server[:port]/app/key. Give url or listen, not both.",
    )
    listen: str | None = Field(
        None,
        pattern=r"^rtmp://",
        description="Listen: rtmp://ADDRESS:PORT/app/key; encoders push to this URL (bind 127.0.0.1 or a LAN "
        "address you trust: RTMP has no authentication but the key).",
    )

    @model_validator(mode="after")
    def _one_of_url_and_listen(self) -> RtmpOptions:
        if (self.url is None) == (self.listen is None):
            raise ValueError("give either url (pull from a server) or listen (be pushed to), not both or neither")
        return self


@registry.inputs.register
class Rtmp(AvStream[RtmpOptions]):
    @property
    def source(self) -> str:
        """The URL without its password; a listener's without its stream key too, which is what lets anyone
        who knows it push into the pipeline."""
        if self.options.listen:
            return self.options.listen.rpartition("/")[0] + "/" + MASK
        return redact_url(self.url())

    def url(self) -> str:
        return self.options.listen or self.options.url or ""

    def first_state(self) -> str:
        return LISTENING if self.options.listen else CONNECTING

    def protocol_options(self) -> dict[str, str]:
        options = {"rw_timeout": str(int(self.options.read_timeout * US))}  # every socket read, as rtsp's timeout
        if self.options.listen:
            options |= {"listen": "1", "timeout": str(LISTEN_POLL_S)}  # rtmp's "timeout": seconds to wait for a push
        return options

    def timeouts(self) -> tuple[float | None, float]:
        """A listener's open waits for a push as long as it takes (in LISTEN_POLL_S rounds), then reads bounded."""
        return (None, self.options.read_timeout) if self.options.listen else super().timeouts()

    def capture(self, session: Session) -> Iterator[Captured]:
        if not self.options.listen:
            yield from super().capture(session)
            return
        while not session.stop.is_set():
            session.expect(False)
            try:
                container = self.open()
            except NoPeer:
                continue  # nobody pushed yet: listen again
            with closing(container):
                session.expect(True)
                try:
                    yield from self.frames(container, session)
                except SourceUnavailable as exc:
                    self.ctx.log.info("the publisher left (%s)", exc)
            self.state.attempt(LISTENING)
