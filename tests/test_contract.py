"""The module contract on the in-memory bus: reconnect backoff, retry-or-drop outcomes, the kind's retry policy,
kinds found by discovery, typed options. It also holds the worked example of docs/writing-a-kind.md."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from framefarm.atomic import write_atomic
from framefarm.bus import check_service, connect
from framefarm.bus.base import Bus
from framefarm.config.describe import describe_kind
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import InputOptions, OutputOptions, ServiceOptions
from framefarm.errors import SinkRejected, SinkUnavailable, SourceUnavailable
from framefarm.ingest.base import Input
from framefarm.message import FrameMessage
from framefarm.modules.context import ModuleContext
from framefarm.outputs.base import Output
from framefarm.plugins import builtin_modules
from framefarm.results import result_json
from framefarm.tasks.yolo import Yolo, YoloOptions

from harness import stage_context
from peers import wait_for


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


# -- outputs: typed outcomes decide retry or drop; each kind's retry policy comes from its options --


class LatestJsonOptions(OutputOptions):
    name: Literal["latest_json"] = Field(description="Keep the latest result of each stream as <path>/<tag>.json.")
    path: Path = Field(description="Folder of the files.")


class LatestJson(Output[LatestJsonOptions]):
    """The worked example of docs/writing-a-kind.md: idempotent (a redelivery rewrites the same file)."""

    def deliver(self, message: FrameMessage) -> None:
        folder = self.ctx.resolve(self.options.path)
        if not folder.is_dir():
            raise SinkUnavailable(f"{folder} is not there (an unmounted disk?)")
        try:
            data = json.dumps(result_json(message)).encode()
        except (TypeError, ValueError) as exc:
            raise SinkRejected(f"result is not JSON: {exc}") from exc
        write_atomic(folder / f"{message.stream}.json", data)


class ScriptedOptions(OutputOptions):
    name: Literal["scripted_test"] = Field(description="Answers each delivery as scripted (test-only kind).")


class Scripted(Output[ScriptedOptions]):
    def __init__(self, ctx: ModuleContext[ScriptedOptions], script: list[Exception | None]) -> None:
        super().__init__(ctx)
        self.script = script
        self.calls = 0

    def deliver(self, message: FrameMessage) -> None:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


def send_frame(bus: Bus, queue: str, seq: int) -> None:
    message = FrameMessage(
        stream="cam", input="cam", source="cam", seq=seq, captured_at=time.time(), width=2, height=2,
        key=f"k{seq}", format="jpeg",
    )  # fmt: skip
    assert bus.flow.admit("cam", message.key, limit=100, ttl=60)
    bus.frames.put(message.key, b"x", ttl=60, refs=1)
    bus.send(queue, message.model_dump())


@contextmanager
def serving(module: Output) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=module.serve, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_a_rejected_result_is_dropped_counted_and_released_without_retries(bus_url: str, tmp_path: Path) -> None:
    options = ScriptedOptions(name="scripted_test", alias="hook")
    output = Scripted(stage_context(bus_url, tmp_path, options), [SinkRejected("422 unprocessable")])
    bus = output.ctx.bus
    with serving(output):
        send_frame(bus, "hook", 1)
        wait_for(lambda: bus.flow.counters().get("cam", {}).get("rejected.hook") == 1)
    assert output.calls == 1
    assert bus.flow.in_flight("cam") == 0
    assert "delivered.hook" not in bus.flow.counters()["cam"]


def test_an_unavailable_receiver_is_retried_with_the_kinds_own_backoff(bus_url: str, tmp_path: Path) -> None:
    retry = {"max_retries": 3, "min_backoff": "10ms", "max_backoff": "50ms"}
    options = ScriptedOptions(name="scripted_test", alias="hook", retry=retry)
    down = [SinkUnavailable("503 service unavailable")] * 2
    output = Scripted(stage_context(bus_url, tmp_path, options), list(down))
    bus = output.ctx.bus
    with serving(output):
        send_frame(bus, "hook", 1)
        wait_for(lambda: bus.flow.counters().get("cam", {}).get("delivered.hook") == 1)
    assert output.calls == 3
    assert bus.flow.counters()["cam"]["retried.hook"] == 2
    assert bus.flow.in_flight("cam") == 0


def test_retries_exhausted_send_the_frame_to_the_dead_letters_released(bus_url: str, tmp_path: Path) -> None:
    retry = {"max_retries": 1, "min_backoff": "10ms", "max_backoff": "20ms"}
    options = ScriptedOptions(name="scripted_test", alias="hook", retry=retry)
    output = Scripted(stage_context(bus_url, tmp_path, options), [SinkUnavailable("timeout")] * 5)
    bus = output.ctx.bus
    with serving(output):
        send_frame(bus, "hook", 1)
        wait_for(lambda: bus.flow.counters().get("cam", {}).get("dead") == 1)
    assert output.calls == 2  # the first try and one retry
    assert bus.flow.in_flight("cam") == 0
    state = bus.flow.reports()["hook"]  # what pipectl status shows under outputs
    assert (state["state"], state["retried"], state["failed"]) == ("failing", 2, 1)
    assert state["last_error"] == "retries exhausted: timeout"


def test_the_worked_example_writes_the_latest_result_and_waits_for_its_folder(bus_url: str, tmp_path: Path) -> None:
    options = LatestJsonOptions(name="latest_json", alias="latest", path=tmp_path / "out", retry={"min_backoff": 0.05})
    output = LatestJson(stage_context(bus_url, tmp_path, options))
    with serving(output):
        send_frame(output.ctx.bus, "latest", 7)
        wait_for(lambda: output.ctx.bus.flow.counters().get("cam", {}).get("retried.latest", 0) >= 1)
        (tmp_path / "out").mkdir()  # the disk is back: the retry delivers
        wait_for(lambda: (tmp_path / "out" / "cam.json").exists())
    assert json.loads((tmp_path / "out" / "cam.json").read_text())["seq"] == 7
