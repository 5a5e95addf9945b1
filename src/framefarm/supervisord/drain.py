"""Graceful quit: stop the inputs, wait until every frame already queued is delivered, then stop."""

from __future__ import annotations

import time

from ..bus.base import Bus
from ..errors import MasterError
from .running import Running

DRAIN_POLL_S = 0.25


def quit_gracefully(running: Running) -> int:
    """Return the frames still in flight when the drain deadline passed (0 when all were delivered)."""
    inputs = running.aliases("inputs")
    if not inputs:  # a workers-only host: stopping finishes current messages and requeues the rest
        running.master.shutdown()
        return 0
    running.master.stop_programs(list(reversed(inputs)))
    bus = running.bus()
    try:
        deadline = time.monotonic() + running.service().drain_timeout
        left = _in_flight(bus)
        while left and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
            left = _in_flight(bus)
    finally:
        bus.close()
    running.master.shutdown()
    return left


def _in_flight(bus: Bus) -> int:
    try:
        return bus.flow.in_flight()
    except bus.transient_errors as exc:
        raise MasterError(f"cannot read queue state from the broker: {exc}") from exc
