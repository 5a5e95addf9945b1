"""Which output layout a YOLO export has, decided once from its output shape when the model loads.

Three layouts exist in the wild, and a wrong guess decodes garbage rather than failing, so the rule
is fixed, documented and strict (`detect_format`); a model it cannot place raises ModelError naming
the `format` option that settles it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from framefarm.errors import ModelError

OUTPUT_RANK = 3
BOX_VALUES = 4
"""cx, cy, w, h (or x1, y1, x2, y2 for end2end)."""
END2END_VALUES = 6
"""x1, y1, x2, y2, score, class per row of an NMS-free export."""
MAX_END2END_ROWS = 300
"""End-to-end exports keep at most this many boxes (Ultralytics' max_det); YOLOv5 grids have far more rows."""
METADATA_END2END_KEY = "end2end"
"""Ultralytics writes "True"/"False" here; when present it decides end2end outright."""


class OutputFormat(StrEnum):
    """A YOLO output layout; `AUTO` asks `detect_format` to pick one from the shape."""

    AUTO = "auto"
    YOLOV8 = "yolov8"
    """[N, 4+C, A]: YOLOv8, YOLO11, YOLOv9; class scores are the confidence; needs NMS."""
    YOLOV5 = "yolov5"
    """[N, A, 5+C]: YOLOv5, YOLOv7; confidence = objectness x class score; needs NMS."""
    END2END = "end2end"
    """[N, K, 6]: YOLOv10, YOLO26; x1, y1, x2, y2, score, class in input pixels; NMS-free."""


def _end2end_hint(metadata: Mapping[str, str]) -> bool | None:
    raw = metadata.get(METADATA_END2END_KEY)
    return None if raw is None else raw.strip().lower() == "true"


def _fits(fmt: OutputFormat, rows: int, cols: int) -> bool:
    """Whether a [N, rows, cols] output can be `fmt` at all (enough values per box)."""
    if fmt is OutputFormat.YOLOV8:
        return rows > BOX_VALUES
    if fmt is OutputFormat.YOLOV5:
        return cols > BOX_VALUES + 1
    return cols == END2END_VALUES


def _guess(rows: int, cols: int, metadata: Mapping[str, str]) -> OutputFormat | None:
    """The auto rule, in order; None when it cannot tell."""
    end2end = _end2end_hint(metadata)
    if cols == END2END_VALUES and (end2end or (end2end is None and rows <= MAX_END2END_ROWS)):
        return OutputFormat.END2END
    if rows < cols:
        return OutputFormat.YOLOV8
    if rows > cols:
        return OutputFormat.YOLOV5
    return None


def detect_format(
    shape: Sequence[int], requested: OutputFormat | str = OutputFormat.AUTO, metadata: Mapping[str, str] | None = None
) -> OutputFormat:
    """Decide how to decode a model whose output is `shape` = [N, rows, cols] (concrete numbers).

    `auto` applies, in order:
      1. cols == 6 and the export's `end2end` metadata is "True" -> end2end; without that metadata,
         cols == 6 and rows <= 300 -> end2end (metadata "False" skips this step);
      2. rows < cols -> yolov8 (anchors outnumber the 4+C values per anchor);
      3. rows > cols -> yolov5 (anchors are the rows);
      4. rows == cols -> ModelError: the shape says nothing, set `format`.
    A single-class YOLOv5 run at a tiny input ([N, <=300, 6]) would be taken for end2end by rule 1:
    set `format: yolov5` for it. An explicit format is checked against the shape, never guessed over.
    """
    if len(shape) != OUTPUT_RANK:
        raise ModelError(f"output shaped {list(shape)} is not [N, rows, cols]; no known YOLO layout has it")
    rows, cols = int(shape[1]), int(shape[2])
    fmt = OutputFormat(requested)
    if fmt is OutputFormat.AUTO:
        guessed = _guess(rows, cols, metadata or {})
        if guessed is None:
            raise ModelError(
                f"output shaped {list(shape)} is ambiguous (as many rows as columns); "
                "set `format` to yolov8, yolov5 or end2end"
            )
        fmt = guessed
    if not _fits(fmt, rows, cols):
        raise ModelError(f"output shaped {list(shape)} cannot be format {fmt.value}; set `format` to the right one")
    return fmt


def class_count(fmt: OutputFormat, shape: Sequence[int]) -> int | None:
    """How many classes the output scores, where the layout says (end2end rows carry only an id)."""
    if fmt is OutputFormat.YOLOV8:
        return int(shape[1]) - BOX_VALUES
    if fmt is OutputFormat.YOLOV5:
        return int(shape[2]) - BOX_VALUES - 1
    return None
