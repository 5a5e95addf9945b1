"""How every framefarm process logs: one line per record, text or JSON, each naming its module and pid.

Processes log to stderr, which supervisord sends to ``<runtime_dir>/logs/<alias>.log`` and reopens on SIGUSR2
(``pipectl -s reopen``), so nothing here ever opens or rotates a file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

#: Loggers that stay at INFO when a module logs at debug: several lines per frame about their own machinery
#: (Dramatiq's threads and acks, watchdog's inotify events, httpcore's connection steps), and Dramatiq's actor
#: logger of every stage (``framefarm.modules.stage.<queue>``), which prints each message whole, inline frames
#: included. What framefarm itself has to say about a frame is logged on ``framefarm.<alias>``.
NOISY_LOGGERS = ("dramatiq", "watchdog", "httpcore", "framefarm.modules.stage")
PER_REQUEST_LOGGERS = ("httpx",)  # a line per request at info (a webhook's every frame): shown at debug only

JSON_FIELDS = ("asctime", "levelname", "alias", "process", "name", "message")
JSON_NAMES = {"asctime": "time", "levelname": "level", "alias": "module", "process": "pid", "name": "logger"}


class _Json(JsonFormatter):
    """python-json-logger with ISO 8601 times (UTC, milliseconds) and its fields named for log shippers."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


TEXT_FORMAT = "%(asctime)s %(levelname)s %(alias)s pid=%(process)d %(name)s: %(message)s"


def formatter(fmt: LogFormat) -> logging.Formatter:
    """Lines of records stamped by ``handler``; JSON ones carry ``exc_info`` and ``stack_info`` when they have them."""
    if fmt == "json":
        return _Json(list(JSON_FIELDS), rename_fields=JSON_NAMES)
    return logging.Formatter(TEXT_FORMAT)


def handler(alias: str, fmt: LogFormat) -> logging.StreamHandler[TextIO]:
    """A stderr handler whose every line names ``alias`` (whichever logger, library or ours, made the record)."""

    def stamp(record: logging.LogRecord) -> bool:
        record.alias = alias
        return True

    out = logging.StreamHandler()
    out.addFilter(stamp)
    out.setFormatter(formatter(fmt))
    return out


def configure(alias: str, fmt: LogFormat = "text", level: str = "info", also: Sequence[logging.Handler] = ()) -> None:
    """(Re)configure this process's root logger, with ``also`` beside the line writer; safe to call again once the
    real options are known."""
    logging.basicConfig(level=level.upper(), handlers=[handler(alias, fmt), *also], force=True)
    floor = max(logging.getLogger().level, logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(floor)
    debug = logging.getLogger().level <= logging.DEBUG
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
