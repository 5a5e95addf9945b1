"""What only the NATS JetStream backend does, against a real nats-server: its Dramatiq broker (through a real Worker),
delivery limits, chunked frames, restarts. The bus contract is in test_bus_contract.py."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.worker
import pytest
from dramatiq.errors import ConnectionClosed, QueueJoinTimeout
from dramatiq.message import Message

from framefarm.bus.nats import NatsBus
from framefarm.bus.nats.broker import NatsConsumer, NatsMessage
from framefarm.bus.nats.jetstream import stream_name
from framefarm.config.schema import ServiceOptions
from framefarm.errors import FrameMissing
from framefarm.modules.stage import ReleaseFailedFrames

from peers import free_port, nats_server, wait_for

ACK_WAIT_S = 1.0
STORED_BYTES = 4096  # above FRAMES' max_inline: such frames go to the frames stream, not inside messages
FRAMES = {"max_inline": 1024}
FAST_RECONNECT_S = 0.2


@pytest.fixture
def make_bus(nats_url: str) -> Iterator[Callable[..., NatsBus]]:
    """Buses on the test's server, each its own connection, all closed at teardown."""
    buses: list[NatsBus] = []

    def make(**options: Any) -> NatsBus:
        options.setdefault("ack_wait", ACK_WAIT_S)
        bus = NatsBus(nats_url, ServiceOptions(broker=nats_url, frames=FRAMES), **options)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture
def bus(make_bus: Callable[..., NatsBus]) -> NatsBus:
    return make_bus()


@contextmanager
def running_worker(bus: NatsBus, threads: int = 2) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(bus.broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=10_000)


def next_message(consumer: NatsConsumer, timeout: float = 10.0) -> NatsMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise TimeoutError(f"no message within {timeout}s")


def dead_letters(bus: NatsBus, queue: str) -> list[Message]:
    async def read() -> list[bytes]:
        js = await bus.link.jetstream()
        info = await js.stream_info(stream_name(queue, "xq"))
        seqs = range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ()
        return [(await js.get_msg(stream_name(queue, "xq"), seq=seq)).data for seq in seqs]

    return [Message.decode(data) for data in bus.link.call(read())]


def test_a_dead_letter_keeps_the_message_its_retries_and_traceback(bus: NatsBus) -> None:
    attempts: list[float] = []

    def fail(payload: dict[str, Any]) -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("receiver down")

    bus.declare_actor("fails", fail, max_retries=2, min_backoff=100, max_backoff=200)
    bus.send("fails", {"key": "k", "input": "s"})
    with running_worker(bus):
        wait_for(lambda: bus.broker.get_queue_message_counts("fails") == (0, 0, 1), 15, "a dead letter")
    assert len(attempts) == 3  # the first try and two retries, through the delay queue
    assert attempts[1] - attempts[0] >= 0.1
    [dead] = dead_letters(bus, "fails")
    assert dead.args == ({"key": "k", "input": "s"},)
    assert dead.options["retries"] == 3
    assert "receiver down" in dead.options["traceback"]


def test_a_delayed_message_arrives_after_its_delay(bus: NatsBus) -> None:
    arrived: list[float] = []
    actor = bus.declare_actor("later", lambda payload: arrived.append(time.monotonic()))
    with running_worker(bus):
        sent = time.monotonic()
        actor.send_with_options(args=({},), delay=800)
        wait_for(lambda: bool(arrived), 10, "the delayed message")
    assert arrived[0] - sent >= 0.8
    assert bus.broker.get_queue_message_counts("later") == (0, 0, 0)


def test_join_waits_for_the_queue_to_drain_and_flush_empties_it(bus: NatsBus) -> None:
    done: list[int] = []

    def slow(payload: dict[str, Any]) -> None:
        time.sleep(0.05)
        done.append(payload["i"])

    bus.declare_actor("slow", slow)
    for i in range(10):
        bus.send("slow", {"i": i})
    with pytest.raises(QueueJoinTimeout):
        bus.broker.join("slow", timeout=300)  # nobody consumes yet
    with running_worker(bus):
        bus.broker.join("slow", timeout=10_000)
        assert len(done) == 10
    bus.send("slow", {"i": 10})
    bus.broker.flush_all()
    assert bus.broker.get_queue_message_counts("slow") == (0, 0, 0)


def test_the_server_drops_the_bytes_of_an_expired_frame(bus: NatsBus) -> None:
    bus.frames.put("short", os.urandom(STORED_BYTES), ttl=0.4, refs=1)
    bus.frames.put("long", os.urandom(STORED_BYTES), ttl=30, refs=1)
    assert _stored_frames(bus) == 2
    assert bus.frames.map.msg_ttl  # nats-server 2.11+ (per-message TTLs are whole seconds)
    wait_for(lambda: _stored_frames(bus) == 1, 5, "the server to drop the expired frame")


def _stored_frames(bus: NatsBus) -> int:
    async def count() -> int:
        return (await (await bus.link.jetstream()).stream_info(bus.frames.map.name)).state.messages

    return bus.link.call(count())


def test_frames_over_the_max_payload_are_chunked(bus: NatsBus) -> None:
    data = os.urandom(2_500_000)  # the server's default max payload is 1 MiB
    bus.frames.put("big", data, ttl=30, refs=1)
    assert bus.frames.get("big") == data
    assert bus.frames.release("big", "cam")
    with pytest.raises(FrameMissing):
        bus.frames.get("big")
    assert _stored_frames(bus) == 0


def test_a_held_delivery_outlives_ack_wait_and_comes_back_when_its_worker_dies(
    make_bus: Callable[..., NatsBus],
) -> None:
    dying, other = make_bus(), make_bus()
    dying.send("jobs", {"n": 1})
    holder = dying.broker.consume("jobs", prefetch=1, timeout=1000)
    held = next_message(holder)
    waiting = other.broker.consume("jobs", prefetch=1, timeout=3 * int(ACK_WAIT_S * 1000))
    assert next(waiting) is None  # three ack_waits: progress reports keep the delivery with its holder
    dying.link.close()  # the worker dies: no ack, no more progress reports
    started = time.monotonic()
    again = next_message(waiting)
    assert again.message_id == held.message_id
    assert again._msg.metadata.num_delivered == 2
    assert time.monotonic() - started <= ACK_WAIT_S + 2
    waiting.ack(again)
    waiting.close()
    assert other.broker.get_queue_message_counts("jobs") == (0, 0, 0)


def test_a_consumer_with_no_room_waits_without_spinning_and_pulls_again_once_a_settle_makes_room(
    bus: NatsBus,
) -> None:
    """A worker holding its whole prefetch (a busy detector) asks for nothing more: its consumer thread must
    sleep on the socket, not poll it (a spinning thread took half a pinned core from inference)."""
    for n in range(6):
        bus.send("busy", {"n": n})
    consumer = bus.broker.consume("busy", prefetch=4, timeout=300)
    held = [next_message(consumer) for _ in range(4)]
    started = time.thread_time()
    assert next(consumer) is None and next(consumer) is None  # full: nothing more comes
    assert time.thread_time() - started < 0.1, "the consumer thread spun while it had no room"
    for message in held[:2]:
        consumer.ack(message)  # half the room back: the settle pulls again
    assert {next_message(consumer).args[0]["n"] for _ in range(2)} == {4, 5}
    consumer.close()


def test_a_message_delivered_too_often_is_dead_lettered(make_bus: Callable[..., NatsBus]) -> None:
    bus = make_bus(max_deliveries=2)
    bus.broker.add_middleware(ReleaseFailedFrames(bus.frames, bus.flow, lambda error: None))  # as every Stage does
    assert bus.frames.put("k", os.urandom(STORED_BYTES), ttl=60, refs=1) == {}
    bus.send("poison", {"key": "k", "input": "s"})
    consumer = bus.broker.consume("poison", prefetch=1, timeout=500)
    for _ in range(2):
        consumer.requeue([next_message(consumer)])  # as if its worker died each time
    assert next(consumer) is None  # the third delivery goes to the dead letters, not to a worker
    assert bus.broker.get_queue_message_counts("poison") == (0, 0, 1)
    assert bus.flow.counters()["s"]["dead"] == 1
    with pytest.raises(FrameMissing):
        bus.frames.get("k")
    consumer.close()


def test_the_bus_carries_on_across_a_server_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", FAST_RECONNECT_S)
    port, seen, backlog, gate = free_port(), [], [], threading.Event()

    def handle(payload: dict[str, Any]) -> None:
        if payload["i"] == 2:
            gate.wait(20)  # still in progress while the server restarts; acked after
        seen.append(payload["i"])

    with nats_server(tmp_path, port) as url:
        service = ServiceOptions(broker=url, frames=FRAMES)
        bus = NatsBus(url, service, ack_wait=2, reconnect_wait=FAST_RECONNECT_S)
        producer = NatsBus(url, service, ack_wait=2, reconnect_wait=FAST_RECONNECT_S)
        bus.declare_actor("cam", handle)
        worker = dramatiq.Worker(bus.broker, worker_threads=2, worker_timeout=100)
        worker.start()
        for i in range(3):
            bus.send("cam", {"i": i})
        wait_for(lambda: sorted(seen) == [0, 1], 10, "the first messages")
        producer.send("backlog", {"i": 100})  # queued, not consumed before the restart
        kept = os.urandom(STORED_BYTES)
        producer.frames.put("kept", kept, ttl=60, refs=1)
        assert producer.flow.next_seq("cam") == 1
    try:
        with nats_server(tmp_path, port):  # same port, same store
            try:
                gate.set()
                for i in range(3, 6):
                    _send_when_back(bus, "cam", {"i": i})
                wait_for(lambda: set(seen) == set(range(6)), 20, "every message, sent before or after the restart")
                bus.broker.join("cam", timeout=20_000)  # the one in progress across the restart was acked
                bus.declare_actor("backlog", lambda payload: backlog.append(payload["i"]))
                wait_for(lambda: backlog == [100], 20, "the message queued before the restart")
                assert producer.frames.get("kept") == kept
                assert producer.flow.next_seq("cam") == 2
            finally:
                worker.stop(timeout=10_000)
    finally:
        bus.close()
        producer.close()


def _send_when_back(bus: NatsBus, queue: str, payload: dict[str, Any]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            bus.send(queue, payload)
            return
        except ConnectionClosed:
            if time.monotonic() > deadline:
                raise
            time.sleep(FAST_RECONNECT_S)


def test_frames_can_live_in_redis_beside_nats_queues(nats_url: str, redis_url: str) -> None:
    service = ServiceOptions(broker=nats_url, frames={"store": redis_url})
    bus = NatsBus(nats_url, service, ack_wait=ACK_WAIT_S)
    try:
        bus.ping()
        assert bus.flow.admit("s", "k", limit=1, ttl=30)
        bus.frames.put("k", b"x" * 2_000_000, ttl=30, refs=1)
        bus.send("q", {"key": "k", "input": "s"})
        assert bus.frames.get("k") == b"x" * 2_000_000
        assert bus.frames.release("k", "s")
        assert bus.flow.in_flight() == 0
        assert bus.pending("q") == 1
    finally:
        bus.close()
