"""What every processor kind shares: fetch the frame, add results, pass the message on."""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

from ..config.schema import ProcessorOptions
from ..message import FrameMessage
from ..modules.stage import Stage

PO = TypeVar("PO", bound=ProcessorOptions)


class Processor(Stage[PO]):
    @abstractmethod
    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        """Return ``message`` with this processor's results added."""

    def handle(self, message: FrameMessage) -> None:
        bus = self.ctx.bus
        result = self.process(message, bus.frames.fetch(message))
        payload = result.model_dump(exclude_none=True)
        for queue in self.ctx.routes.after(self.ctx.alias, message.stream):
            bus.send(queue, payload)
