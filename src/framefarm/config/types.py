"""Value types shared by every module's options: durations, aliases, tag globs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> object:
    """``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"1d"`` or a number of seconds -> seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'"{value}" is not a duration (examples: 500ms, 30s, 2m, 1h, 1d)')
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]

ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Alias = Annotated[str, Field(pattern=ALIAS_PATTERN, max_length=64)]


def _check_glob(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a tag pattern is a non-empty glob without spaces, e.g. cam.* or *")
    return value


TagGlob = Annotated[str, AfterValidator(_check_glob)]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
