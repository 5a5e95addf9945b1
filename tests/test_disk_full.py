"""Chaos: a file output's disk fills up (a real 256 KiB tmpfs) while photos arrive, then frees up. The output says
why in its log and its state, retries with backoff and counts it; no result is lost or half written, nothing
crash-loops."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import wait_for
from workspace import PHOTOS, Workspace

PHOTO_COUNT = 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (mounting needs root, as CI runs: elsewhere the mount fails and says why)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def output_state(ws: Workspace) -> dict:
    return json.loads(ws.pipectl("status", "--json").stdout)["outputs"].get("results", {})


def delivered(ws: Workspace) -> int:
    counters = json.loads(ws.pipectl("status", "--json").stdout)["streams"].get("photos", {}).get("counters", {})
    return counters.get("delivered.results", 0)


def test_a_full_disk_is_retried_said_and_counted_and_nothing_is_lost(tmp_path: Path, small_disk: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    results = small_disk / "results"
    ws.write(
        f"""\
service:
  runtime_dir: run
  stop_timeout: 10s
  http: {{listen: 127.0.0.1:0}}
pipeline:
  inputs:
    - {{name: dir_images, alias: photos, tag: photos, path: in}}
  outputs:
    - name: image_files
      alias: results
      path: {results}
      retry: {{min_backoff: 0.2s, max_backoff: 1s, max_retries: 100}}
"""
    )
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # the disk full: write until ENOSPC
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        ws.pipectl("start")
        for i in range(PHOTO_COUNT):
            ws.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
        log = ws.root / "run" / "logs" / "results.log"
        wait_for(
            lambda: log.exists() and "No space left on device" in log.read_text(), 60, f"the full disk ({ws.logs()})"
        )
        wait_for(lambda: output_state(ws).get("state") == "failing", 30, "the output's state")
        assert "No space left on device" in output_state(ws)["last_error"]
        filler.unlink()  # room again
        wait_for(
            lambda: len(list((results / "photos").glob("*.json"))) == PHOTO_COUNT, 90, f"every result ({ws.logs()})"
        )
        wait_for(lambda: delivered(ws) == PHOTO_COUNT, 10, "the deliveries counted")  # counts flush twice a second
        status = json.loads(ws.pipectl("status", "--json").stdout)
        ws.pipectl("-s", "quit")
    finally:
        ws.force_stop()
    assert sorted(p.stem for p in (results / "photos").glob("*.json")) == [f"img{i:02d}" for i in range(PHOTO_COUNT)]
    assert not list((results / "photos").glob(".*.tmp"))  # no half-written file left behind
    counts = status["streams"]["photos"]["counters"]
    assert counts["delivered.results"] == PHOTO_COUNT and counts["retried.results"] >= 1, counts
    assert "dead" not in counts or counts["dead"] == 0, counts
    assert all(p["restarts"] == 0 for p in status["processes"]), status["processes"]  # retried, not crashed
