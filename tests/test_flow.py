"""Backpressure and staleness on every bus backend: live inputs drop and count, stale frames are skipped."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from pydantic import Field

from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import InputOptions
from framefarm.ingest.base import Publisher, Sent
from framefarm.modules.context import ModuleContext
from framefarm.outputs.image_files import ImageFiles

from conftest import BusEnv
from peers import wait_for


class LiveOptions(InputOptions):
    """A live input's options, as a camera kind would declare them (test-only kind)."""

    name: Literal["live_test"] = Field(description="test")


def context(env: BusEnv, alias: str, options: object) -> ModuleContext:
    """A module's context on a connection of its own, routing every frame to the output ``env.queue``."""
    return ModuleContext(
        alias=alias,
        options=options,
        service=env.service,
        routes=Routes(processors=(), outputs=(Stage(env.queue, "*"),)),
        bus=env.connect(),
        base_dir=env.tmp_path,
        runtime_dir=env.tmp_path / "run",
        log=logging.getLogger(alias),
    )


def live_input(env: BusEnv, **options: object) -> Publisher:
    live = LiveOptions(name="live_test", alias=env.stream, tag=env.stream, **options)
    return Publisher(context(env, env.stream, live))


def test_a_live_input_drops_and_counts_frames_past_max_in_flight(bus_env: BusEnv) -> None:
    publisher, stop = live_input(bus_env, max_in_flight=3), threading.Event()
    sent = [publisher.publish(b"x", fmt="jpeg", width=1, height=1, source="rtsp://cam", stop=stop) for _ in range(5)]
    assert sent == [Sent.PUBLISHED] * 3 + [Sent.DROPPED_FULL] * 2
    assert bus_env.connect().pending(bus_env.queue) == 3
    counters = publisher.ctx.bus.flow.counters()[bus_env.stream]
    assert counters == {"frames_in": 5, "published": 3, "dropped_full": 2}


def test_a_stale_frame_is_skipped_counted_and_released(bus_env: BusEnv) -> None:
    publisher, stop = live_input(bus_env, max_age=30), threading.Event()
    out = bus_env.tmp_path / "out"
    output = ImageFiles(context(bus_env, bus_env.queue, ImageFiles.Options(name="image_files", path=out)))
    for source, captured_at in (("stale.jpg", time.time() - 60), ("fresh.jpg", None)):
        publisher.publish(b"x", fmt="jpeg", width=1, height=1, source=source, stop=stop, captured_at=captured_at)
    thread = threading.Thread(target=output.serve, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: (out / bus_env.stream / "fresh.json").exists(), 20, "the fresh frame's results")
        wait_for(lambda: publisher.ctx.bus.flow.in_flight(bus_env.stream) == 0, 10, "both frames released")
    finally:
        stop.set()
        thread.join(20)
    assert not (out / bus_env.stream / "stale.json").exists()
    expected = {"frames_in": 2, "published": 2, "stale": 1, f"delivered.{bus_env.queue}": 1}

    def counts() -> dict[str, int]:  # less the latency histogram, its own test's (tests/test_web_face.py)
        found = publisher.ctx.bus.flow.counters().get(bus_env.stream, {})
        return {name: value for name, value in found.items() if not name.startswith(("latency.", "latency_ms."))}

    wait_for(lambda: counts() == expected, 5, "the input's and the output's counts")
