"""Secrets given through ${VAR} (the broker's password, every token, a webhook's URL password and signing secret,
an ONVIF password) appear nowhere a run leaves text: logs, rendered files, module snapshots, results, the
processes' command lines, `pipectl status` (text and JSON), /metrics and /api/status."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_network_outputs import hook

from conftest import MEDIA
from peers import free_port, running, wait_for
from workspace import Workspace

SECRETS = {
    "REDIS_PASS": "Rp-7c1f0e9a5b",
    "FACE_TOKEN": "Ft-0a9e1f7c22",
    "UPLOAD_TOKEN": "Ut-5d2b8c4e11",
    "HOOK_PASS": "Hp-3e6a9d2f4c",
    "HOOK_SECRET": "Hs-8b1c4f7a6d",
    "MJPEG_TOKEN": "Mt-2f5a8c1e99",
    "ONVIF_PASS": "Op-9c3e6b2d1a",
}


INPUTS = ("photos", "uploads")


def pipeline(redis_port: int, ports: dict[str, int]) -> str:
    return f"""\
service:
  broker: redis://:${{REDIS_PASS}}@127.0.0.1:{redis_port}/0
  runtime_dir: run
  stop_timeout: 10s
  http:
    listen: 127.0.0.1:0
    token: ${{FACE_TOKEN}}
pipeline:
  inputs:
    - {{name: dir_images, alias: photos, tag: cam, path: in}}
    - {{name: http, alias: uploads, tag: cam, listen: "127.0.0.1:{ports["upload"]}", token: "${{UPLOAD_TOKEN}}"}}
  outputs:
    - {{name: image_files, alias: results, path: out}}
    - name: http
      alias: hook
      url: http://framefarm:${{HOOK_PASS}}@127.0.0.1:{ports["hook"]}/results
      secret: ${{HOOK_SECRET}}
    - {{name: mjpeg, alias: preview, listen: "127.0.0.1:{ports["mjpeg"]}", token: "${{MJPEG_TOKEN}}"}}
    - name: onvif
      alias: device
      listen: 127.0.0.1:{ports["onvif"]}
      username: admin
      password: ${{ONVIF_PASS}}
"""


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    with running([*args, "--requirepass", SECRETS["REDIS_PASS"]], port, tmp_path / "redis.log"):
        yield port


def test_no_secret_shows_anywhere_a_run_leaves_text(
    tmp_path: Path, redis_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    ports = {name: free_port() for name in ("upload", "hook", "mjpeg", "onvif")}
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.write(pipeline(redis_port, ports))
    texts: dict[str, str] = {}
    try:
        with hook(ports["hook"], []) as receiver:
            ws.pipectl("start")
            wait_for(lambda: (ws.root / "run" / "web.json").exists(), 60, f"the web face ({ws.logs()})")
            ws.drop("dog.jpg", "dog.jpg")
            upload = f"http://127.0.0.1:{ports['upload']}/v1/frames"
            wait_for(lambda: _posted(upload), 60, f"the upload port ({ws.logs()})")
            wait_for(lambda: len(receiver.taken) >= 2, 60, f"both frames at the webhook ({ws.logs()})")
            wait_for(lambda: len(list((ws.root / "out" / "cam").glob("*.json"))) >= 2, 30, "both results")
            face = json.loads((ws.root / "run" / "web.json").read_text())["url"]
            auth = {"Authorization": f"Bearer {SECRETS['FACE_TOKEN']}"}

            def sampled() -> bool:  # the face samples every second: once it has counted both frames
                texts.update(
                    {p: httpx.get(f"{face}{p}", headers=auth, timeout=10).text for p in ("metrics", "api/status")}
                )
                wanted = [f'framefarm_output_delivered_total{{output="hook",stream="{s}"}} 1.0' for s in INPUTS]
                return all(line in texts["metrics"] for line in wanted)

            wait_for(sampled, 30, "the face's sample of both frames")
            texts["status"] = ws.pipectl("status").stdout
            texts["status --json"] = ws.pipectl("status", "--json").stdout
            processes = subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout
            texts["command lines"] = "\n".join(line for line in processes.splitlines() if str(ws.root) in line)
            texts["webhook bodies"] = json.dumps(receiver.taken)
            ws.pipectl("-s", "quit")
    finally:
        ws.force_stop()
    assert receiver.authorizations[0].startswith("Basic ")  # the password was used, only never shown
    assert "hook" in texts["status"] and '"hook"' in texts["status --json"]
    for path in ws.root.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(ws.root))] = path.read_bytes().decode("utf-8", "replace")
    assert len([name for name in texts if name.startswith("run/logs/")]) >= 7
    leaks = [(name, secret) for name, text in texts.items() for secret in SECRETS.values() if secret in text]
    assert leaks == []


def _posted(url: str) -> bool:
    try:
        answer = httpx.post(
            url, content=(MEDIA / "person.jpg").read_bytes(), timeout=5,
            headers={"Authorization": f"Bearer {SECRETS['UPLOAD_TOKEN']}", "Content-Type": "image/jpeg"},
        )  # fmt: skip
    except httpx.TransportError:
        return False
    return answer.status_code == 202
