"""What only the NSQ backend does, against a real nsqd: its Dramatiq broker, inline frames, the bound kept by the
input, msg-timeouts, restarts, nsqlookupd. The bus contract (inline frames, frames in Redis) is in
test_bus_contract.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.errors import BrokerConnectionError

from framefarm.bus import connect
from framefarm.bus.base import FrameTooLarge
from framefarm.bus.codec import decode, encode
from framefarm.bus.nsq import NsqBus
from framefarm.bus.nsq.client import Subscription
from framefarm.bus.nsq.frames import InlineFrameStore
from framefarm.bus.nsq.http import NsqEndpoints
from framefarm.bus.nsq.protocol import MAX_NAME_LENGTH, nsq_name
from framefarm.config.schema import ServiceOptions
from framefarm.errors import BusError, FrameMissing

from peers import free_port, nsqd_server, nsqlookupd_server, wait_for

QUEUE = "stage-a"
WORKER_TIMEOUT_MS = 100  # idle consumers and workers look at their stop flags this often
# nsqd looks for due deferred and timed-out messages only in channels it knew at its last refresh (every
# 5 s, not configurable), so on a channel this new, delays and msg-timeouts run up to 5 s late.
SCAN_REFRESH_S = 5.0


@pytest.fixture
def nsqd(tmp_path: Path) -> Iterator[str]:
    with nsqd_server(tmp_path) as (url, _http_port):
        yield url


def make_bus(url: str, store: str = "broker", **frames: Any) -> NsqBus:
    bus = connect(url, ServiceOptions(frames={"store": store, **frames}))
    assert isinstance(bus, NsqBus)
    return bus


@contextmanager
def worker(bus: NsqBus, handler: Callable[[dict], None], queue: str = QUEUE, **options: Any) -> Iterator[None]:
    """A real Dramatiq worker on ``queue``, as a stage process runs it."""
    bus.declare_actor(queue, handler, **options)
    running = dramatiq.Worker(bus.broker, queues={queue}, worker_threads=2, worker_timeout=WORKER_TIMEOUT_MS)
    running.start()
    try:
        yield
    finally:
        running.stop(timeout=5000)


def test_join_waits_for_the_work_in_flight(nsqd: str) -> None:
    bus, done = make_bus(nsqd), []

    def handler(payload: dict) -> None:
        time.sleep(0.02)
        done.append(payload["n"])

    with closing(bus), worker(bus, handler):
        for n in range(20):
            bus.send(QUEUE, {"n": n})
        bus.broker.join(QUEUE, timeout=10_000)
        assert sorted(done) == list(range(20))  # join waited for the work in flight, not only the queue
        assert bus.broker.backlog(QUEUE) == (0, 0)


def test_retries_then_dead_letter(nsqd: str) -> None:
    bus, calls = make_bus(nsqd), []

    def failing(payload: dict) -> None:
        calls.append(time.monotonic())
        raise RuntimeError("receiver down")

    with closing(bus), worker(bus, failing, max_retries=2, min_backoff=100, max_backoff=200):
        bus.send(QUEUE, {"key": "k", "frame": b"\x00raw\xff"})
        dead = bus.broker.endpoints
        wait_for(lambda: sum(t["depth"] for t in dead.topics(QUEUE + ".XQ")) == 1, 2 * SCAN_REFRESH_S, "a dead letter")
        assert len(calls) == 3  # the first try and two retries, each deferred in nsqd (DPUB)
        assert calls[1] - calls[0] >= 0.05
        assert bus.broker.backlog(QUEUE) == (0, 0)
    with closing(Subscription(dead, QUEUE + ".XQ", "inspect", max_in_flight=1).open()) as letters:
        letter = letters.next(time.monotonic() + 5)
        message = decode(letter.body)
        assert message.args[0] == {"key": "k", "frame": b"\x00raw\xff"}
        assert message.options["retries"] == 3
        assert "receiver down" in message.options["traceback"]


def test_delayed_message_waits_in_nsqd(nsqd: str) -> None:
    bus, arrived = make_bus(nsqd), []
    with closing(bus), worker(bus, lambda payload: arrived.append(time.monotonic())):
        sent = time.monotonic()
        message = dramatiq.Message(queue_name=QUEUE, actor_name=QUEUE, args=({},), kwargs={}, options={})
        bus.broker.enqueue(message, delay=1000)
        # In nsqd, not yet delivered: counted either in the topic (until nsqd's pump hands it to the channel)
        # or as deferred in the channel; which one is a race inside nsqd.
        assert sum(bus.broker.backlog(QUEUE)) == 1
        assert arrived == []
        bus.broker.join(QUEUE, timeout=int((2 + SCAN_REFRESH_S) * 1000))
        assert len(arrived) == 1
        assert arrived[0] - sent >= 0.9


def test_flush_drops_waiting_messages(nsqd: str) -> None:
    with closing(make_bus(nsqd)) as bus:
        for n in range(5):
            bus.send(QUEUE, {"n": n})
        assert bus.pending(QUEUE) == 5
        bus.broker.flush(QUEUE)
        assert bus.pending(QUEUE) == 0


def test_an_inline_frame_rides_in_its_message(nsqd: str) -> None:
    frame = os.urandom(100_000)
    with closing(make_bus(nsqd)) as bus:
        assert isinstance(bus.frames, InlineFrameStore)
        fields = bus.frames.put("k1", frame, ttl=30, refs=1)
        assert fields["frame"] is frame  # neither copied nor kept anywhere but in the message
        with pytest.raises(FrameMissing, match="travels inline"):
            bus.frames.get("k1")  # there is no store to look it up in


def test_frame_larger_than_max_inline_is_refused(nsqd: str) -> None:
    with closing(make_bus(nsqd, max_inline=2048)) as bus:
        assert bus.flow.admit("cam-a", "big", limit=4, ttl=30)
        with pytest.raises(FrameTooLarge, match=r"3000 bytes, more than frames.max_inline \(2048\)"):
            bus.frames.put("big", b"x" * 3000, ttl=30, refs=1)
        assert bus.flow.in_flight("cam-a") == 0  # a frame that was never sent is not in flight


def test_the_input_keeps_its_bound_and_seqs_and_in_flight_counts_the_queues(nsqd: str) -> None:
    input_bus, status = make_bus(nsqd), make_bus(nsqd)
    with closing(input_bus), closing(status):
        assert input_bus.flow.admit("cam-a", "k1", limit=4, ttl=30)
        assert input_bus.flow.in_flight("cam-a") == 1
        assert status.flow.in_flight("cam-a") == 0  # the bound lives in the input's process only
        status.send(QUEUE, {"n": 1})
        assert status.flow.in_flight() == 1  # without a stream: messages waiting in the pipeline's queues
        seqs = [input_bus.flow.next_seq("cam-a") for _ in range(3)]
        assert seqs == list(range(seqs[0], seqs[0] + 3))
        assert seqs[0] > time.time_ns() // 1000 - 60_000_000  # microseconds of the input's clock


CHILD = """
import sys, time
from framefarm.bus.nsq.broker import NsqBroker
from framefarm.bus.nsq.http import NsqEndpoints
consumer = NsqBroker(NsqEndpoints.from_url(sys.argv[1])).consume(sys.argv[2], prefetch=1, timeout=100)
while next(consumer) is None:
    pass
print("got", flush=True)
time.sleep(60)
"""


def test_killed_worker_message_redelivered_after_msg_timeout_and_touch_keeps_it(tmp_path: Path) -> None:
    with nsqd_server(tmp_path, args=("--msg-timeout=1s",)) as (url, _), closing(make_bus(url)) as bus:
        bus.send(QUEUE, {"n": 1})
        child = subprocess.Popen([sys.executable, "-c", CHILD, url, QUEUE], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "got"
            os.kill(child.pid, signal.SIGKILL)  # no FIN, no REQ, no goodbye
        finally:
            child.wait()
        consumer = bus.broker.consume(QUEUE, prefetch=1, timeout=100)
        killed_at, message = time.monotonic(), None
        while message is None and time.monotonic() - killed_at < 2 * SCAN_REFRESH_S:
            message = next(consumer)
        assert message is not None and message.args == ({"n": 1},)
        assert message.delivery.attempts == 2
        held_until = time.monotonic() + 2.5  # work longer than msg-timeout: the consumer TOUCHes it
        while time.monotonic() < held_until:
            assert next(consumer) is None  # not timed out, so not redelivered
        consumer.ack(message)
        consumer.close()
        assert bus.broker.backlog(QUEUE) == (0, 0)


def test_nsqd_restart_loses_no_queued_message(tmp_path: Path) -> None:
    ports = {"tcp_port": free_port(), "http_port": free_port()}
    seen: set[int] = set()
    lock = threading.Lock()

    def handler(payload: dict) -> None:
        time.sleep(0.002)
        with lock:
            seen.add(payload["n"])

    stack = ExitStack()
    with nsqd_server(tmp_path, **ports) as (url, _):
        bus = stack.enter_context(closing(make_bus(url)))
        for n in range(300):
            bus.send(QUEUE, {"n": n})
        stack.enter_context(worker(bus, handler))
        wait_for(lambda: len(seen) >= 30, 10, "some messages done")
    with stack:  # nsqd stopped (SIGTERM) with messages queued and in flight
        with pytest.raises(bus.transient_errors):  # the input's runner backs off and retries
            bus.send(QUEUE, {"n": -1})
        assert len(seen) < 300
        with nsqd_server(tmp_path, **ports):  # same data folder: nsqd saved its queues when it stopped
            wait_for(lambda: len(seen) == 300, 20, "every message after the restart")  # Dramatiq reconnects
            bus.broker.join(QUEUE, timeout=10_000)
            stack.close()  # stop the worker while nsqd still runs


def test_lookupd_finds_every_nsqd_of_a_queue(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seen: list[int] = []
    with nsqlookupd_server(tmp_path) as (lookupd, lookupd_tcp_port):
        register = (f"--lookupd-tcp-address=127.0.0.1:{lookupd_tcp_port}",)
        with (
            nsqd_server(tmp_path / "a", args=register) as (url_a, _),
            nsqd_server(tmp_path / "b", args=register) as (url_b, _),
            closing(make_bus(url_a)) as host_a,
            closing(make_bus(url_b)) as host_b,  # an input on another host, publishing to its own nsqd
            closing(make_bus(f"{url_a}&lookupd={lookupd}")) as stage,
        ):
            host_a.send(QUEUE, {"n": 1})
            host_b.send(QUEUE, {"n": 2})
            assert stage.pending(QUEUE) == 2  # /stats of every nsqd that nsqlookupd knows
            with worker(stage, lambda payload: seen.append(payload["n"])):
                wait_for(lambda: sorted(seen) == [1, 2], 10, "messages from both nsqd")
                stage.broker.join(QUEUE, timeout=5000)


def test_body_codec_keeps_bytes_binary() -> None:
    payload = {"key": "k", "frame": b"\x00\x01" * 10, "nested": [{"b": b"x"}, 1]}
    message = dramatiq.Message(queue_name="q", actor_name="q", args=(payload,), kwargs={"k": b"y"}, options={})
    parts = encode(message)
    assert payload["frame"] in parts  # sent as is, not copied or base64-encoded
    assert decode(b"".join(parts)) == message
    plain = dramatiq.Message(queue_name="q", actor_name="q", args=({"n": 1},), kwargs={}, options={})
    assert encode(plain) == [plain.encode()]  # Dramatiq's own JSON when there are no bytes
    assert decode(plain.encode()) == plain


def test_broker_url_and_names() -> None:
    endpoints = NsqEndpoints.from_url("nsq://nsq.local?lookupd=http://l1:4161/&lookupd=http://l2:4161")
    assert (endpoints.port, endpoints.http_port) == (4150, 4151)
    assert endpoints.lookupd == ("http://l1:4161", "http://l2:4161")
    with pytest.raises(BusError, match="unknown nsq:// URL option lookup"):
        NsqEndpoints.from_url("nsq://h:4150?lookup=http://l:4161")
    with pytest.raises(BusError, match="must be an http:// URL"):
        NsqEndpoints.from_url("nsq://h:4150?lookupd=l:4161")
    long = nsq_name("a" * 64, prefix="_ff.done.", suffix="#ephemeral")
    assert len(long) == MAX_NAME_LENGTH and long.endswith("#ephemeral")
    assert long != nsq_name("a" * 63 + "b", prefix="_ff.done.", suffix="#ephemeral")


def test_unreachable_nsqd_is_a_transient_error() -> None:
    bus = make_bus(f"nsq://127.0.0.1:{free_port()}")
    with closing(bus):
        with pytest.raises(BrokerConnectionError):
            bus.send(QUEUE, {"n": 1})
        with pytest.raises(BusError):
            bus.ping()
