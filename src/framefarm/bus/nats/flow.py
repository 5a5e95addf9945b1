"""Flow state on JetStream: ``framefarm.flow.{inflight,seq,stats}.<stream>`` on one stream used as a map."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from functools import partial
from typing import Any

from ..base import NAMESPACE, Flow
from ..counts import Deltas
from .jetstream import SubjectMap, run_for_store, token, untoken
from .link import NatsLink


def _live(data: bytes | None, now: float) -> dict[str, float]:
    return {k: v for k, v in json.loads(data).items() if v > now} if data else {}


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _admit(key: str, limit: int, now: float, ttl: float, data: bytes | None) -> tuple[bytes | None, bool]:
    entries = _live(data, now)
    if key not in entries and len(entries) >= limit:
        return None, False
    entries[key] = now + ttl
    return _dump(entries), True


def _remove(key: str, now: float, data: bytes | None) -> tuple[bytes | None, None]:
    entries = _live(data, now)
    return (_dump(entries), None) if entries.pop(key, None) is not None else (None, None)


def _increment(data: bytes | None) -> tuple[bytes, int]:
    value = int(data or 0) + 1
    return str(value).encode(), value


def _add_counts(amounts: Counter[str], data: bytes | None) -> tuple[bytes, None]:
    counters = Counter(json.loads(data)) if data else Counter()
    counters.update(amounts)
    return _dump(dict(counters)), None


class NatsFlow(Flow):
    """``framefarm.flow.{inflight,seq,stats}.<stream>``: in-flight set (key -> deadline), last seq, counters.

    Counters are batched in the process (bus/counts.py): two CAS round trips per frame would halve an input's
    rate. Frames, messages and in-flight state are never deferred.
    """

    def __init__(self, link: NatsLink) -> None:
        super().__init__()
        self.link = link
        self.map = SubjectMap(link, f"{NAMESPACE}-flow", f"{NAMESPACE}.flow")

    def _subject(self, kind: str, stream: str) -> str:
        return f"{self.map.prefix}.{kind}.{token(stream)}"

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        change = partial(_admit, key, limit, time.time(), ttl)
        return run_for_store(self.link, self.map.update(self._subject("inflight", stream), change, cached=True))

    async def remove(self, stream: str, key: str) -> None:
        """End ``key``'s in-flight entry (its frame was released or discarded)."""
        await self.map.update(self._subject("inflight", stream), partial(_remove, key, time.time()))

    def next_seq(self, stream: str) -> int:
        return run_for_store(self.link, self.map.update(self._subject("seq", stream), _increment, cached=True))

    def in_flight(self, stream: str | None = None) -> int:
        now, sets = time.time(), run_for_store(self.link, self._read("inflight", stream))
        return sum(len(_live(data, now)) for data in sets.values())

    async def _read(self, kind: str, stream: str | None = None) -> dict[str, bytes]:
        """The latest ``kind`` value of ``stream``, or of every stream, by stream."""
        prefix = f"{self.map.prefix}.{kind}."
        subjects = [prefix + token(stream)] if stream else await self.map.subjects(prefix + "*")
        messages = await asyncio.gather(*(self.map.get(subject) for subject in subjects))
        return {untoken(s[len(prefix) :]): m.data for s, m in zip(subjects, messages, strict=True) if m}

    def write_counts(self, deltas: Deltas) -> None:
        run_for_store(self.link, self._write_counts(deltas))

    async def _write_counts(self, deltas: Deltas) -> None:
        """One compare-and-set per stream; a stream written is removed from ``deltas``, so a failure part way
        keeps only the rest for the next try."""
        for stream, amounts in list(deltas.items()):
            await self.map.update(self._subject("stats", stream), partial(_add_counts, Counter(amounts)))
            del deltas[stream]

    def counters(self) -> dict[str, dict[str, int]]:
        self.flush_counts()
        return {stream: json.loads(data) for stream, data in run_for_store(self.link, self._read("stats")).items()}
