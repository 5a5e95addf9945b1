"""The result formats every output writes: JSON per frame and YOLO text lines."""

from __future__ import annotations

import json
from typing import Any

from .message import FrameMessage

YOLO_DECIMALS = 6


def result_json(message: FrameMessage) -> dict[str, Any]:
    """The result of one frame; ``id`` is unique per frame, so a receiver can drop one delivered twice."""
    return {
        "id": message.frame_id,
        "stream": message.stream,
        "source": message.source,
        "seq": message.seq,
        "pts": message.pts,
        "captured_at": message.captured_at,
        "width": message.width,
        "height": message.height,
        "model": message.model,
        "detections": message.detections or [],
    } | ({"event": message.event} if message.event is not None else {})


def yolo_header(message: FrameMessage, **extra: Any) -> str:
    """The line before a frame's YOLO lines when they travel alone: ``# {"id": ..., "stream": ..., ...}``."""
    fields = {"id": message.frame_id, "stream": message.stream, "seq": message.seq, "source": message.source}
    return "# " + json.dumps(fields | extra, ensure_ascii=False) + "\n"


def reply_payload(message: FrameMessage) -> dict[str, Any]:
    """What ``message.reply`` is sent once the frame's detections are ready (read by ingest/replies.py)."""
    return {"id": message.frame_id, "result": result_json(message)}


def failure_payload(key: str, error: str) -> dict[str, Any]:
    """What a frame's reply queue is sent when no result will come: the frame was given up (read by replies.py)."""
    return {"id": key.rpartition(":")[2], "error": error}


def yolo_text(message: FrameMessage) -> str:
    """``class_id cx cy w h confidence`` per detection, 6 decimals; empty when nothing was found."""
    return "".join(
        " ".join([str(d["class_id"]), *(f"{v:.{YOLO_DECIMALS}f}" for v in (*d["yolo"], d["confidence"]))]) + "\n"
        for d in message.detections or []
    )
