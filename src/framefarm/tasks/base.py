"""What every processor kind shares: fetch the frame, add results, pass the message on (and the result to
the input's reply queue when it asked for it and this is the last processor of the frame's route, or the reason
when the frame is given up on the way)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, TypeVar

from ..config.schema import ProcessorOptions
from ..message import FrameMessage
from ..modules.context import ModuleContext
from ..modules.preview import PREVIEW_FOLDER, Previews
from ..modules.stage import Stage
from ..results import failure_payload, reply_payload

PO = TypeVar("PO", bound=ProcessorOptions)


class Processor(Stage[PO]):
    def __init__(self, ctx: ModuleContext[PO]) -> None:
        super().__init__(ctx)
        self.previews = Previews(ctx.runtime_dir / PREVIEW_FOLDER)

    @abstractmethod
    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        """Return ``message`` with this processor's results added."""

    def handle(self, message: FrameMessage) -> None:
        bus = self.ctx.bus
        if message.event is not None:  # a camera's event: nothing to detect, it goes on as it came
            for queue in self.ctx.routes.after(self.ctx.alias, message.stream):
                bus.send(queue, message.model_dump(exclude_none=True))
            return
        frame = bus.frames.fetch(message)
        result = self.process(message, frame)
        payload = result.model_dump(exclude_none=True)
        routes = self.ctx.routes
        last = routes.last_processor(message.stream) == self.ctx.alias
        if message.reply and last:
            bus.send(message.reply, reply_payload(result))  # first: if it fails, the frame is not forwarded twice
        for queue in routes.after(self.ctx.alias, message.stream):
            bus.send(queue, payload)
        if last:
            self.previews.offer(result, frame)

    def dropped(self, message: FrameMessage, reason: str) -> None:
        if message.reply:  # no result will come: the input's client hears it now rather than at its timeout
            self.ctx.bus.send(message.reply, failure_payload(message.key, reason))

    def on_dead(self, payload: dict[str, Any], error: str) -> None:
        if payload.get("reply"):
            self.ctx.bus.send(payload["reply"], failure_payload(payload["key"], f"retries exhausted: {error}"))
