"""The message that travels between modules: a frame-store key and metadata, never pixels."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FrameMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stream: str  # the input's tag
    input: str  # the input's alias: the stream whose in-flight bound this frame counts against
    source: str  # file name or URL without credentials
    seq: int
    pts: float | None = None
    frame_index: int | None = None  # position in a video file
    rate: float | None = None  # the stream's frame rate as published (its nominal rate within the input's fps)
    captured_at: float
    width: int  # of the original frame: results are reported in its pixels
    height: int
    scale: float = 1.0  # stored frame size / original size, below 1 when the input pre-shrank it
    key: str  # frame store key
    format: str  # jpeg, png, bmp, webp, raw (BGR), i420 (video planes: see vision.codec)
    expires_at: float | None = None  # skip instead of processing after this wall-clock time
    tapped: bool = False  # also sent undetected to outputs that show every frame (boxes: latest)
    reply: str | None = None  # a queue of the input that wants the result once the processors are done
    frame: bytes | None = Field(None, repr=False)  # the frame itself, when the store keeps frames inline
    model: str | None = None
    detections: list[dict[str, Any]] | None = None
    # A camera's event (onvif_events) instead of a frame: nothing is stored under ``key``; topic, source and data
    # (the event's simple items), utc, operation (ONVIF's PropertyOperation).
    event: dict[str, Any] | None = None

    @property
    def frame_id(self) -> str:
        """The id a client was given for this frame: the last part of its key (see bus.base.frame_key)."""
        return self.key.rpartition(":")[2]

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the frame as stored, which raw frames need to be decoded."""
        if self.scale == 1.0:
            return self.width, self.height
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    def is_stale(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) > self.expires_at
