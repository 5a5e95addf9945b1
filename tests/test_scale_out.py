"""Scale-out: a second host (here a second runtime dir) runs `pipectl start --role workers` on one broker."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import free_port, wait_for
from workspace import PHOTOS, Workspace, runner_processes


@pytest.fixture
def hosts(tmp_path: Path, redis_url: str) -> Iterator[tuple[Workspace, Workspace]]:
    """Host A runs everything, host B only workers; both share one Redis and one results folder."""
    a, b = Workspace(tmp_path / "a", redis_url), Workspace(tmp_path / "b", redis_url)
    for host in (a, b):
        host.root.mkdir()
        host.write(host.yaml(yolo_extra="      batch: 2\n").replace("path: out", f"path: {tmp_path / 'out'}"))
    yield a, b
    for host in (a, b):
        host.force_stop()


def test_two_worker_groups_on_one_broker_both_take_work(hosts: tuple[Workspace, Workspace]) -> None:
    a, b = hosts
    a.pipectl("start")
    b.pipectl("start", "--role", "workers")
    assert {line.split("/")[-1].split("-")[0] for line in runner_processes(b.root)} == {"detector", "results"}
    for host in (a, b):  # both detectors have loaded the model, so both are consuming when the photos come
        log = host.root / "run" / "logs" / "detector.log"
        wait_for(lambda log=log: log.exists() and "providers" in log.read_text(), 60, f"{host.root.name}'s detector")
    for i in range(40):
        a.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
    results = a.root.parent / "out" / "uploads"
    wait_for(lambda: len(list(results.glob("*.json"))) == 40, 120, "40 results")
    b.pipectl("-s", "quit")
    a.pipectl("-s", "quit")
    done = {}
    for host in (a, b):
        ran = re.search(r"ran \d+ batches, (\d+) frames", (host.root / "run" / "logs" / "detector.log").read_text())
        done[host.root.name] = int(ran.group(1))
    assert sum(done.values()) >= 40 and all(done.values()), done  # both hosts detected frames


def test_workers_role_needs_a_shared_broker(tmp_path: Path) -> None:
    host = Workspace(tmp_path)
    host.write(host.yaml())
    result = host.pipectl("start", "--role", "workers", check=False)
    assert result.returncode == 1 and "set service.broker" in result.stderr


def test_connect_checks_the_broker_answers(tmp_path: Path, redis_url: str) -> None:
    up = Workspace(tmp_path / "up", redis_url)
    down = Workspace(tmp_path / "down", f"redis://127.0.0.1:{free_port()}/0")
    for host in (up, down):
        host.root.mkdir()
        host.write(host.yaml())
    assert "answers" in up.pipectl("-t", "--connect").stdout
    result = subprocess.run(
        [sys.executable, "-m", "framefarm.cli", "test", "--connect", "-c", str(down.config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "broker does not answer" in result.stderr
