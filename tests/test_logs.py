"""Logs: text or JSON lines that name their module, per-module levels, and ``pipectl -s reopen`` with JSON."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from framefarm import logs
from framefarm.runner import EXIT_CONFIG

from peers import wait_for
from workspace import Workspace

SERVICE_EXTRA = "  log_format: json\n"
MODULES = ("uploads", "detector", "results", "web-face")


def emit(fmt: logs.LogFormat, record: logging.LogRecord) -> str:
    """What a module's handler writes for ``record``."""
    out = io.StringIO()
    handler = logs.handler("cam.1", fmt)
    handler.setStream(out)
    handler.handle(record)
    return out.getvalue()


def failed_record() -> logging.LogRecord:
    try:
        raise ValueError("bad frame")
    except ValueError:
        info = sys.exc_info()
    return logging.getLogger("framefarm.cam.1").makeRecord(
        "framefarm.cam.1", logging.ERROR, __file__, 1, "%s failed", ("dog.jpg",), info
    )


def test_a_json_line_holds_the_module_level_message_and_the_traceback() -> None:
    text = emit("json", failed_record())
    assert text.endswith("\n") and text.count("\n") == 1
    line = json.loads(text)
    assert line["module"] == "cam.1" and line["level"] == "ERROR" and line["logger"] == "framefarm.cam.1"
    assert line["message"] == "dog.jpg failed" and isinstance(line["pid"], int)
    assert "ValueError: bad frame" in line["exc_info"] and "Traceback" in line["exc_info"]
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_a_text_line_names_the_module_and_the_pid() -> None:
    record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "watching %s", ("in",), None)
    assert f" INFO cam.1 pid={record.process} x: watching in\n" in emit("text", record)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure() replaces the root logger's handlers: give this test's logging back to pytest afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in logs.NOISY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in noisy.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("root_logging")
def test_debug_keeps_the_noisy_libraries_at_info() -> None:
    logs.configure("cam.1", "json", "debug")
    assert logging.getLogger("framefarm.cam.1").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("dramatiq.worker.WorkerThread").isEnabledFor(logging.DEBUG)
    logs.configure("cam.1", "text", "warning")
    assert not logging.getLogger("dramatiq").isEnabledFor(logging.INFO)


def lines(log: Path) -> list[dict]:
    """The complete lines of a log file, each parsed as JSON (a line being written is left out)."""
    complete = log.read_text().split("\n")[:-1] if log.exists() else []
    return [json.loads(line) for line in complete if line.strip()]


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    text = workspace.yaml(yolo_extra="      log_level: debug\n")
    workspace.write(text.replace("pipeline:\n", SERVICE_EXTRA + "pipeline:\n", 1))
    yield workspace
    workspace.force_stop()


def test_json_logs_per_module_levels_and_reopen(ws: Workspace) -> None:
    ws.pipectl("start")
    ws.drop("dog.jpg", "dog.jpg")
    ws.wait_results(1)
    logdir = ws.root / "run" / "logs"
    detector = logdir / "detector.log"
    wait_for(lambda: any("dog.jpg" in line["message"] for line in lines(detector)), 10, "the detector's debug line")

    for alias in MODULES:
        parsed = lines(logdir / f"{alias}.log")  # raises on a line that is not JSON
        assert parsed and {line["module"] for line in parsed} == {alias}, alias
        debug = [line for line in parsed if line["level"] == "DEBUG"]
        assert bool(debug) == (alias == "detector"), (alias, debug[:3])
    assert not any(line["logger"].startswith("dramatiq") and line["level"] == "DEBUG" for line in lines(detector))

    detector.rename(logdir / "detector.log.1")  # as logrotate does
    ws.pipectl("-s", "reopen")
    ws.drop("eagle.jpg", "eagle.jpg")
    wait_for(lambda: any("eagle.jpg" in line["message"] for line in lines(detector)), 60, f"eagle.jpg in {detector}")
    assert {line["module"] for line in lines(detector)} == {"detector"}
    assert "eagle.jpg" not in (logdir / "detector.log.1").read_text()
    ws.pipectl("-s", "quit")


def test_an_invalid_module_config_is_reported_as_a_json_line_already(tmp_path: Path) -> None:
    snapshot = {
        "service": {"log_format": "json"},
        "module": {"name": "dir_images", "path": "in", "colour": "red"},
        "alias": "uploads",
        "broker": "redis://127.0.0.1:1/0",
        "section": "inputs",
        "kind": "dir_images",
        "config": str(tmp_path / "pipeline.yaml"),
        "routes": {},
    }
    path = tmp_path / "run" / "modules" / "uploads-0.json"  # where render puts it: the runtime dir is two up
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(snapshot))
    command = [sys.executable, "-m", "framefarm.runner", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG, result.stderr
    health = json.loads((tmp_path / "run" / "health" / "uploads.json").read_text())  # why it stopped, for status
    assert health["starts"] == 1 and "colour" in health["last_error"]
    errors = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert any(e["module"] == "uploads" and e["level"] == "ERROR" and "colour" in e["message"] for e in errors)
