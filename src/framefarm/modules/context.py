"""What a running module gets from the runner: its options (typed per kind), the bus, routes and folders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ..bus.base import Bus
from ..config.routing import Routes
from ..config.schema import ModuleOptions, ServiceOptions

OptionsT = TypeVar("OptionsT", bound=ModuleOptions)


@dataclass
class ModuleContext(Generic[OptionsT]):
    alias: str
    options: OptionsT  # the kind's Options model
    service: ServiceOptions
    routes: Routes
    bus: Bus
    base_dir: Path  # the config file's folder: relative paths in options resolve here
    runtime_dir: Path
    log: logging.Logger

    def resolve(self, path: Path | str) -> Path:
        return (self.base_dir / Path(path).expanduser()).resolve()

    def state_dir(self) -> Path:
        """A folder for this module's durable state (ledgers), kept across restarts."""
        path = self.runtime_dir / "state"
        path.mkdir(parents=True, exist_ok=True)
        return path
