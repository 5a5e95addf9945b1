"""Processor ``yolo``: object detection with a YOLO ONNX network on onnxruntime, in micro-batches.

Each Dramatiq worker thread decodes its own frame (OpenCV releases the GIL, so threads decode in
parallel) and hands the image to one micro-batcher per process, which runs one inference per batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import ProcessorOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..errors import ModelError
from ..message import FrameMessage
from ..modules.batcher import MicroBatcher
from ..vision.codec import decode_frame
from ..vision.detector import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, Detector
from ..vision.model import YoloModel, load_names
from ..vision.runtime import default_threads
from .base import Processor

DEFAULT_BATCH = 8
DEFAULT_MAX_WAIT_S = 0.010
THREADS_PER_BATCH_SLOT = 2  # one frame in the running batch, one decoding for the next


class YoloOptions(ProcessorOptions):
    name: Literal["yolo"] = Field(description="Detect objects with a YOLO ONNX network.")
    model: Path = Field(
        description="The ONNX file: YOLOv8/YOLO11/YOLOv9 [N,4+C,A], YOLOv5/v7 [N,A,5+C] or end-to-end [N,K,6]."
    )
    format: Literal["auto", "yolov8", "yolov5", "end2end"] = Field(
        "auto", description="Output layout; auto detects it from the output shape."
    )
    names: Path | list[str] | None = Field(
        None, description="Class names: a file with one per line, or a list; default: the model's metadata."
    )
    conf: float = Field(DEFAULT_CONF, gt=0, le=1, description="Minimum confidence of a detection.")
    iou: float = Field(DEFAULT_IOU, gt=0, le=1, description="IoU above which NMS merges boxes of one class.")
    max_det: int = Field(DEFAULT_MAX_DET, ge=1, description="At most this many detections per frame.")
    batch: int = Field(DEFAULT_BATCH, ge=1, le=256, description="Frames per inference (static models: theirs).")
    max_wait: Duration = Field(
        DEFAULT_MAX_WAIT_S, description="A batch runs this long after its first frame even if not full."
    )
    threads: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=512, description="Worker threads per process; default 2 x batch, to keep batches full."
    )
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto", description="onnxruntime execution provider; a missing one falls back (logged) to the next."
    )
    device_id: int = Field(0, ge=0, description="GPU index for cuda and tensorrt.")
    intra_threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime intra-op threads per process; default: the cores it may use, shared among its "
        "`workers` (on CPU, one single-threaded worker per core gave the best throughput: bench/README.md).",
    )
    intra_spin: bool = Field(
        True,
        description="Let onnxruntime's idle threads spin (its default): faster inference; turn off to leave "
        "idle cores to other programs on the host.",
    )

    @property
    def worker_threads(self) -> int:
        return self.threads or THREADS_PER_BATCH_SLOT * self.batch

    @property
    def inference_threads(self) -> int:
        """Each worker process's share of the cores, so that ``workers`` processes do not oversubscribe them."""
        return self.intra_threads or max(1, default_threads() // self.workers)


def _cpu_model(path: Path, fmt: str) -> YoloModel:
    """The model on CPU, loaded once per file version for a config's checks (check and frame_side both ask)."""
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        version = 0  # YoloModel says what is wrong with the path
    return _cpu_model_version(path, fmt, version)


@functools.lru_cache(maxsize=8)
def _cpu_model_version(path: Path, fmt: str, _version: int) -> YoloModel:
    return YoloModel(path, threads=1, device="cpu", format=fmt)


def _names(options: YoloOptions, resolve: Callable[[Path], Path], model: YoloModel) -> list[str]:
    names = options.names
    return load_names(resolve(names) if isinstance(names, Path) else names, model)


@registry.processors.register
class Yolo(Processor[YoloOptions]):
    @classmethod
    def check(cls, options: YoloOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        """Loads the model on CPU (never builds a TensorRT engine just to test a config)."""
        try:
            model = _cpu_model(ctx.resolve(options.model), options.format)
        except ModelError as exc:
            yield ("model",), str(exc)
            return
        try:
            names = _names(options, ctx.resolve, model)
        except ModelError as exc:
            yield ("names",), str(exc)
            return
        classes = model.output_classes
        if names and classes is not None and len(names) != classes:
            yield ("names",), f"{len(names)} class names for a model with {classes} classes"

    @classmethod
    def frame_side(cls, options: YoloOptions, ctx: CheckContext) -> int | None:
        """The network's input side: a larger frame would only be shrunk by the letterbox (None if it won't load)."""
        try:
            return max(_cpu_model(ctx.resolve(options.model), options.format).input_size)
        except ModelError:
            return None

    def setup(self) -> None:
        options = self.options
        model = YoloModel(
            self.ctx.resolve(options.model),
            threads=options.inference_threads,
            device=options.device,
            device_id=options.device_id,
            format=options.format,
            max_batch=options.batch,
            spin=options.intra_spin,
        )
        self.names = _names(options, self.ctx.resolve, model)
        self.detector = Detector(
            model, conf=options.conf, iou=options.iou, max_det=options.max_det, max_batch=options.batch
        )
        self.batcher = MicroBatcher(self.detector.detect, size=self.detector.max_batch, max_wait=options.max_wait)
        self.ctx.log.info(
            "model %s (%s), input %s, %d classes, batch %d, providers %s",
            model.name, model.format, model.input_size, len(self.names), self.detector.max_batch, model.providers,
        )  # fmt: skip

    def teardown(self) -> None:
        self.batcher.close()
        self.ctx.log.info("ran %d batches, %d frames", self.batcher.batches, self.batcher.items)

    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        image = decode_frame(frame, message.format, *message.stored_size)
        detections = [d.scaled(1.0 / message.scale) for d in self.batcher.submit(image)]
        return message.model_copy(
            update={
                "model": self.detector.model.name,
                "detections": [d.to_json(self.names, message.width, message.height) for d in detections],
            }
        )
