"""Finding module kinds: every module of the built-in kind packages, then third-party entry points.

A built-in kind is one file in ``ingest/``, ``tasks/`` or ``outputs/`` that registers itself; nothing lists it.
A kind that fails to import is reported (``pipectl -t`` prints it), not fatal: the others still load.
"""

from __future__ import annotations

import logging
import pkgutil
from importlib import import_module

from .config.registry import load_plugins

log = logging.getLogger(__name__)

KIND_PACKAGES = ("framefarm.ingest", "framefarm.tasks", "framefarm.outputs")

_failures: list[str] | None = None


def builtin_modules() -> list[str]:
    """Every module of the kind packages (shared ones such as base.py register nothing, which is fine)."""
    names = []
    for package in KIND_PACKAGES:
        path = import_module(package).__path__
        names.extend(f"{package}.{info.name}" for info in pkgutil.iter_modules(path) if not info.ispkg)
    return sorted(names)


def load_kinds() -> list[str]:
    """Register every kind once per process; return the kinds and plugins that failed to load."""
    global _failures
    if _failures is None:
        _failures = []
        for module in builtin_modules():
            try:
                import_module(module)
            except Exception as exc:
                _failures.append(f"built-in module {module}: {exc!r}")
                log.error("cannot load %s", _failures[-1])
        _failures.extend(load_plugins())
    return _failures
