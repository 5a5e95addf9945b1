"""An in-process micro-batcher: many worker threads submit one item each, one thread runs whole batches.

A batch runs when ``size`` items are waiting or ``max_wait`` has passed since its first item, whichever
comes first, so a GPU sees full batches under load and a lone frame is not held back for long.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from ..errors import FramefarmError

T = TypeVar("T")
R = TypeVar("R")

STOP_POLL_S = 0.5


class BatcherStopped(FramefarmError):
    """The batcher was closed before the item ran; the message is retried elsewhere."""


class MicroBatcher(Generic[T, R]):
    """``submit`` blocks the calling thread until its item's batch has run; thread-safe.

    ``run_batch`` gets up to ``size`` items and returns one result per item, in order. If it raises, every
    item of that batch gets the exception (each message then fails and is retried on its own).
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, size: int, max_wait: float) -> None:
        self.run_batch = run_batch
        self.size = size
        self.max_wait = max_wait
        self.pending: queue.Queue[tuple[T, Future[R]]] = queue.Queue()
        self.closed = threading.Event()
        self.batches = 0
        self.items = 0
        self.thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self.thread.start()

    def submit(self, item: T) -> R:
        if self.closed.is_set():
            raise BatcherStopped("the batcher is closed")
        future: Future[R] = Future()
        self.pending.put((item, future))
        return future.result()

    def close(self) -> None:
        """Stop after the batch in progress; items still waiting fail with BatcherStopped."""
        self.closed.set()
        self.thread.join()
        while not self.pending.empty():
            self.pending.get_nowait()[1].set_exception(BatcherStopped("the batcher is closed"))

    def _collect(self) -> list[tuple[T, Future[R]]]:
        try:
            batch = [self.pending.get(timeout=STOP_POLL_S)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.pending.get(timeout=remaining) if remaining > 0 else self.pending.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self.closed.is_set():
            batch = self._collect()
            if not batch:
                continue
            items, futures = [item for item, _ in batch], [future for _, future in batch]
            try:
                results = self.run_batch(items)
            except Exception as exc:
                for future in futures:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(items)
            for future, result in zip(futures, results, strict=True):
                future.set_result(result)
