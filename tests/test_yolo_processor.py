"""The yolo processor on real photos: micro-batches across threads, pre-shrunk frames mapped back."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import pytest

from framefarm.bus import connect
from framefarm.config.routing import Routes
from framefarm.config.schema import ServiceOptions
from framefarm.message import FrameMessage
from framefarm.modules.context import ModuleContext
from framefarm.tasks.yolo import Yolo
from framefarm.vision.codec import encode_frame, shrink

from conftest import MEDIA, MODEL, NAMES


@pytest.fixture
def yolo(tmp_path: Path, redis_url: str):
    service = ServiceOptions(runtime_dir=tmp_path / "run")
    options = Yolo.Options(name="yolo", alias="det", model=MODEL, names=NAMES, batch=4, max_wait=0.2)
    ctx = ModuleContext(
        alias="det",
        options=options,
        service=service,
        routes=Routes(processors=(), outputs=()),
        bus=connect(redis_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger("det"),
    )
    processor = Yolo(ctx)
    processor.setup()
    yield processor
    processor.teardown()


def message(source: str, width: int, height: int, fmt: str, scale: float = 1.0) -> FrameMessage:
    return FrameMessage(
        stream="t", input="i", source=source, seq=1, captured_at=0.0, width=width, height=height, scale=scale,
        key="k", format=fmt,
    )  # fmt: skip


def best(result: FrameMessage, name: str) -> list[float]:
    return max((d for d in result.detections if d["class_name"] == name), key=lambda d: d["confidence"])["box"]


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_frames_from_many_threads_share_batches_and_keep_their_own_results(yolo: Yolo) -> None:
    photos = ["dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg"] * 2
    data = {name: (MEDIA / name).read_bytes() for name in set(photos)}
    sizes = {name: cv2.imread(str(MEDIA / name)).shape[:2] for name in set(photos)}

    def run(name: str) -> FrameMessage:
        height, width = sizes[name]
        return yolo.process(message(name, width, height, "jpeg"), data[name])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, photos))
    wanted = {"dog.jpg": "dog", "person.jpg": "person", "horses.jpg": "horse", "eagle.jpg": "bird"}
    for name, result in zip(photos, results, strict=True):
        assert wanted[name] in {d["class_name"] for d in result.detections}, name
    assert yolo.batcher.items == 8 and yolo.batcher.batches <= 4  # batched, not one by one


def test_a_pre_shrunk_raw_frame_reports_boxes_in_original_pixels(yolo: Yolo) -> None:
    image = cv2.imread(str(MEDIA / "dog.jpg"))
    height, width = image.shape[:2]
    full = yolo.process(message("dog.jpg", width, height, "jpeg"), (MEDIA / "dog.jpg").read_bytes())
    small, scale = shrink(image, 384)
    assert scale == 0.5 and small.shape[:2] == (288, 384)
    shrunk = yolo.process(message("dog.jpg", width, height, "raw", scale), encode_frame(small, "raw", 90))
    assert iou(best(full, "dog"), best(shrunk, "dog")) > 0.8
    assert max(best(shrunk, "dog")) > 384  # in original pixels, not the stored frame's


def test_worker_processes_share_the_cores_among_their_inference_threads() -> None:
    cores = os.sched_getaffinity(0)
    options = Yolo.Options(name="yolo", alias="det", model=MODEL, workers=2)
    assert options.inference_threads == max(1, len(cores) // 2)
    assert Yolo.Options(name="yolo", alias="det", model=MODEL).inference_threads == len(cores)
    assert Yolo.Options(name="yolo", alias="det", model=MODEL, workers=2, intra_threads=3).inference_threads == 3
    os.sched_setaffinity(0, {min(cores)})  # a worker given one core still gets one thread
    try:
        assert options.inference_threads == 1
    finally:
        os.sched_setaffinity(0, cores)
