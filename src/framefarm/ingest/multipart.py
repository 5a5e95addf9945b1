"""An incremental parser for ``multipart/x-mixed-replace`` bodies: the endless stream of JPEGs MJPEG cameras send.

Why not a library: the maintained multipart parsers (``multipart``, ``python-multipart``, ``streaming-form-data``)
are for form uploads: a body that ends, parts that must be well formed, an error for bytes where a boundary
belongs. Cameras send none of that: the body never ends, some parts have a Content-Length and some do not, some
firmware puts bytes between parts or writes the boundary with or without its leading ``--``. This parser takes
bytes as they come off the socket, in pieces of any size, and yields each part's body once it is whole:

- a part with a Content-Length is cut at that length (its bytes may then hold anything);
- a part without one ends where the next boundary line begins;
- anything between a part's end and the next boundary is skipped;
- a part that grows past ``max_part`` without ending is dropped (counted in ``oversized``) and the parser looks
  for the next boundary, so a broken stream cannot take all memory.
"""

from __future__ import annotations

from email.message import Message

HEADER_END = b"\r\n\r\n"
BARE_HEADER_END = b"\n\n"  # some firmware ends lines with LF alone
MAX_HEADER_BYTES = 8192  # a part's headers longer than this are not headers: look for the next boundary


def boundary_of(content_type: str) -> bytes | None:
    """The boundary named by a Content-Type header (quoted or not), without a leading ``--``; None if none."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary.strip():
        return None
    return boundary.strip().removeprefix("--").encode("latin-1")


class MultipartReplace:
    """Feed it the bytes of a ``multipart/x-mixed-replace`` body; it returns the parts' bodies as they complete."""

    def __init__(self, boundary: bytes, max_part: int) -> None:
        self.boundary = boundary  # found with or without its "--": the line holding it is the delimiter
        self.max_part = max_part
        self.buffer = bytearray()
        self.headers: dict[str, str] | None = None  # the current part's, once read; None while seeking
        self.oversized = 0  # parts dropped for growing past max_part
        self._searched = 0  # the buffer up to here holds no boundary: a part fed in small reads is scanned once

    def _find_boundary(self) -> int:
        """Where the next boundary starts in the buffer, or -1; never scans the same bytes twice."""
        at = self.buffer.find(self.boundary, max(0, self._searched - len(self.boundary) + 1))
        self._searched = len(self.buffer) if at < 0 else 0
        return at

    def _consume(self, count: int) -> None:
        del self.buffer[:count]
        self._searched = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        parts = []
        while (part := self._step()) is not None:
            if part:
                parts.append(part)
        return parts

    def _step(self) -> bytes | None:
        """Advance once: b"" when something was consumed but no part completed, a part's body, or None when more
        bytes are needed."""
        if self.headers is None:
            return self._seek()
        return self._body()

    def _seek(self) -> bytes | None:
        """Skip to the next boundary line and read the part's headers after it."""
        at = self._find_boundary()
        if at < 0:
            self._consume(max(0, len(self.buffer) - len(self.boundary)))  # garbage; keep a boundary's start
            return None
        line_end = self.buffer.find(b"\n", at)
        if line_end < 0:
            return None
        end, skip = _headers_end(self.buffer, line_end)
        if end < 0:
            if len(self.buffer) - line_end > MAX_HEADER_BYTES:
                self._consume(line_end + 1)  # no header end in sight: not a part
                return b""
            return None
        self.headers = _parse_headers(bytes(self.buffer[line_end + 1 : end]))
        self._consume(end + skip)
        return b""

    def _body(self) -> bytes | None:
        assert self.headers is not None
        length = _content_length(self.headers)
        if length is not None and length <= self.max_part:
            if len(self.buffer) < length:
                return None
            return self._cut(length, length)
        at = self._find_boundary()
        if at < 0:
            if len(self.buffer) > self.max_part:
                self.oversized += 1
                self.headers = None
                self._consume(len(self.buffer) - len(self.boundary))
                return b""
            return None
        line_start = self.buffer.rfind(b"\n", 0, at) + 1
        end = line_start
        for ending in (b"\r\n", b"\n"):  # the line break before the boundary belongs to the delimiter
            if self.buffer.endswith(ending, 0, end):
                end -= len(ending)
                break
        if end > self.max_part:
            self.oversized += 1
            self.headers = None
            self._consume(line_start)
            return b""
        return self._cut(end, line_start)

    def _cut(self, end: int, consumed: int) -> bytes:
        """The part is ``buffer[:end]``; the next one starts being sought after ``consumed`` bytes."""
        part = bytes(self.buffer[:end])
        self._consume(consumed)
        self.headers = None
        return part or b""


def _headers_end(buffer: bytearray, line_end: int) -> tuple[int, int]:
    """Where the headers after the boundary line ending at ``line_end`` end, and the blank line's length."""
    if buffer.startswith(b"\r\n", line_end + 1) or buffer.startswith(b"\n", line_end + 1):  # no headers at all
        return line_end + 1, 2 if buffer.startswith(b"\r\n", line_end + 1) else 1
    crlf, lf = buffer.find(HEADER_END, line_end), buffer.find(BARE_HEADER_END, line_end)
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return crlf + 2, 2
    if lf >= 0:
        return lf + 1, 1
    return -1, 0


def _parse_headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None
