"""The shared body of processors and outputs: consume the stage's queue, skip stale frames, count what happens.

What a stage kind gets for free: at-least-once delivery (a message is acked after ``handle`` returns),
retries with the kind's backoff (``retry`` options) for any error but the ones below, dead letters after the
last retry with the frame released, stale frames skipped, and a drain on stop that finishes the current
frames and hands prefetched ones back.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.middleware import Middleware

from ..bus.base import Flow, FrameStore
from ..bus.worker import serve_queue
from ..config.schema import StageOptions
from ..errors import BadInput, FrameMissing
from ..message import FrameMessage
from . import counters
from .base import Module

log = logging.getLogger(__name__)

SO = TypeVar("SO", bound=StageOptions)
MS_PER_S = 1000


class Stage(Module[SO]):
    """A module fed by its own queue (named after its alias). Subclasses implement ``handle``."""

    @abstractmethod
    def handle(self, message: FrameMessage) -> None:
        """Do this stage's work on one frame; raising makes Dramatiq retry the message with backoff."""

    def skip_stale(self, message: FrameMessage) -> bool:
        """Drop a frame that outlived its input's ``max_age``; True when it was dropped."""
        if not message.is_stale():
            return False
        self.ctx.bus.frames.discard(message.key, message.input)
        self.ctx.bus.flow.count(message.input, counters.STALE)
        self.dropped(message, "skipped: older than its input's max_age")
        return True

    def on_message(self, payload: dict[str, Any]) -> None:
        message = FrameMessage.model_validate(payload)
        if self.skip_stale(message):
            return
        self.ctx.log.debug("handling %s (seq %d from %s)", message.source, message.seq, message.input)
        try:
            self.handle(message)
        except FrameMissing as exc:  # expired or already released: retrying cannot bring it back
            self.ctx.log.warning("%s: %s", message.source, exc)
            self.ctx.bus.flow.count(message.input, counters.MISSING)
            self.dropped(message, str(exc))
        except BadInput as exc:  # undecodable frame: it fails alone, without retries
            self.ctx.log.warning("%s: %s", message.source, exc)
            self.ctx.bus.frames.discard(message.key, message.input)
            self.ctx.bus.flow.count(message.input, counters.FAILED)
            self.dropped(message, str(exc))

    def dropped(self, message: FrameMessage, reason: str) -> None:
        """``message``'s frame was given up here for ``reason`` (stale, missing, undecodable): it goes no further."""

    def on_dead(self, payload: dict[str, Any], error: str) -> None:
        """A message (``payload``) went to the dead letters after its last retry failed with ``error``; its frame
        was released."""

    def run(self, stop: threading.Event) -> None:
        bus, retry = self.ctx.bus, self.options.retry
        bus.broker.add_middleware(ReleaseFailedFrames(bus.frames, bus.flow, self.on_dead))
        serve_queue(
            bus,
            self.ctx.alias,
            self.on_message,
            threads=self.options.worker_threads,
            stop=stop,
            stop_timeout=self.ctx.service.stop_timeout,
            max_retries=retry.max_retries,
            min_backoff=int(retry.min_backoff * MS_PER_S),
            max_backoff=int(retry.max_backoff * MS_PER_S),
        )


class ReleaseFailedFrames(Middleware):
    """When a message is dead-lettered (retries exhausted), delete its frame and end its in-flight entry.

    Without this a failed frame would hold one of its stream's ``max_in_flight`` slots until its TTL,
    and a file input would stall once enough frames had failed.
    """

    def __init__(self, frames: FrameStore, flow: Flow, on_dead: Callable[[dict[str, Any], str], None]) -> None:
        self.frames = frames
        self.flow = flow
        self.on_dead = on_dead

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.broker.MessageProxy) -> None:
        payload = message.args[0] if message.args else None
        if not isinstance(payload, dict) or "key" not in payload or "input" not in payload:
            return
        try:
            if payload.get("event") is None:  # a camera's event holds no frame
                self.frames.discard(payload["key"], payload["input"])
            self.flow.count(payload["input"], counters.DEAD)
            self.on_dead(payload, (message.options.get("traceback") or "").strip().rpartition("\n")[2])
        except Exception:  # a hook that fails must not stop the others (or the worker)
            log.exception("cannot release the frame of dead-lettered message %s", message.message_id)
