"""An in-memory bus (``memory://NAME``) for unit tests of module kinds, in the spirit of Dramatiq's StubBroker.

Messages go through Dramatiq StubBrokers, one per bus, frames and flow state live in dicts. Buses connected to
the same NAME in one process share the queues and all the state, so a test can give an input, a processor and an
output each their own context, as if each ran in its own process.
Nothing survives the process: it is a test double, not a broker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from queue import Queue
from typing import Any, ClassVar
from urllib.parse import urlsplit

from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker, _StubConsumer
from dramatiq.common import dq_name
from dramatiq.errors import QueueNotFound

from ...config.schema import ServiceOptions
from ...errors import FrameMissing
from ..base import Bus, Flow, FrameStore
from ..counts import Deltas, Reports
from ..middleware import stage_middleware


@dataclass
class _Frame:
    data: bytes
    expires: float  # monotonic
    refs: int


class _HandBackConsumer(_StubConsumer):
    """StubBroker's consumer, except that a stopping worker's prefetched messages go back to their queue.

    StubBroker's own consumer does nothing on ``requeue``: a stage that stopped would lose the messages it had
    prefetched but not started, which no real broker does (and ``join`` would wait for them forever).
    """

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        for message in messages:
            self.queue.put(message.encode())
            self.queue.task_done()  # the get that took it is done; the put counts it again
            self.prefetch_semaphore.release()


@dataclass
class MemoryState:
    """What every MemoryBus of one name shares: queues, dead letters, frames and flow state."""

    queues: dict[str, Queue] = field(default_factory=dict)  # by name, delay queues too
    dead_letters: defaultdict[str, list[MessageProxy]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames: dict[str, _Frame] = field(default_factory=dict)
    in_flight: defaultdict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    seq: Counter[str] = field(default_factory=Counter)
    totals: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    reports: Reports = field(default_factory=dict)

    def end(self, stream: str, key: str) -> None:
        self.frames.pop(key, None)
        self.in_flight[stream].pop(key, None)


class MemoryBroker(StubBroker):
    """Dramatiq's StubBroker on the queues of a MemoryState: one per bus, as each process has a broker of its own
    (its actors and middleware: a restarted stage or a second worker of one declares its actor again), with the
    queues and dead letters of every bus of the name."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(middleware=stage_middleware())
        self.queues = state.queues
        self.dead_letters_by_queue = state.dead_letters
        self._lock = state.lock

    def declare_queue(self, queue_name: str) -> None:
        """Create the queue unless another bus did; declare it to this broker's middleware (workers) once."""
        delayed = dq_name(queue_name)
        if delayed in self.delay_queues:
            return
        with self._lock:
            self.queues.setdefault(queue_name, Queue())
            self.queues.setdefault(delayed, Queue())
        self.emit_before("declare_queue", queue_name)
        self.emit_after("declare_queue", queue_name)
        self.delay_queues.add(delayed)
        self.emit_after("declare_delay_queue", delayed)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 100) -> _HandBackConsumer:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return _HandBackConsumer(self.queues[queue_name], self.dead_letters_by_queue[queue_name], prefetch, timeout)


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

    def write_reports(self, reports: Reports) -> None:
        with self.state.lock:
            for stream, fields in reports.items():
                if fields["at"] >= self.state.reports.get(stream, {}).get("at", 0):
                    self.state.reports[stream] = dict(fields)

    def reports(self) -> Reports:
        self.flush_counts()
        with self.state.lock:
            return {stream: dict(fields) for stream, fields in self.state.reports.items()}


class MemoryBus(Bus):
    frame_stores = ("broker",)
    states: ClassVar[dict[str, MemoryState]] = {}
    _states_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str, service: ServiceOptions) -> None:
        name = urlsplit(url).netloc or urlsplit(url).path or "default"
        with self._states_lock:
            self.state = self.states.setdefault(name, MemoryState())
        self.broker = MemoryBroker(self.state)
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
        q = self.state.queues.get(queue)
        return q.qsize() if q is not None else 0

    def close(self) -> None:
        """Write this process's counts; the queues stay for the other buses of the name."""
        self.flow.close()


__all__ = ["MemoryBus"]
