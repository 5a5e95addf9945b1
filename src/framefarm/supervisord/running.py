"""What is running now, read from the runtime dir rather than from a config file that may since have changed.

``pipectl status``, ``-s quit|stop|reopen`` act on the running pipeline even when the file on disk was
edited into something invalid, as nginx's signals do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..bus import connect
from ..bus.base import Bus
from ..config.envexpand import expand
from ..config.schema import ServiceOptions
from ..errors import MasterError
from .control import Master
from .render import Layout

DEFAULT_RUNTIME_DIR = "run"


def runtime_dir_of(config: Path) -> Path:
    """The runtime dir a config file names, read leniently: only ``service.runtime_dir`` must make sense."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        raw = (data.get("service") or {}).get("runtime_dir", DEFAULT_RUNTIME_DIR)
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise MasterError(f"cannot read service.runtime_dir from {config}: {exc}") from exc
    return (config.resolve().parent / expand(str(raw), os.environ, lambda *_: None)).resolve()


@dataclass(frozen=True)
class Running:
    """The applied configuration: one snapshot per module, as supervisord.conf names them."""

    layout: Layout
    snapshots: list[dict[str, Any]]

    @classmethod
    def of(cls, config: Path) -> Running:
        layout = Layout(runtime_dir_of(config))
        if not Master(layout).running():
            raise MasterError(f"not running in {layout.root}")
        snapshots = [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(layout.modules.glob("*.json"))
            if layout.names(path)
        ]
        return cls(layout, snapshots)

    @property
    def master(self) -> Master:
        return Master(self.layout)

    def aliases(self, section: str) -> list[str]:
        return [s["alias"] for s in self.snapshots if s["section"] == section]

    def service(self) -> ServiceOptions:
        raw = self.snapshots[0]["service"] if self.snapshots else {}
        return ServiceOptions.model_validate(expand(raw, os.environ, lambda *_: None))

    def bus(self) -> Bus:
        if not self.snapshots:
            raise MasterError(f"no module snapshots in {self.layout.modules}")
        url = expand(self.snapshots[0]["broker"], os.environ, lambda *_: None)
        return connect(url, self.service())
