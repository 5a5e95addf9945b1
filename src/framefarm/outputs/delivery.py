"""An output's delivery state, as ``pipectl status`` shows it: sent, retried, failed, dropped, the last error.

The totals are this process's since it started (the per-stream counters are the lasting ones); the state is
reported through the flow like a live input's, so it is written within a period of the change.
"""

from __future__ import annotations

import threading
import time

from ..bus.base import Flow

ROLE = "output"  # reports carry their role: status lists inputs and outputs apart


class Delivery:
    def __init__(self, flow: Flow, alias: str) -> None:
        self.flow, self.alias = flow, alias
        self.lock = threading.Lock()
        self.sent = self.retried = self.failed = self.dropped = self.filtered = 0
        self.failing = False
        self.since = time.time()
        self.last_error = ""

    def succeeded(self, *, filtered: bool = False) -> None:
        with self.lock:
            self.sent += not filtered
            self.filtered += filtered
            self._settle(failing=False)

    def will_retry(self, error: str) -> None:
        with self.lock:
            self.retried += 1
            self.last_error = error
            self._settle(failing=True)

    def gave_up(self, error: str, *, dropped: bool = False) -> None:
        """A result that will never be delivered: refused by the receiver (failed) or dropped unsent."""
        with self.lock:
            self.failed += not dropped
            self.dropped += dropped
            self.last_error = error
            self._report()

    def _settle(self, *, failing: bool) -> None:
        if failing != self.failing:
            self.failing, self.since = failing, time.time()
        self._report()

    def _report(self) -> None:
        fields = {
            "role": ROLE,
            "state": "failing" if self.failing else "delivering",
            "since": self.since,
            "sent": self.sent,
            "retried": self.retried,
            "failed": self.failed,
            "dropped": self.dropped,
            "filtered": self.filtered,
            "last_error": self.last_error,
        }
        self.flow.report(self.alias, fields)
