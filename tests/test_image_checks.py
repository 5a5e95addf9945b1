"""Image bytes judged before anything decodes them: size from the header, complete or still being written.

The cases are real encodings (OpenCV's writers, and a WebP in the extended layout built by hand), each one
cut short at many points and with other bytes appended after its end, as a Motion Photo has a video there.
"""

from __future__ import annotations

import struct
import time

import cv2
import numpy as np
import pytest

from framefarm.errors import BadInput, IncompleteFile
from framefarm.ingest.images import check_image
from framefarm.vision.codec import decode_frame
from framefarm.vision.imageheader import read_header

from conftest import MEDIA
from harness import png_of_size

DOG = cv2.imread(str(MEDIA / "dog.jpg"))
APPENDED = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8 + b"\xff\xd9"  # a video's start, then noise


def encode(ext: str, image: np.ndarray = DOG, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def extended_webp(simple: bytes, width: int, height: int) -> bytes:
    """A simple (VP8) WebP rewrapped in the extended layout: a VP8X chunk with the canvas size first."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + simple[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


GREY16 = (cv2.cvtColor(DOG, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 256)[:100, :130]
CASES = {
    "jpeg": lambda: encode(".jpg"),
    "jpeg-progressive": lambda: encode(".jpg", params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    "jpeg-exif": lambda: (MEDIA / "dog.jpg").read_bytes(),
    "png": lambda: encode(".png"),
    "png-grey16": lambda: encode(".png", GREY16),
    "bmp": lambda: encode(".bmp", DOG[:101, :99]),
    "webp-lossy": lambda: encode(".webp"),
    "webp-lossless": lambda: encode(".webp", DOG[:50, :70], (cv2.IMWRITE_WEBP_QUALITY, 101)),
    "webp-extended": lambda: extended_webp(encode(".webp"), 768, 576),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_header_gives_the_size_the_decoder_finds(case: str) -> None:
    data = CASES[case]()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    header = read_header(data)
    assert (header.width, header.height) == (decoded.shape[1], decoded.shape[0])
    assert header.end == len(data)


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_cut_short_anywhere_is_incomplete_and_bytes_after_the_end_are_allowed(case: str) -> None:
    data = CASES[case]()
    for cut in (0, 1, 2, 5, 11, 20, 40, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 1):
        with pytest.raises(IncompleteFile):
            check_image(data[:cut], max_pixels=10**8)
    checked = check_image(data + APPENDED, max_pixels=10**8)
    assert read_header(data + APPENDED).end == len(data)
    plain = check_image(data, max_pixels=10**8)
    assert (checked.width, checked.height) == (plain.width, plain.height)


def test_a_motion_photo_is_a_complete_jpeg() -> None:
    """A JPEG with a video after its end-of-image marker (Android's Motion Photo): complete, as OpenCV finds."""
    photo = (MEDIA / "dog.jpg").read_bytes() + b"\x00\x00\x00\x1cftypisom" + bytes(5000)
    checked = check_image(photo, max_pixels=10**8)
    assert (checked.format, checked.width, checked.height, checked.pixels.shape) == ("jpeg", 768, 576, (576, 768, 3))


def test_what_is_not_an_image_is_bad_and_what_may_become_one_is_incomplete() -> None:
    for prefix in (b"", b"\xff", b"\x89PN", b"B", b"RIFF\x10\x00"):
        with pytest.raises(IncompleteFile):
            check_image(prefix, max_pixels=10**8)
    for junk in (b"hello world", b"GIF89a" + bytes(100), b"RIFF\x10\x00\x00\x00WAVEfmt "):
        with pytest.raises(BadInput) as caught:
            check_image(junk, max_pixels=10**8)
        assert not isinstance(caught.value, IncompleteFile)


@pytest.mark.parametrize("case", ["jpeg", "png", "bmp", "webp-lossy", "webp-extended"])
def test_images_over_max_pixels_are_refused_from_the_header(case: str) -> None:
    data = CASES[case]()
    with pytest.raises(BadInput, match=r"over max_pixels"):
        check_image(data, max_pixels=5_000)
    with pytest.raises(BadInput, match=r"over max_pixels"):  # even before the rest of the file is there
        check_image(data[: len(data) // 2], max_pixels=5_000)


def test_a_decompression_bomb_is_refused_without_decoding_it() -> None:
    bomb = png_of_size(20000, 20000)  # 1.2 GB as BGR pixels, tens of kilobytes on disk
    assert len(bomb) < 200_000 and read_header(bomb).width == 20000
    started = time.perf_counter()
    with pytest.raises(BadInput, match=r"20000x20000 .* over max_pixels"):
        check_image(bomb, max_pixels=50_000_000)
    with pytest.raises(BadInput, match=r"20000x20000"):  # and the detector's side, if one came on the bus
        decode_frame(bomb, "png", 768, 576)
    assert time.perf_counter() - started < 0.5  # nothing was decoded


def test_decode_frame_takes_frames_of_their_declared_size() -> None:
    data = encode(".jpg")
    assert decode_frame(data, "jpeg", 768, 576).shape == (576, 768, 3)
    assert decode_frame(data, "jpeg", 576, 768).shape == (576, 768, 3)  # EXIF-rotated sizes are swapped
    with pytest.raises(BadInput, match="larger than"):
        decode_frame(data, "jpeg", 640, 480)
