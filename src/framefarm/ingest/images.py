"""Check that bytes are a whole, decodable image of a size the pipeline takes, before they enter it."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import BadInput, IncompleteFile
from ..vision.imageheader import read_header

MEGA = 1_000_000


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """BadInput for a picture over ``max_pixels``: decoding it would take memory in every module it reaches."""
    if width * height > max_pixels:
        raise BadInput(
            f"{width}x{height} is {width * height / MEGA:.1f} megapixels, over max_pixels ({max_pixels / MEGA:.1f})"
        )


@dataclass(frozen=True)
class CheckedImage:
    """A whole, decodable image: its bytes, format, size as displayed, and the pixels the check decoded."""

    data: bytes
    format: str
    width: int
    height: int
    pixels: np.ndarray = field(repr=False)


def check_image(data: bytes, max_pixels: int) -> CheckedImage:
    """``data`` checked as a complete image; BadInput says what is wrong otherwise.

    The order matters: the size comes from the header, so a huge picture is refused without decoding it; the
    image's own structure says whether it is complete (bytes after its end are allowed: a Motion Photo's video);
    only then is it decoded, which finds what is corrupt. OpenCV applies the EXIF orientation, so width and height
    are those of the picture as it is displayed and as the detector will decode it. The pixels are kept: an input
    that must store a smaller frame shrinks them rather than decoding the image again.
    """
    header = read_header(data)
    check_pixels(header.width, header.height, max_pixels)
    if header.end is None:
        raise IncompleteFile(f"truncated {header.format.upper()}: the image ends after {len(data)} bytes")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise BadInput(f"corrupt {header.format.upper()}: {exc}") from exc
    if image is None:
        raise BadInput(f"corrupt {header.format.upper()}: the decoder rejected it")
    height, width = image.shape[:2]
    return CheckedImage(data, header.format, width, height, image)
