"""Images in, detections in original pixels out: letterbox, one inference per batch, decode."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from .decode import decode, detections_for
from .detections import Detection
from .letterbox import PAD_VALUE, Letterbox, letterbox, to_tensor
from .model import YoloModel

log = logging.getLogger(__name__)

DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
DEFAULT_MAX_DET = 300


class Detector:
    """Runs a YoloModel on lists of BGR uint8 images of any length and size.

    Images are letterboxed straight into one reusable [max_batch, H, W, 3] uint8 buffer (no canvas per
    frame, no stacking); the colour swap, layout change and scaling then happen once per batch in numpy.
    Lists longer than `max_batch` are split. A static-batch model always gets its fixed batch: short
    batches are padded with rows whose results are dropped.

    Thread-safe: the buffer is guarded by a lock held only while it is filled and converted; inference
    and decoding run outside it (onnxruntime sessions may be run concurrently).
    """

    def __init__(
        self,
        model: YoloModel,
        *,
        conf: float = DEFAULT_CONF,
        iou: float = DEFAULT_IOU,
        max_det: int = DEFAULT_MAX_DET,
        max_batch: int | None = None,
    ) -> None:
        self.model = model
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.max_batch: int = model.fixed_batch or max_batch or model.max_batch
        if model.fixed_batch and max_batch and max_batch != model.fixed_batch:
            log.info("model %s has a fixed batch of %d; max_batch %d ignored", model.name, model.fixed_batch, max_batch)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        self._buffer = np.full((self.max_batch, *model.input_size, 3), PAD_VALUE, dtype=np.uint8)
        self._lock = threading.Lock()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per image, in the images' own pixels, best first."""
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.max_batch):
            results.extend(self._detect_batch(images[start : start + self.max_batch]))
        return results

    def _prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Letterbox into the buffer and convert it to the model's NCHW float tensor (one allocation)."""
        size = self.model.input_size
        with self._lock:
            placements = [letterbox(image, size, out=self._buffer[i])[1] for i, image in enumerate(images)]
            rows = self._buffer if self.model.fixed_batch else self._buffer[: len(images)]
            return to_tensor(rows, self.model.input_dtype), placements

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        tensor, placements = self._prepare(images)
        output = self.model.run(tensor)[: len(images)]
        decoded = decode(output, self.model.format, self.conf, self.iou, self.max_det)
        return [
            detections_for(*result, lb, image.shape[1], image.shape[0])
            for result, lb, image in zip(decoded, placements, images, strict=True)
        ]
