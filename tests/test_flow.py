"""Backpressure and staleness with a real Redis: live inputs drop and count, stale frames are skipped."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from framefarm.bus import connect
from framefarm.modules.context import ModuleContext
from framefarm.message import FrameMessage
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import InputOptions, ServiceOptions
from framefarm.ingest.base import Publisher
from framefarm.outputs.image_files import ImageFiles

from peers import wait_for


class LiveOptions(InputOptions):
    """A live input's options, as a camera kind would declare them (test-only kind)."""

    name: Literal["live_test"] = Field(description="test")


def context(tmp_path: Path, redis_url: str, alias: str, options: object) -> ModuleContext:
    service = ServiceOptions(runtime_dir=tmp_path / "run")
    return ModuleContext(
        alias=alias,
        options=options,
        service=service,
        routes=Routes(processors=(), outputs=(Stage("files", "*"),)),
        bus=connect(redis_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger(alias),
    )


def test_a_live_input_drops_and_counts_frames_past_max_in_flight(tmp_path: Path, redis_url: str) -> None:
    options = LiveOptions(name="live_test", alias="cam", tag="cam", max_in_flight=3)
    publisher = Publisher(context(tmp_path, redis_url, "cam", options))
    stop = threading.Event()
    sent = [publisher.publish(b"x", fmt="jpeg", width=1, height=1, source="rtsp://cam", stop=stop) for _ in range(5)]
    assert sent == [True, True, True, False, False]
    counters = publisher.ctx.bus.flow.counters()["cam"]
    assert counters == {"frames_in": 5, "published": 3, "dropped_full": 2}


def test_a_stale_frame_is_skipped_counted_and_released(tmp_path: Path, redis_url: str) -> None:
    options = ImageFiles.Options(name="image_files", alias="files", path=tmp_path / "out")
    ctx = context(tmp_path, redis_url, "files", options)
    bus = ctx.bus
    fresh, stale = (
        FrameMessage(
            stream="cam", input="cam", source="rtsp://cam", seq=seq, captured_at=time.time(), width=1, height=1,
            key=f"k{seq}", format="jpeg", expires_at=time.time() + offset,
        )
        for seq, offset in ((1, 60), (2, -1))
    )  # fmt: skip
    for message in (fresh, stale):
        bus.flow.admit("cam", message.key, limit=10, ttl=60)
        bus.frames.put(message.key, b"x", ttl=60, refs=1)
    stop = threading.Event()
    thread = threading.Thread(target=ImageFiles(ctx).serve, args=(stop,))
    thread.start()
    try:
        bus.send("files", stale.model_dump())
        bus.send("files", fresh.model_dump())
        wait_for(lambda: (tmp_path / "out" / "cam" / "000000001.json").exists())
        wait_for(lambda: bus.flow.in_flight("cam") == 0)
    finally:
        stop.set()
        thread.join(10)
    assert not (tmp_path / "out" / "cam" / "000000002.json").exists()
    assert bus.flow.counters()["cam"]["stale"] == 1
