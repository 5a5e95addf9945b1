"""Capture-to-result latency of a live camera through the whole pipeline, at a load the detector keeps up with
and at one it does not.

    python bench/latency.py [--seconds 30] [--light-fps 5] [--model M.onnx] [--batch 8] [--workers N]

A 25 fps RTSP source (the GStreamer test server, tests/rtsp_server.py, 640x360 H.264) -> an ``rtsp`` input ->
``yolo`` -> ``image_files``, started with ``pipectl start`` on the embedded Redis. Latency is the result's JSON
written (its mtime) minus the frame's ``captured_at`` (the input's wall clock when it decoded the frame). Two
loads, each for ``--seconds`` after a warm-up: light (the input's ``fps`` cap at ``--light-fps``) and full (all
25 fps, more than the detector does on a small machine: the latest-frame policy must drop, not queue).
``drops`` are frames the input dropped for newer ones (``dropped_full`` + ``dropped_stale``; not the frames the
fps cap skips). ``growth`` is the median latency of the last third of the run over that of the first: 1.0 means
it does not grow. ``batch_ms`` is one batch on one worker's threads (bench/pipeline.py's yardstick).
The last lines are ``p50_ms=... p99_ms=... fps_in=... fps_out=... drops=... growth=... load=...``, one per load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from machine import machine, usable_cores
from pipeline import batch_ms
from stages import detector_and_results

from framefarm.supervisord.running import Running
from framefarm.vision.model import YoloModel

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "tests" / "rtsp_server.py"
DEFAULT_MODEL = REPO / "models" / "yolov3-tiny-coco.onnx"
DEFAULT_VIDEO = REPO.parent / "shared" / "media" / "vtest.avi"  # only for batch_ms's frames
SOURCE_FPS = 25
SOURCE_SIZE = "640x360"
WARMUP_S = 5.0  # after the first result: the detector's first batches, the stream settling
START_TIMEOUT_S = 120
MS = 1000.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per load")
    parser.add_argument("--light-fps", type=float, default=5.0, help="the light load: the input's fps cap")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--size", type=int, default=416, help="input size for dynamic-size models")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|tensorrt")
    parser.add_argument("--workers", type=int, default=None, help="detector processes (default: one per core on cpu)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="the input's bound (default: 2 x workers)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="frames for timing one batch")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _pipeline_yaml(args: argparse.Namespace, url: str, fps: float | None) -> str:
    cap = f"      fps: {fps}\n" if fps else ""
    return f"""\
service:
  runtime_dir: run
pipeline:
  inputs:
    - name: rtsp
      alias: camera
      tag: camera
      url: {url}
      max_in_flight: {args.max_in_flight}
{cap}""" + detector_and_results(args)


def run_load(args: argparse.Namespace, url: str, fps: float | None) -> dict[str, float]:
    """One load through pipectl: latencies and rates over ``args.seconds`` after the warm-up."""
    with tempfile.TemporaryDirectory(prefix="fflatency-") as tmp:
        root = Path(tmp)
        config = root / "pipeline.yaml"
        config.write_text(_pipeline_yaml(args, url, fps))
        pipectl = [sys.executable, "-m", "framefarm.cli"]
        started = subprocess.run([*pipectl, "start", "-c", str(config)], capture_output=True, text=True)
        if started.returncode != 0:
            raise SystemExit(f"pipectl start failed:\n{started.stderr}")
        results = root / "out" / "camera"
        try:
            _wait_for(lambda: results.is_dir() and any(results.glob("*.json")), START_TIMEOUT_S, "the first result")
            time.sleep(WARMUP_S)
            before, start = _counters(config), time.time()
            time.sleep(args.seconds)
            after, end = _counters(config), time.time()
        finally:
            subprocess.run([*pipectl, "-s", "quit", "-c", str(config)], check=False, capture_output=True)
        done = latencies(results, start, end)
    return _summary(done, start, end, before, after)


def latencies(results: Path, start: float, end: float) -> list[tuple[float, float]]:
    """(written, latency) of every result written between ``start`` and ``end``: its JSON's mtime minus its
    frame's capture."""
    done = []
    for path in results.glob("*.json"):
        written = path.stat().st_mtime
        if start <= written < end:
            done.append((written, written - json.loads(path.read_text())["captured_at"]))
    return done


def _counters(config: Path) -> dict[str, int]:
    bus = Running.of(config).bus()
    try:
        return bus.flow.counters().get("camera", {})
    finally:
        bus.close()


def _summary(
    done: list[tuple[float, float]], start: float, end: float, before: dict[str, int], after: dict[str, int]
) -> dict[str, float]:
    seconds = end - start
    latencies = [latency for _, latency in done]
    third = seconds / 3
    first = [latency for t, latency in done if t < start + third]
    last = [latency for t, latency in done if t >= end - third]
    quantiles = statistics.quantiles(latencies, n=100)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in ("frames_in", "dropped_full", "dropped_stale")}
    return {
        "p50_ms": quantiles[49] * MS,
        "p99_ms": quantiles[98] * MS,
        "fps_in": grew["frames_in"] / seconds,
        "fps_out": len(done) / seconds,
        "drops": grew["dropped_full"] + grew["dropped_stale"],  # skipped_fps, the light load's cap, is no loss
        "growth": statistics.median(last) / statistics.median(first),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    args.model = args.model.resolve()
    threads = usable_cores()
    args.workers = args.workers or (threads if args.device == "cpu" else 1)
    args.worker_threads = max(1, threads // args.workers)
    args.max_in_flight = args.max_in_flight or 2 * args.workers
    args.no_spin = False
    one_batch_ms = batch_ms(args, args.worker_threads)
    port = _free_port()
    server = [
        "/usr/bin/python3", str(RTSP_SERVER), "--port", str(port), "--fps", str(SOURCE_FPS), "--size", SOURCE_SIZE,
    ]  # fmt: skip
    with open(os.devnull, "wb") as quiet:
        source = subprocess.Popen(server, stdout=quiet, stderr=subprocess.STDOUT)
    try:
        url = f"rtsp://127.0.0.1:{port}/cam"
        lines = []
        for load, fps in (("light", args.light_fps), ("full", None)):
            stats = run_load(args, url, fps)
            lines.append(
                f"p50_ms={stats['p50_ms']:.0f} p99_ms={stats['p99_ms']:.0f} fps_in={stats['fps_in']:.1f} "
                f"fps_out={stats['fps_out']:.1f} drops={stats['drops']:.0f} growth={stats['growth']:.2f} load={load}"
            )
    finally:
        source.terminate()
        source.wait(10)
    print(machine(YoloModel(args.model, threads=threads, device=args.device, size=(args.size, args.size)), threads))
    print(
        f"source: {SOURCE_FPS} fps {SOURCE_SIZE} H.264 over RTSP/TCP; model {args.model.stem}, batch {args.batch}, "
        f"{args.workers} detector processes x {args.worker_threads} threads, max_in_flight {args.max_in_flight}, "
        f"light load fps {args.light_fps:g}; {args.seconds:g} s per load; batch_ms={one_batch_ms:.0f}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
