"""Check that bytes are a whole, decodable image before they enter the pipeline."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import BadInput, IncompleteFile

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def sniff_format(data: bytes) -> str:
    """The image format from its magic bytes: jpeg, png, bmp or webp."""
    if data.startswith(JPEG_START):
        return "jpeg"
    if data.startswith(PNG_START):
        return "png"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise BadInput("not a JPEG, PNG, BMP or WebP image (unknown magic bytes)")


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a complete image; BadInput says what is wrong otherwise.

    OpenCV decodes a truncated JPEG into a grey-bottomed picture without an error, so the end
    markers are checked first.
    """
    fmt = sniff_format(data)
    if fmt == "jpeg" and JPEG_END not in data[-64:]:
        raise IncompleteFile("truncated JPEG: no end-of-image marker")
    if fmt == "png" and not data.rstrip(b"\0").endswith(PNG_END):
        raise IncompleteFile("truncated PNG: no IEND chunk")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput(f"corrupt {fmt.upper()}: the decoder rejected it")
    height, width = image.shape[:2]
    return fmt, width, height
