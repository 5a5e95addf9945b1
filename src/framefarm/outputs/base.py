"""What every output kind shares: deliver, then release the frame and count the outcome."""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

from ..config.schema import OutputOptions
from ..errors import SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..modules import counters
from ..modules.stage import Stage

OO = TypeVar("OO", bound=OutputOptions)


class Output(Stage[OO]):
    @abstractmethod
    def deliver(self, message: FrameMessage) -> None:
        """Deliver one frame's results; read its bytes with ``self.ctx.bus.frames.fetch(message)`` only if needed.

        Must be idempotent: a message may be delivered again after a worker died before acking it. Raise
        SinkUnavailable to be retried with the kind's backoff, SinkRejected to drop the frame for good.
        """

    def handle(self, message: FrameMessage) -> None:
        bus, alias = self.ctx.bus, self.ctx.alias
        outcome = counters.delivered(alias)
        try:
            self.deliver(message)
        except SinkRejected as exc:
            self.ctx.log.warning("%s seq %d rejected, dropped: %s", message.stream, message.seq, exc)
            outcome = counters.rejected(alias)
        except SinkUnavailable as exc:
            self.ctx.log.warning("%s seq %d not delivered, will retry: %s", message.stream, message.seq, exc)
            bus.flow.count(message.input, counters.retried(alias))
            raise
        bus.frames.release(message.key, message.input)
        bus.flow.count(message.input, outcome)
