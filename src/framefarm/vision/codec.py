"""Frames to bytes for the store and back: JPEG/PNG through OpenCV, raw BGR pixels, or the raw I420 planes of
video (Y, then U and V at half the width and height: half the bytes of BGR, which video inputs store as they
decoded them and readers convert at the size they got)."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import BadInput
from .imageheader import read_header

RAW = "raw"
I420 = "i420"  # raw 4:2:0 planes of an even-sized frame; produced by video inputs (ingest.video) only
ENCODERS = {"jpeg": ".jpg", "png": ".png"}


def encode_frame(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """``raw`` keeps the BGR pixels as they are: no codec time, but 3 bytes a pixel on the bus."""
    if fmt == RAW:
        return np.ascontiguousarray(image).tobytes()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(ENCODERS[fmt], image, params)
    if not ok:
        raise BadInput(f"OpenCV could not encode a {image.shape} frame as {fmt}")
    return encoded.tobytes()


def shrink(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """(image no larger than ``max_side``, its size relative to the original) for cheaper transport."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def decode_frame(data: bytes, fmt: str, width: int, height: int) -> np.ndarray:
    """A BGR image; BadInput when the bytes are not a frame of that format and size.

    An encoded frame's header is read first, and a frame with more pixels than its message declares is refused
    before it is decoded: a small file can hold a huge image (a PNG of 20000x20000 is 1.2 GB as pixels), and a
    detector or an output must not be the one to find out. The input checked the declared size (max_pixels).
    """
    if fmt == I420:
        if (width | height) & 1 or len(data) != width * height * 3 // 2:
            raise BadInput(f"i420 frame of {len(data)} bytes is not {width}x{height} 4:2:0 planes")
        return cv2.cvtColor(np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width), cv2.COLOR_YUV2BGR_I420)
    if fmt == RAW:
        if len(data) != width * height * 3:
            raise BadInput(f"raw frame of {len(data)} bytes is not {width}x{height} BGR")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    header = read_header(data)
    if header.width * header.height > width * height:
        raise BadInput(f"{fmt} frame is {header.width}x{header.height}, larger than the {width}x{height} declared")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise BadInput(f"{fmt} frame is not decodable: {exc}") from exc
    if image is None:
        raise BadInput(f"{fmt} frame is not decodable")
    return image
