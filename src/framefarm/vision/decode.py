"""Turn raw YOLOv8-layout model output into per-image boxes and Detection objects."""

import cv2
import numpy as np

from framefarm.vision.detections import Detection
from framefarm.vision.letterbox import Letterbox

BOX_ROWS = 4
"""Rows 0-3 of each output column are cx, cy, w, h; the class scores follow."""

ImageResult = tuple[np.ndarray, np.ndarray, np.ndarray]


def _empty_result() -> ImageResult:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def _decode_one(pred: np.ndarray, conf: float, iou: float, max_det: int) -> ImageResult:
    """Best class per anchor, confidence filter, class-wise NMS and the max_det cap for one image."""
    class_scores = pred[BOX_ROWS:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    keep = scores >= conf
    if not keep.any():
        return _empty_result()
    cxcywh = pred[:BOX_ROWS, keep].T.astype(np.float32)
    scores, class_ids = scores[keep].astype(np.float32), class_ids[keep]
    xywh = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, 2:]], axis=1)
    picked = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, scores, class_ids.astype(np.int32), conf, iou), int)
    picked = picked[np.argsort(-scores[picked], kind="stable")][:max_det]
    boxes = xywh[picked]
    boxes[:, 2:] += boxes[:, :2]
    return boxes, scores[picked], class_ids[picked]


def decode_yolov8(output: np.ndarray, conf: float, iou: float, max_det: int) -> list[ImageResult]:
    """Decode [N, 4+C, A] output into per-image (boxes Kx4 x1y1x2y2 in input pixels, scores, class ids).

    The layout is the one Ultralytics exports (and our yolov3-tiny export mimics): class scores already
    include objectness, so the best class score is the detection confidence.
    """
    if output.ndim != 3 or output.shape[1] <= BOX_ROWS:
        raise ValueError(f"expected output shaped [N, 4+C, A], got {output.shape}")
    return [_decode_one(pred, conf, iou, max_det) for pred in output]


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
