"""What is running now, read from the runtime dir rather than from a config file that may since have changed.

``pipectl status``, ``-s quit|stop|reopen`` act on the running pipeline even when the file on disk was
edited into something invalid, as nginx's signals do: the file is read only for ``service.runtime_dir``.
``${VAR}``s expand from the running master's environment, the one its modules expand them from, not from
the shell that happens to send the signal (see ``master_environ``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..bus import backend
from ..bus.base import Bus
from ..config.envexpand import expand
from ..config.schema import ServiceOptions
from ..config.yamlpos import find_value, read_text
from ..errors import BusError, MasterError
from .control import Master
from .render import WEB_SECTION, Layout

DEFAULT_RUNTIME_DIR = "run"
RUNTIME_DIR_LOC = ("service", "runtime_dir")
PROC_ENVIRON = "/proc/{pid}/environ"


def runtime_dir_of(config: Path) -> Path:
    """The runtime dir ``config`` names, read leniently: a file broken elsewhere (a YAML error after the
    ``service`` section, bytes that are not UTF-8 in a comment, invalid options) still names it."""
    text, problem = read_text(config, lenient=True)
    if text is None:
        raise MasterError(f"cannot find the running pipeline: {problem}")
    known, raw = find_value(config, text, RUNTIME_DIR_LOC)
    if not known:
        raise MasterError(
            f"cannot find the running pipeline: {config} does not say its service.runtime_dir readably "
            f"(see `pipectl -t -c {config}`); fix the file as far as that line"
        )
    missing: list[str] = []
    value = expand(str(raw or DEFAULT_RUNTIME_DIR), os.environ, lambda _loc, name: missing.append(name))
    if missing:
        raise MasterError(f"service.runtime_dir in {config} uses ${{{missing[0]}}}, which is not set")
    return (config.resolve().parent / value).resolve()


def master_environ(pid: int | None) -> Mapping[str, str]:
    """The environment supervisord (``pid``) was started with, which every module inherits; where it cannot
    be read (no /proc), this process's own."""
    if pid is None:
        return os.environ
    try:
        data = Path(PROC_ENVIRON.format(pid=pid)).read_bytes()
    except OSError:
        return os.environ
    pairs = (entry.partition(b"=") for entry in data.split(b"\0") if b"=" in entry)
    return {os.fsdecode(key): os.fsdecode(value) for key, _, value in pairs}


@dataclass(frozen=True)
class Running:
    """The applied configuration: one snapshot per module, as supervisord.conf names them, and the master's
    environment."""

    layout: Layout
    snapshots: list[dict[str, Any]]
    env: Mapping[str, str]

    @classmethod
    def of(cls, config: Path) -> Running:
        return cls.at(Layout(runtime_dir_of(config)))

    @classmethod
    def at(cls, layout: Layout) -> Running:
        """The pipeline running in ``layout``'s runtime dir; MasterError when none runs there."""
        master = Master(layout)
        if not master.running():
            raise MasterError(f"not running in {layout.root}")
        found = [_snapshot(path) for path in sorted(layout.modules.glob("*.json")) if layout.names(path)]
        snapshots = [snapshot for snapshot in found if snapshot is not None and snapshot["section"] != WEB_SECTION]
        return cls(layout, snapshots, master_environ(master.pid()))

    @property
    def master(self) -> Master:
        return Master(self.layout)

    def aliases(self, section: str) -> list[str]:
        return [s["alias"] for s in self.snapshots if s["section"] == section]

    def expand(self, raw: Any, what: str) -> Any:
        """``raw`` with ``${VAR}``s from the master's environment; MasterError naming a variable it lacks."""
        missing: list[str] = []
        value = expand(raw, self.env, lambda _loc, name: missing.append(name))
        if missing:
            raise MasterError(f"{what} uses ${{{missing[0]}}}, which the running pipeline's environment lacks")
        return value

    def service(self) -> ServiceOptions:
        raw = self.snapshots[0]["service"] if self.snapshots else {}
        try:
            return ServiceOptions.model_validate(self.expand(raw, "service"))
        except ValidationError as exc:  # its str() quotes the values, which may hold a password: keys only
            keys = ", ".join(".".join(map(str, item["loc"])) for item in exc.errors())
            raise MasterError(f"the running pipeline's service section is not valid now ({keys})") from exc

    def bus(self) -> Bus:
        """The running pipeline's bus, connected; MasterError when it cannot be built or reached."""
        if not self.snapshots:
            raise MasterError(f"no module snapshots in {self.layout.modules}")
        url = self.expand(self.snapshots[0]["broker"], "service.broker")
        kind = backend(url)
        try:
            bus = kind(url, self.service())
        except (BusError, *kind.transient_errors) as exc:
            raise MasterError(_unreachable(exc)) from exc
        try:
            bus.ping()
        except (BusError, *kind.transient_errors) as exc:
            bus.close()
            raise MasterError(_unreachable(exc)) from exc
        return bus


def _snapshot(path: Path) -> dict[str, Any] | None:
    """A module's snapshot; None when a reload pruned it since the folder was listed."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MasterError(f"cannot read the running module's snapshot {path}: {exc}") from exc


def _unreachable(exc: Exception) -> str:
    """The backends' own BusError already says the broker does not answer; a library's error does not."""
    return str(exc) if isinstance(exc, BusError) else f"the broker does not answer: {exc}"
