"""An in-memory bus (``memory://NAME``) for unit tests of module kinds, in the spirit of Dramatiq's StubBroker.

Messages go through a StubBroker, frames and flow state live in dicts. Buses connected to the same NAME in
one process share all of it, so a test can give an input, a processor and an output each their own context.
Nothing survives the process: it is a test double, not a broker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from dramatiq.brokers.stub import StubBroker

from ...config.schema import ServiceOptions
from ...errors import FrameMissing
from ..base import Bus, Flow, FrameStore
from ..counts import Deltas
from ..middleware import stage_middleware


@dataclass
class _Frame:
    data: bytes
    expires: float  # monotonic
    refs: int


@dataclass
class MemoryState:
    """What every MemoryBus of one name shares."""

    broker: StubBroker = field(default_factory=lambda: StubBroker(middleware=stage_middleware()))
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames: dict[str, _Frame] = field(default_factory=dict)
    in_flight: defaultdict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    seq: Counter[str] = field(default_factory=Counter)
    totals: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def end(self, stream: str, key: str) -> None:
        self.frames.pop(key, None)
        self.in_flight[stream].pop(key, None)


class MemoryFrameStore(FrameStore):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        with self.state.lock:
            self.state.frames[key] = _Frame(bytes(data), time.monotonic() + ttl, refs)
        return {}

    def get(self, key: str) -> bytes:
        with self.state.lock:
            frame = self.state.frames.get(key)
            if frame is None or frame.expires < time.monotonic():
                raise FrameMissing(f"frame {key} expired or was released")
            return frame.data

    def release(self, key: str, stream: str) -> bool:
        with self.state.lock:
            frame = self.state.frames.get(key)
            if frame is not None and frame.refs > 1:
                frame.refs -= 1
                return False
            self.state.end(stream, key)
            return True

    def discard(self, key: str, stream: str) -> None:
        with self.state.lock:
            self.state.end(stream, key)


class MemoryFlow(Flow):
    def __init__(self, state: MemoryState) -> None:
        super().__init__()
        self.state = state

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        now = time.monotonic()
        with self.state.lock:
            table = self.state.in_flight[stream]
            for old in [k for k, expires in table.items() if expires <= now]:
                del table[old]
            if len(table) >= limit:
                return False
            table[key] = now + ttl
            return True

    def next_seq(self, stream: str) -> int:
        with self.state.lock:
            self.state.seq[stream] += 1
            return self.state.seq[stream]

    def in_flight(self, stream: str | None = None) -> int:
        now = time.monotonic()
        with self.state.lock:
            tables = [self.state.in_flight[stream]] if stream else list(self.state.in_flight.values())
            return sum(expires > now for table in tables for expires in table.values())

    def write_counts(self, deltas: Deltas) -> None:
        with self.state.lock:
            for stream, amounts in deltas.items():
                self.state.totals[stream].update(amounts)

    def counters(self) -> dict[str, dict[str, int]]:
        self.flush_counts()
        with self.state.lock:
            return {stream: dict(values) for stream, values in self.state.totals.items()}


class MemoryBus(Bus):
    frame_stores = ("broker",)
    states: ClassVar[dict[str, MemoryState]] = {}
    _states_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str, service: ServiceOptions) -> None:
        name = urlsplit(url).netloc or urlsplit(url).path or "default"
        with self._states_lock:
            self.state = self.states.setdefault(name, MemoryState())
        self.broker = self.state.broker
        self.frames = MemoryFrameStore(self.state)
        self.flow = MemoryFlow(self.state)

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the state of ``name`` (between tests)."""
        with cls._states_lock:
            cls.states.pop(name, None)

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        self.broker.declare_queue(queue)  # a StubBroker refuses messages for queues nobody declared
        super().send(queue, payload)

    def ping(self) -> None:
        """Always answers: it is in this process."""

    def pending(self, queue: str) -> int:
        q = self.broker.queues.get(queue)
        return q.qsize() if q is not None else 0

    def close(self) -> None:
        """Write this process's counts; the shared broker stays for the other buses of the name."""
        self.flow.close()


__all__ = ["MemoryBus"]
