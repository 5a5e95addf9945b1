"""H.264 encoding with PyAV for the video outputs: pick the encoder, set its options, write frames to a container.

``encoder: auto`` uses NVENC where it opens (a GPU with the NVIDIA driver), else libx264, and says which once
per process. Every frame's timestamp is in 1/90000 s (what RTP and MPEG-TS use), so constant and variable frame
rates, and any container, take the same path; the container keeps its own time base.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import cv2
import numpy as np
from pydantic import Field, field_validator

from ..config.schema import StrictModel

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90_000)
MIN_STEP = 90  # 1 ms: the least two frames' timestamps differ by, so that a container in ms (mkv) keeps them apart
NVENC, X264 = "h264_nvenc", "libx264"
PROBE_SIDE = 256  # NVENC is tried on a frame this big: whether a GPU is there, not whether a size suits it
DEFAULT_PRESETS = {X264: "veryfast", NVENC: "p4"}
DEFAULT_CRF = 23
LIVE_GOP_S, FILE_GOP_S = 1.0, 2.0  # a player joining a live stream waits for a keyframe at most this long
_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
_SIZE = re.compile(r"^(keep|\d+x\d+)$")


def parse_bitrate(value: object) -> object:
    """``"2M"``, ``"800k"`` or a number of bits per second -> bits per second."""
    if isinstance(value, str):
        match = _BITRATE.match(value)
        if not match:
            raise ValueError(f'"{value}" is not a bit rate (examples: 800k, 2M, 4000000)')
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return value


class EncoderOptions(StrictModel):
    encoder: Literal["auto", "libx264", "h264_nvenc"] = Field(
        "auto", description="auto: NVENC where a GPU takes it, else libx264 (the choice is logged)."
    )
    preset: str | None = Field(
        None, description="The encoder's speed/quality preset (libx264: ultrafast..veryslow, default veryfast; "
        "NVENC: p1..p7, default p4)."
    )  # fmt: skip
    bitrate: int | None = Field(
        None, gt=0, description="Target bit rate (800k, 2M); leave out for constant quality (crf)."
    )
    crf: int = Field(DEFAULT_CRF, ge=0, le=51, description="Constant quality when no bitrate is set: lower is better.")
    gop: int | None = Field(
        None, ge=1, description="Frames between keyframes (default: 1 s of frames live, 2 s in files)."
    )
    size: str = Field("keep", description="keep (the source's, rounded down to even) or WIDTHxHEIGHT.")

    _parse_bitrate = field_validator("bitrate", mode="before")(parse_bitrate)

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        if not _SIZE.match(value):
            raise ValueError(f'"{value}" is not a size: keep or WIDTHxHEIGHT, e.g. 1280x720')
        return value

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(width, height) asked for, None to keep the source's."""
        if self.size == "keep":
            return None
        width, height = (int(v) for v in self.size.split("x"))
        return even(width), even(height)


def even(value: int) -> int:
    """H.264 in yuv420p needs even sides."""
    return max(2, value - value % 2)


@functools.cache
def nvenc_refusal() -> str | None:
    """Why NVENC does not open here (no GPU, no driver, a build without it), None when it does."""
    if NVENC not in av.codecs_available:
        return "this PyAV has no h264_nvenc"
    context = av.CodecContext.create(NVENC, "w")
    context.width = context.height = PROBE_SIDE
    context.pix_fmt, context.time_base = "yuv420p", Fraction(1, 25)
    try:
        context.open()
    except av.FFmpegError as exc:
        return getattr(exc, "strerror", None) or str(exc)
    return None


@functools.cache
def pick_encoder(wanted: str) -> str:
    """The encoder to use for ``wanted`` (auto: NVENC if it opens, else libx264), logged once per process. A
    stream whose NVENC fails to start anyway (the GPU's sessions are all taken) goes on with libx264."""
    if wanted != "auto":
        return wanted
    refusal = nvenc_refusal()
    chosen = X264 if refusal else NVENC
    log.info("encoder auto: %s%s", chosen, f" (h264_nvenc does not open: {refusal})" if refusal else "")
    return chosen


class EncoderFailed(Exception):
    """The encoder refused a frame (it did not open, say): not the container's fault."""


@dataclass
class Encoding:
    """One H.264 stream being written to an open container, from its first frame (timestamp 0) to ``close``."""

    container: av.container.OutputContainer
    stream: av.VideoStream
    size: tuple[int, int]
    first_pts: int | None = None
    last_pts: int = -1
    frames: int = 0

    @classmethod
    def start(
        cls,
        container: av.container.OutputContainer,
        options: EncoderOptions,
        codec: str,
        size: tuple[int, int],
        rate: float,
        *,
        live: bool,
    ) -> Encoding:
        stream = container.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height = options.fixed_size or (even(size[0]), even(size[1]))
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.time_base = TIME_BASE
        context.gop_size = options.gop or max(1, round(rate * (LIVE_GOP_S if live else FILE_GOP_S)))
        if live:
            context.max_b_frames = 0  # a player shows a frame as soon as it arrives
        if options.bitrate:
            context.bit_rate = options.bitrate
        stream.options = codec_options(codec, options, live=live)
        return cls(container, stream, (stream.width, stream.height))

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode ``image`` (BGR, scaled to the stream's size if it is not) at ``pts`` (1/90000 s of the caller's
        clock; the stream starts at 0); a ``pts`` less than MIN_STEP after the last one's is moved to that."""
        if self.first_pts is None:
            self.first_pts = pts
        pts = max(pts - self.first_pts, self.last_pts + MIN_STEP if self.frames else 0)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, TIME_BASE
        try:
            packets = self.stream.encode(frame)
        except av.FFmpegError as exc:
            raise EncoderFailed(f"{self.stream.codec_context.name}: {getattr(exc, 'strerror', None) or exc}") from exc
        self.container.mux(packets)
        self.last_pts, self.frames = pts, self.frames + 1

    def close(self) -> None:
        """Flush the encoder and finish the container (its trailer, the end of the stream)."""
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()

    def abandon(self) -> None:
        """Close without flushing the encoder: writing failed, and what it still holds cannot be written."""
        try:
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            log.debug("closing a broken container: %s", exc)


def codec_options(codec: str, options: EncoderOptions, *, live: bool) -> dict[str, str]:
    """The encoder's private options: preset, tuning for latency when live, constant quality without a bitrate."""
    opts = {"preset": options.preset or DEFAULT_PRESETS[codec]}
    if codec == X264:
        if live:
            opts["tune"] = "zerolatency"
        if not options.bitrate:
            opts["crf"] = str(options.crf)
    else:
        if live:
            opts["tune"] = "ll"
        if not options.bitrate:
            opts |= {"rc": "vbr", "cq": str(options.crf)}
    return opts
