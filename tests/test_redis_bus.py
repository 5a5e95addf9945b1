"""What only the Redis backend does, against a real redis-server; the bus contract is in test_bus_contract.py."""

from __future__ import annotations

import uuid

import pytest

from framefarm.bus import connect
from framefarm.bus.base import frame_key
from framefarm.config.schema import ServiceOptions
from framefarm.errors import BusError, FrameMissing

from peers import free_port


def test_frames_and_flow_state_can_live_in_another_redis_than_the_messages(shared_redis_url: str) -> None:
    store = shared_redis_url.rsplit("/", 1)[0] + "/2"
    apart, other, beside = (
        connect(shared_redis_url, ServiceOptions(broker=shared_redis_url, frames={"store": store})),
        connect(shared_redis_url, ServiceOptions(broker=shared_redis_url, frames={"store": store})),
        connect(shared_redis_url, ServiceOptions(broker=shared_redis_url)),
    )
    stream, queue = f"cam-{uuid.uuid4().hex[:8]}", f"q-{uuid.uuid4().hex[:8]}"
    key = frame_key(stream)
    try:
        assert apart.flow.admit(stream, key, limit=1, ttl=30)
        apart.frames.put(key, b"jpeg", ttl=30, refs=1)
        apart.flow.count(stream, "frames_in")
        apart.flow.flush_counts()
        apart.send(queue, {"key": key, "input": stream})
        assert beside.pending(queue) == 1  # messages go to the broker
        assert other.frames.get(key) == b"jpeg"  # frames, bounds and counters to the store
        assert other.flow.in_flight(stream) == 1
        assert other.flow.counters()[stream] == {"frames_in": 1}
        with pytest.raises(FrameMissing):
            beside.frames.get(key)
        assert beside.flow.in_flight(stream) == 0
        assert stream not in beside.flow.counters()
    finally:
        for bus in (apart, other, beside):
            bus.close()


def test_an_unreachable_redis_is_a_transient_error_and_the_broker_takes_a_new_worker_id() -> None:
    bus = connect(f"redis://127.0.0.1:{free_port()}/0", ServiceOptions())
    try:
        worker_id = bus.broker.broker_id
        with pytest.raises(bus.transient_errors):  # an input's reconnect loop backs off and retries
            bus.send("q", {"n": 1})
        assert bus.broker.broker_id != worker_id  # its unacked messages are reclaimed by the others' maintenance
        with pytest.raises(BusError):
            bus.ping()
    finally:
        bus.close()
