"""What every processor kind shares: fetch the frame, add results, pass the message on (and the result to
the input's reply queue when it asked for it and this is the last processor of the frame's route)."""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

from ..config.schema import ProcessorOptions
from ..message import FrameMessage
from ..modules.stage import Stage
from ..results import reply_payload

PO = TypeVar("PO", bound=ProcessorOptions)


class Processor(Stage[PO]):
    @abstractmethod
    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        """Return ``message`` with this processor's results added."""

    def handle(self, message: FrameMessage) -> None:
        bus = self.ctx.bus
        result = self.process(message, bus.frames.fetch(message))
        payload = result.model_dump(exclude_none=True)
        routes = self.ctx.routes
        for queue in routes.after(self.ctx.alias, message.stream):
            bus.send(queue, payload)
        if message.reply and routes.last_processor(message.stream) == self.ctx.alias:
            bus.send(message.reply, reply_payload(result))
