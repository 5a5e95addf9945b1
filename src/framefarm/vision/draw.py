"""Annotate frames with detection boxes and labels for previews and annotated video."""

import time
from collections.abc import Sequence

import cv2
import numpy as np

from framefarm.vision.detections import Detection

PALETTE_BGR: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
    (199, 55, 255),
)
"""Fixed so a class keeps its colour across frames, runs and restarts."""

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_COLOUR = (255, 255, 255)
LINE_WIDTH_PER_PIXEL = 1 / 400
"""Box line width grows with the frame so labels stay readable on large frames."""
LABEL_PAD = 2


def _colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE_BGR[class_id % len(PALETTE_BGR)]


def _label(names: Sequence[str], det: Detection) -> str:
    name = names[det.class_id] if 0 <= det.class_id < len(names) else str(det.class_id)
    return f"{name} {det.confidence:.2f}"


def draw_detections(image: np.ndarray, detections: Sequence[Detection], names: Sequence[str]) -> np.ndarray:
    """Return a copy of the BGR image with each detection's box and "name 0.83" label drawn on it."""
    canvas = image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) * LINE_WIDTH_PER_PIXEL))
    font_scale = thickness / 3
    text_thickness = max(1, thickness - 1)
    for det in detections:
        colour = _colour(det.class_id)
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = _label(names, det)
        (text_w, text_h), baseline = cv2.getTextSize(label, FONT, font_scale, text_thickness)
        label_h = text_h + baseline + 2 * LABEL_PAD
        top = y1 - label_h if y1 - label_h >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + text_w + 2 * LABEL_PAD, top + label_h), colour, cv2.FILLED)
        text_origin = (x1 + LABEL_PAD, top + LABEL_PAD + text_h)
        cv2.putText(canvas, label, text_origin, FONT, font_scale, TEXT_COLOUR, text_thickness, cv2.LINE_AA)
    return canvas


def draw_timestamp(image: np.ndarray, captured_at: float) -> np.ndarray:
    """Return a copy of the image with its capture time (local, to the millisecond) in the top-left corner."""
    canvas = image.copy()
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(captured_at)) + f".{int(captured_at * 1000) % 1000:03d}"
    thickness = max(1, round(max(canvas.shape[:2]) * LINE_WIDTH_PER_PIXEL))
    font_scale = thickness / 2
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    corner = (text_w + 4 * LABEL_PAD, text_h + baseline + 4 * LABEL_PAD)
    cv2.rectangle(canvas, (0, 0), corner, (0, 0, 0), cv2.FILLED)
    cv2.putText(
        canvas, text, (2 * LABEL_PAD, 2 * LABEL_PAD + text_h), FONT, font_scale, TEXT_COLOUR, thickness, cv2.LINE_AA
    )
    return canvas
