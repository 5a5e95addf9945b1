"""Processor ``yolo``: object detection with a YOLO ONNX network on onnxruntime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from ..bus.message import FrameMessage
from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import ProcessorOptions
from ..config.yamlpos import Loc
from ..errors import BadInput, ModelError
from ..vision.detector import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, Detector
from ..vision.model import YoloModel, load_names
from .base import Processor


class YoloOptions(ProcessorOptions):
    name: Literal["yolo"] = Field(description="Detect objects with a YOLO ONNX network.")
    model: Path = Field(description="The ONNX file (YOLOv8/YOLO11 layout: output [N, 4+C, A]).")
    names: Path | list[str] | None = Field(
        None, description="Class names: a file with one per line, or a list; default: the model's metadata."
    )
    conf: float = Field(DEFAULT_CONF, gt=0, le=1, description="Minimum confidence of a detection.")
    iou: float = Field(DEFAULT_IOU, gt=0, le=1, description="IoU above which NMS merges boxes of one class.")
    max_det: int = Field(DEFAULT_MAX_DET, ge=1, description="At most this many detections per frame.")
    intra_threads: int | None = Field(
        None, ge=1, description="onnxruntime intra-op threads per process; default: all cores."
    )


def _names(options: YoloOptions, resolve: Callable[[Path], Path], model: YoloModel) -> list[str]:
    names = options.names
    return load_names(resolve(names) if isinstance(names, Path) else names, model)


@registry.processors.register
class Yolo(Processor):
    Options = YoloOptions

    @classmethod
    def check(cls, options: YoloOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        try:
            model = YoloModel(ctx.resolve(options.model), threads=1)
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

    def setup(self) -> None:
        options: YoloOptions = self.options
        model = YoloModel(self.ctx.resolve(options.model), threads=options.intra_threads)
        self.names = _names(options, self.ctx.resolve, model)
        self.detector = Detector(model, conf=options.conf, iou=options.iou, max_det=options.max_det)
        self.ctx.log.info("model %s, input %s, %d classes", model.name, model.input_size, len(self.names))

    def process(self, message: FrameMessage, frame: bytes) -> FrameMessage:
        image = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise BadInput(f"frame {message.key} of {message.source} is not decodable")
        (detections,) = self.detector.detect([image])
        return message.model_copy(
            update={
                "model": self.detector.model.name,
                "detections": [d.to_json(self.names, message.width, message.height) for d in detections],
            }
        )
