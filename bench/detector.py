"""Benchmark the Detector alone (letterbox + inference + decode) across batch sizes.

    python bench/detector.py [--model M.onnx] [--size 640] [--device auto] [--batches 1,2,4,8,16,32]

Prints a table (median ms per batch, images/s, and images/s relative to the baseline batch size
measured in the same run) and, last, the machine it ran on. Warm-up batches are run first and not counted: the
first runs pay for memory arenas, kernel selection and, with TensorRT, the engine build.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from machine import machine

from framefarm.vision.detector import DEFAULT_CONF, DEFAULT_IOU, Detector
from framefarm.vision.model import YoloModel
from framefarm.vision.runtime import Device, default_threads

DEFAULT_MODEL = Path("/work/shared/models/yolov8n-untrained.onnx")
DEFAULT_IMAGES = Path("/work/shared/media")
DEFAULT_BATCHES = "1,2,4,8,16,32"
DEFAULT_WARMUP = 2
"""Batches run before timing each batch size."""
DEFAULT_SECONDS = 6.0
"""Minimum timed seconds per batch size over all passes, so short batches are measured many times."""
DEFAULT_PASSES = 3
MIN_ROUNDS = 1
"""Calls per batch size and pass at least; a pass over a slow size takes one call."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
MS_PER_S = 1000.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX YOLO model")
    parser.add_argument("--size", type=int, default=None, help="square input size for dynamic-size models")
    parser.add_argument("--device", choices=[d.value for d in Device], default=Device.AUTO.value)
    parser.add_argument("--device-id", type=int, default=0, help="GPU index for cuda/tensorrt")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    parser.add_argument("--format", default="auto", help="auto|yolov8|yolov5|end2end")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos to cycle through")
    parser.add_argument("--batches", default=DEFAULT_BATCHES, help="comma-separated batch sizes; first = baseline")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="minimum timed seconds per size")
    parser.add_argument("--passes", type=int, default=DEFAULT_PASSES, help="interleaved passes over all sizes")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed batches per size")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold")
    return parser.parse_args(argv)


def _load_images(folder: Path) -> list[np.ndarray]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = [image for image in (cv2.imread(str(p)) for p in paths) if image is not None]
    if not images:
        raise SystemExit(f"no readable images in {folder}")
    return images


def _batch(images: list[np.ndarray], size: int) -> list[np.ndarray]:
    return [images[i % len(images)] for i in range(size)]


def _time_calls(detector: Detector, batch: list[np.ndarray], seconds: float) -> list[float]:
    """Seconds of each `detect(batch)` call, for at least `seconds` and MIN_ROUNDS calls."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_ROUNDS or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        detector.detect(batch)
        times.append(time.perf_counter() - begin)
    return times


def _measure(
    detectors: dict[int, Detector], images: list[np.ndarray], args: argparse.Namespace
) -> list[tuple[int, float]]:
    """Median seconds per batch for each size, sizes interleaved over `passes` passes.

    Interleaving spreads background load (a shared machine, a turbo clock settling) over every size
    alike, and the median ignores the odd stalled call, so the ratios stay comparable within the run.
    """
    batches = {size: _batch(images, size) for size in detectors}
    for size, detector in detectors.items():
        for _ in range(args.warmup):
            detector.detect(batches[size])
    times: dict[int, list[float]] = {size: [] for size in detectors}
    for done in range(args.passes):
        for size, detector in detectors.items():
            times[size] += _time_calls(detector, batches[size], args.seconds / args.passes)
        print(f"  pass {done + 1}/{args.passes} done", flush=True)
    return [(size, statistics.median(times[size])) for size in detectors]


def _table(rows: list[tuple[int, float]]) -> str:
    """Markdown table; the ratio is images/s against the first row's images/s, from the same run."""
    base_size, base_s = rows[0]
    base_rate = base_size / base_s
    lines = [
        f"| batch | ms/batch | images/s | vs batch {base_size} |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for size, seconds in rows:
        rate = size / seconds
        lines.append(f"| {size} | {seconds * MS_PER_S:.1f} | {rate:.1f} | {rate / base_rate:.2f}x |")
    return "\n".join(lines)


def _describe(model: YoloModel, args: argparse.Namespace, images: int) -> str:
    height, width = model.input_size
    batch = f"fixed batch {model.fixed_batch} (smaller batches are padded)" if model.fixed_batch else "dynamic batch"
    dtype = np.dtype(model.input_dtype).name
    timing = f"warm-up {args.warmup} batches excluded; median of {args.passes} interleaved passes"
    return (
        f"model {model.path.name}: {width}x{height} {dtype}, {model.format.value}, {batch}; "
        f"{images} photos from {args.images}; conf {args.conf}; {timing}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    threads = args.threads or default_threads()
    model = YoloModel(
        args.model,
        threads=threads,
        device=args.device,
        device_id=args.device_id,
        format=args.format,
        size=(args.size, args.size) if args.size else None,
        max_batch=max(sizes),
    )
    images = _load_images(args.images)
    print(_describe(model, args, len(images)))
    detectors = {size: Detector(model, conf=args.conf, iou=DEFAULT_IOU, max_batch=size) for size in sizes}
    rows = _measure(detectors, images, args)
    print()
    print(_table(rows))
    print()
    print(machine(model, threads))


if __name__ == "__main__":
    main()
