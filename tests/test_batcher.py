"""The micro-batcher: full batches under load, deadline when idle, failures per batch."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from framefarm.modules.batcher import BatcherStopped, MicroBatcher


def test_concurrent_submits_are_grouped_into_full_batches_and_each_gets_its_own_result() -> None:
    seen: list[int] = []

    def double(items: list[int]) -> list[int]:
        seen.append(len(items))
        time.sleep(0.02)
        return [2 * i for i in items]

    batcher = MicroBatcher(double, size=8, max_wait=0.5)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(batcher.submit, range(64)))
    batcher.close()
    assert results == [2 * i for i in range(64)]
    assert sum(seen) == 64 and max(seen) == 8
    assert seen.count(8) >= 6  # under load, batches fill up


def test_a_lone_item_runs_after_max_wait() -> None:
    batcher = MicroBatcher(lambda items: items, size=8, max_wait=0.05)
    started = time.monotonic()
    assert batcher.submit("x") == "x"
    assert time.monotonic() - started < 0.5
    batcher.close()
    assert (batcher.batches, batcher.items) == (1, 1)


def test_a_failing_batch_fails_each_of_its_items() -> None:
    def explode(items: list[int]) -> list[int]:
        raise RuntimeError("inference failed")

    batcher = MicroBatcher(explode, size=4, max_wait=0.05)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(4)]
        for future in futures:
            with pytest.raises(RuntimeError, match="inference failed"):
                future.result()
    batcher.close()


def test_submit_after_close_is_refused() -> None:
    batcher = MicroBatcher(lambda items: items, size=2, max_wait=0.01)
    batcher.close()
    with pytest.raises(BatcherStopped):
        batcher.submit(1)
    assert not batcher.thread.is_alive()
