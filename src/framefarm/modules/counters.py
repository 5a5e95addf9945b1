"""The names of the per-stream counters that modules keep and ``pipectl status`` shows, in one place."""

from __future__ import annotations

FRAMES_IN = "frames_in"  # frames an input produced (before its in-flight bound)
PUBLISHED = "published"  # frames on the bus
DROPPED_FULL = "dropped_full"  # a live input dropped the frame: max_in_flight frames were already in flight
DROPPED_STALE = "dropped_stale"  # a live input dropped the frame for a newer one before it could send it
RAW_ONLY = "raw_only"  # no room at the detectors: sent only to outputs that show every frame (boxes: latest)
SKIPPED_FPS = "skipped_fps"  # a live input skipped the frame to keep to its fps limit (wanted, not a loss)
STALE = "stale"  # skipped by a stage: older than the input's max_age
MISSING = "missing"  # the frame's bytes expired or were released before a stage read them
FAILED = "failed"  # unreadable: a file set aside, or a frame that does not decode
DEAD = "dead"  # retries exhausted: the message went to the dead letters and its frame was released
RECONNECTS = "reconnects"  # an input's source failed and is being opened again


def delivered(output: str) -> str:
    """Frames ``output`` delivered."""
    return f"delivered.{output}"


def rejected(output: str) -> str:
    """Frames ``output``'s receiver refused for good (a 4xx, a payload it does not take): dropped, not retried."""
    return f"rejected.{output}"


def filtered(output: str) -> str:
    """Frames ``output`` had nothing to deliver for: its filters left no result to send (wanted, not a loss)."""
    return f"filtered.{output}"


def dropped(output: str) -> str:
    """Frames ``output`` dropped unsent because too many were already waiting for its receiver (``max_pending``)."""
    return f"dropped.{output}"


def retried(output: str) -> str:
    """Deliveries ``output`` will try again (receiver down, timeout, 5xx)."""
    return f"retried.{output}"


#: Upper bounds (ms) of the capture-to-delivery latency buckets an output counts per stream; the last is open.
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
LATENCY_PREFIX = "latency."
LATENCY_SUM_PREFIX = "latency_ms."
OPEN_BOUND = "inf"


def latency(output: str, seconds: float) -> str:
    """The bucket counter of a frame ``output`` delivered ``seconds`` after its capture (``latency.<output>.le<ms>``:
    the counts of all processes add up, as a Prometheus histogram's do)."""
    ms = seconds * 1000
    bound = next((str(b) for b in LATENCY_BOUNDS_MS if ms <= b), OPEN_BOUND)
    return f"{LATENCY_PREFIX}{output}.le{bound}"


def latency_sum(output: str) -> str:
    """Milliseconds of capture-to-delivery latency of every frame ``output`` delivered, summed."""
    return f"{LATENCY_SUM_PREFIX}{output}"
