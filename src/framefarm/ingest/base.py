"""What every input kind shares: the run contract and the publisher that puts frames on the bus."""

from __future__ import annotations

import threading
import time
import uuid
from abc import abstractmethod
from typing import ClassVar

from ..bus.context import ModuleContext
from ..bus.message import FrameMessage
from ..config.registry import ModuleKind
from ..config.schema import InputOptions

ADMIT_POLL_S = 0.02  # how often a lossless input that hit max_in_flight looks again


class Input(ModuleKind):
    """An input kind. ``run`` reads its source until ``stop`` is set, handing frames to ``self.publisher``."""

    Options: ClassVar[type[InputOptions]]

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.publisher = Publisher(ctx)

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Produce frames until ``stop`` is set; raise SourceError subclasses for the runner to handle."""


class Publisher:
    """Stores a frame's bytes and sends its message to the first stage of its route.

    Live inputs drop a frame (and count it) when the stream already has ``max_in_flight`` frames in the
    pipeline; lossless (file) inputs wait instead, so nothing is lost and memory stays bounded.
    """

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx
        options: InputOptions = ctx.options
        self.options = options
        self.lossless = type(options).lossless
        self.ttl = ctx.service.frames.lossless_ttl if self.lossless else ctx.service.frames.ttl
        self.first_hop = ctx.routes.first_hop(options.tag)
        self.refs = len(ctx.routes.outputs_for(options.tag))

    def publish(
        self,
        data: bytes,
        *,
        fmt: str,
        width: int,
        height: int,
        source: str,
        stop: threading.Event,
        pts: float | None = None,
        frame_index: int | None = None,
        captured_at: float | None = None,
        scale: float = 1.0,
    ) -> bool:
        """Put one encoded frame on the bus; False when it was dropped (live) or ``stop`` came first."""
        bus, alias = self.ctx.bus, self.ctx.alias
        key = f"framefarm:frame:{alias}:{uuid.uuid4().hex}"
        bus.flow.count(alias, "frames_in")
        while not bus.flow.admit(alias, key, limit=self.options.max_in_flight, ttl=self.ttl):
            if not self.lossless:
                bus.flow.count(alias, "dropped_full")
                return False
            if stop.wait(ADMIT_POLL_S):
                return False
        captured_at = captured_at or time.time()
        message = FrameMessage(
            stream=self.options.tag,
            input=alias,
            source=source,
            seq=bus.flow.next_seq(alias),
            pts=pts,
            frame_index=frame_index,
            captured_at=captured_at,
            width=width,
            height=height,
            scale=scale,
            key=key,
            format=fmt,
            expires_at=captured_at + self.options.max_age if self.options.max_age else None,
        )
        inline = bus.frames.put(key, data, ttl=self.ttl, refs=self.refs)
        payload = {**message.model_dump(exclude_none=True), **inline}
        for queue in self.first_hop:
            bus.send(queue, payload)
        bus.flow.count(alias, "published")
        return True
