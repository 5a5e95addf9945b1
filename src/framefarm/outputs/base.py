"""What every output kind shares: deliver, then release the frame, count the outcome and report the state."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import Any, ClassVar, TypeVar

import dramatiq
from dramatiq.common import compute_backoff
from dramatiq.middleware import CurrentMessage

from ..config.schema import OutputOptions
from ..errors import SinkFull, SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..modules import counters
from ..modules.context import ModuleContext
from ..modules.stage import Stage
from .delivery import Delivery

OO = TypeVar("OO", bound=OutputOptions)
MS_PER_S = 1000
RETRY_AFTER_MAX_S = 3600.0  # a receiver's Retry-After is honoured up to an hour
RETRY_PREFIX = "dramatiq.errors.Retry: "  # how the last line of a retried SinkUnavailable's traceback starts


class Output(Stage[OO]):
    relays_events: ClassVar[bool] = False  # takes cameras' events (onvif_events), not only frames

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

    def skipped_event(self, message: FrameMessage) -> bool:
        """A camera's event reaching a kind that shows frames only: counted filtered; True when it was one."""
        if message.event is None or self.relays_events:
            return False
        self.delivery.succeeded(filtered=True)
        self.ctx.bus.flow.count(message.input, counters.filtered(self.ctx.alias))
        return True

    def handle(self, message: FrameMessage) -> None:
        bus, alias = self.ctx.bus, self.ctx.alias
        if self.skipped_event(message):
            return
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
            raise dramatiq.Retry(str(exc), delay=self.retry_delay(exc.retry_after)) from exc  # the warning said it all
        else:
            self.delivery.succeeded(filtered=not sent)
            outcome = counters.delivered(alias) if sent else counters.filtered(alias)
        if message.event is None:  # an event has no frame to release
            bus.frames.release(message.key, message.input)
            if outcome == counters.delivered(alias):
                self.count_latency(message.input, message.captured_at)
        bus.flow.count(message.input, outcome)

    def count_latency(self, stream: str, captured_at: float) -> None:
        """Capture to delivery, as a histogram per stream and output (a clock behind the capturing host's counts 0)."""
        seconds = max(0.0, time.time() - captured_at)
        flow, alias = self.ctx.bus.flow, self.ctx.alias
        flow.count(stream, counters.latency(alias, seconds))
        flow.count(stream, counters.latency_sum(alias), round(seconds * MS_PER_S))

    def retry_delay(self, retry_after: float | None) -> int | None:
        """Milliseconds until the next try: the kind's backoff (None: Dramatiq computes it), or what the receiver
        asked for when that is longer (at most RETRY_AFTER_MAX_S)."""
        if retry_after is None:
            return None
        retry = self.options.retry
        current = CurrentMessage.get_current_message()
        retries = current.options.get("retries", 0) if current is not None else 0
        _, backoff_ms = compute_backoff(
            retries, factor=int(retry.min_backoff * MS_PER_S), max_backoff=int(retry.max_backoff * MS_PER_S)
        )
        return max(backoff_ms, int(min(retry_after, RETRY_AFTER_MAX_S) * MS_PER_S))

    def run(self, stop: threading.Event) -> None:
        self.ctx.bus.broker.add_middleware(CurrentMessage())  # retry_delay reads the message's retries
        super().run(stop)

    def on_dead(self, payload: dict[str, Any], error: str) -> None:
        self.delivery.gave_up(f"retries exhausted: {error.removeprefix(RETRY_PREFIX)}")
