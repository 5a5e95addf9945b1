"""Flow state on JetStream: ``framefarm.flow.{inflight,seq,stats,report}.<stream>`` on one stream used as a map.

An in-flight entry is ``key -> deadline`` as ``admit`` writes it: one consumer, bytes inline in the message.
The frame store widens it to ``key -> [deadline, refs, stored]`` when the frame has several consumers or its
bytes went to the frames stream, so that a release learns from the one compare-and-set it must do anyway
whether it was the last and whether there is anything to purge.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..base import NAMESPACE, Flow
from ..counts import Deltas, Reports
from .jetstream import token, untoken
from .link import NatsLink
from .subjectmap import SubjectMap, store_errors

ADMITTED_MEMORY = 4096  # keys admitted here and not put yet: put looks up their stream (a failed put leaves one)

Entry = float | list[Any]  # deadline, or [deadline, refs, stored]


@dataclass(frozen=True)
class Released:
    """What a release did to a frame's in-flight entry."""

    last: bool  # the entry is gone: its last consumer is done (or it was discarded)
    stored: bool  # the frame's bytes are on the frames stream, to be purged


def _deadline(entry: Entry) -> float:
    return entry[0] if isinstance(entry, list) else entry


def _live(data: bytes | None, now: float) -> dict[str, Entry]:
    return {k: v for k, v in json.loads(data).items() if _deadline(v) > now} if data else {}


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _admit(key: str, limit: int, now: float, ttl: float, data: bytes | None) -> tuple[bytes | None, bool]:
    entries = _live(data, now)
    if key not in entries and len(entries) >= limit:
        return None, False
    entries[key] = now + ttl
    return _dump(entries), True


def _track(key: str, refs: int, stored: bool, now: float, data: bytes | None) -> tuple[bytes | None, None]:
    entries = _live(data, now)
    if key not in entries:  # expired before its frame was put: nothing left to count
        return None, None
    entries[key] = [_deadline(entries[key]), refs, int(stored)]
    return _dump(entries), None


def _release(
    items: tuple[tuple[str, bool], ...], now: float, data: bytes | None
) -> tuple[bytes | None, list[Released | None]]:
    """Apply releases ``(key, every_ref)`` in order; None for a key with no entry (never admitted, or expired)."""
    entries, outcomes = _live(data, now), []
    for key, every_ref in items:
        entry = entries.get(key)
        if entry is None:
            outcomes.append(None)
            continue
        deadline, refs, stored = entry if isinstance(entry, list) else (entry, 1, 0)
        if refs > 1 and not every_ref:
            entries[key] = [deadline, refs - 1, stored]
        else:
            del entries[key]
        outcomes.append(Released(last=key not in entries, stored=bool(stored)))
    changed = any(outcome is not None for outcome in outcomes)
    return (_dump(entries) if changed else None), outcomes


def _increment(data: bytes | None) -> tuple[bytes, int]:
    value = int(data or 0) + 1
    return str(value).encode(), value


def _newer(fields: dict[str, Any], data: bytes | None) -> tuple[bytes | None, None]:
    """``fields`` replace the stream's report unless the one kept is newer (a late write of an older one)."""
    kept = json.loads(data) if data else None
    return (None, None) if kept and kept["at"] > fields["at"] else (_dump(fields), None)


def _add_counts(amounts: Counter[str], data: bytes | None) -> tuple[bytes, None]:
    counters = Counter(json.loads(data)) if data else Counter()
    counters.update(amounts)
    return _dump(dict(counters)), None


@dataclass
class _Releases:
    """Releases of one stream's frames gathered while the previous compare-and-set was on its way."""

    items: list[tuple[str, bool]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Released | None] = field(default_factory=list)
    error: Exception | None = None


class NatsFlow(Flow):
    """``framefarm.flow.{inflight,seq,stats,report}.<stream>``: in-flight set (key -> entry), last seq, counters,
    latest report.

    Counters are batched in the process (bus/counts.py): two CAS round trips per frame would halve an input's
    rate. Releases are batched too, but waited for (a group commit): the releases a worker's threads make while
    one compare-and-set of a stream's in-flight set is on its way go together in the next one, instead of each
    reading and writing the set (and conflicting with each other).
    """

    def __init__(self, link: NatsLink) -> None:
        super().__init__()
        self.link = link
        self.map = SubjectMap(link, f"{NAMESPACE}-flow", f"{NAMESPACE}.flow")
        self._lock = threading.Lock()
        self._admitted: OrderedDict[str, str] = OrderedDict()  # key -> stream, admitted here, not put yet
        self._gathering: dict[str, _Releases] = {}  # the batch of releases each stream is gathering
        self._writing: dict[str, threading.Lock] = {}  # one batch of releases per stream at a time

    def _subject(self, kind: str, stream: str) -> str:
        return f"{self.map.prefix}.{kind}.{token(stream)}"

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        change = partial(_admit, key, limit, time.time(), ttl)
        with store_errors():
            admitted = self.map.update(self._subject("inflight", stream), change, cached=True)
        if admitted:
            with self._lock:
                self._admitted[key] = stream
                if len(self._admitted) > ADMITTED_MEMORY:
                    self._admitted.popitem(last=False)
        return admitted

    def take_admitted(self, key: str) -> str | None:
        """The stream that admitted ``key`` in this process, forgotten from here on; None if none did."""
        with self._lock:
            return self._admitted.pop(key, None)

    def track(self, stream: str, key: str, *, refs: int, stored: bool) -> None:
        """Record in ``key``'s entry how many releases end it and whether its bytes are on the frames stream.

        Cached: it follows this process's own admit, usually with no write by anyone in between."""
        change = partial(_track, key, refs, stored, time.time())
        with store_errors():
            self.map.update(self._subject("inflight", stream), change, cached=True)

    def release(self, stream: str, key: str, *, every_ref: bool = False) -> Released | None:
        """One consumer of ``key`` is done (every one with ``every_ref``); None when it has no entry.

        The first release of a batch writes it, with those that joined while it waited for the previous one."""
        with self._lock:
            batch = self._gathering.get(stream)
            writer = batch is None
            if batch is None:
                batch = self._gathering[stream] = _Releases()
            writing = self._writing.setdefault(stream, threading.Lock())
            batch.items.append((key, every_ref))
            index = len(batch.items) - 1
        if writer:
            self._write_releases(stream, batch, writing)
        batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.outcomes[index]

    def _write_releases(self, stream: str, batch: _Releases, writing: threading.Lock) -> None:
        with writing:
            with self._lock:  # from here on, new releases gather for the next write
                del self._gathering[stream]
            change = partial(_release, tuple(batch.items), time.time())
            try:
                with store_errors():
                    batch.outcomes = self.map.update(self._subject("inflight", stream), change)
            except Exception as exc:
                batch.error = exc
            finally:
                batch.done.set()

    def next_seq(self, stream: str) -> int:
        with store_errors():
            return self.map.update(self._subject("seq", stream), _increment, cached=True)

    def in_flight(self, stream: str | None = None) -> int:
        now = time.time()
        return sum(len(_live(data, now)) for data in self._read("inflight", stream).values())

    def _read(self, kind: str, stream: str | None = None) -> dict[str, bytes]:
        """The latest ``kind`` value of ``stream``, or of every stream, by stream."""
        prefix = f"{self.map.prefix}.{kind}."
        with store_errors():
            subjects = [prefix + token(stream)] if stream else self.map.subjects(prefix + "*")
            messages = {subject: self.map.get(subject) for subject in subjects}
        return {untoken(s[len(prefix) :]): m.data for s, m in messages.items() if m}

    def write_counts(self, deltas: Deltas) -> None:
        """One compare-and-set per stream; a stream written is removed from ``deltas``, so a failure part way
        keeps only the rest for the next try."""
        with store_errors():
            for stream, amounts in list(deltas.items()):
                self.map.update(self._subject("stats", stream), partial(_add_counts, Counter(amounts)))
                del deltas[stream]

    def counters(self) -> dict[str, dict[str, int]]:
        self.flush_counts()
        return {stream: json.loads(data) for stream, data in self._read("stats").items()}

    def write_reports(self, reports: Reports) -> None:
        """One compare-and-set per stream, keeping the newer report; a stream written is removed from
        ``reports``, as ``write_counts`` does."""
        with store_errors():
            for stream, fields in list(reports.items()):
                self.map.update(self._subject("report", stream), partial(_newer, fields))
                del reports[stream]

    def reports(self) -> Reports:
        self.flush_counts()
        return {stream: json.loads(data) for stream, data in self._read("report").items()}
