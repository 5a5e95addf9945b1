"""Counters summed in the process and written in batches: no round trip per frame, and nothing left behind.

Every flow counts through one BatchedCounts. A background thread writes what was summed every
``period`` seconds, so ``pipectl status`` is exact within about that long after the last frame, even when
nothing else happens; ``flush`` writes at once (before a read), ``close`` writes the rest at exit. A
process killed with SIGKILL loses at most one period of counts; frames and messages are never deferred.

Reports ride along: the latest state of a stream (a live input's connection state, rates, last error) is
kept here, each newer report replacing the one not yet written, and written by the same timer. A state is a
snapshot, not a sum, so only the latest matters and a failed write is simply retried with the newest.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 0.5

Deltas = dict[str, dict[str, int]]  # stream -> counter -> amount
Reports = dict[str, dict[str, Any]]  # stream -> its latest state fields (JSON values)


class BatchedCounts:
    """Sums ``add`` calls and hands them to ``write`` in batches.

    A ``write`` that raises keeps what is left in the dict it was given for the next try: one that writes in
    parts removes each part it wrote, so nothing is counted twice.
    """

    def __init__(
        self,
        write: Callable[[Deltas], None],
        *,
        period: float = DEFAULT_PERIOD_S,
        name: str = "counts",
        write_reports: Callable[[Reports], None] | None = None,
    ):
        self._write = write
        self._write_reports = write_reports
        self.period = period
        self._name = name
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one write at a time keeps the written totals in order
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._reports: Reports = {}  # stream -> latest report not written yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, stream: str, counter: str, amount: int = 1) -> None:
        with self._lock:
            self._pending[stream][counter] += amount
            self._start_timer()

    def report(self, stream: str, fields: dict[str, Any]) -> None:
        """Make ``fields`` the stream's latest state, replacing any report not written yet."""
        if self._write_reports is None:
            raise TypeError(f"{self._name} was made without write_reports: it cannot keep reports")
        with self._lock:
            self._reports[stream] = fields
            self._start_timer()

    def pending_reports(self) -> Reports:
        """Reports this process holds that are not written yet (a reader merges them over what it read)."""
        with self._lock:
            return dict(self._reports)

    def _start_timer(self) -> None:
        """Start the writing thread with the first count or report (called with the lock held)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._flush_forever, name=f"{self._name}-flush", daemon=True)
            self._thread.start()

    def flush(self) -> None:
        """Write what is pending now; raises what a write raises, keeping what was not written for the next try."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, defaultdict(Counter)
                reports, self._reports = self._reports, {}
            deltas = {stream: dict(c) for stream, c in pending.items() if c}
            try:
                if deltas:
                    self._write(deltas)
            except BaseException:
                self._keep(deltas, reports)
                raise
            try:
                if reports and self._write_reports is not None:
                    self._write_reports(reports)
            except BaseException:
                self._keep({}, reports)  # the counts were written: only the reports wait for the next try
                raise

    def _keep(self, deltas: Deltas, reports: Reports) -> None:
        """Put back what a failed write left: counts are added to newer ones, a report yields to a newer one."""
        with self._lock:
            for stream, values in deltas.items():
                self._pending[stream].update(values)
            for stream, fields in reports.items():
                self._reports.setdefault(stream, fields)

    def _flush_forever(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.flush()
            except Exception as exc:  # the broker is away: keep the counts, try again next period
                log.warning("counters not written yet (%r); retrying in %.1fs", exc, self.period)

    def close(self) -> None:
        """Stop the timer and write the rest; counts that cannot be written now are lost (logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period + 1)
        try:
            self.flush()
        except Exception as exc:
            log.warning("counters lost at close, the broker did not take them: %r", exc)
