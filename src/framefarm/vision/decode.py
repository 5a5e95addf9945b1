"""Turn raw model output, in any of the three YOLO layouts, into per-image boxes and Detection objects."""

from collections.abc import Callable

import cv2
import numpy as np

from framefarm.vision.detections import Detection
from framefarm.vision.formats import BOX_VALUES, END2END_VALUES, OutputFormat
from framefarm.vision.letterbox import Letterbox

BOX_ROWS = BOX_VALUES
"""Rows 0-3 of each YOLOv8 output column are cx, cy, w, h; the class scores follow."""
OBJECTNESS = BOX_VALUES
"""Column 4 of each YOLOv5 row is the objectness; the class scores follow it."""
E2E_SCORE, E2E_CLASS = 4, 5
"""Columns of an end-to-end row after x1, y1, x2, y2."""

ImageResult = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(boxes Kx4 float32 x1y1x2y2 in model-input pixels, scores K float32, class ids K int64), best first."""
Decoder = Callable[[np.ndarray, float, float, int], ImageResult]


def _empty_result() -> ImageResult:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def _nms(
    cxcywh: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, conf: float, iou: float, max_det: int
) -> ImageResult:
    """Class-wise NMS over candidates already above `conf`, sorted best first and capped at max_det."""
    if not len(scores):
        return _empty_result()
    cxcywh, scores = cxcywh.astype(np.float32), scores.astype(np.float32)
    xywh = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, 2:]], axis=1)
    picked = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, scores, class_ids.astype(np.int32), conf, iou), int)
    picked = picked[np.argsort(-scores[picked], kind="stable")][:max_det]
    boxes = xywh[picked]
    boxes[:, 2:] += boxes[:, :2]
    return boxes, scores[picked], class_ids[picked].astype(np.int64)


def _decode_v8_one(pred: np.ndarray, conf: float, iou: float, max_det: int) -> ImageResult:
    """[4+C, A]: the best class score is the confidence (objectness is already folded in)."""
    class_scores = pred[BOX_ROWS:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    keep = scores >= conf
    return _nms(pred[:BOX_ROWS, keep].T, scores[keep], class_ids[keep], conf, iou, max_det)


def _decode_v5_one(pred: np.ndarray, conf: float, iou: float, max_det: int) -> ImageResult:
    """[A, 5+C]: confidence = objectness x best class score.

    Rows whose objectness alone is below `conf` are dropped first: class scores are sigmoids (<= 1), so
    such rows cannot pass, and the product over a 25200-row grid is then computed only for the few left.
    """
    pred = pred[pred[:, OBJECTNESS] >= conf]
    class_ids = pred[:, OBJECTNESS + 1 :].argmax(axis=1)
    scores = pred[:, OBJECTNESS] * pred[np.arange(len(pred)), OBJECTNESS + 1 + class_ids]
    keep = scores >= conf
    return _nms(pred[keep, :BOX_VALUES], scores[keep], class_ids[keep], conf, iou, max_det)


def _decode_end2end_one(pred: np.ndarray, conf: float, iou: float, max_det: int) -> ImageResult:
    """[K, 6] x1, y1, x2, y2, score, class: the model did NMS, so only threshold, sort and cap (`iou` unused)."""
    pred = pred[pred[:, E2E_SCORE] >= conf]
    pred = pred[np.argsort(-pred[:, E2E_SCORE], kind="stable")][:max_det]
    boxes = np.ascontiguousarray(pred[:, :BOX_VALUES], dtype=np.float32)
    return boxes, pred[:, E2E_SCORE].astype(np.float32), np.rint(pred[:, E2E_CLASS]).astype(np.int64)


DECODERS: dict[OutputFormat, Decoder] = {
    OutputFormat.YOLOV8: _decode_v8_one,
    OutputFormat.YOLOV5: _decode_v5_one,
    OutputFormat.END2END: _decode_end2end_one,
}


def decode(output: np.ndarray, fmt: OutputFormat, conf: float, iou: float, max_det: int) -> list[ImageResult]:
    """Decode a [N, rows, cols] output of layout `fmt` into one ImageResult per image.

    fp16 outputs are widened per image, as OpenCV's NMS takes float32 only.
    """
    if fmt not in DECODERS:
        raise ValueError(f"cannot decode format {fmt!r}; resolve `auto` with detect_format first")
    if output.ndim != 3:
        raise ValueError(f"expected output shaped [N, rows, cols], got {output.shape}")
    if fmt is OutputFormat.END2END and output.shape[2] != END2END_VALUES:
        raise ValueError(f"expected end2end output shaped [N, K, {END2END_VALUES}], got {output.shape}")
    one = DECODERS[fmt]
    return [one(pred.astype(np.float32, copy=False), conf, iou, max_det) for pred in output]


def decode_yolov8(output: np.ndarray, conf: float, iou: float, max_det: int) -> list[ImageResult]:
    """Decode [N, 4+C, A] output (the Ultralytics layout, which our yolov3-tiny export mimics)."""
    if output.ndim != 3 or output.shape[1] <= BOX_ROWS:
        raise ValueError(f"expected output shaped [N, 4+C, A], got {output.shape}")
    return decode(output, OutputFormat.YOLOV8, conf, iou, max_det)


def detections_for(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    lb: Letterbox,
    width: int,
    height: int,
) -> list[Detection]:
    """Map one image's model-input boxes back to its original pixels, clipped to the frame.

    Goes through `tolist()` so the Detections hold plain Python numbers, which serialise to JSON as is.
    """
    original = lb.to_original(boxes)
    original[:, [0, 2]] = original[:, [0, 2]].clip(0, width)
    original[:, [1, 3]] = original[:, [1, 3]].clip(0, height)
    return [
        Detection(class_id=c, confidence=s, box=(x1, y1, x2, y2))
        for (x1, y1, x2, y2), s, c in zip(original.tolist(), scores.tolist(), class_ids.tolist(), strict=True)
    ]
