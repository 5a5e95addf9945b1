"""File outputs' path templates: ``{tag}`` and strftime codes of a frame's capture time, filled in per frame."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

TAG = "{tag}"


def is_template(path: Path) -> bool:
    return TAG in str(path) or "%" in str(path)


def fixed_part(path: Path) -> Path:
    """The part of a template before anything filled in per frame: where the files are, and retention looks."""
    return Path(*itertools.takewhile(lambda part: "{" not in part and "%" not in part, path.parts))


def fill(template: Path, tag: str, captured_at: float) -> str:
    """``template`` with ``{tag}`` and the strftime codes (%% for a %) of ``captured_at`` (local time) filled in."""
    return time.strftime(str(template).replace(TAG, tag.replace("%", "%%")), time.localtime(captured_at))
