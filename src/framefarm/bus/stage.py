"""The shared body of processors and outputs: consume a queue, skip stale frames, count what happens."""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import Any

from ..config.registry import ModuleKind
from ..errors import BadInput, FrameMissing
from .context import ModuleContext
from .message import FrameMessage
from .worker import serve_queue


class StageKind(ModuleKind):
    """A module fed by its own queue (named after its alias). Subclasses implement ``handle``."""

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx
        self.options = ctx.options

    def setup(self) -> None:
        """Acquire what ``handle`` needs (models, sockets) before the first message."""

    def teardown(self) -> None:
        """Release what ``setup`` acquired; runs after the last message."""

    @abstractmethod
    def handle(self, message: FrameMessage) -> None:
        """Do this stage's work on one frame; raising makes Dramatiq retry the message with backoff."""

    def skip_stale(self, message: FrameMessage) -> bool:
        """Drop a frame that outlived its input's ``max_age``; True when it was dropped."""
        if not message.is_stale():
            return False
        self.ctx.bus.frames.discard(message.key, message.input)
        self.ctx.bus.flow.count(message.input, "stale")
        return True

    def serve(self, stop: threading.Event) -> None:
        def on_message(payload: dict[str, Any]) -> None:
            message = FrameMessage.model_validate(payload)
            if self.skip_stale(message):
                return
            try:
                self.handle(message)
            except FrameMissing as exc:  # expired or already released: retrying cannot bring it back
                self.ctx.log.warning("%s: %s", message.source, exc)
                self.ctx.bus.flow.count(message.input, "missing")
            except BadInput as exc:  # undecodable frame: it fails alone, without retries
                self.ctx.log.warning("%s: %s", message.source, exc)
                self.ctx.bus.frames.discard(message.key, message.input)
                self.ctx.bus.flow.count(message.input, "failed")

        self.setup()
        try:
            serve_queue(
                self.ctx.bus,
                self.ctx.alias,
                on_message,
                threads=self.options.worker_threads,
                stop=stop,
                stop_timeout=self.ctx.service.stop_timeout,
            )
        finally:
            self.teardown()
