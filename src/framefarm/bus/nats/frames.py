"""The NATS frame store: frames inline in their JetStream messages when they fit, else on the frames stream.

Inline, a frame costs no request at all: no write beside the message, no read, no purge; its release only
ends its in-flight entry. ``frames.store: broker`` puts a frame inline when it is at most ``frames.max_inline``
bytes and leaves ``MESSAGE_ROOM`` of the server's max payload for the rest of the message, and when its releases
can be counted (one consumer, or an in-flight entry admitted by this process to count them); other frames go to
the frames stream (chunks.py). ``frames.store: inline`` never uses the stream: a frame that does not fit is
refused with FrameTooLarge, as on NSQ.
"""

from __future__ import annotations

from typing import Any

from ...message import FrameMessage
from ..base import INLINE_FIELD, FrameStore, FrameTooLarge
from .chunks import KeyMemory, StreamFrames
from .flow import NatsFlow
from .link import NatsLink
from .subjectmap import SubjectMap, store_errors

#: Of the server's max payload, what is kept for the message's other fields (metadata, detections, the traceback
#: a retry adds): Dramatiq's JSON of a frame message is a few hundred bytes, a retry's traceback a few KB.
MESSAGE_ROOM = 64 * 1024


class NatsFrameStore(FrameStore):
    """Inline frames, with the frames stream for those that do not fit (unless ``inline_only``)."""

    def __init__(
        self, link: NatsLink, flow: NatsFlow, *, max_age: float, max_inline: int, inline_only: bool = False
    ) -> None:
        self.link = link
        self.flow = flow
        self.stream = StreamFrames(link, max_age=max_age)
        self.max_inline = max_inline
        self.inline_only = inline_only
        self._max_payload: int | None = None  # the server's, learnt at the first put
        self._inline = KeyMemory()  # keys whose frame was fetched here from its message: nothing to purge

    @property
    def map(self) -> SubjectMap:
        """The frames stream."""
        return self.stream.map

    def max_payload(self) -> int:
        if self._max_payload is None:
            with store_errors():
                self._max_payload = self.link.wire.max_payload()
        return self._max_payload

    def inline_limit(self) -> int:
        """The largest frame sent inline: ``frames.max_inline``, and room for the message under the max payload."""
        return min(self.max_inline, self.max_payload() - MESSAGE_ROOM)

    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        """The frame's bytes as a message field when they go inline, else stored and ``{}``.

        Raises FrameTooLarge for a frame that does not fit inline when ``inline_only``."""
        stream = self.flow.take_admitted(key)
        fits = len(data) <= self.inline_limit()
        if fits and (refs == 1 or stream is not None or self.inline_only):
            if refs > 1 and stream is not None:
                self.flow.track(stream, key, refs=refs, stored=False)
            return {INLINE_FIELD: data}
        if not fits and self.inline_only:
            self._refuse(key, stream, len(data))
        with store_errors():
            self.stream.put(key, data, ttl, 1 if stream is not None else refs, self.max_payload())
        if stream is not None:
            self.flow.track(stream, key, refs=refs, stored=True)
        return {}

    def _refuse(self, key: str, stream: str | None, size: int) -> None:
        """Raise FrameTooLarge for a frame that cannot travel inline; its admission ends, as it is never sent."""
        if stream is not None:
            self.flow.release(stream, key, every_ref=True)
        raise FrameTooLarge(
            f"frame {key} is {size} bytes, more than fits inside a NATS message ({self.inline_limit()}: the lower "
            f"of frames.max_inline and the server's max payload less {MESSAGE_ROOM} bytes for the rest of the "
            "message); lower the input's resolution or JPEG quality, raise the server's max_payload (and "
            "frames.max_inline), or use frames.store: broker, which keeps such frames on a JetStream stream"
        )

    def get(self, key: str) -> bytes:
        """The bytes of a frame on the frames stream; FrameMissing for one that travelled inline (use fetch)."""
        with store_errors():
            return self.stream.get(key)

    def fetch(self, message: FrameMessage) -> bytes:
        if message.frame is None:
            return self.get(message.key)
        self._inline.add(message.key)
        return message.frame

    def release(self, key: str, stream: str) -> bool:
        inline = self._inline.pop(key)
        outcome = self.flow.release(stream, key)
        with store_errors():
            if outcome is None:  # no entry (never admitted, or expired): what the frame itself says
                return True if inline else self.stream.release(key)
            if outcome.last and outcome.stored:
                self.stream.purge(key)
        return outcome.last

    def discard(self, key: str, stream: str) -> None:
        inline = self._inline.pop(key)
        outcome = self.flow.release(stream, key, every_ref=True)
        if outcome.stored if outcome is not None else not inline:
            with store_errors():
                self.stream.purge(key)
