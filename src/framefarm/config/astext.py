"""Typed YAML scalars taken as text where an option expects text, as fluent-bit takes every value.

YAML reads ``alias: 12`` as an int, ``tag: 2024-01-01`` as a date and ``tag: 1.10`` as the float 1.1; an
option that takes text gets the scalar's text as written in the file (``12``, ``2024-01-01``, ``1.10``),
never Python's rendering of the typed value.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .yamlpos import Loc

TEXT_ERRORS = frozenset({"string_type", "path_type"})  # pydantic's "not a string", "not a path"


def text_fixes(error: ValidationError, base: Loc, texts: dict[Loc, str]) -> dict[Loc, str]:
    """{key path within the model at ``base``: text as written} for each "not text" error on a typed scalar;
    ``texts`` maps the file's key paths to those scalars' text (``Document.texts``)."""
    fixes: dict[Loc, str] = {}
    for item in error.errors():
        if item["type"] not in TEXT_ERRORS:
            continue
        full = (*base, *item["loc"])
        for end in range(len(full), len(base), -1):  # a union adds its member's name after the key
            if full[:end] in texts:
                fixes[full[len(base) : end]] = texts[full[:end]]
                break
    return fixes


def with_texts(data: Any, fixes: dict[Loc, str]) -> Any:
    """A copy of ``data`` with the non-string values at the paths of ``fixes`` replaced by their text."""

    def walk(value: Any, loc: Loc) -> Any:
        if loc in fixes and not isinstance(value, str):
            return fixes[loc]
        if isinstance(value, dict):
            return {key: walk(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    return walk(data, ())
