"""Run one input module in a thread on the in-memory bus, and read what it queued."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dramatiq

from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.bus.memory import MemoryBus
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import ServiceOptions
from framefarm.ingest.base import Input
from framefarm.message import FrameMessage
from framefarm.modules.context import ModuleContext

QUEUE = "sink"


def memory_url() -> str:
    """A fresh in-memory bus; inputs made with the same URL share its queues, frames and flow state."""
    return f"memory://{uuid.uuid4().hex}"


def make_input(
    kind: type[Input], tmp_path: Path, bus_url: str, service: ServiceOptions | None = None, **options: object
) -> Input:
    service = service or ServiceOptions(runtime_dir=tmp_path / "run")
    (tmp_path / "in").mkdir(exist_ok=True)
    raw = {"name": kind.kind_name(), "alias": "uploads", "tag": "t", "path": "in", "settle": 0.2, **options}
    ctx = ModuleContext(
        alias="uploads",
        options=kind.Options.model_validate(raw),
        service=service,
        routes=Routes(processors=(), outputs=(Stage(QUEUE, "*"),)),
        bus=connect(bus_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger("test"),
    )
    return kind(ctx)


@contextmanager
def running(module: Input) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=module.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def queued(bus: Bus) -> list[FrameMessage]:
    """Messages waiting in the sink queue, oldest first (read without consuming)."""
    assert isinstance(bus, MemoryBus)
    waiting = bus.broker.queues.get(QUEUE)
    encoded = list(waiting.queue) if waiting is not None else []
    return [FrameMessage.model_validate(dramatiq.Message.decode(data).args[0]) for data in encoded]
