"""The bus contract, run against every backend: Redis, NATS, NSQ (inline frames, and frames in Redis), in-memory.

Each connection a test makes stands for another process (an input, a stage, ``pipectl status``). State is read
through Flow, FrameStore and Bus only. What a backend promises beyond the common contract is declared once in
conftest.Backend, and the tests that need a promise run on the backends that make it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dramatiq
import pytest
from dramatiq.middleware import Middleware
from pydantic import Field

from framefarm.bus.base import Bus, frame_key
from framefarm.config.routing import Routes
from framefarm.config.schema import OutputOptions
from framefarm.errors import FrameMissing, SinkUnavailable
from framefarm.message import FrameMessage
from framefarm.modules import counters
from framefarm.modules.context import ModuleContext
from framefarm.outputs.base import Output

from conftest import BusEnv, backends
from peers import wait_for

FRAME_TTL_S = 30.0
FRAME_BYTES = 4096  # above the NATS backend's frames.max_inline here, so that its frames go to its frames stream
RELEASE_WAIT_S = 10.0  # NSQ inline: a release reaches the input as a notice through nsqd
COUNTS_WITHIN_S = 2.0  # the promise: counts are visible everywhere this soon, with no flush
# NSQ defers retries in nsqd, which looks at a channel this new only every 5 s: two retries can take ~10 s.
DEAD_LETTER_WAIT_S = 30.0


class ProbeOptions(OutputOptions):
    name: Literal["contract_probe"] = Field(description="An output whose delivery is the test's function.")


class Probe(Output[ProbeOptions]):
    """A real Stage (through the Output base) whose delivery is the test's ``deliver_with``."""

    deliver_with: Callable[[FrameMessage, Bus], None]

    def deliver(self, message: FrameMessage) -> None:
        self.deliver_with(message, self.ctx.bus)


class Running:
    def __init__(self, probe: Probe, stop: threading.Event) -> None:
        self.probe, self.stop = probe, stop


@contextmanager
def serving(env: BusEnv, deliver: Callable[[FrameMessage, Bus], None], **options: Any) -> Iterator[Running]:
    """A Probe stage consuming ``env.queue`` on a connection of its own, in a thread, until the block ends."""
    bus = env.connect()
    ctx = ModuleContext(
        alias=env.queue,
        options=ProbeOptions(name="contract_probe", alias=env.queue, **options),
        service=env.service,
        routes=Routes(processors=(), outputs=()),
        bus=bus,
        base_dir=env.tmp_path,
        runtime_dir=env.tmp_path / "run",
        log=logging.getLogger("probe"),
    )
    probe = Probe(ctx)
    probe.deliver_with = deliver
    stop = threading.Event()
    thread = threading.Thread(target=probe.serve, args=(stop,), name="probe")
    thread.start()
    try:
        yield Running(probe, stop)
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), "the stage did not stop"


def put_frame(bus: Bus, stream: str, data: bytes, *, refs: int = 1) -> dict[str, Any]:
    """What an input does with one frame: admit it, store it, and build its message (the caller sends it)."""
    key = frame_key(stream)
    assert bus.flow.admit(stream, key, limit=100, ttl=FRAME_TTL_S)
    message = FrameMessage(
        stream=stream, input=stream, source="test", seq=bus.flow.next_seq(stream), captured_at=time.time(),
        width=1, height=1, key=key, format="jpeg",
    )  # fmt: skip
    return {**message.model_dump(exclude_none=True), **bus.frames.put(key, data, ttl=FRAME_TTL_S, refs=refs)}


def frame_bytes(label: str) -> bytes:
    return label.encode() + os.urandom(FRAME_BYTES)


def fetch(bus: Bus, payload: dict[str, Any]) -> bytes:
    return bus.frames.fetch(FrameMessage.model_validate(payload))


def assert_released(env: BusEnv, input_bus: Bus, *payloads: dict[str, Any]) -> None:
    """The frames' last release (or discard) ended their in-flight entries, as their input sees it; where the
    backend keeps frames in a store, they are gone from it."""
    wait_for(lambda: input_bus.flow.in_flight(env.stream) == 0, RELEASE_WAIT_S, "the in-flight entries to end")
    for payload in payloads:
        assert ("frame" in payload) is not env.backend.keeps_frames  # in a store, or inside the message
        if env.backend.keeps_frames:
            with pytest.raises(FrameMissing):
                input_bus.frames.get(payload["key"])


def counts_of(bus: Bus, stream: str) -> dict[str, int]:
    return bus.flow.counters().get(stream, {})


# -- frames --


def test_a_frame_is_fetched_by_each_consumer_and_released_by_the_last(bus_env: BusEnv) -> None:
    source, consumer = bus_env.connect(), bus_env.connect()
    shared_bytes, single_bytes = frame_bytes("shared"), frame_bytes("single")
    shared = put_frame(source, bus_env.stream, shared_bytes, refs=2)
    single = put_frame(source, bus_env.stream, single_bytes)
    assert source.flow.in_flight(bus_env.stream) == 2
    assert fetch(consumer, shared) == shared_bytes
    assert fetch(consumer, single) == single_bytes
    consumer.frames.release(shared["key"], bus_env.stream)  # one of its two consumers is done
    consumer.frames.release(single["key"], bus_env.stream)  # its only consumer is done
    wait_for(lambda: source.flow.in_flight(bus_env.stream) == 1, RELEASE_WAIT_S, "the single frame's release")
    assert fetch(consumer, shared) == shared_bytes  # still there for the second consumer
    consumer.frames.release(shared["key"], bus_env.stream)
    assert_released(bus_env, source, shared, single)


def test_a_discarded_frame_is_gone_whoever_still_holds_it(bus_env: BusEnv) -> None:
    source, stage = bus_env.connect(), bus_env.connect()
    frame = put_frame(source, bus_env.stream, frame_bytes("stale"), refs=3)
    stage.frames.discard(frame["key"], bus_env.stream)
    assert_released(bus_env, source, frame)


@pytest.mark.parametrize("backend", backends(keeps_frames=True), indirect=True)
def test_a_stored_frame_expires_after_its_ttl(bus_env: BusEnv) -> None:
    bus, short, long = bus_env.connect(), frame_bytes("short"), frame_bytes("long")
    assert bus.frames.put("short", short, ttl=0.3, refs=1) == {}  # stored, not inline
    bus.frames.put("long", long, ttl=FRAME_TTL_S, refs=1)
    assert bus.frames.get("short") == short
    time.sleep(0.5)
    with pytest.raises(FrameMissing):
        bus.frames.get("short")
    assert bus.frames.get("long") == long


# -- flow: in-flight bound and sequence numbers --


def test_admit_enforces_max_in_flight_and_an_expired_entry_frees_its_slot(bus_env: BusEnv) -> None:
    bus, stream = bus_env.connect(), bus_env.stream
    assert bus.flow.admit(stream, "a", limit=2, ttl=0.3)
    assert bus.flow.admit(stream, "b", limit=2, ttl=FRAME_TTL_S)
    assert not bus.flow.admit(stream, "c", limit=2, ttl=FRAME_TTL_S)
    assert bus.flow.admit(f"{stream}-other", "c", limit=2, ttl=FRAME_TTL_S)  # the bound is per stream
    assert bus.flow.in_flight(stream) == 2
    time.sleep(0.4)  # nobody released a: its entry expires with its frame
    assert bus.flow.in_flight(stream) == 1
    assert bus.flow.admit(stream, "c", limit=2, ttl=FRAME_TTL_S)
    assert not bus.flow.admit(stream, "d", limit=2, ttl=FRAME_TTL_S)


@pytest.mark.parametrize("backend", backends(shared_flow=True), indirect=True)
def test_the_bound_holds_across_connections_admitting_at_once(bus_env: BusEnv) -> None:
    first, second, stream = bus_env.connect(), bus_env.connect(), bus_env.stream
    results: list[tuple[str, bool]] = []

    def admit(bus: Bus, key: str) -> None:
        results.append((key, bus.flow.admit(stream, key, limit=5, ttl=FRAME_TTL_S)))

    threads = [threading.Thread(target=admit, args=((first, second)[i % 2], f"k{i}")) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [key for key, ok in results if ok]
    assert len(admitted) == 5
    assert first.flow.in_flight(stream) == second.flow.in_flight(stream) == 5
    assert second.frames.release(admitted[0], stream)  # its only consumer is done: the slot is free for anyone
    assert first.flow.admit(stream, "late", limit=5, ttl=FRAME_TTL_S)
    assert not second.flow.admit(stream, "later", limit=5, ttl=FRAME_TTL_S)


def test_sequence_numbers_increase_and_a_new_connection_goes_on_after_them(bus_env: BusEnv) -> None:
    bus = bus_env.connect()
    seqs = [bus.flow.next_seq(bus_env.stream) for _ in range(5)]
    assert seqs == sorted(set(seqs))
    bus_env.close(bus)  # the input restarts
    assert bus_env.connect().flow.next_seq(bus_env.stream) > seqs[-1]


def test_a_frame_admitted_with_its_number_takes_none_when_refused(bus_env: BusEnv) -> None:
    """admit_numbered (what an input calls per frame; Redis does both in one script): the numbers go on from
    next_seq's, and a frame refused for room takes no number, so an output waiting for the next seq is not left
    with a gap."""
    bus, stream = bus_env.connect(), bus_env.stream
    first = bus.flow.next_seq(stream)
    assert bus.flow.admit_numbered(stream, "a", limit=2, ttl=FRAME_TTL_S) == first + 1
    assert bus.flow.admit_numbered(stream, "b", limit=2, ttl=FRAME_TTL_S) == first + 2
    assert bus.flow.admit_numbered(stream, "c", limit=2, ttl=FRAME_TTL_S) is None
    assert bus.flow.next_seq(stream) == first + 3


@pytest.mark.parametrize("backend", backends(shared_flow=True), indirect=True)
def test_sequence_numbers_are_unique_across_connections_drawing_at_once(bus_env: BusEnv) -> None:
    buses, seqs = (bus_env.connect(), bus_env.connect()), []

    def draw(bus: Bus) -> None:
        seqs.extend(bus.flow.next_seq(bus_env.stream) for _ in range(25))

    threads = [threading.Thread(target=draw, args=(bus,)) for bus in buses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seqs)) == 50


# -- counters --


def test_counts_reach_every_process_within_two_seconds_without_a_flush(bus_env: BusEnv) -> None:
    first, second, status = bus_env.connect(), bus_env.connect(), bus_env.connect()
    stream, other = bus_env.stream, f"{bus_env.stream}-b"
    started = time.monotonic()
    first.flow.count(stream, counters.FRAMES_IN, 3)
    second.flow.count(stream, counters.DROPPED_FULL, 2)
    second.flow.count(other, counters.FRAMES_IN)
    expected = {stream: {"frames_in": 3, "dropped_full": 2}, other: {"frames_in": 1}}
    while True:  # nothing flushes the writers: their own timers write their counts
        read_at = time.monotonic()  # a read can take a while (NSQ's compacts): what it sees was written by now
        if {s: counts_of(status, s) for s in (stream, other)} == expected:
            break
        assert read_at - started < 10, "the counts never arrived"
        time.sleep(0.05)
    assert read_at - started <= COUNTS_WITHIN_S


def test_counts_are_written_at_close(bus_env: BusEnv) -> None:
    writer, status = bus_env.connect(), bus_env.connect()
    writer.flow.counts.period = 3600  # only close can write them
    writer.flow.count(bus_env.stream, counters.FRAMES_IN, 4)
    writer.flow.count(bus_env.stream, counters.PUBLISHED, 3)
    assert counts_of(status, bus_env.stream) == {}
    bus_env.close(writer)
    assert counts_of(status, bus_env.stream) == {"frames_in": 4, "published": 3}
    assert counts_of(status, bus_env.stream) == {"frames_in": 4, "published": 3}  # reading consumes nothing


# -- messages through a stage --


def test_ping_answers(bus_env: BusEnv) -> None:
    bus_env.connect().ping()


def test_a_stage_gets_every_frame_once_and_acks_it_after_delivering(bus_env: BusEnv) -> None:
    source = bus_env.connect()
    frames = [frame_bytes(f"frame {i}") for i in range(5)]
    for data in frames:
        source.send(bus_env.queue, put_frame(source, bus_env.stream, data))
    assert source.pending(bus_env.queue) == 5
    delivered: list[bytes] = []
    with serving(bus_env, lambda message, bus: delivered.append(bus.frames.fetch(message))):
        wait_for(lambda: len(delivered) == 5, 20, "every frame delivered")
        assert_released(bus_env, source)  # the Output base released each frame after its delivery
        assert source.pending(bus_env.queue) == 0
    assert sorted(delivered) == sorted(frames)
    wait_for(lambda: counts_of(source, bus_env.stream).get(counters.delivered(bus_env.queue)) == 5, 10, "counts")


class ShutdownSeen(Middleware):
    """Sets ``started`` when a worker of the broker begins to stop (before it stops its threads)."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.started.set()


def test_a_stopping_stage_finishes_its_frame_and_the_next_stage_gets_the_rest(bus_env: BusEnv) -> None:
    source = bus_env.connect()
    payloads = [put_frame(source, bus_env.stream, frame_bytes(f"frame {i}")) for i in range(3)]
    seqs = [payload["seq"] for payload in payloads]
    gate, in_progress = threading.Event(), threading.Event()
    first: list[int] = []
    second: list[int] = []

    def slow(message: FrameMessage, bus: Bus) -> None:
        first.append(message.seq)
        in_progress.set()
        gate.wait(20)

    with serving(bus_env, slow, threads=1) as running:
        shutdown = ShutdownSeen()
        running.probe.ctx.bus.broker.add_middleware(shutdown)
        source.send(bus_env.queue, payloads[0])
        wait_for(in_progress.is_set, 20, "the first frame in progress")
        for payload in payloads[1:]:
            source.send(bus_env.queue, payload)
        running.stop.set()  # the stage stops while its frame is in progress
        wait_for(shutdown.started.is_set, 10, "the worker to begin stopping")
        time.sleep(0.1)  # the worker has told its threads to stop after their current message
        gate.set()
    assert first == seqs[:1]  # finished (and acked) before the stage stopped
    with serving(bus_env, lambda message, bus: second.append(message.seq)):
        wait_for(lambda: len(second) >= 2, 20, "the frames the first stage did not do")
        assert_released(bus_env, source)
    assert sorted(second) == seqs[1:]  # the finished one was acked: it does not come again


def test_a_frame_that_keeps_failing_is_retried_then_dead_lettered_and_released(bus_env: BusEnv) -> None:
    source, attempts = bus_env.connect(), []

    def receiver_down(message: FrameMessage, bus: Bus) -> None:
        attempts.append(time.monotonic())
        raise SinkUnavailable("receiver down")

    frame = put_frame(source, bus_env.stream, frame_bytes("undeliverable"))
    retry = {"max_retries": 2, "min_backoff": 0.01, "max_backoff": 0.05}
    with serving(bus_env, receiver_down, retry=retry):
        source.send(bus_env.queue, frame)
        wait_for(lambda: counts_of(source, bus_env.stream).get(counters.DEAD) == 1, DEAD_LETTER_WAIT_S, "dead")
        assert_released(bus_env, source, frame)  # ReleaseFailedFrames, added by the Stage
        assert source.pending(bus_env.queue) == 0
    assert len(attempts) == 3  # the first try and two retries
    assert counts_of(source, bus_env.stream) == {counters.DEAD: 1, counters.retried(bus_env.queue): 3}


# -- reports: each stream's latest state --


def reports_of(bus: Bus, *streams: str) -> dict[str, dict[str, Any]]:
    """The reports of ``streams`` as ``bus`` reads them, without the ``at`` stamp."""
    found = bus.flow.reports()
    return {s: {k: v for k, v in found[s].items() if k != "at"} for s in streams if s in found}


def test_the_latest_report_of_each_stream_reaches_every_process_and_replaces_the_one_before(bus_env: BusEnv) -> None:
    writer, status = bus_env.connect(), bus_env.connect()
    stream, other = bus_env.stream, f"{bus_env.stream}-b"
    writer.flow.report(stream, {"state": "connecting"})
    writer.flow.report(stream, {"state": "streaming", "fps_in": 25.0})  # replaces the one not written yet
    writer.flow.report(other, {"state": "failed", "last_error": "404 Not Found"})
    writer.flow.count(stream, counters.FRAMES_IN, 2)
    failed = {"state": "failed", "last_error": "404 Not Found"}
    expected = {stream: {"state": "streaming", "fps_in": 25.0}, other: failed}
    wait_for(lambda: reports_of(status, stream, other) == expected, COUNTS_WITHIN_S + 1, "the reports, on the timer")
    assert counts_of(status, stream) == {"frames_in": 2}  # counts and reports share the topic on NSQ: both kept
    assert reports_of(status, stream, other) == expected

    at = status.flow.reports()[stream]["at"]
    assert abs(at - time.time()) < 10
    writer.flow.write_reports({stream: {"state": "late", "at": at - 60}})  # an older report, arriving late
    assert reports_of(status, stream)[stream]["state"] == "streaming"

    writer.flow.counts.period = 3600  # only close can write the next one
    writer.flow.report(stream, {"state": "reconnecting", "last_error": "connection refused"})
    bus_env.close(writer)
    assert reports_of(status, stream) == {stream: {"state": "reconnecting", "last_error": "connection refused"}}
