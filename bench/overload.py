"""A live camera sending about ten times the frames the detector manages, for ten minutes: memory stays bounded,
latency does not grow, and every frame not detected is a counted drop.

    python bench/overload.py [--minutes 10] [--source-fps 60] [--model M.onnx] [--size 800] [--workers 1]

A ``--source-fps`` RTSP camera (tests/rtsp_server.py, 640x360 H.264 over TCP) -> ``rtsp`` input -> ``yolo``
(``--workers`` single-threaded processes; by default one, with yolov8n at 800, a few frames a second here) ->
``image_files``, through ``pipectl start`` on the embedded Redis. After a warm-up, for ``--minutes``: every 5 s the
resident memory (VmRSS) of every process of the pipeline, the broker's included; at the end the counters and each
result's latency (its JSON written minus the frame's capture). ``overload`` is the frames the input decoded over
the results written; ``growth`` the median latency of the last third over the first third's; ``rss_growth`` each
process's largest RSS of the last third over that of the first. The last line is
``overload=... growth=... drops=... uncounted=... p50_ms=... rss_max_mb=<process>:<MB>,...``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from latency import (
    RTSP_SERVER,
    START_TIMEOUT_S,
    _counters,
    _free_port,
    _pipeline_yaml,
    _summary,
    _wait_for,
    latencies,
)
from machine import machine, usable_cores

from framefarm.supervisord.running import Running
from framefarm.vision.model import YoloModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "yolov8n-untrained.onnx"
SOURCE_SIZE = "640x360"
WARMUP_S = 10.0
SAMPLE_EVERY_S = 5.0
MB = 1024 * 1024
DROPS = ("dropped", "stale", "missing", "failed", "dead")  # every counter of a frame given up, by its reason


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--source-fps", type=int, default=60)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--size", type=int, default=800, help="input size for dynamic-size models")
    parser.add_argument("--batch", type=int, default=1, help="with 2 frames in flight a detector, 1 fills each")
    parser.add_argument("--workers", type=int, default=1, help="detector processes, one thread each")
    args = parser.parse_args(argv)
    args.device, args.worker_threads, args.max_in_flight, args.no_spin = "cpu", 1, 2 * args.workers, False
    return args


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sample(config: Path) -> dict[str, int]:
    """Resident bytes of every process of the running pipeline, by name."""
    found = {}
    for info in Running.of(config).master.processes():
        if info["pid"]:
            try:
                found[info["name"]] = rss_bytes(info["pid"])
            except OSError:
                continue  # restarting
    return found


def run(args: argparse.Namespace, url: str) -> str:
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="ffoverload-") as tmp:
        root = Path(tmp)
        config = root / "pipeline.yaml"
        config.write_text(_pipeline_yaml(args, url, None))
        pipectl = [sys.executable, "-m", "framefarm.cli"]
        subprocess.run([*pipectl, "start", "-c", str(config)], check=True, capture_output=True)
        results = root / "out" / "camera"
        samples: list[tuple[float, dict[str, int]]] = []
        try:
            _wait_for(lambda: results.is_dir() and any(results.glob("*.json")), START_TIMEOUT_S, "the first result")
            time.sleep(WARMUP_S)
            before, start = _counters(config), time.time()
            while time.time() < start + seconds:
                samples.append((time.time(), sample(config)))
                time.sleep(SAMPLE_EVERY_S)
            after, end = _counters(config), time.time()
        finally:
            subprocess.run([*pipectl, "-s", "quit", "-c", str(config)], check=False, capture_output=True)
        done = latencies(results, start, end)
    stats = _summary(done, start, end, before, after)
    names = sorted({name for _, found in samples for name in found})
    largest = {name: max(found.get(name, 0) for _, found in samples) for name in names}
    third = seconds / 3

    def peak(name: str, first: bool) -> int:
        window = [f.get(name, 0) for t, f in samples if (t < start + third if first else t >= end - third)]
        return max(window, default=0)

    growths = {name: peak(name, False) / max(1, peak(name, True)) for name in names}
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in {*before, *after}}
    dropped = sum(n for k, n in grew.items() if k.startswith(DROPS))
    # frames neither detected within the window nor counted dropped: the few in flight at its two ends
    lost = grew.get("frames_in", 0) - len(done) - dropped
    print(f"rss_growth={','.join(f'{n}:{g:.2f}' for n, g in growths.items())}")
    return (
        f"overload={stats['fps_in'] / stats['fps_out']:.1f} growth={stats['growth']:.2f} drops={dropped} "
        f"uncounted={lost} fps_in={stats['fps_in']:.1f} fps_out={stats['fps_out']:.1f} p50_ms={stats['p50_ms']:.0f} "
        f"p99_ms={stats['p99_ms']:.0f} rss_max_mb={','.join(f'{n}:{b / MB:.0f}' for n, b in largest.items())}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    args.model = args.model.resolve()
    port = _free_port()
    server = ["/usr/bin/python3", str(RTSP_SERVER), "--port", str(port), "--fps", str(args.source_fps),
              "--size", SOURCE_SIZE]  # fmt: skip
    with open(os.devnull, "wb") as quiet:
        source = subprocess.Popen(server, stdout=quiet, stderr=subprocess.STDOUT)
    try:
        line = run(args, f"rtsp://127.0.0.1:{port}/cam")
    finally:
        source.terminate()
        source.wait(10)
    threads = usable_cores()
    print(machine(YoloModel(args.model, threads=threads, device="cpu", size=(args.size, args.size)), threads))
    print(
        f"source: {args.source_fps} fps {SOURCE_SIZE} H.264 over RTSP/TCP; model {args.model.stem} at {args.size}, "
        f"batch {args.batch}, {args.workers} detector processes x 1 thread; {args.minutes:g} minutes"
    )
    print(line)


if __name__ == "__main__":
    main()
