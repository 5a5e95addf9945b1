"""What the network outputs (``http``, ``tcp``, ``udp``) share: filters, the bytes of a result (JSON, or YOLO
text after a header line) with an optional snapshot of the frame, and the timeout every connection has.

A kind implements ``send``; the base decides what is sent. Results may arrive twice (after a worker died before
acking, or a retry of a batch that the receiver did take): each carries the frame's ``id`` to drop repeats by.
"""

from __future__ import annotations

import base64
import json
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

from pydantic import Field

from ..config.registry import CheckContext
from ..config.schema import OutputOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..message import FrameMessage
from ..results import result_json, yolo_header, yolo_text
from ..vision.picture import snapshot_jpeg
from .base import Output

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_SNAPSHOT_MAX_SIDE = 640


class NetworkOutputOptions(OutputOptions):
    classes: list[str | int] | None = Field(
        None, description="Keep only detections of these classes, by name or id; default: all."
    )
    min_confidence: float = Field(0.0, ge=0, le=1, description="Keep only detections at least this confident.")
    only_with_detections: bool = Field(False, description="Send nothing for a frame with no detection left.")
    format: Literal["json", "yolo"] = Field(
        "json", description="json: one result object; yolo: a '# {id, stream, seq, source}' line, then YOLO lines."
    )
    snapshot: Literal["none", "raw", "annotated"] = Field(
        "none", description="Add the frame as a base64 JPEG ('snapshot') to JSON results, as is or with boxes."
    )
    snapshot_max_side: int = Field(
        DEFAULT_SNAPSHOT_MAX_SIDE, ge=16, description="The snapshot's longer side at most (it is shrunk to fit)."
    )
    timeout: Duration = Field(DEFAULT_TIMEOUT_S, gt=0, description="Connect, send and answer timeout.")


NO = TypeVar("NO", bound=NetworkOutputOptions)


class NetworkOutput(Output[NO]):
    relays_events = True

    @classmethod
    def check(cls, options: NO, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        if options.snapshot != "none" and options.format != "json":
            yield ("snapshot",), "a snapshot travels in JSON results: set format: json, or snapshot: none"

    @classmethod
    def frame_side(cls, options: NO, ctx: CheckContext) -> int | None:
        """No frame for results alone; the snapshot's size when there is one."""
        return 0 if options.snapshot == "none" else options.snapshot_max_side

    @abstractmethod
    def send(self, message: FrameMessage) -> None:
        """Send the result of ``message`` (filtered already; see ``document`` and ``body``)."""

    def deliver(self, message: FrameMessage) -> bool:
        kept = self.kept(message)
        if kept is None:
            return False
        self.send(kept)
        return True

    def kept(self, message: FrameMessage) -> FrameMessage | None:
        """``message`` with only the detections the filters keep; None when nothing is to be sent."""
        options = self.options
        wanted = None if options.classes is None else set(options.classes)
        detections = [
            d
            for d in message.detections or []
            if d["confidence"] >= options.min_confidence
            and (wanted is None or d["class_id"] in wanted or d["class_name"] in wanted)
        ]
        if options.only_with_detections and not detections and message.event is None:
            return None
        return message.model_copy(update={"detections": detections})

    def document(self, message: FrameMessage) -> dict[str, Any]:
        """The JSON result, with its snapshot when asked for."""
        result = result_json(message)
        if self.options.snapshot != "none" and message.event is None:
            jpeg = snapshot_jpeg(
                self.ctx.bus.frames.fetch(message),
                message,
                annotated=self.options.snapshot == "annotated",
                max_side=self.options.snapshot_max_side,
            )
            result["snapshot"] = base64.b64encode(jpeg).decode("ascii")
        return result

    def body(self, message: FrameMessage) -> bytes:
        """The result as sent alone: compact JSON (one line), or the YOLO header line and lines."""
        if self.options.format == "yolo":
            return (yolo_header(message) + yolo_text(message)).encode()
        return json.dumps(self.document(message), ensure_ascii=False, separators=(",", ":")).encode()
