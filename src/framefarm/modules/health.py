"""A module process's starts and last error, kept in ``<runtime_dir>/health/<process>.json`` for the status views.

supervisord knows a process's state and uptime but neither how often it was restarted nor why it failed: the
process counts its own starts (the file outlives it; ``pipectl start`` clears the folder) and a logging handler
keeps the last error logged, so a module that crashed and came back still shows what killed it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..config.urls import redact_text

WRITE_EVERY_S = 1.0  # a module logging errors in a loop rewrites its file at most this often
MAX_ERROR_CHARS = 500
HEALTH_FOLDER = "health"  # in the runtime dir
PROCESS_NAME_ENV = "SUPERVISOR_PROCESS_NAME"  # set by supervisord for each child


def read(path: Path) -> dict[str, Any]:
    """A health file's fields; empty when there is none or it cannot be read (a status view shows what it can)."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


class Health(logging.Handler):
    """Counts this start in the process's health file and records every ERROR logged as its last error."""

    def __init__(self, folder: Path, process: str) -> None:
        super().__init__(logging.ERROR)
        self.path = folder / f"{process}.json"
        kept = read(self.path)
        self.fields: dict[str, Any] = {
            "starts": int(kept.get("starts", 0)) + 1,
            "pid": os.getpid(),
            "started_at": time.time(),
            "last_error": kept.get("last_error"),  # why the previous run ended, until this one has its own
            "last_error_at": kept.get("last_error_at"),
        }
        self._lock = threading.Lock()
        self._written = 0.0
        self._timer: threading.Timer | None = None
        self._write()

    @classmethod
    def of_this_process(cls, runtime_dir: Path, alias: str) -> Health:
        return cls(runtime_dir / HEALTH_FOLDER, os.environ.get(PROCESS_NAME_ENV, alias))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lines = record.getMessage().strip().splitlines()
        except Exception:  # a bad format string of some library's: logging's own way of saying so
            self.handleError(record)
            return
        text = lines[0] if lines else record.levelname
        if record.exc_info and record.exc_info[1] is not None:  # "module failed" says little without its cause
            text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        with self._lock:
            self.fields["last_error"] = redact_text(text)[:MAX_ERROR_CHARS]
            self.fields["last_error_at"] = record.created
            wait = self._written + WRITE_EVERY_S - time.monotonic()
            if wait <= 0:
                self._write()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._write_later)
                self._timer.daemon = True
                self._timer.start()

    def _write_later(self) -> None:
        with self._lock:
            self._timer = None
            self._write()

    def _write(self) -> None:
        """Write the fields (called with the lock held, or before any thread can log)."""
        self._written = time.monotonic()
        with contextlib.suppress(OSError):  # a full disk must not stop the module: the status shows older fields
            write_atomic(self.path, json.dumps(self.fields).encode())

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._write()
        super().close()
