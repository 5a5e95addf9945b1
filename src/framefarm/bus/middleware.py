"""Dramatiq middleware that keeps frame-store state right when a message is given up on."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import Middleware, Retries

from .base import Flow, FrameStore

log = logging.getLogger(__name__)


def stage_middleware() -> list[Middleware]:
    """The Dramatiq middleware framefarm's stages use: retries with backoff, nothing else.

    Dramatiq's defaults also track age and time limits, callbacks and pipelines; framefarm has its own
    ``max_age`` and uses none of the others, and dropping them saves about a tenth of the CPU per message.
    """
    return [Retries()]


class ReleaseFailedFrames(Middleware):
    """When a message is dead-lettered (retries exhausted), delete its frame and end its in-flight entry.

    Without this a failed frame would hold one of its stream's ``max_in_flight`` slots until its TTL,
    and a file input would stall once enough frames had failed.
    """

    def __init__(self, frames: FrameStore, flow: Flow) -> None:
        self.frames = frames
        self.flow = flow

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.broker.MessageProxy) -> None:
        payload = message.args[0] if message.args else None
        if not isinstance(payload, dict) or "key" not in payload or "input" not in payload:
            return
        try:
            self.frames.discard(payload["key"], payload["input"])
            self.flow.count(payload["input"], "dead")
        except Exception:  # a hook that fails must not stop the others (or the worker)
            log.exception("cannot release the frame of dead-lettered message %s", message.message_id)
