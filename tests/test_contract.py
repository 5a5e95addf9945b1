"""The module contract on the in-memory bus: reconnect backoff, kinds found by discovery, typed options."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from framefarm.bus import check_service, connect
from framefarm.config.describe import describe_kind
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import InputOptions, ServiceOptions
from framefarm.errors import SourceUnavailable
from framefarm.ingest.base import Input
from framefarm.modules.context import ModuleContext
from framefarm.plugins import builtin_modules
from framefarm.tasks.yolo import Yolo, YoloOptions


class FlakyOptions(InputOptions):
    name: Literal["flaky_test"] = Field(description="A source that fails on cue (test-only kind).")


class FlakySource(Input[FlakyOptions]):
    """Fails at once on every attempt, except the attempts in ``publish_on`` which publish a frame first."""

    def __init__(self, ctx: ModuleContext[FlakyOptions], publish_on: set[int]) -> None:
        super().__init__(ctx)
        self.attempts: list[float] = []
        self.publish_on = publish_on

    def read(self, stop: threading.Event) -> None:
        self.attempts.append(time.monotonic())
        if len(self.attempts) in self.publish_on:
            self.publisher.publish(b"x", fmt="jpeg", width=1, height=1, source="cam", stop=stop)
        raise SourceUnavailable("connection refused")


def flaky(bus_url: str, tmp_path: Path, publish_on: set[int] = frozenset()) -> FlakySource:
    options = FlakyOptions(name="flaky_test", alias="cam", tag="cam", reconnect={"initial": 0.1, "max": 5})
    service = ServiceOptions(runtime_dir=tmp_path)
    ctx = ModuleContext(
        alias="cam",
        options=options,
        service=service,
        routes=Routes(processors=(), outputs=(Stage("sink", "*"),)),
        bus=connect(bus_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path,
        log=logging.getLogger("cam"),
    )
    return FlakySource(ctx, set(publish_on))


def run_for(module: Input, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=module.serve, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_source_that_fails_at_once_is_retried_at_growing_intervals(
    bus_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = flaky(bus_url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cam"):
        run_for(source, 3.0)
    # 0.1 s doubling with jitter: about six attempts in 3 s; without backoff it would be a dozen or more
    assert 4 <= len(source.attempts) <= 7, gaps(source.attempts)
    intervals = gaps(source.attempts)
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(intervals)), intervals
    assert intervals[-1] > 4 * intervals[0]
    assert "connection refused; reconnecting in" in caplog.text
    assert source.ctx.bus.flow.counters()["cam"]["reconnects"] >= 4


def test_the_backoff_starts_over_after_a_published_frame(bus_url: str, tmp_path: Path) -> None:
    source = flaky(bus_url, tmp_path, publish_on={5})
    run_for(source, 2.5)
    intervals = gaps(source.attempts)
    assert len(intervals) >= 5, intervals
    assert intervals[3] >= 0.4  # the fifth attempt came after four failures in a row
    assert intervals[4] <= 0.1 + 0.05  # it published, so the next delay is back to reconnect.initial
    assert source.ctx.bus.flow.counters()["cam"]["published"] == 1


def test_built_in_kinds_are_found_without_a_list() -> None:
    assert {"framefarm.ingest.dir_images", "framefarm.tasks.yolo", "framefarm.outputs.image_files"} <= set(
        builtin_modules()
    )


def test_a_kind_names_its_options_once_as_the_generic_argument() -> None:
    assert Yolo.Options is YoloOptions
    assert Yolo.kind_name() == "yolo"


def test_describe_lists_nested_options() -> None:
    text = describe_kind("processors", Yolo)
    assert "retry.max_retries" in text and "retry.max_backoff" in text


@pytest.mark.parametrize(
    ("broker", "store", "refused"),
    [
        (None, "inline", True),  # the embedded Redis keeps frames in keys, never inside messages
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0", False),
        ("nsq://127.0.0.1:4150", "inline", False),
        ("kafka://127.0.0.1:9092", "broker", True),
    ],
)
def test_each_backend_declares_its_frame_stores(broker: str | None, store: str, refused: bool) -> None:
    found = list(check_service(ServiceOptions(broker=broker, frames={"store": store})))
    assert bool(found) == refused, found
