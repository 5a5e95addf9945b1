"""The multipart/x-mixed-replace parser over the bytes cameras really send, fed in pieces of every size."""

from __future__ import annotations

import pytest

from framefarm.ingest.multipart import MultipartReplace, boundary_of

from conftest import MEDIA

JPEG = (MEDIA / "eagle.jpg").read_bytes()
OTHER = (MEDIA / "dog.jpg").read_bytes()


def part(body: bytes, *, length: bool = True, newline: bytes = b"\r\n", boundary: bytes = b"--frame") -> bytes:
    headers = [b"Content-Type: image/jpeg"] + ([b"Content-Length: %d" % len(body)] if length else [])
    return boundary + newline + newline.join(headers) + newline + newline + body + newline


def parse(stream: bytes, boundary: bytes = b"frame", *, step: int | None = None, max_part: int = 1 << 24) -> list:
    parser = MultipartReplace(boundary, max_part)
    step = step or len(stream)
    return [p for i in range(0, len(stream), step) for p in parser.feed(stream[i : i + step])]


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/x-mixed-replace;boundary=ffmpeg", b"ffmpeg"),
        ('multipart/x-mixed-replace; boundary="my frame"', b"my frame"),
        ("multipart/x-mixed-replace; boundary=--myboundary", b"myboundary"),  # firmware that writes the dashes too
        ('Multipart/X-Mixed-Replace; Boundary="abc"; charset=x', b"abc"),
        ("multipart/x-mixed-replace", None),
        ('multipart/x-mixed-replace; boundary=""', None),
    ],
)
def test_the_boundary_comes_from_the_content_type_quoted_or_not(header: str, boundary: bytes | None) -> None:
    assert boundary_of(header) == boundary


def test_parts_with_and_without_content_length_come_out_whole_whatever_the_read_sizes() -> None:
    stream = part(JPEG) + part(OTHER, length=False) + part(JPEG, length=False) + part(OTHER) + b"--frame\r\n"
    for step in (1, 2, 7, 100, 4096, len(stream)):  # a part split across reads, down to single bytes
        assert parse(stream, step=step) == [JPEG, OTHER, JPEG, OTHER], step


def test_garbage_before_and_between_parts_is_skipped() -> None:
    stream = b"HTTP junk\r\n\r\n" + part(JPEG) + b"\r\n\r\nnoise -- fram\r\n" + part(OTHER, length=False) + part(JPEG)
    assert parse(stream, step=13) == [JPEG, OTHER, JPEG]


def test_lf_line_endings_and_a_boundary_written_without_its_dashes() -> None:
    stream = part(JPEG, newline=b"\n", boundary=b"frame") + part(OTHER, newline=b"\n", length=False, boundary=b"frame")
    assert parse(stream + b"frame\n", step=5) == [JPEG, OTHER]


def test_quoted_boundary_with_a_space_and_a_part_without_headers() -> None:
    stream = b"--my frame\r\n\r\n" + JPEG + b"\r\n" + part(OTHER, boundary=b"--my frame") + b"--my frame\r\n"
    assert parse(stream, b"my frame", step=3) == [JPEG, OTHER]


def test_a_content_length_part_may_hold_the_boundary_text() -> None:
    body = JPEG[:100] + b"\r\n--frame\r\n" + JPEG[100:]
    assert parse(part(body) + part(OTHER), step=11) == [body, OTHER]


def test_a_part_over_max_part_is_dropped_counted_and_the_stream_goes_on() -> None:
    big = b"\xff\xd8" + bytes(5000)
    parser = MultipartReplace(b"frame", max_part=2048)
    stream = part(big, length=False) + part(JPEG[:1500]) + part(big) + part(OTHER[:1000], length=False) + b"--frame\r\n"
    got = [p for i in range(0, len(stream), 700) for p in parser.feed(stream[i : i + 700])]
    assert got == [JPEG[:1500], OTHER[:1000]]
    assert parser.oversized == 2
    assert len(parser.buffer) < 2048 + 100  # memory stays bounded
