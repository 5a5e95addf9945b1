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


def say_duration(seconds: float | None) -> str:
    """A duration as people say it: 39s, 12m05s, 2h07m; "-" for none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Alias = Annotated[str, Field(pattern=ALIAS_PATTERN, max_length=64)]


def _check_glob(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a tag pattern is a non-empty glob without spaces, e.g. cam.* or *")
    return value


TagGlob = Annotated[str, AfterValidator(_check_glob)]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
PORT_PATTERN = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 0..65535
LISTEN_PATTERN = rf"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):{PORT_PATTERN}$"  # host:port, [v6]:port
