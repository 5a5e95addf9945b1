"""Run a Dramatiq worker on one stage's queue until asked to stop: the body of every processor and output."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq

from .base import Bus

WORKER_TIMEOUT_MS = 100  # idle poll period: bounds both the stop delay and the wake-up latency of an idle worker


def serve_queue(
    bus: Bus,
    queue: str,
    handler: Callable[[dict[str, Any]], None],
    *,
    threads: int,
    stop: threading.Event,
    stop_timeout: float,
    prefetch: int | None = None,
    **actor_options: Any,
) -> None:
    """Consume ``queue`` with ``threads`` threads; on ``stop`` finish current messages, requeue prefetched ones.

    A message is acked only after ``handler`` returns (at-least-once); if it raises, Dramatiq's Retries
    middleware re-enqueues it with backoff.
    """
    with consuming(bus, queue, handler, threads=threads, stop_timeout=stop_timeout, prefetch=prefetch, **actor_options):
        stop.wait()


@contextlib.contextmanager
def consuming(
    bus: Bus,
    queue: str,
    handler: Callable[[dict[str, Any]], None],
    *,
    threads: int,
    stop_timeout: float,
    prefetch: int | None = None,
    **actor_options: Any,
) -> Iterator[None]:
    """Consume ``queue`` in the background while the block runs (as ``serve_queue``, which blocks instead)."""
    bus.declare_actor(queue, handler, **actor_options)
    worker = dramatiq.Worker(bus.broker, queues={queue}, worker_threads=threads, worker_timeout=WORKER_TIMEOUT_MS)
    if prefetch:
        worker.queue_prefetch = prefetch
    worker.start()
    try:
        yield
    finally:
        worker.stop(timeout=int(stop_timeout * 1000))
