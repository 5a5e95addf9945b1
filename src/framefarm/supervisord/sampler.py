"""Reads the running pipeline's status again and again (the web face's thread, ``pipectl top``), keeping one broker
connection open between reads and opening a new one after the broker failed."""

from __future__ import annotations

import logging
import threading
import time

from ..bus.base import Bus
from ..config.urls import redact_text
from ..errors import FramefarmError
from .render import Layout
from .running import Running
from .status import Status, Trend, collect

SAMPLE_EVERY_S = 1.0
STALE_AFTER_S = 3 * SAMPLE_EVERY_S + 5  # a status older than this tells nothing (the sampler waits on a broker)
log = logging.getLogger(__name__)


class Sampler:
    def __init__(self, layout: Layout, trend: Trend) -> None:
        self.layout, self.trend = layout, trend
        self.bus: Bus | None = None
        self._lock = threading.Lock()
        self._latest: Status = self._without_master("starting")

    def latest(self) -> Status:
        with self._lock:
            return self._latest

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._run, args=(stop,), name="status-sampler", daemon=True).start()

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    status = self.sample()
                except Exception as exc:  # a broker's own error (READONLY, NOAUTH): said, and tried again anew
                    log.exception("cannot read the status")
                    self.close()
                    status = self._without_master(redact_text(f"cannot read the status: {exc}"))
                with self._lock:
                    self._latest = status
                stop.wait(SAMPLE_EVERY_S)
        finally:
            self.close()

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    def sample(self) -> Status:
        try:
            running = Running.at(self.layout)
        except FramefarmError as exc:  # supervisord is stopping or busy: say so, try again next time
            return self._without_master(redact_text(str(exc)))
        try:
            if self.bus is None:
                self.bus = running.bus()
        except FramefarmError as exc:
            status = collect(running, None)
            status["broker"] = {"ok": False, "error": redact_text(str(exc))}
            return status
        status = collect(running, self.bus)
        if not status["broker"]["ok"]:  # reconnect at the next sample
            self.bus.close()
            self.bus = None
        return self.trend.add(status)

    def _without_master(self, error: str) -> Status:
        return {
            "at": time.time(),
            "runtime_dir": str(self.layout.root),
            "processes": [],
            "broker": {"ok": False, "error": error},
            "master": error,
        }
