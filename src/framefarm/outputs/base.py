"""What every output kind shares: deliver, then release the frame, count the outcome and report the state."""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

import dramatiq

from ..config.schema import OutputOptions
from ..errors import SinkFull, SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..modules import counters
from ..modules.context import ModuleContext
from ..modules.stage import Stage
from .delivery import Delivery

OO = TypeVar("OO", bound=OutputOptions)
MS_PER_S = 1000
RETRY_PREFIX = "dramatiq.errors.Retry: "  # how the last line of a retried SinkUnavailable's traceback starts


class Output(Stage[OO]):
    def __init__(self, ctx: ModuleContext[OO]) -> None:
        super().__init__(ctx)
        self.delivery = Delivery(ctx.bus.flow, ctx.alias)

    @abstractmethod
    def deliver(self, message: FrameMessage) -> bool | None:
        """Deliver one frame's results; read its bytes with ``self.ctx.bus.frames.fetch(message)`` only if needed.

        Must be idempotent: a message may be delivered again after a worker died before acking it. Raise
        SinkUnavailable to be retried with the kind's backoff, SinkRejected to drop the frame for good (the
        receiver refused it), SinkFull to drop it unsent (too many wait for the receiver already). Return
        False when there was nothing to deliver (the kind's filters left nothing): counted as filtered.
        """

    def handle(self, message: FrameMessage) -> None:
        bus, alias = self.ctx.bus, self.ctx.alias
        try:
            sent = self.deliver(message) is not False
        except SinkRejected as exc:
            self.ctx.log.warning("%s seq %d rejected, dropped: %s", message.stream, message.seq, exc)
            self.delivery.gave_up(str(exc))
            outcome = counters.rejected(alias)
        except SinkFull as exc:
            self.ctx.log.warning("%s seq %d dropped unsent: %s", message.stream, message.seq, exc)
            self.delivery.gave_up(str(exc), dropped=True)
            outcome = counters.dropped(alias)
        except SinkUnavailable as exc:
            self.ctx.log.warning("%s seq %d not delivered, will retry: %s", message.stream, message.seq, exc)
            bus.flow.count(message.input, counters.retried(alias))
            self.delivery.will_retry(str(exc))
            after = exc.retry_after
            delay = None if after is None else int(min(after, self.options.retry.max_backoff) * MS_PER_S)
            raise dramatiq.Retry(str(exc), delay=delay) from exc  # no traceback: the warning said it all
        else:
            self.delivery.succeeded(filtered=not sent)
            outcome = counters.delivered(alias) if sent else counters.filtered(alias)
        bus.frames.release(message.key, message.input)
        bus.flow.count(message.input, outcome)

    def on_dead(self, error: str) -> None:
        self.delivery.gave_up(f"retries exhausted: {error.removeprefix(RETRY_PREFIX)}")
