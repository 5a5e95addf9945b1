"""Graceful quit: stop the inputs, wait until every frame already queued is delivered, then stop.

What the drain needs (the broker, reached with the running pipeline's own settings) is checked before
anything is stopped: a quit that cannot drain leaves the pipeline running as it was and says why.
"""

from __future__ import annotations

import time

from ..bus.base import Bus
from ..errors import MasterError
from .running import Running

DRAIN_POLL_S = 0.25
NOTHING_STOPPED = "nothing was stopped; `pipectl -s stop` stops at once, leaving queued frames for the next start"


def quit_gracefully(running: Running) -> int:
    """Return the frames still in flight when the drain deadline passed (0 when all were delivered)."""
    inputs = running.aliases("inputs")
    if not inputs:  # a workers-only host: stopping finishes current messages and requeues the rest
        running.master.shutdown()
        return 0
    try:
        service = running.service()
        bus = running.bus()
    except MasterError as exc:
        raise MasterError(f"{exc}; {NOTHING_STOPPED}") from exc
    try:
        try:
            _in_flight(bus)  # what the drain will read, read once before anything stops
        except MasterError as exc:
            raise MasterError(f"{exc}; {NOTHING_STOPPED}") from exc
        running.master.stop_programs(list(reversed(inputs)))
        deadline = time.monotonic() + service.drain_timeout
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
