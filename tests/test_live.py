"""What every live input gets from ingest/live.py, shown on the rtsp kind against the real GStreamer server: the
newest frame sent when there is room, the fps limit, keyframes only, the hwaccel fallback, and latency that does
not grow when the detector cannot keep up."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from framefarm.bus import connect
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import OutputOptions, ProcessorOptions, ServiceOptions
from framefarm.ingest.rtsp import Rtsp
from framefarm.message import FrameMessage
from framefarm.modules import counters
from framefarm.modules.context import ModuleContext
from framefarm.modules.stage import Stage as StageModule
from framefarm.outputs.base import Output
from framefarm.tasks.base import Processor

from harness import queued, running
from livehelp import LOGGER, counts, live_input, report
from peers import children, cmdline, rtsp_server, wait_for

SIZE = "320x180"


def not_sent(c: dict[str, int]) -> int:
    return sum(c.get(k, 0) for k in (counters.DROPPED_FULL, counters.DROPPED_STALE, counters.SKIPPED_FPS, "failed"))


def test_the_newest_frame_goes_out_when_room_comes_and_the_rest_are_dropped_and_counted(
    tmp_path: Path, bus_url: str
) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, max_in_flight=2)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.DROPPED_FULL, 0) >= 25, 20, "a second of frames dropped")
            held = queued(cam.ctx.bus)
            assert len(held) == 2  # nobody consumes: the two first frames hold both slots
            freed_at = time.time()
            for message in held:
                cam.ctx.bus.frames.release(message.key, message.input)
            wait_for(lambda: len(queued(cam.ctx.bus)) >= 4, 5, "two more frames once there is room")
            total = counts(cam)
    fresh = queued(cam.ctx.bus)[2:4]
    assert all(freed_at - 0.2 < m.captured_at for m in fresh)  # the newest frames, not ones kept from before
    assert total[counters.FRAMES_IN] == total[counters.PUBLISHED] + not_sent(total)


def test_the_fps_limit_spaces_frames_by_timestamp_and_counts_the_skipped(tmp_path: Path, bus_url: str) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, fps=5, max_in_flight=1000)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 15, 20, "15 frames at 5 fps")
    pts = [m.pts for m in queued(cam.ctx.bus)]
    gaps = [b - a for a, b in itertools.pairwise(pts)]
    assert all(0.19 < gap < 0.3 for gap in gaps), gaps  # 25 fps taken every fifth (0.2 s) or so, never closer
    total = counts(cam)
    assert total[counters.SKIPPED_FPS] >= 3 * total[counters.PUBLISHED]


def test_keyframes_only_decodes_about_one_frame_a_second(tmp_path: Path, bus_url: str) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, keyframes_only=True, max_in_flight=1000)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 1, 20, "the first keyframe")
            first = time.monotonic()
            time.sleep(4)
            decoded, elapsed = counts(cam)[counters.FRAMES_IN], time.monotonic() - first
    assert 2 <= decoded <= elapsed + 2  # one keyframe a second (key-int-max = fps), not 25


@pytest.mark.parametrize("hwaccel", ["cuda", "auto"])
def test_a_hwaccel_that_is_not_there_falls_back_to_software_with_one_log_line(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture, hwaccel: str
) -> None:
    """On this machine's CPU: ffmpeg knows CUDA but finds no device; a stall makes the input open the stream a
    second time, which must not try the device again nor log again."""
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, hwaccel=hwaccel, max_in_flight=1000, stall_timeout=2)
        with caplog.at_level(logging.INFO, logger=LOGGER), running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 10, 20, "frames")
            server = next(p for p in children() if "rtsp_server.py" in cmdline(p))
            os.kill(server, signal.SIGSTOP)  # a stall: the next attempt opens the stream again
            try:
                wait_for(lambda: counts(cam).get(counters.RECONNECTS, 0) >= 1, 10, "a reconnect")
            finally:
                os.kill(server, signal.SIGCONT)
            published = counts(cam)[counters.PUBLISHED]
            wait_for(lambda: counts(cam)[counters.PUBLISHED] >= published + 10, 20, "frames again")
    fallbacks = [r.getMessage() for r in caplog.records if "decoding in software" in r.getMessage()]
    assert len(fallbacks) == 1 and f"hwaccel {hwaccel} unavailable" in fallbacks[0], fallbacks


# -- overload: a 25 fps camera into a detector that manages 5 fps --

DETECT_S = 0.2  # the test's detector: a processor kind defined here that sleeps 0.2 s a frame, one thread


class SlowOptions(ProcessorOptions):
    name: Literal["slow_detector_test"] = Field(description="Sleeps DETECT_S a frame: a 5 fps detector.")


class SlowDetector(Processor[SlowOptions]):
    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        time.sleep(DETECT_S)
        return message.model_copy(update={"model": "slow", "detections": []})


class RecorderOptions(OutputOptions):
    name: Literal["recorder_test"] = Field(description="Records each result's capture-to-result latency.")


class Recorder(Output[RecorderOptions]):
    results: list[tuple[float, float]]  # (when delivered, latency)

    def deliver(self, message: FrameMessage) -> None:
        now = time.time()
        self.results.append((now, now - message.captured_at))


@contextmanager
def serving(stage: StageModule) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=stage.serve, args=(stop,), name=stage.ctx.alias)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive()


def stage(kind: type[StageModule], options: object, service: ServiceOptions, routes: Routes, tmp: Path) -> StageModule:
    alias = options.alias  # type: ignore[attr-defined]
    ctx = ModuleContext(
        alias=alias, options=options, service=service, routes=routes, bus=connect(service.broker or "", service),
        base_dir=tmp, runtime_dir=tmp / "run", log=logging.getLogger(alias),
    )  # fmt: skip
    return kind(ctx)


def test_overload_results_come_at_the_detectors_rate_drops_are_counted_and_latency_does_not_grow(
    tmp_path: Path, shared_redis_url: str
) -> None:
    """On a real Redis; the detector is SlowDetector above (sleeps 0.2 s a frame), not the yolo model, so that its
    rate is the same on any machine."""
    service = ServiceOptions(broker=shared_redis_url, runtime_dir=tmp_path / "run")
    token = str(time.monotonic_ns())
    routes = Routes(processors=(Stage(f"slow{token}", "*"),), outputs=(Stage(f"rec{token}", "*"),))
    detector = stage(
        SlowDetector, SlowOptions(name="slow_detector_test", alias=f"slow{token}", threads=1), service, routes, tmp_path
    )
    recorder = stage(Recorder, RecorderOptions(name="recorder_test", alias=f"rec{token}"), service, routes, tmp_path)
    recorder.results = []
    seconds = 24
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, shared_redis_url, alias=f"cam{token}", url=url, max_in_flight=2, routes=routes)
        with serving(recorder), serving(detector), running(cam):
            wait_for(lambda: len(recorder.results) >= 1, 20, "the first result")
            start = time.time()
            time.sleep(seconds)
    results = [(t - start, latency) for t, latency in recorder.results if start <= t < start + seconds]
    thirds = [[lat for t, lat in results if i * seconds / 3 <= t < (i + 1) * seconds / 3] for i in range(3)]
    first, last = statistics.median(thirds[0]), statistics.median(thirds[2])
    rate = len(results) / seconds
    total = counts(cam)
    assert 0.7 / DETECT_S <= rate <= 1.05 / DETECT_S, rate  # the detector's rate, kept busy
    assert total[counters.DROPPED_FULL] + total[counters.DROPPED_STALE] >= total[counters.FRAMES_IN] / 2
    assert last <= 1.25 * first + 0.05, (first, last)  # no growth: nothing queues up
    assert last < 3 * DETECT_S + 0.3  # at most the two frames in flight ahead of it, and its own detection
    assert report(cam)["state"] == "streaming"
