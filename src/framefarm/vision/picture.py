"""A frame as outputs and the status page show it: decoded at its original size, as received or with its boxes drawn."""

from __future__ import annotations

import cv2
import numpy as np

from ..message import FrameMessage
from .codec import decode_frame, encode_frame, shrink
from .detections import Detection
from .draw import draw_detections

JPEG_QUALITY = 90


def picture(frame: bytes, message: FrameMessage, *, annotated: bool, original_size: bool = True) -> np.ndarray:
    """The frame, its boxes drawn when ``annotated``: in its original size (a frame stored smaller is scaled back
    up), or as stored when not ``original_size`` (the boxes then scaled down to it)."""
    image = decode_frame(frame, message.format, *message.stored_size)
    scale = message.scale
    if scale != 1.0 and original_size:
        image = cv2.resize(image, (message.width, message.height), interpolation=cv2.INTER_LINEAR)
        scale = 1.0
    if not annotated:
        return image
    detections = [
        Detection(d["class_id"], d["confidence"], tuple(d["box"])).scaled(scale) for d in message.detections or []
    ]
    names = {d["class_id"]: d["class_name"] for d in message.detections or []}
    labels = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
    return draw_detections(image, detections, labels)


def snapshot_jpeg(frame: bytes, message: FrameMessage, *, annotated: bool, max_side: int) -> bytes:
    """A JPEG of the frame no larger than ``max_side`` on its longer side, for results that carry their image."""
    image, _ = shrink(picture(frame, message, annotated=annotated, original_size=False), max_side)
    return encode_frame(image, "jpeg", JPEG_QUALITY)
