"""What a live input tells the operator: its connection state, rates, drops and last error, in the log and in
``pipectl status`` (through ``Flow.report``, keyed like its counters by the input's alias).

States: ``connecting`` (opening the source), ``listening`` (an RTMP listener waiting for its publisher),
``streaming`` (frames arrive), ``reconnecting`` (the last attempt failed; waiting for the next) and ``failed``
(``failed_after`` attempts in a row gave no frame: not a blip, the operator should look; it keeps retrying).
Every error text here went through ``redact_text``: a URL's password never reaches a report or a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from ..bus.base import Flow
from ..config.urls import redact_text
from ..modules import counters

CONNECTING = "connecting"
LISTENING = "listening"
STREAMING = "streaming"
RECONNECTING = "reconnecting"
FAILED = "failed"
REPORT_PERIOD_S = 1.0  # how often the rates are reported while streaming
FPS_WINDOW_S = 5.0  # rates are averaged over about this long
DROP_REASONS = (counters.DROPPED_FULL, counters.DROPPED_STALE, counters.SKIPPED_FPS, counters.FAILED)


class LiveState:
    """One live input's state, updated by its reader and sender threads, reported and logged on changes and
    every ``REPORT_PERIOD_S`` (the log line every ``log_every`` seconds)."""

    def __init__(
        self, flow: Flow, alias: str, source: str, log: logging.Logger, *, failed_after: int, log_every: float
    ) -> None:
        self.flow, self.alias, self.source, self.log = flow, alias, source, log
        self.failed_after, self.log_every = failed_after, log_every
        self._lock = threading.Lock()
        self.state = ""  # none yet: the first attempt's state is logged as a change
        self.since = time.time()
        self.decoded = 0  # frames decoded by this process (fps in)
        self.sent = 0  # frames published (fps sent)
        self.drops: Counter[str] = Counter()
        self.reconnects = 0
        self.attempts = 0  # attempts in a row without a frame
        self.last_frame_at: float | None = None
        self.last_error: str | None = None
        self.detail = ""  # what streams: codec and size, for the log
        self._samples: deque[tuple[float, int, int]] = deque()  # (monotonic, decoded, sent)
        self._reported = 0.0
        self._logged = time.monotonic()
        self._framed = False  # this attempt delivered a frame

    # -- what the threads tell it --

    def attempt(self, state: str = CONNECTING) -> None:
        """A new attempt starts (``connecting``, or ``listening`` for a listener)."""
        with self._lock:
            self._framed = False
        self._enter(state, f"{state} {self.source}" if state == CONNECTING else f"listening on {self.source}")

    def decoded_frame(self, detail: str = "") -> None:
        """The reader decoded a frame: the first of an attempt makes the state ``streaming``."""
        with self._lock:
            self.decoded += 1
            self.last_frame_at = time.time()
            first, self._framed = not self._framed, True
            if first:
                self.attempts, self.detail = 0, detail
        if first:
            self._enter(STREAMING, f"streaming {self.source}" + (f" ({detail})" if detail else ""))

    def dropped(self, reason: str) -> None:
        with self._lock:
            self.drops[reason] += 1

    def published(self) -> None:
        with self._lock:
            self.sent += 1

    def ended(self, error: BaseException | None) -> None:
        """The attempt ended (the source failed or ended): ``reconnecting``, or ``failed`` after too many."""
        with self._lock:
            self.reconnects += 1
            if not self._framed:
                self.attempts += 1
            if error is not None:
                self.last_error = redact_text(str(error) or type(error).__name__)
            failing = self.attempts >= self.failed_after
        self._enter(FAILED if failing else RECONNECTING, None)

    # -- reports --

    def tick(self) -> None:
        """Report the rates if a period passed; log them if ``log_every`` did."""
        now = time.monotonic()
        if now - self._reported >= REPORT_PERIOD_S:
            self.report()
        if self.log_every and now - self._logged >= self.log_every:
            self._logged = now
            self.log.info("%s", self.summary())

    def report(self) -> None:
        self._reported = time.monotonic()
        self.flow.report(self.alias, self.fields())

    def fields(self) -> dict[str, Any]:
        fps_in, fps_sent = self._rates()
        with self._lock:
            return {
                "state": self.state,
                "since": self.since,
                "source": self.source,
                "fps_in": fps_in,
                "fps_sent": fps_sent,
                "drops": {reason: self.drops[reason] for reason in DROP_REASONS},
                "reconnects": self.reconnects,
                "last_frame_at": self.last_frame_at,
                "last_error": self.last_error,
            }

    def summary(self) -> str:
        """One log line: state, rates, drops by reason, reconnects, age of the last frame, last error."""
        fields = self.fields()
        drops = ", ".join(f"{reason.removeprefix('dropped_')} {count}" for reason, count in fields["drops"].items())
        age = f"{time.time() - fields['last_frame_at']:.1f}s ago" if fields["last_frame_at"] else "never"
        error = f"; last error: {fields['last_error']}" if fields["last_error"] else ""
        return (
            f"{fields['state']}: fps in {fields['fps_in']:.1f}, sent {fields['fps_sent']:.1f}; not sent: {drops}; "
            f"reconnects {fields['reconnects']}; last frame {age}{error}"
        )

    def _enter(self, state: str, message: str | None) -> None:
        with self._lock:
            changed = state != self.state
            self.state = state
            if changed:
                self.since = time.time()
        if changed and message:
            self.log.info("%s", message)
        elif changed and state == FAILED:
            self.log.warning(
                "%d attempts in a row without a frame; still retrying (%s)", self.attempts, self.last_error
            )
        self.report()

    def _rates(self) -> tuple[float, float]:
        """Frames decoded and sent per second over the last ``FPS_WINDOW_S``; 0 unless streaming."""
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, self.decoded, self.sent))
            while len(self._samples) > 2 and now - self._samples[1][0] >= FPS_WINDOW_S:
                self._samples.popleft()
            if self.state != STREAMING:
                return 0.0, 0.0
            then, decoded, sent = self._samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return 0.0, 0.0
        return round((self.decoded - decoded) / elapsed, 2), round((self.sent - sent) / elapsed, 2)
