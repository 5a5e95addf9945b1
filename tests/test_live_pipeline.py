"""Live inputs end to end through pipectl (supervisord, the embedded Redis, real processes): a camera whose URL
holds a password, and one whose password is wrong; neither password may appear in any log, result, rendered file
or ``pipectl status``, which shows each input's state. Also: the example pipeline configs/rtsp.yaml validates."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from peers import rtsp_server, wait_for
from workspace import Workspace

GOOD, BAD = "Cam-Pass@1", "Not/The:Pass"  # both with characters that must be percent-encoded in a URL
GOOD_URL, BAD_URL = "Cam-Pass%401", "Not%2FThe%3APass"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("CAM_PASS", GOOD_URL)
    monkeypatch.setenv("BAD_PASS", BAD_URL)
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.force_stop()


def pipeline(port: int) -> str:
    camera = f"127.0.0.1:{port}/cam"
    return f"""\
service:
  runtime_dir: run
  stop_timeout: 10s
  http:
    listen: 127.0.0.1:0
pipeline:
  inputs:
    - name: rtsp
      alias: front
      tag: front
      url: rtsp://viewer:${{CAM_PASS}}@{camera}
      fps: 5
      max_in_flight: 4
      log_every: 1s
    - name: rtsp
      alias: back
      tag: back
      url: rtsp://viewer:${{BAD_PASS}}@{camera}
      failed_after: 1
      reconnect: {{initial: 0.2s, max: 1s}}
  outputs:
    - name: image_files
      alias: results
      path: out
"""


def test_passwords_appear_nowhere_and_status_shows_each_inputs_state(ws: Workspace, tmp_path: Path) -> None:
    with rtsp_server(tmp_path, size="320x180", user="viewer", password=GOOD) as url:
        ws.write(pipeline(int(url.split(":")[2].split("/")[0])))
        ws.pipectl("start")
        results = ws.root / "out" / "front"
        wait_for(lambda: len(list(results.glob("*.json"))) >= 10, 60, f"10 results ({ws.logs()})")
        wait_for(lambda: "back  failed" in ws.pipectl("status").stdout, 30, "the refused input's state")
        status = ws.pipectl("status").stdout
        ws.pipectl("-s", "quit")
    lines = {line.split()[0]: line for line in status.splitlines() if line.startswith("  ")}
    assert "streaming" in lines["front"] and "fps in" in lines["front"] and "last frame" in lines["front"]
    assert "401 Unauthorized" in lines["back"], status
    masked = url.replace("rtsp://", "rtsp://viewer:***@")
    result = json.loads(next(results.glob("*.json")).read_text())
    assert result["source"] == masked and result["stream"] == "front"
    front_log = (ws.root / "run" / "logs" / "front.log").read_text()
    assert "streaming" in front_log and "fps in" in front_log  # the state, in the log too
    texts = [status] + [p.read_bytes().decode("utf-8", "replace") for p in ws.root.rglob("*") if p.is_file()]
    for secret in (GOOD, BAD, GOOD_URL, BAD_URL):
        assert not [t for t in texts if secret in t], secret


def test_the_example_camera_pipeline_is_valid() -> None:
    command = [sys.executable, "-m", "framefarm.cli", "-t", "-c", str(REPO / "configs" / "rtsp.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "test is successful" in done.stdout, done.stderr
