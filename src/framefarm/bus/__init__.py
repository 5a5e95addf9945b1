"""The bus: a Dramatiq broker for messages and a frame store beside it for the bytes.

One backend per subpackage (``redis``, ``nats``, ``nsq``, ``memory``), each exporting its Bus; a backend is
imported only when a URL names its scheme, so a host that uses NATS never imports the NSQ client.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from urllib.parse import urlsplit

from ..config.schema import ServiceOptions
from ..config.yamlpos import Loc
from ..errors import BusError
from .base import Bus

#: URL scheme -> (module, Bus class name).
BACKENDS: dict[str, tuple[str, str]] = {
    "redis": ("framefarm.bus.redis", "RedisBus"),
    "rediss": ("framefarm.bus.redis", "RedisBus"),
    "unix": ("framefarm.bus.redis", "RedisBus"),
    "nats": ("framefarm.bus.nats", "NatsBus"),
    "nsq": ("framefarm.bus.nsq", "NsqBus"),
    "memory": ("framefarm.bus.memory", "MemoryBus"),
}


def backend(url: str) -> type[Bus]:
    """The Bus class for ``url``'s scheme; raises BusError for a scheme no backend serves."""
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        raise BusError(f'unsupported broker URL scheme "{scheme}" (supported: {", ".join(sorted(BACKENDS))})')
    module, name = BACKENDS[scheme]
    return getattr(import_module(module), name)


def connect(url: str, service: ServiceOptions) -> Bus:
    """Build the Bus for ``url``; the scheme picks the backend."""
    return backend(url)(url, service)


EMBEDDED_BROKER_URL = "unix://"  # no broker given: the master starts a Redis on a unix socket


def check_service(service: ServiceOptions) -> Iterator[tuple[Loc, str]]:
    """What the broker's backend says of ``service`` (frame stores it supports, sizes that fit), for ``pipectl -t``,
    start and reload alike."""
    try:
        kind = backend(service.broker or EMBEDDED_BROKER_URL)
    except BusError as exc:
        yield ("service", "broker"), str(exc)
        return
    yield from kind.check(service)


__all__ = ["BACKENDS", "Bus", "backend", "check_service", "connect"]
