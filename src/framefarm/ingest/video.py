"""What every PyAV video source needs: frames as they are displayed, damaged packets skipped, an honest end,
the ``fps`` limit, real-time pacing, and frames encoded for the store.

A phone records upright video as landscape pixels plus a display matrix saying "turn by 90 degrees"; players
apply it, as image viewers apply EXIF orientation, and so must the pipeline, or a detector sees people lying
down and results are in the wrong frame of reference. A damaged packet is skipped, as ffmpeg does, rather than
losing the rest of a recording; and a file that ends before its own header says is reported, not passed as done.
Files (dir_videos) and live streams (rtsp, rtmp) share all of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import av
import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from ..config.schema import ServiceOptions
from ..errors import BadInput
from ..vision.codec import I420, RAW, encode_frame
from .images import check_pixels

FULL_RANGE = 2  # AVCOL_RANGE_JPEG: 4:2:0 whose levels OpenCV's limited-range conversion would misread
BT601 = frozenset({2, 5, 6})  # AVCOL_SPC unspecified (swscale then uses BT.601 too), BT470BG, SMPTE170M: OpenCV's
RIGHT_ANGLE_TOLERANCE = 0.01  # of the matrix's scale: below it a coefficient counts as zero
SHORT_MIN_FRAMES = 2  # fewer frames than expected by more than this (edit lists trim a frame or two) ...
SHORT_FRACTION = 0.02  # ... and than this share of the expected count: the file ended early
PTS_TOLERANCE_S = 1e-6  # timestamps are rationals turned to floats


def too_soon(pts: float | None, last: float | None, min_gap: float) -> bool:
    """The ``fps`` limit: a frame less than ``min_gap`` seconds after the last one published is skipped."""
    return bool(min_gap) and pts is not None and last is not None and pts - last < min_gap - PTS_TOLERANCE_S


class FpsLimiter:
    """The ``fps`` option: at most that many frames a second of stream time, the ones kept spread by timestamp.

    A timestamp that goes back (a live stream that started over, a reconnect) starts the count over instead of
    skipping every frame until the stream catches up with the old clock.
    """

    def __init__(self, fps: float | None) -> None:
        self.min_gap = 1.0 / fps if fps else 0.0
        self.last: float | None = None  # timestamp of the last frame kept

    def wants(self, pts: float | None) -> bool:
        if pts is not None and self.last is not None and pts < self.last:
            self.last = None
        return not too_soon(pts, self.last, self.min_gap)

    def taken(self, pts: float | None) -> None:
        """The frame with ``pts`` was kept: the next one must come ``min_gap`` after it."""
        if pts is not None:
            self.last = pts


class Pacer:
    """Seconds to wait so that a frame with timestamp ``pts`` leaves when it would in real time."""

    def __init__(self) -> None:
        self.origin: tuple[float, float] | None = None  # (first pts, wall clock then)

    def delay(self, pts: float) -> float:
        now = time.monotonic()
        if self.origin is None:
            self.origin = (pts, now)
        return max(0.0, self.origin[1] + (pts - self.origin[0]) - now)


def encode_for_store(
    frame: av.VideoFrame, service: ServiceOptions, max_side: int | None
) -> tuple[bytes, dict[str, Any]]:
    """The frame as the store keeps it (``frames.format``, no larger than ``max_side``: what its route needs), and
    the publish arguments that describe it (format, the original size as displayed, the scale).

    Raw frames of plain 4:2:0 video travel as its I420 planes: half the bytes of BGR, and no conversion here; the
    reader converts the few pixels it gets (see vision.codec).
    """
    fmt = service.frame_format
    planar = frame_to_i420(frame, max_side) if fmt == RAW else None
    if planar is not None:
        data, scale, fmt = planar[0].tobytes(), planar[1], I420
    else:
        image, scale = frame_to_bgr(frame, max_side)
        data = encode_frame(image, fmt, service.frames.quality)
    transposed = _orientation(frame)[0]
    width, height = (frame.height, frame.width) if transposed else (frame.width, frame.height)
    return data, {"fmt": fmt, "width": width, "height": height, "scale": scale}


MAX_PLAUSIBLE_FPS = 240  # a stream that says more (some cameras say 90000) does not know its rate


def nominal_rate(stream: av.VideoStream, fps: float | None) -> float | None:
    """The frame rate a stream's frames are published at: its own (as the container says, else as ffmpeg guesses
    it), at most the input's ``fps``; None when neither is known."""
    own = stream.average_rate or stream.guessed_rate
    return capped_rate(float(own) if own else None, fps)


def capped_rate(own: float | None, fps: float | None) -> float | None:
    """A source's own frame rate (ignored when implausible) within the input's ``fps`` limit."""
    rates = [rate for rate in (own if own and own <= MAX_PLAUSIBLE_FPS else None, fps) if rate]
    return min(rates) if rates else None


def frame_pts(frame: av.VideoFrame) -> float | None:
    """The frame's timestamp in seconds of its stream, None when it has none."""
    return float(frame.time) if frame.time is not None else None


def _orientation(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    """(transpose, flip x, flip y) that the frame's display matrix asks for: the eight right-angle cases.

    The matrix (ffmpeg's 3x3, row-major) maps stored (x, y) to displayed x' = a*x + c*y, y' = b*x + d*y; other
    angles, and frames without one, are shown as stored.
    """
    side = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if side is None:
        return False, False, False
    matrix = np.frombuffer(memoryview(side), np.int32)
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    tolerance = max(abs(a), abs(b), abs(c), abs(d)) * RIGHT_ANGLE_TOLERANCE
    if abs(b) <= tolerance and abs(c) <= tolerance:
        return False, a < 0, d < 0
    if abs(a) <= tolerance and abs(d) <= tolerance:
        return True, c < 0, b < 0  # displayed x is stored y and the other way round
    return False, False, False


def _stored_size(frame: av.VideoFrame, max_side: int | None) -> tuple[int, int, float]:
    """(width, height, scale) of the frame no larger than ``max_side`` on its longer side."""
    width, height = frame.width, frame.height
    if not max_side or max(width, height) <= max_side:
        return width, height, 1.0
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def frame_to_bgr(frame: av.VideoFrame, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """(the frame's BGR pixels turned as its display matrix says, the scale): shrunk to ``max_side`` in the same
    swscale pass as the conversion, never converted at full size first. BadInput if it cannot be converted."""
    width, height, scale = _stored_size(frame, max_side)
    try:
        image = frame.to_ndarray(format="bgr24", width=width, height=height, interpolation="AREA")
    except (av.FFmpegError, ValueError) as exc:
        raise BadInput(f"a {frame.format.name} frame cannot be converted to BGR: {exc}") from exc
    transpose, flip_x, flip_y = _orientation(frame)
    if transpose:
        image = image.transpose(1, 0, 2)
    if flip_x:
        image = image[:, ::-1]
    if flip_y:
        image = image[::-1]
    return (np.ascontiguousarray(image) if transpose or flip_x or flip_y else image), scale


def frame_to_i420(frame: av.VideoFrame, max_side: int | None = None) -> tuple[np.ndarray, float] | None:
    """(the frame's Y, U and V planes one after the other, no larger than ``max_side``; the scale), or None where
    they cannot stand for the frame as is: another pixel format, full-range levels or another colour matrix than
    BT.601 (OpenCV converts with that one; swscale would use the frame's), a display matrix to apply, an odd
    size. Shrunk plane by plane with OpenCV's bilinear resize, as the detector's letterbox does (three times
    cheaper here than swscale's scaled conversion); read straight from the decoder's buffers, no copy."""
    width, height, scale = _stored_size(frame, max_side)
    plain = (
        frame.format.name == "yuv420p"
        and frame.color_range != FULL_RANGE
        and frame.colorspace in BT601
        and all(plane.line_size > 0 for plane in frame.planes)
        and not any(_orientation(frame))
    )
    if not plain or (frame.width | frame.height | width | height) & 1:
        return None
    half = (frame.width // 2, frame.height // 2, width // 2, height // 2)
    out, start = np.empty(width * height * 3 // 2, np.uint8), 0
    sizes = ((frame.width, frame.height, width, height), half, half)
    for plane, (cols, rows, w, h) in zip(frame.planes, sizes, strict=True):
        source = np.frombuffer(plane, np.uint8, count=plane.line_size * rows).reshape(rows, plane.line_size)
        target = out[start : start + w * h].reshape(h, w)
        cv2.resize(source[:, :cols], (w, h), dst=target, interpolation=cv2.INTER_LINEAR)
        start += w * h
    return out, scale


class Decoded:
    """The frames of one video stream in order, each checked against ``max_pixels`` before it is converted,
    counting on the way what did not decode."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, max_pixels: int) -> None:
        self.container, self.stream, self.max_pixels = container, stream, max_pixels
        self.decoded = 0
        self.damaged = 0  # packets that did not decode, skipped
        self.damage: str | None = None  # why the last of them did not
        self.broken_off: str | None = None  # why the container could not be read to its end

    def __iter__(self) -> Iterator[av.VideoFrame]:
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as exc:  # the container breaks off here: the file ends
                self.broken_off = _reason(exc)
                return
            yield from self._frames(packet)

    def _frames(self, packet: av.Packet) -> Iterator[av.VideoFrame]:
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            self.damaged += 1
            self.damage = _reason(exc)
            return
        for frame in frames:
            check_pixels(frame.width, frame.height, self.max_pixels)
            self.decoded += 1
            yield frame

    def expected(self) -> int | None:
        """How many frames the container says the stream has (counted, or from its duration); None if unknown."""
        if self.stream.frames:
            return self.stream.frames
        if self.container.duration and self.stream.average_rate:
            return round(self.container.duration / av.time_base * float(self.stream.average_rate))
        return None

    def trouble(self) -> str | None:
        """What went wrong, for a log line: the stream ended early, or had damaged packets; None if nothing."""
        expected = self.expected()
        damaged = f", {self.damaged} damaged packets skipped ({self.damage})" if self.damaged else ""
        if expected is not None and expected - self.decoded > max(SHORT_MIN_FRAMES, expected * SHORT_FRACTION):
            return f"ended early: {self.decoded} of {expected} frames decoded{damaged} (truncated?)"
        if self.broken_off is not None:
            return f"ended early: {self.decoded} frames decoded, then {self.broken_off}{damaged}"
        return damaged.removeprefix(", ") or None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
