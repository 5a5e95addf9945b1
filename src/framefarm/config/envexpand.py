"""``${VAR}`` and ``${VAR:-default}`` expansion in every string value of a config tree."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .yamlpos import Loc

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")  # groups: name, default


def expand(data: Any, env: Mapping[str, str], on_missing: Callable[[Loc, str], None], loc: Loc = ()) -> Any:
    """Return a copy of ``data`` with variables replaced; unset variables without default are reported."""
    if isinstance(data, dict):
        return {key: expand(value, env, on_missing, (*loc, key)) for key, value in data.items()}
    if isinstance(data, list):
        return [expand(value, env, on_missing, (*loc, i)) for i, value in enumerate(data)]
    if not isinstance(data, str):
        return data

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        on_missing(loc, name)
        return ""

    return VARIABLE.sub(substitute, data)


def variable_value(match: re.Match[str], env: Mapping[str, str]) -> str:
    """What ``expand`` puts in place of one ``VARIABLE`` match."""
    name, default = match.group(1), match.group(2)
    return env.get(name, default if default is not None else "")
