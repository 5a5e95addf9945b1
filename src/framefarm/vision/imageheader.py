"""An image's format, size and end, read from its structure without decoding a single pixel.

Why: decoding costs memory in proportion to the pixels, not to the file (a 1.2 MB PNG of 20000x20000 is 1.2 GB
as BGR), so the size must be known before anything decodes; and a file still being written must be told from a
complete one, which its last bytes cannot do (a Motion Photo carries a whole video after its JPEG's end). So each
format's structure is walked: JPEG segments to the end-of-image marker, PNG chunks to IEND, the sizes that BMP
and WebP declare. Bytes after the end are allowed, as decoders ignore them.

Raises IncompleteFile when the bytes end before what they begin says they hold (an empty file too, or the first
bytes of a known signature), BadInput when they are not one of the four formats.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..errors import BadInput, IncompleteFile

JPEG_SIGNATURE = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BMP_SIGNATURE = b"BM"
SIGNATURES = {"jpeg": JPEG_SIGNATURE, "png": PNG_SIGNATURE, "bmp": BMP_SIGNATURE}
RIFF, WEBP = b"RIFF", b"WEBP"
FORMATS_TEXT = "a JPEG, PNG, BMP or WebP image"

JPEG_EOI, JPEG_SOS = 0xD9, 0xDA
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI: markers without a length
JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data: a marker, not a stuffed byte
PNG_CHUNK_OVERHEAD = 12  # length, type, CRC
BMP_CORE_HEADER = 12  # the OS/2 header, with 16-bit sizes
BMP_UNCOMPRESSED = {0, 3, 6}  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: rows of pixels, sized by the header
VP8_START_CODE = b"\x9d\x01\x2a"
VP8L_SIGNATURE = 0x2F


@dataclass(frozen=True)
class ImageHeader:
    format: str  # jpeg, png, bmp or webp
    width: int  # as stored: an EXIF orientation may swap width and height on display
    height: int
    end: int | None  # offset just past the image's last byte; None while the bytes end before it


def read_header(data: bytes) -> ImageHeader:
    """The format, stored size and end of the image that ``data`` starts with."""
    fmt = sniff_format(data)
    width, height, end = READERS[fmt](data)
    if width <= 0 or height <= 0:
        raise BadInput(f"corrupt {fmt.upper()}: its header says {width}x{height}")
    return ImageHeader(fmt, width, height, end)


def sniff_format(data: bytes) -> str:
    """The format from the signature; IncompleteFile for nothing yet, or only the first bytes of a signature."""
    for fmt, signature in SIGNATURES.items():
        if data.startswith(signature):
            return fmt
    if data[:4] == RIFF and data[8:12] == WEBP:
        return "webp"
    if not data:
        raise IncompleteFile("empty file")
    if _signature_prefix(data):
        raise IncompleteFile(f"only {len(data)} bytes so far")
    raise BadInput(f"not {FORMATS_TEXT} (unknown signature)")


def _signature_prefix(data: bytes) -> bool:
    if any(signature.startswith(data) for signature in SIGNATURES.values()):
        return True
    return RIFF.startswith(data[:4]) and WEBP.startswith(data[8:12])


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    """Fields at ``offset``; IncompleteFile if the bytes end before them."""
    if offset + struct.calcsize(fmt) > len(data):
        raise IncompleteFile(f"only {len(data)} bytes so far, the header goes on")
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> tuple[int, int, int | None]:
    length, kind, width, height = _unpack(">I4sII", data, len(PNG_SIGNATURE))
    if kind != b"IHDR":
        raise BadInput("corrupt PNG: it does not start with an IHDR chunk")
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        offset += PNG_CHUNK_OVERHEAD + length
        if kind == b"IEND":
            return width, height, offset if offset <= len(data) else None
    return width, height, None


def _jpeg(data: bytes) -> tuple[int, int, int | None]:
    """Walk the segments (each skipped by its length, so an EXIF thumbnail's markers are never seen) to EOI."""
    size: tuple[int, int] | None = None
    offset = len(JPEG_SIGNATURE)
    while (offset := _jpeg_marker_at(data, offset)) >= 0:
        marker = data[offset + 1]
        if marker == JPEG_EOI:
            return _jpeg_result(size, offset + 2)
        if marker in JPEG_STANDALONE:
            offset += 2
            continue
        (length,) = _unpack(">H", data, offset + 2)
        if marker in JPEG_SOF and size is None:
            height, width = _unpack(">HH", data, offset + 5)
            size = (width, height)
        offset += 2 + length
        if marker == JPEG_SOS:  # the entropy-coded data runs up to the next marker
            found = JPEG_NEXT_MARKER.search(data, min(offset, len(data)))
            offset = found.start() if found else len(data)
    return _jpeg_result(size, None)


def _jpeg_marker_at(data: bytes, offset: int) -> int:
    """Where the next marker starts (stray bytes and fill bytes skipped, as libjpeg does); -1 past the end."""
    offset = data.find(b"\xff", offset)
    while 0 <= offset < len(data) - 1 and data[offset + 1] == 0xFF:
        offset += 1
    return offset if 0 <= offset < len(data) - 1 else -1


def _jpeg_result(size: tuple[int, int] | None, end: int | None) -> tuple[int, int, int | None]:
    if size is None:
        if end is None:
            raise IncompleteFile("truncated JPEG: it ends before its frame header")
        raise BadInput("corrupt JPEG: no frame header")
    return size[0], size[1], end


def _bmp(data: bytes) -> tuple[int, int, int | None]:
    file_size, pixels_at, header_size = _unpack("<I4xII", data, 2)
    if header_size == BMP_CORE_HEADER:
        width, height, _, bits = _unpack("<HHHH", data, 18)
        compression = 0
    else:
        width, height, _, bits, compression, image_size = _unpack("<iiHHII", data, 18)
    height = abs(height)  # negative: rows stored top-down
    if compression in BMP_UNCOMPRESSED:
        end = pixels_at + (width * bits + 31) // 32 * 4 * height
    else:  # RLE or an embedded JPEG/PNG: trust the sizes the header declares
        end = pixels_at + image_size if image_size else file_size
    return width, height, end if end <= len(data) else None


def _webp(data: bytes) -> tuple[int, int, int | None]:
    (riff_size,) = _unpack("<I", data, 4)
    (chunk,) = _unpack("4s", data, 12)
    if chunk == b"VP8 ":
        (start_code,) = _unpack("3s", data, 23)
        if start_code != VP8_START_CODE:
            raise BadInput("corrupt WebP: no VP8 start code")
        width, height = (value & 0x3FFF for value in _unpack("<HH", data, 26))
    elif chunk == b"VP8L":
        signature, bits = _unpack("<BI", data, 20)
        if signature != VP8L_SIGNATURE:
            raise BadInput("corrupt WebP: no lossless signature")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        canvas = _unpack("<6s", data, 24)[0]
        width, height = int.from_bytes(canvas[:3], "little") + 1, int.from_bytes(canvas[3:], "little") + 1
    else:
        raise BadInput(f"corrupt WebP: unknown first chunk {bytes(chunk)!r}")
    end = 8 + riff_size + riff_size % 2
    return width, height, end if end <= len(data) else None


READERS = {"jpeg": _jpeg, "png": _png, "bmp": _bmp, "webp": _webp}
