"""What every output kind shares: deliver, then release the frame and count the delivery."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from ..bus.message import FrameMessage
from ..bus.stage import StageKind
from ..config.schema import OutputOptions


class Output(StageKind):
    Options: ClassVar[type[OutputOptions]]

    @abstractmethod
    def deliver(self, message: FrameMessage) -> None:
        """Deliver one frame's results; fetch its bytes with ``self.ctx.bus.frames.get`` only if needed.

        Must be idempotent: a message may be delivered again after a worker died before acking it.
        """

    def handle(self, message: FrameMessage) -> None:
        self.deliver(message)
        self.ctx.bus.frames.release(message.key, message.input)
        self.ctx.bus.flow.count(message.input, f"delivered.{self.ctx.alias}")
