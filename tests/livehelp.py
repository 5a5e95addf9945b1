"""Run a live input (rtsp, rtmp, mjpeg) in a thread on a bus, and read its counters, state and frames."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from framefarm.bus import connect
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import ServiceOptions
from framefarm.ingest.base import Input
from framefarm.modules.context import ModuleContext

from harness import QUEUE

LOGGER = "live-test"


def live_input(
    kind: type[Input],
    tmp_path: Path,
    bus_url: str,
    *,
    alias: str = "cam",
    service: dict | None = None,
    routes: Routes | None = None,
    **options: Any,
) -> Input:
    """An input of ``kind`` on the bus at ``bus_url`` whose frames go to the queue ``harness.QUEUE`` (or by
    ``routes``); quick reconnects (0.2 s, at most 1 s) unless ``reconnect`` says otherwise."""
    settings = ServiceOptions(broker=bus_url, runtime_dir=tmp_path / "run", **(service or {}))
    raw = {"name": kind.kind_name(), "alias": alias, "tag": alias, "reconnect": {"initial": 0.2, "max": 1}, **options}
    ctx = ModuleContext(
        alias=alias,
        options=kind.Options.model_validate(raw),
        service=settings,
        routes=routes or Routes(processors=(), outputs=(Stage(QUEUE, "*"),)),
        bus=connect(bus_url, settings),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger(f"{LOGGER}.{alias}"),
    )
    return kind(ctx)


def counts(module: Input) -> dict[str, int]:
    return module.ctx.bus.flow.counters().get(module.ctx.alias, {})


def report(module: Input) -> dict[str, Any]:
    return module.ctx.bus.flow.reports().get(module.ctx.alias, {})
