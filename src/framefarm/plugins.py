"""The built-in module kinds, imported in one place; third-party kinds come through entry points."""

from __future__ import annotations

from .config.registry import load_plugins

BUILTIN_KINDS = [
    "framefarm.ingest.dir_images",
    "framefarm.ingest.dir_videos",
    "framefarm.tasks.yolo",
    "framefarm.outputs.image_files",
]

_failures: list[str] | None = None


def load_kinds() -> list[str]:
    """Register every kind once per process; return the plugins that failed to load."""
    global _failures
    if _failures is None:
        _failures = load_plugins(BUILTIN_KINDS)
    return _failures
