"""Frames inline in NSQ messages: nsqd keeps no payloads beside its queues, so the message is the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import FrameMissing
from ..base import INLINE_FIELD, FrameStore, FrameTooLarge
from .flow import NsqFlow


class InlineFrameStore(FrameStore):
    """``put`` returns the frame as a message field; ``fetch`` reads it back from the message.

    Nothing is kept anywhere else, so ``ttl`` needs no enforcing (the frame lives as long as its messages)
    and ``release``/``discard`` only tell the stream's input that the frame left the pipeline, which is
    what its in-flight bound counts (see NsqFlow). Every hop copies the frame: keep frames small, or use
    ``frames.store: redis://...`` for large ones.
    """

    def __init__(self, flow: NsqFlow, *, max_inline: int) -> None:
        self.flow = flow
        self.max_inline = max_inline

    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        """The fields to merge into the frame's message. Raises FrameTooLarge above ``max_inline`` bytes."""
        if len(data) > self.max_inline:
            self.flow.forget(key)
            raise FrameTooLarge(
                f"frame {key} is {len(data)} bytes, more than frames.max_inline ({self.max_inline}); lower the "
                "input's resolution or JPEG quality, raise frames.max_inline together with nsqd's --max-msg-size "
                "(and frames.max_message), or keep frames in Redis with frames.store: redis://host:6379/0"
            )
        self.flow.expect(key, refs)
        return {INLINE_FIELD: data}

    def get(self, key: str) -> bytes:
        raise FrameMissing(f"frame {key} travels inline: read it from its message with FrameStore.fetch")

    def fetch(self, message: Any) -> bytes:
        """The frame carried by ``message`` (a FrameMessage, or its payload dict)."""
        frame = message.get(INLINE_FIELD) if isinstance(message, Mapping) else getattr(message, INLINE_FIELD, None)
        if frame is None:
            key = message.get("key") if isinstance(message, Mapping) else getattr(message, "key", "?")
            raise FrameMissing(
                f"message of frame {key} carries no inline frame (was it sent with frames.store: inline?)"
            )
        return bytes(frame)

    def release(self, key: str, stream: str) -> bool:
        """Always True: an inline frame dies with the message that carried it."""
        self.flow.done(stream, key)
        return True

    def discard(self, key: str, stream: str) -> None:
        self.flow.done(stream, key, every_ref=True)
