"""The whole pipeline against the bare loop, on the same video, model, batch and cores, in one run.

    python bench/pipeline.py [--video V] [--model M.onnx | --null] [--size 640] [--batch 8] [--device cpu]
                             [--workers N]

(1) bare loop: one process decodes the video with PyAV, letterboxes and runs onnxruntime in batches on all
the threads;
(2) pipeline: `pipectl start` on the embedded broker with a dir_videos input, the yolo processor (``workers``
processes sharing those threads: on CPU one single-threaded process per core) and an image_files output;
the video is dropped into the watched folder and every frame's JSON result counted.
Pipeline time runs from the first frame's capture to the last result written.
(3) latency: the same pipeline fed in real time (the input paces frames by their timestamps) at half the
throughput measured in (2), so it is not overloaded; latency is result written - frame captured.
`--null` generates a model that costs nothing (bench/nullmodel.py), so what is measured is everything else.
`cpu_ms_per_frame=input:…,processor:…,output:…,broker:…` is the CPU each role's processes spent per frame of (2),
read from /proc from the moment the models were loaded until the last result.
The last line is `efficiency=<pipeline fps / bare fps> ...`, with `batch_ms`: one batch on one worker's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import av
from machine import cpu_seconds, machine, usable_cores
from nullmodel import write_null_model
from stages import detector_and_results

from framefarm.ingest.dir_videos import too_soon
from framefarm.supervisord.running import Running
from framefarm.vision.detector import Detector
from framefarm.vision.model import YoloModel

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_VIDEO = SHARED / "media" / "vtest.avi"
DEFAULT_MODEL = SHARED / "models" / "yolov8n-untrained.onnx"
RESULT_TIMEOUT_S = 900
ROLES = {"video": "input", "detector": "processor", "results": "output", "embedded-broker": "broker"}  # by group
MS = 1000.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--size", type=int, default=640, help="input size for dynamic-size models")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|tensorrt")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads in all (default: all cores), split among workers"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="detector processes (default: one per core on cpu, else 1)"
    )
    parser.add_argument("--format", default="raw", choices=["raw", "jpeg", "png"], help="frames.format")
    parser.add_argument("--max-in-flight", type=int, default=None, help="default: 3 x batch x workers")
    parser.add_argument("--no-spin", action="store_true", help="onnxruntime threads do not spin when idle (both loops)")
    parser.add_argument(
        "--results", default="files", choices=["files", "jsonl"], help="image_files results (throughput run)"
    )
    parser.add_argument(
        "--null", action="store_true", help="a generated model that costs nothing (bench/nullmodel.py) at --size"
    )
    return parser.parse_args(argv)


def paced_frames(pts: list[float], fps: float) -> int:
    """How many frames dir_videos publishes with this ``fps`` limit."""
    count, last, gap = 0, None, 1.0 / fps
    for t in pts:
        if not too_soon(t, last, gap):
            count, last = count + 1, t
    return count


def video_pts(video: Path) -> list[float]:
    with av.open(str(video)) as container:
        return [float(f.time) for f in container.decode(container.streams.video[0])]


def bare_loop(args: argparse.Namespace, threads: int) -> tuple[int, float]:
    """Frames and seconds for decode + letterbox + batched inference in one process, no queue."""
    detector = _detector(args, threads)
    detector.detect([next(_frames(args.video))])  # warm-up, as the pipeline's worker has had
    started, frames, batch = time.perf_counter(), 0, []
    for image in _frames(args.video):
        batch.append(image)
        if len(batch) == args.batch:
            detector.detect(batch)
            frames, batch = frames + len(batch), []
    if batch:
        detector.detect(batch)
        frames += len(batch)
    return frames, time.perf_counter() - started


def _detector(args: argparse.Namespace, threads: int) -> Detector:
    model = YoloModel(
        args.model, threads=threads, device=args.device, size=(args.size, args.size), spin=not args.no_spin
    )
    return Detector(model, max_batch=args.batch)


def batch_ms(args: argparse.Namespace, threads: int, runs: int = 3) -> float:
    """Median time of one full batch on one worker's threads: the yardstick for the latency target."""
    detector = _detector(args, threads)
    frames = _frames(args.video)
    batch = [next(frames) for _ in range(args.batch)]
    frames.close()
    detector.detect(batch)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        detector.detect(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * MS


def _frames(video: Path):
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="bgr24")


def _pipeline_yaml(args: argparse.Namespace, input_extra: str) -> str:
    in_flight = args.max_in_flight or 3 * args.batch * args.workers
    return f"""\
service:
  runtime_dir: run
  frames: {{format: {args.format}}}
pipeline:
  inputs:
    - name: dir_videos
      alias: video
      tag: video
      path: in
      settle: 50ms
      max_in_flight: {in_flight}
{input_extra}""" + detector_and_results(args, f"      intra_spin: {str(not args.no_spin).lower()}\n")


def pipeline(
    args: argparse.Namespace, frames: int, input_extra: str = ""
) -> tuple[float, list[float], dict[str, float]]:
    """(seconds from first capture to last result, per-frame latencies in seconds, CPU seconds by role while the
    frames went through: input, processor, output, broker) through pipectl."""
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        config = root / "pipeline.yaml"
        config.write_text(_pipeline_yaml(args, input_extra))
        pipectl = [sys.executable, "-m", "framefarm.cli"]
        started = subprocess.run([*pipectl, "start", "-c", str(config)], capture_output=True, text=True)
        if started.returncode != 0:
            raise SystemExit(f"pipectl start failed:\n{started.stderr}")
        try:
            logs = root / "run" / "logs"
            _wait_for(lambda: len([p for p in logs.glob("detector*.log") if "model" in _read(p)]) == args.workers, 120)
            roles = _roles(config)
            before = _cpu_by_role(roles)  # startup (imports, model loading) excluded
            shutil.copyfile(args.video, root / f".{args.video.name}")
            os.replace(root / f".{args.video.name}", root / "in" / args.video.name)
            results = root / "out" / "video"
            _wait_for(lambda: _written(results) >= frames, RESULT_TIMEOUT_S)
            after = _cpu_by_role(roles)
        finally:
            subprocess.run([*pipectl, "-s", "quit", "-c", str(config)], check=False, capture_output=True)
        done = _results(results)
    if len(done) != frames:
        raise SystemExit(f"pipeline delivered {len(done)} results for {frames} frames")
    first = min(captured for captured, _ in done)
    last = max(written for _, written in done)
    cpu = {role: after[role] - before[role] for role in ROLES.values()}
    return last - first, [written - captured for captured, written in done], cpu


def _written(folder: Path) -> int:
    """Results in ``folder`` so far, cheaply (polled while the pipeline runs): its files count, or its lines."""
    lines = folder / "results.jsonl"
    if lines.exists():
        return lines.read_bytes().count(b"\n")
    return len(os.listdir(folder)) // 2 if folder.is_dir() else 0


def _results(folder: Path) -> list[tuple[float, float]]:
    """(captured_at, written) of each result in ``folder``; JSON lines all count as written with their file."""
    lines = folder / "results.jsonl"
    if lines.exists():
        written = lines.stat().st_mtime
        return [(json.loads(line)["captured_at"], written) for line in lines.read_text().splitlines()]
    return [(json.loads(p.read_text())["captured_at"], p.stat().st_mtime) for p in folder.glob("*.json")]


def _roles(config: Path) -> dict[int, str]:
    """pid -> role (input, processor, output, broker) of the running pipeline's processes."""
    processes = Running.of(config).master.processes()
    return {info["pid"]: ROLES[info["group"]] for info in processes if info["pid"] and info["group"] in ROLES}


def _cpu_by_role(roles: dict[int, str]) -> dict[str, float]:
    totals = dict.fromkeys(ROLES.values(), 0.0)
    for pid, role in roles.items():
        totals[role] += cpu_seconds(pid)
    return totals


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s")
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    with tempfile.TemporaryDirectory(prefix="ffbench-null-") as tmp:
        if args.null:
            args.model = write_null_model(Path(tmp) / f"null-{args.size}.onnx", args.size)
        run(args)


def run(args: argparse.Namespace) -> None:
    args.model, args.video = args.model.resolve(), args.video.resolve()
    threads = args.threads or usable_cores()
    args.workers = args.workers or (threads if args.device == "cpu" else 1)
    args.worker_threads = max(1, threads // args.workers)  # each detector process's share
    one_batch_ms = batch_ms(args, args.worker_threads)
    frames, bare_s = bare_loop(args, threads)
    bare_fps = frames / bare_s
    print(f"bare loop: {frames} frames in {bare_s:.2f}s = {bare_fps:.1f} fps")
    pipe_s, _, cpu = pipeline(args, frames)
    pipe_fps = frames / pipe_s
    print(f"pipeline:  {frames} frames in {pipe_s:.2f}s = {pipe_fps:.1f} fps (frames.format {args.format})")
    paced_fps = pipe_fps / 2
    pts = video_pts(args.video)
    paced = paced_frames(pts, paced_fps)
    paced_args = argparse.Namespace(**{**vars(args), "results": "files"})  # latency needs each result's own time
    _, latencies, _ = pipeline(paced_args, paced, f"      realtime: true\n      fps: {paced_fps:.3f}\n")
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"latency:   {paced} frames fed in real time at {paced_fps:.1f} fps")
    print(machine(YoloModel(args.model, threads=threads, device=args.device), threads))
    print(f"pipeline: {args.workers} detector processes x {args.worker_threads} intra-op threads")
    per_frame = ",".join(f"{role}:{seconds / frames * MS:.2f}" for role, seconds in cpu.items())
    print(f"cpu_ms_per_frame={per_frame} total:{sum(cpu.values()) / frames * MS:.2f}")
    print(
        f"efficiency={pipe_fps / bare_fps:.3f} pipeline_fps={pipe_fps:.1f} bare_fps={bare_fps:.1f} "
        f"p50_latency_ms={quantiles[49] * MS:.0f} p99_latency_ms={quantiles[98] * MS:.0f} "
        f"batch_ms={one_batch_ms:.0f} frames={frames} "
        f"model={args.model.stem} batch={args.batch} workers={args.workers} device={args.device} cores={usable_cores()}"
    )


if __name__ == "__main__":
    main()
