"""A pipeline in a temporary folder, driven through the real pipectl command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import MEDIA, MODEL, NAMES
from peers import wait_for

PHOTOS = ["dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg"]


def pipeline_yaml(*, broker: str | None = None, yolo_extra: str = "", out_extra: str = "") -> str:
    service = f"  broker: {broker}\n" if broker else ""
    return f"""\
service:
{service}  runtime_dir: run
  heartbeat_timeout: 3s
  stop_timeout: 10s
  http:
    listen: 127.0.0.1:0
pipeline:
  inputs:
    - name: dir_images
      alias: uploads
      tag: uploads
      path: in
      incomplete_timeout: 2s
  processors:
    - name: yolo
      alias: detector
      model: {MODEL}
      names: {NAMES}
      intra_threads: 1
{yolo_extra}  outputs:
    - name: image_files
      alias: results
      path: out
{out_extra}"""


@dataclass
class Workspace:
    root: Path
    broker: str | None = None  # None: the embedded Redis

    @property
    def config(self) -> Path:
        return self.root / "pipeline.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "in"

    @property
    def results(self) -> Path:
        return self.root / "out" / "uploads"

    def yaml(self, **extra: str) -> str:
        return pipeline_yaml(broker=self.broker, **extra)

    def write(self, text: str) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)

    def pipectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "framefarm.cli", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pipectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result

    def supervisorctl(self, *args: str) -> str:
        """Plain supervisorctl on the rendered config, as an operator would use it."""
        conf = self.root / "run" / "supervisord.conf"
        command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout

    def drop(self, name: str, source: str) -> None:
        """Copy a photo in the way a careful uploader does: write aside, then rename into the folder."""
        tmp = self.root / f".{name}.part"
        shutil.copyfile(MEDIA / source, tmp)
        os.replace(tmp, self.inbox / name)

    def result_files(self) -> list[Path]:
        return sorted(self.results.glob("*.json")) if self.results.exists() else []

    def wait_results(self, count: int, timeout: float = 90) -> list[dict]:
        wait_for(lambda: len(self.result_files()) >= count, timeout, f"{count} results ({self.logs()})")
        return [json.loads(p.read_text()) for p in self.result_files()]

    def pids(self) -> dict[str, int]:
        lines = self.pipectl("status").stdout.splitlines()
        return {line.split()[0]: int(line.split()[2]) for line in lines if line.split()[1:2] == ["RUNNING"]}

    def logs(self) -> str:
        logs = self.root / "run" / "logs"
        parts = [f"== {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log"))] if logs.exists() else []
        return "\n".join(parts)

    def force_stop(self) -> None:
        """Teardown: whatever happened, leave no process behind."""
        pidfile = self.root / "run" / "supervisord.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
        except (OSError, ValueError):
            pass


def runner_processes(root: Path) -> list[str]:
    """Command lines of module processes whose snapshot lives under ``root`` (still running)."""
    out = subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(root) in line and "framefarm.runner" in line]


def proc_status(pid: int, field: str) -> str | None:
    """The first word of ``field`` in /proc/<pid>/status; None when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")), None)


def exited(pid: int) -> bool:
    """Gone, or a zombie: a process reparented to a PID 1 that does not reap stays one, exited all the same."""
    return proc_status(pid, "State") in (None, "Z", "X")


def broker_processes(root: Path) -> list[str]:
    """Embedded brokers serving the socket under ``root`` (still running): pid, parent, state, command line."""
    socket = str(root / "run" / "broker.sock")
    out = subprocess.run(["ps", "-ewwo", "pid,ppid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if socket in line and "framefarm.runner" not in line]


def supervisord_pid(root: Path) -> int:
    return int((root / "run" / "supervisord.pid").read_text())
