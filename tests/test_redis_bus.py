"""The Redis bus against a real redis-server: frame refs, in-flight bound, retries and dead letters."""

from __future__ import annotations

import threading

import pytest

from framefarm.bus import connect
from framefarm.bus.worker import serve_queue
from framefarm.config.schema import ServiceOptions
from framefarm.errors import FrameMissing

from peers import wait_for


@pytest.fixture
def bus(redis_url: str):
    bus = connect(redis_url, ServiceOptions())
    yield bus
    bus.close()


def test_frame_is_deleted_on_its_last_release(bus) -> None:
    assert bus.flow.admit("s", "k1", limit=5, ttl=30)
    bus.frames.put("k1", b"jpeg", ttl=30, refs=2)
    assert bus.frames.get("k1") == b"jpeg"
    assert bus.frames.release("k1", "s") is False
    assert bus.flow.in_flight("s") == 1
    assert bus.frames.release("k1", "s") is True
    assert bus.flow.in_flight("s") == 0
    with pytest.raises(FrameMissing):
        bus.frames.get("k1")


def test_admit_enforces_the_bound_and_expired_entries_free_their_slot(bus) -> None:
    assert bus.flow.admit("s", "a", limit=2, ttl=0.3)
    assert bus.flow.admit("s", "b", limit=2, ttl=30)
    assert not bus.flow.admit("s", "c", limit=2, ttl=30)
    wait_for(lambda: bus.flow.admit("s", "c", limit=2, ttl=30), timeout=5)
    assert bus.flow.in_flight() == 2


def test_sequence_numbers_survive_a_new_connection(bus, redis_url: str) -> None:
    assert [bus.flow.next_seq("s") for _ in range(3)] == [1, 2, 3]
    other = connect(redis_url, ServiceOptions())
    assert other.flow.next_seq("s") == 4
    other.close()


def test_a_message_that_keeps_failing_is_retried_then_its_frame_released(bus) -> None:
    attempts: list[int] = []

    def always_fails(payload: dict) -> None:
        attempts.append(1)
        raise RuntimeError("receiver down")

    bus.flow.admit("s", "k", limit=5, ttl=60)
    bus.frames.put("k", b"x", ttl=60, refs=1)
    stop = threading.Event()
    worker = threading.Thread(
        target=serve_queue,
        args=(bus, "q", always_fails),
        kwargs={"threads": 1, "stop": stop, "stop_timeout": 5, "max_retries": 2, "min_backoff": 10, "max_backoff": 50},
    )
    worker.start()
    try:
        bus.send("q", {"key": "k", "input": "s"})
        wait_for(lambda: bus.flow.counters().get("s", {}).get("dead") == 1, timeout=30)
    finally:
        stop.set()
        worker.join(10)
    assert len(attempts) == 3  # the first try and two retries
    assert bus.flow.in_flight("s") == 0
    with pytest.raises(FrameMissing):
        bus.frames.get("k")
