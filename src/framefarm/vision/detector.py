"""Images in, detections in original pixels out: letterbox, one inference per batch, decode."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .decode import decode_yolov8, detections_for
from .detections import Detection
from .letterbox import letterbox, to_tensor
from .model import YoloModel

DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
DEFAULT_MAX_DET = 300


class Detector:
    """Runs a YoloModel on batches of BGR images; thread-safe (onnxruntime sessions are)."""

    def __init__(
        self,
        model: YoloModel,
        *,
        conf: float = DEFAULT_CONF,
        iou: float = DEFAULT_IOU,
        max_det: int = DEFAULT_MAX_DET,
    ) -> None:
        self.model = model
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        boxed = [letterbox(image, self.model.input_size) for image in images]
        batch = to_tensor([padded for padded, _ in boxed], self.model.input_dtype)
        if self.model.fixed_batch and len(images) < self.model.fixed_batch:
            batch = np.concatenate([batch, np.zeros_like(batch[:1]).repeat(self.model.fixed_batch - len(images), 0)])
        output = self.model.run(batch)[: len(images)]
        results = decode_yolov8(output, self.conf, self.iou, self.max_det)
        return [
            detections_for(*result, lb, image.shape[1], image.shape[0])
            for result, (_, lb), image in zip(results, boxed, images, strict=True)
        ]
