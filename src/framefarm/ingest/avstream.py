"""The PyAV live source that ``rtsp`` and ``rtmp`` share: open with per-protocol options and timeouts, pick a
hardware decoder or fall back, decode every packet, hand each frame on.

Every call into ffmpeg is bounded: the open by ``open_timeout``, each read by ``read_timeout`` (PyAV's
``timeout=(open, read)`` interrupts a blocked call), plus the protocol's own socket timeout. Without them a camera
that accepts a connection and then says nothing would hold the reader forever. Low-latency options
(``analyzeduration``, ``probesize``, ``fflags=nobuffer``) make the open take about a second instead of five, and
keep frames from waiting in ffmpeg's buffers.

ffmpeg's errors are translated at this edge into SourceUnavailable, with ffmpeg's reason but never the URL it
quotes (it would carry the password); the source is named by its redacted URL.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

import av
from av.codec.hwaccel import HWAccel, hwdevices_available
from pydantic import Field

from ..config.types import Duration
from ..config.urls import redact_text
from ..errors import SourceUnavailable
from .folder import DEFAULT_MAX_PIXELS
from .live import Captured, LiveInput, LiveOptions, Session
from .video import Decoded, encode_for_store, frame_pts, nominal_rate

US = 1_000_000  # ffmpeg's timeouts and durations are in microseconds
DEFAULT_ANALYZEDURATION_S = 1.0
DEFAULT_PROBESIZE = 500_000
AUTO_DEVICES = ("cuda", "vaapi")  # what hwaccel: auto tries, in order, where this ffmpeg has them
TIMED_OUT_SHARE = 0.9  # an error after this share of its timeout is reported as a timeout


class AvStreamOptions(LiveOptions):
    """Options of the PyAV stream kinds (rtsp, rtmp)."""

    hwaccel: Literal["none", "auto", "cuda", "vaapi"] = Field(
        "none",
        description="Decode on a GPU where ffmpeg offers it; auto tries cuda, then vaapi. A device that cannot "
        "decode the stream falls back to software, logged once.",
    )
    keyframes_only: bool = Field(
        False, description="Decode only keyframes (about one a second on most cameras): cheap sampling of many."
    )
    analyzeduration: Duration = Field(
        DEFAULT_ANALYZEDURATION_S,
        description="How much of the stream ffmpeg reads to learn its format before the first frame; shorter "
        "opens faster, too short may miss the stream's parameters.",
    )
    probesize: int = Field(
        DEFAULT_PROBESIZE, ge=32, description="Most bytes ffmpeg reads to learn the stream's format (bytes)."
    )
    low_latency: bool = Field(
        True, description="fflags=nobuffer and flags=low_delay: frames leave ffmpeg's buffers at once."
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Refuse (and reconnect later) a stream whose frames are larger."
    )


AO = TypeVar("AO", bound=AvStreamOptions)


class NoPeer(SourceUnavailable):
    """Nobody connected or answered within the timeout (ffmpeg's ETIMEDOUT): for a listener, nobody pushed yet."""


class AvStream(LiveInput[AO]):
    """A live input read with PyAV: a kind names the URL to open and its protocol's options."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.software_only = self.options.hwaccel == "none"  # set once a device failed: logged once, never retried

    @abstractmethod
    def url(self) -> str:
        """The URL to open, credentials included."""

    @abstractmethod
    def protocol_options(self) -> dict[str, str]:
        """The protocol's own ffmpeg options: transport, socket timeout, listen."""

    def open_options(self) -> dict[str, str]:
        options = {
            "analyzeduration": str(int(self.options.analyzeduration * US)),
            "probesize": str(self.options.probesize),
        }
        if self.options.low_latency:
            options |= {"fflags": "nobuffer", "flags": "low_delay"}
        return options | self.protocol_options()

    def timeouts(self) -> tuple[float | None, float]:
        """PyAV's (open, read) timeouts."""
        return self.options.open_timeout, self.options.read_timeout

    def capture(self, session: Session) -> Iterator[Captured]:
        container = self.open()
        try:
            session.expect(True)
            yield from self.frames(container, session)
        finally:
            container.close()

    def frames(self, container: av.container.InputContainer, session: Session) -> Iterator[Captured]:
        """Decode the container's video until it ends or ``session.stop``; SourceUnavailable if it breaks off."""
        if not container.streams.video:
            raise SourceUnavailable(f"{self.source}: no video stream")
        stream = container.streams.video[0]
        if self.options.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        hw = " on the GPU" if stream.codec_context.is_hwaccel else ""
        detail = f"{stream.codec_context.name} {stream.codec_context.width}x{stream.codec_context.height}{hw}"
        decoded = Decoded(container, stream, self.options.max_pixels)
        rate = nominal_rate(stream, None)
        for frame in decoded:
            yield Captured(frame, time.time(), frame_pts(frame), rate, detail)
            if session.stop.is_set():
                return
        if decoded.broken_off is not None:
            raise SourceUnavailable(redact_text(f"{self.source}: {decoded.broken_off}"))

    def encode(self, captured: Captured) -> tuple[bytes, dict[str, Any]]:
        return encode_for_store(captured.item, self.ctx.service, self.publisher.max_side)

    # -- opening --

    def open(self) -> av.container.InputContainer:
        """The source, open, on a GPU decoder if asked and one works, else in software (said once)."""
        if self.software_only:
            return self.av_open(None)
        failures = []
        for device in self._devices():
            try:
                container = self.av_open(HWAccel(device, allow_software_fallback=True))
            except NoPeer:
                raise  # the peer is away, not the device's fault
            except SourceUnavailable as exc:
                failures.append(f"{device}: {exc}")
                continue
            video = container.streams.video
            if video and video[0].codec_context.is_hwaccel:
                return container
            failures.append(f"{device}: the decoder does not use it for this stream")
            container.close()
        container = self.av_open(None)  # raises when the source is at fault, not the device
        self.software_only = True
        tried = "; ".join(failures) or f"this ffmpeg has no {' or '.join(self._wanted())} device"
        self.ctx.log.warning("hwaccel %s unavailable (%s); decoding in software", self.options.hwaccel, tried)
        return container

    def _wanted(self) -> tuple[str, ...]:
        return AUTO_DEVICES if self.options.hwaccel == "auto" else (self.options.hwaccel,)

    def _devices(self) -> list[str]:
        available = set(hwdevices_available())
        return [device for device in self._wanted() if device in available]

    def av_open(self, hwaccel: HWAccel | None) -> av.container.InputContainer:
        """``av.open`` with this kind's options and timeouts; SourceUnavailable (no URL in it) if it fails."""
        started = time.monotonic()
        try:
            return av.open(self.url(), options=self.open_options(), timeout=self.timeouts(), hwaccel=hwaccel)
        except av.error.TimeoutError as exc:
            raise NoPeer(self.why(exc, time.monotonic() - started)) from None
        except (av.FFmpegError, OSError) as exc:
            # not chained: ffmpeg's own message quotes the URL, password and all, and a traceback would show it
            raise SourceUnavailable(self.why(exc, time.monotonic() - started)) from None

    def why(self, exc: BaseException, elapsed: float) -> str:
        """A failure's reason for the log and the state, without the URL ffmpeg quotes."""
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        timeout = self.options.open_timeout
        if isinstance(exc, av.ExitError) or elapsed >= TIMED_OUT_SHARE * timeout:
            reason = f"no answer within {timeout:g}s ({reason})"
        return redact_text(f"{self.source}: {reason}")
