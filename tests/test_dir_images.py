"""dir_images against a real Redis: settling, exactly-once across restarts, bad files, backpressure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dramatiq

from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.bus.context import ModuleContext
from framefarm.bus.message import FrameMessage
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import ServiceOptions
from framefarm.ingest.dir_images import DirImages

from conftest import MEDIA
from peers import wait_for

QUEUE = "sink"


def make_input(tmp_path: Path, redis_url: str, **options: object) -> DirImages:
    service = ServiceOptions(runtime_dir=tmp_path / "run")
    (tmp_path / "in").mkdir(exist_ok=True)
    ctx = ModuleContext(
        alias="uploads",
        options=DirImages.Options.model_validate(
            {"name": "dir_images", "alias": "uploads", "tag": "t", "path": "in", "settle": 0.2, **options}
        ),
        service=service,
        routes=Routes(processors=(), outputs=(Stage(QUEUE, "*"),)),
        bus=connect(redis_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger("test"),
    )
    return DirImages(ctx)


@contextmanager
def running(module: DirImages) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=module.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def queued(bus: Bus) -> list[FrameMessage]:
    """Messages waiting in the sink queue, oldest first (read without consuming)."""
    client = bus.client  # the Redis backend's client: this test is about the Redis layout
    ids = client.lrange(f"framefarm:{QUEUE}", 0, -1)
    return [
        FrameMessage.model_validate(dramatiq.Message.decode(client.hget(f"framefarm:{QUEUE}.msgs", i)).args[0])
        for i in reversed(ids)
    ]


def test_waits_for_a_file_to_be_complete_then_publishes_its_bytes(tmp_path: Path, redis_url: str) -> None:
    module = make_input(tmp_path, redis_url, after="keep")
    data = (MEDIA / "dog.jpg").read_bytes()
    with running(module):
        with (tmp_path / "in" / "dog.jpg").open("wb") as handle:
            handle.write(data[:5000])
            handle.flush()
            threading.Event().wait(0.6)  # longer than settle, but the file is still being written
            assert queued(module.ctx.bus) == []
            handle.write(data[5000:])
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    (message,) = queued(module.ctx.bus)
    assert (message.source, message.width, message.height, message.format) == ("dog.jpg", 768, 576, "jpeg")
    assert module.ctx.bus.frames.get(message.key) == data
    assert module.ctx.bus.flow.in_flight("uploads") == 1


def test_a_restart_never_publishes_a_file_twice(tmp_path: Path, redis_url: str) -> None:
    for name in ("a.jpg", "b.png"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
    (tmp_path / "in" / "a.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes())
    (tmp_path / "in" / "b.jpg").write_bytes((MEDIA / "eagle.jpg").read_bytes())
    first = make_input(tmp_path, redis_url, after="keep")
    with running(first):
        wait_for(lambda: len(queued(first.ctx.bus)) == 2)
    second = make_input(tmp_path, redis_url, after="keep")
    with running(second):
        threading.Event().wait(1.0)
    assert sorted(m.source for m in queued(second.ctx.bus)) == ["a.jpg", "b.jpg"]
    (tmp_path / "in" / "a.jpg").write_bytes((MEDIA / "horses.jpg").read_bytes())  # new content, same name
    with running(make_input(tmp_path, redis_url, after="keep")):
        wait_for(lambda: len(queued(second.ctx.bus)) == 3)


def test_bad_files_are_moved_aside_with_a_reason(tmp_path: Path, redis_url: str) -> None:
    module = make_input(tmp_path, redis_url, failed_dir="bad")
    jpeg = (MEDIA / "dog.jpg").read_bytes()
    corrupt = jpeg[:2000] + bytes(range(256)) * 40 + jpeg[-2:]
    (tmp_path / "in" / "corrupt.jpg").write_bytes(corrupt)
    (tmp_path / "in" / "text.jpg").write_text("hello")
    (tmp_path / "in" / "good.jpg").write_bytes(jpeg)
    with running(module):
        wait_for(lambda: (tmp_path / "bad" / "text.jpg.error.txt").exists() and len(queued(module.ctx.bus)) == 1)
        wait_for(lambda: (tmp_path / "bad" / "corrupt.jpg.error.txt").exists())
    assert (tmp_path / "bad" / "corrupt.jpg").read_bytes() == corrupt
    assert (tmp_path / "in" / ".done" / "good.jpg").exists()
    assert module.ctx.bus.flow.counters()["uploads"]["failed"] == 2


def test_a_file_input_waits_at_max_in_flight_instead_of_dropping(tmp_path: Path, redis_url: str) -> None:
    module = make_input(tmp_path, redis_url, max_in_flight=2)
    for i in range(5):
        (tmp_path / "in" / f"{i}.jpg").write_bytes((MEDIA / "eagle.jpg").read_bytes())
    bus = module.ctx.bus
    with running(module):
        wait_for(lambda: len(queued(bus)) == 2)
        threading.Event().wait(0.5)
        assert len(queued(bus)) == 2  # waiting, not dropping
        for message in queued(bus):
            bus.frames.release(message.key, "uploads")  # the output is done with them
        wait_for(lambda: len(queued(bus)) == 4)
    assert "dropped_full" not in bus.flow.counters()["uploads"]
