"""Uploads per second through the ``http`` input with ``?wait=true``, against the detector alone, in one run.

    python bench/uploads.py [--seconds 30] [--model M.onnx] [--size 416] [--batch 8] [--workers N] [--clients C]

(1) detector alone: one process decodes the photos (the JPEG bytes a client would send) and runs them through
the Detector in batches of ``--batch`` on all the cores' threads: no HTTP, no queue;
(2) uploads: ``pipectl start`` on the embedded broker with an ``http`` input, the yolo processor at the same
batch (``workers`` processes sharing those threads: on CPU one single-threaded process per core) and an
image_files output; ``--clients`` clients each POST one photo with ``?wait=true`` and send the next as soon as
the answer (the detections) comes back. Uploads per second count the 200s in ``--seconds`` after a warm-up.
The last line is ``ratio=<uploads/s / detector images/s> uploads_per_s=... detector_per_s=... p50_ms=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from machine import machine, usable_cores
from stages import detector_and_results

from framefarm.ingest.images import check_image
from framefarm.vision.codec import decode_frame
from framefarm.vision.detector import Detector
from framefarm.vision.model import YoloModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "yolov3-tiny-coco.onnx"
PHOTOS = sorted((REPO / "media").glob("*.jpg"))
WARMUP_S = 5.0
START_TIMEOUT_S = 120
MS = 1000.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds of each part")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--size", type=int, default=416, help="input size for dynamic-size models")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|tensorrt")
    parser.add_argument("--workers", type=int, default=None, help="detector processes (default: one per core on cpu)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent uploads (default: 2 x batch x workers)")
    return parser.parse_args(argv)


def detector_alone(args: argparse.Namespace, photos: list[bytes], threads: int) -> float:
    """Images per second for JPEG decode + batched detection in one process."""
    model = YoloModel(args.model, threads=threads, device=args.device, size=(args.size, args.size))
    detector = Detector(model, max_batch=args.batch)
    checked = [check_image(data, 10**9) for data in photos]

    def batch(start: int) -> list:
        picked = [checked[(start + i) % len(photos)] for i in range(args.batch)]
        return [decode_frame(image.data, image.format, image.width, image.height) for image in picked]

    detector.detect(batch(0))  # warm-up
    started, images, deadline = time.perf_counter(), 0, time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        detector.detect(batch(images))
        images += args.batch
    return images / (time.perf_counter() - started)


def _yaml(args: argparse.Namespace, port: int) -> str:
    return f"""\
service:
  runtime_dir: run
pipeline:
  inputs:
    - name: http
      alias: uploads
      tag: uploads
      listen: 127.0.0.1:{port}
      max_in_flight: {4 * args.clients}
      wait_timeout: 120s
""" + detector_and_results(args)


async def _clients(url: str, photos: list[bytes], args: argparse.Namespace) -> tuple[int, list[float]]:
    """Uploads answered 200 in the measured window, and their round-trip times in seconds."""
    measure_from = time.monotonic() + WARMUP_S
    until = measure_from + args.seconds
    done: list[float] = []

    async def client(client_id: int, http: httpx.AsyncClient) -> None:
        sent = client_id
        while time.monotonic() < until:
            started = time.monotonic()
            answer = await http.post(
                f"{url}/v1/frames",
                content=photos[sent % len(photos)],
                headers={"content-type": "image/jpeg"},
                params={"wait": "true", "source": f"c{client_id}-{sent}"},
            )
            if answer.status_code != 200:
                raise SystemExit(f"upload answered {answer.status_code}: {answer.text}")
            if started >= measure_from and time.monotonic() <= until:
                done.append(time.monotonic() - started)
            sent += args.clients

    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(timeout=180, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(args.clients)))
    return len(done), done


def uploads(args: argparse.Namespace, photos: list[bytes]) -> tuple[float, list[float]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        config = Path(tmp) / "pipeline.yaml"
        config.write_text(_yaml(args, port))
        pipectl = [sys.executable, "-m", "framefarm.cli"]
        started = subprocess.run([*pipectl, "start", "-c", str(config)], capture_output=True, text=True)
        if started.returncode != 0:
            raise SystemExit(f"pipectl start failed:\n{started.stderr}")
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_ready(url, photos[0])
            count, times = asyncio.run(_clients(url, photos, args))
        finally:
            subprocess.run([*pipectl, "-s", "stop", "-c", str(config)], check=False, capture_output=True)
    return count / args.seconds, times


def _wait_until_ready(url: str, photo: bytes) -> None:
    """One upload answered with its detections: the server listens and every detector has its model loaded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(
                f"{url}/v1/frames",
                content=photo,
                headers={"content-type": "image/jpeg"},
                params={"wait": "true"},
                timeout=START_TIMEOUT_S,
            )
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the pipeline gave no result within {START_TIMEOUT_S}s")


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    args.model = args.model.resolve()
    threads = usable_cores()
    args.workers = args.workers or (threads if args.device == "cpu" else 1)
    args.worker_threads = max(1, threads // args.workers)
    args.clients = args.clients or 2 * args.batch * args.workers
    photos = [path.read_bytes() for path in PHOTOS]
    alone = detector_alone(args, photos, threads)
    print(f"detector alone: {alone:.1f} images/s (decode + batch {args.batch}, {threads} threads)")
    rate, times = uploads(args, photos)
    quantiles = statistics.quantiles(times, n=100)
    print(f"uploads:        {rate:.1f} /s with ?wait=true, {args.clients} clients")
    print(machine(YoloModel(args.model, threads=threads, device=args.device), threads))
    print(f"pipeline: {args.workers} detector processes x {args.worker_threads} intra-op threads")
    print(
        f"ratio={rate / alone:.3f} uploads_per_s={rate:.1f} detector_per_s={alone:.1f} "
        f"p50_ms={quantiles[49] * MS:.0f} p99_ms={quantiles[98] * MS:.0f} clients={args.clients} "
        f"model={args.model.stem} batch={args.batch} workers={args.workers} device={args.device} cores={threads}"
    )


if __name__ == "__main__":
    main()
