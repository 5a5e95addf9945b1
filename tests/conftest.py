"""Fixtures: real servers on free loopback ports, one per test unless said otherwise."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.bus.memory import MemoryBus
from framefarm.config.schema import ServiceOptions
from framefarm.plugins import load_kinds

from harness import memory_url
from peers import Restartable, free_port, nats_server, nsqd_server, redis_server

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "yolov3-tiny-coco.onnx"
NAMES = REPO / "models" / "coco.names"
MEDIA = REPO / "media"

load_kinds()


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream of the test's own."""
    with nats_server(tmp_path) as url:
        yield url


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


# -- every bus backend, for the contract suite (test_bus_contract.py) and the tests that run on each backend --


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the whole session: for tests that keep to names of their own (see BusEnv)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def shared_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nats-server (JetStream) for the whole session, as shared_redis_url."""
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def shared_nsqd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nsqd for the whole session, as shared_redis_url."""
    with nsqd_server(tmp_path_factory.mktemp("nsqd")) as (url, _http_port):
        yield url


def _redis_service(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"broker": request.getfixturevalue("shared_redis_url")}


def _nats_service(request: pytest.FixtureRequest) -> dict[str, Any]:
    # frames above 1 KB go to its frames stream (smaller ones would travel inline, tests/test_nats_inline.py)
    return {"broker": request.getfixturevalue("shared_nats_url"), "frames": {"max_inline": 1024}}


def _nsq_inline_service(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"broker": request.getfixturevalue("shared_nsqd_url"), "frames": {"store": "inline"}}


def _nsq_redis_service(request: pytest.FixtureRequest) -> dict[str, Any]:
    store = request.getfixturevalue("shared_redis_url").rsplit("/", 1)[0] + "/1"  # beside the redis backend's db 0
    return {"broker": request.getfixturevalue("shared_nsqd_url"), "frames": {"store": store}}


def _memory_service(request: pytest.FixtureRequest) -> dict[str, Any]:
    url = memory_url()
    request.addfinalizer(lambda: MemoryBus.forget(url.removeprefix("memory://")))
    return {"broker": url}


@dataclass(frozen=True)
class Backend:
    """A bus backend as the tests run it, and what it promises beyond what every backend does."""

    name: str
    #: Frames live in a store beside the messages: once released, discarded or expired, ``get`` finds them no
    #: more. False: they travel inline in the messages, and releasing one only ends its in-flight entry.
    keeps_frames: bool
    #: In-flight bounds and sequence numbers are kept by the broker, the same for every connection. False: the
    #: input's own process keeps them (bus/nsq/flow.py) and hears of releases asynchronously.
    shared_flow: bool
    #: The ServiceOptions fields that select this backend; starts (or reuses) the servers it needs.
    service: Callable[[pytest.FixtureRequest], dict[str, Any]]


BACKENDS = (
    Backend("redis", keeps_frames=True, shared_flow=True, service=_redis_service),
    Backend("nats", keeps_frames=True, shared_flow=True, service=_nats_service),
    Backend("nsq-inline", keeps_frames=False, shared_flow=False, service=_nsq_inline_service),
    Backend("nsq-redis", keeps_frames=True, shared_flow=True, service=_nsq_redis_service),
    Backend("memory", keeps_frames=True, shared_flow=True, service=_memory_service),
)


def backends(**promises: bool) -> list[Any]:
    """The backends that make every one of ``promises`` (e.g. ``shared_flow=True``), as parameters for
    ``@pytest.mark.parametrize("backend", backends(...), indirect=True)``."""
    chosen = [b for b in BACKENDS if all(getattr(b, name) == value for name, value in promises.items())]
    return [pytest.param(b, id=b.name) for b in chosen]


class BusEnv:
    """One test's connections to one backend, each like another process's, all closed at teardown.

    Servers are shared by the whole session, so each test gets fresh stream and queue names of its own.
    """

    def __init__(self, backend: Backend, service: ServiceOptions, tmp_path: Path) -> None:
        self.backend = backend
        self.service = service
        self.tmp_path = tmp_path
        token = uuid.uuid4().hex[:10]
        self.stream = f"cam-{token}"
        self.queue = f"stage-{token}"
        self._open: list[Bus] = []

    def connect(self) -> Bus:
        bus = connect(self.service.broker or "", self.service)
        self._open.append(bus)
        return bus

    def close(self, bus: Bus) -> None:
        self._open.remove(bus)
        bus.close()

    def close_all(self) -> None:
        while self._open:
            self.close(self._open[-1])


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each bus backend in turn; narrow it with ``parametrize("backend", backends(...), indirect=True)``."""
    return request.param


@pytest.fixture
def bus_env(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusEnv]:
    service = ServiceOptions(**backend.service(request), runtime_dir=tmp_path / "run")
    env = BusEnv(backend, service, tmp_path)
    yield env
    env.close_all()
