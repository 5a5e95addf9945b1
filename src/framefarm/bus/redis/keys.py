"""The Redis keys framefarm uses, all under the bus's one namespace."""

from __future__ import annotations

from ..base import NAMESPACE


def key(*parts: str) -> str:
    return ":".join((NAMESPACE, *parts))
