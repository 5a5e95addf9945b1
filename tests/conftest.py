"""Fixtures: real servers on free loopback ports, one per test unless said otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from framefarm.bus.memory import MemoryBus
from framefarm.plugins import load_kinds

from harness import memory_url
from peers import Restartable, free_port, nats_server, nsqd_server, redis_server

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "yolov3-tiny-coco.onnx"
NAMES = REPO / "models" / "coco.names"
MEDIA = REPO / "media"

load_kinds()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture
def bus_url() -> Iterator[str]:
    """A fresh in-memory bus (framefarm.bus.memory): for unit tests of module kinds, no server needed."""
    url = memory_url()
    yield url
    MemoryBus.forget(url.removeprefix("memory://"))


BROKERS = ["embedded", "nats", "nsq"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restartable | None]:
    """Each queue backend in turn: None for the embedded Redis (the master runs it), else a real server."""
    if request.param == "embedded":
        yield None
        return
    port, data = free_port(), tmp_path / request.param
    data.mkdir()
    factories = {
        "nats": lambda: nats_server(data, port),
        "nsq": lambda: nsqd_server(data, tcp_port=port, http_port=http_port),
    }
    http_port = free_port()
    server = Restartable(factories[request.param])
    server.start()
    yield server
    server.stop()
