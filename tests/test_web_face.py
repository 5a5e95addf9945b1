"""The operator's views of a running pipeline: the web face (status page in Debian's chromium driven by Playwright,
/metrics read by prometheus-client's own parser, the Dramatiq dashboard, /healthz, /readyz, the token),
`pipectl status --json` and `pipectl top` on a real terminal (tmux). One pipeline serves most of them: a video
published at its own pace, so counters move and previews change while the views are looked at."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from framefarm.modules import counters
from framefarm.modules.health import Health
from framefarm.modules.health import read as read_health
from framefarm.supervisord.status import broker_side, quantile
from framefarm.web.metrics import exposition

from conftest import MODEL, NAMES, REPO, backends
from harness import server_certificate, write_video
from peers import wait_for
from workspace import Workspace

TOKEN = "face-token-0123456789"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright's own browser download is not reachable here
FRAMES, FPS = 30, 2  # a 15 s clip, published in real time (write_video makes at most 31 frames)
TOP_SESSION = "framefarm-top-test"

CONFIG = f"""\
service:
  runtime_dir: run
  heartbeat_timeout: 3s
  stop_timeout: 10s
  http:
    listen: 127.0.0.1:0
    token: ${{FACE_TOKEN}}
pipeline:
  inputs:
    - name: dir_videos
      alias: clips
      tag: clips
      path: videos
      realtime: true
  processors:
    - name: yolo
      alias: detector
      model: {MODEL}
      names: {NAMES}
      intra_threads: 1
  outputs:
    - name: image_files
      alias: results
      path: out
"""


class Face:
    """The running pipeline's web face, asked with and without the token."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        web = ws.root / "run" / "web.json"
        wait_for(web.exists, 60, f"the web face's address ({ws.logs()})")
        self.url = json.loads(web.read_text())["url"]
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=self.auth, **kwargs)

    def status(self) -> dict[str, Any]:
        return self.get("/api/status").json()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{label="value",...}`` -> value, parsed by prometheus-client."""
        text = self.get("/metrics").text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Face]:
    ws = Workspace(tmp_path_factory.mktemp("face"))
    (ws.root / "videos").mkdir()
    ws.write(CONFIG)
    os.environ["FACE_TOKEN"] = TOKEN  # the master's environment: pipectl starts it
    try:
        ws.pipectl("start")
        face = Face(ws)
        clip = ws.root / ".clip.mp4"
        write_video(clip, frames=FRAMES, fps=FPS)
        os.replace(clip, ws.root / "videos" / "clip.mp4")
        yield face
    finally:
        ws.pipectl("-s", "stop", check=False)
        ws.force_stop()
        os.environ.pop("FACE_TOKEN", None)


def status_json(ws: Workspace) -> dict[str, Any]:
    return json.loads(ws.pipectl("status", "--json").stdout)


def test_every_page_and_endpoint_wants_the_token_but_the_probes(face: Face) -> None:
    """/healthz and /readyz answer an orchestrator's probe, which cannot keep a secret; /readyz then gives its answer
    without the reasons."""
    paths = ["/", "/api/status", "/metrics", "/dramatiq/", "/static/face.js", "/preview/x.jpg"]
    for path in paths:
        assert face.client.get(path).status_code == 401, path
        assert face.client.get(path, headers={"Authorization": "Bearer wrong-token"}).status_code == 403, path
    assert face.client.get("/healthz").text == face.get("/healthz").text == "ok\n"
    wait_for(lambda: face.get("/readyz").status_code == 200, 30, "readyz")
    assert face.client.get("/readyz").json() == {"ready": True}
    assert face.get("/readyz").json() == {"ready": True, "problems": []}
    with httpx.Client(base_url=face.url, follow_redirects=True) as browser:  # keeps cookies, as a browser does
        page = browser.get(f"/?token={TOKEN}")  # the first visit: a cookie, and the token off the URL
        assert page.history[0].status_code == 303 and "token" not in str(page.url)
        assert page.status_code == 200 and "<title>framefarm</title>" in page.text
        assert browser.get("/api/status").status_code == 200  # the cookie is enough from then on
    rendered = (face.ws.root / "run" / "supervisord.conf").read_text() + "".join(
        p.read_text() for p in (face.ws.root / "run" / "modules").glob("*.json")
    )
    assert TOKEN not in rendered  # ${FACE_TOKEN} stays unexpanded on disk


def test_the_page_shows_every_module_with_moving_counters_and_previews(face: Face) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.on("console", lambda m: _console_problem(m, problems))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{face.url}?token={TOKEN}")
            for name in ("clips", "detector", "results", "web-face", "embedded-broker"):
                page.wait_for_selector(f"#processes td:text-is('{name}')", timeout=15_000)
            published = _published(page)
            page.wait_for_function(
                f"document.querySelector('#streams tbody tr td:nth-child(5)').textContent > {published}",
                timeout=15_000,
            )
            page.wait_for_selector("#previews figure img[src*='seq=']", timeout=15_000)
            first = page.get_attribute("#previews figure img", "src")
            page.screenshot(path=ARTIFACTS / "status-page-1.png", full_page=True)
            page.wait_for_function(
                f"document.querySelector('#previews figure img').getAttribute('src') !== {json.dumps(first)}",
                timeout=15_000,
            )
            page.wait_for_function("document.querySelector('#previews figure img').naturalWidth > 0", timeout=5_000)
            assert page.locator("#files td", has_text="clip.mp4").count() == 1
            assert page.locator("#queues td:text-is('detector')").count() == 1
            assert page.is_visible("#dashboard-link")  # Redis: the dashboard is there
            page.screenshot(path=ARTIFACTS / "status-page-2.png", full_page=True)
        finally:
            browser.close()
    assert problems == []


def _console_problem(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type in ("error", "warning"):
        problems.append(f"console {message.type}: {message.text}")


def _published(page: Page) -> int:
    cell = "#streams tbody tr td:nth-child(5)"
    page.wait_for_function(f"/^[0-9]+$/.test(document.querySelector('{cell}')?.textContent)", timeout=15_000)
    return int(page.text_content(cell) or 0)


def test_status_shows_file_progress_latency_and_queues(face: Face) -> None:
    def reading() -> bool:
        files = status_json(face.ws).get("files", {})
        return files.get("clips", {}).get("done", 0) > 0

    wait_for(reading, 30, "the clip's progress")
    status = status_json(face.ws)
    progress = status["files"]["clips"]
    assert progress["file"].endswith("clip.mp4") and progress["total"] == FRAMES
    assert status["queues"].keys() == {"detector", "results"}
    text = face.ws.pipectl("status").stdout
    assert f"of {FRAMES} frames" in text and "queues: detector" in text
    assert f"status page: {face.url}" in text


def test_pipectl_top_shows_the_modules_and_quits_on_q(face: Face) -> None:
    command = f"{sys.executable} -m framefarm.cli top -c {face.ws.config}"
    subprocess.run(["tmux", "kill-session", "-t", TOP_SESSION], capture_output=True, check=False)
    command += f" 2>{face.ws.root / 'top.err'}"
    subprocess.run(["tmux", "new-session", "-d", "-s", TOP_SESSION, "-x", "160", "-y", "50", command], check=True)
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", TOP_SESSION], capture_output=True, text=True, check=False
            ).stdout

        ARTIFACTS.mkdir(exist_ok=True)
        try:
            wait_for(lambda: all(name in screen() for name in ("detector", "results", "clips", "q quits")), 30, "top")
        finally:
            (ARTIFACTS / "pipectl-top.txt").write_text(screen())
        subprocess.run(["tmux", "send-keys", "-t", TOP_SESSION, "q"], check=True)

        def quit_() -> bool:  # the session ends with its one command
            return subprocess.run(["tmux", "has-session", "-t", TOP_SESSION], capture_output=True).returncode != 0

        wait_for(quit_, 10, "pipectl top to quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", TOP_SESSION], capture_output=True, check=False)


def test_metrics_agree_with_pipectl_status_once_the_clip_is_done(face: Face) -> None:
    def done() -> bool:
        status = status_json(face.ws)
        counts = status["streams"]["clips"]["counters"]
        return counts.get(counters.delivered("results"), 0) == FRAMES and status["in_flight"] == 0

    wait_for(done, 90, f"every frame delivered ({face.ws.logs()})")
    status = status_json(face.ws)
    stream = status["streams"]["clips"]

    def agree() -> bool:
        metrics = face.metrics()
        return metrics.get('framefarm_output_delivered_total{output="results",stream="clips"}') == FRAMES

    wait_for(agree, 10, "the web face's next sample")
    metrics = face.metrics()
    assert metrics['framefarm_stream_frames_in_total{stream="clips"}'] == stream["counters"]["frames_in"] == FRAMES
    assert metrics['framefarm_stream_published_total{stream="clips"}'] == stream["counters"]["published"]
    assert metrics['framefarm_latency_seconds_count{output="results",stream="clips"}'] == FRAMES
    assert metrics['framefarm_frames_in_flight{stream="clips"}'] == 0
    assert stream["latency"]["count"] == FRAMES and 0 < stream["latency"]["p50_s"] <= stream["latency"]["p99_s"]
    for queue, depth in status["queues"].items():
        assert metrics[f'framefarm_queue_depth{{queue="{queue}"}}'] == depth
    for process in status["processes"]:
        assert metrics[f'framefarm_process_up{{process="{process["name"]}"}}'] == 1
    assert metrics["framefarm_broker_up{}"] == 1


def test_the_dramatiq_dashboard_answers_under_its_prefix(face: Face) -> None:
    page = face.get("/dramatiq/")
    assert page.status_code == 200 and "detector" in page.text and "results" in page.text
    assert face.get("/dramatiq/queues/detector").status_code == 200


def test_readyz_says_which_process_is_down_and_restarts_are_counted(face: Face) -> None:
    wait_for(lambda: face.get("/readyz").status_code == 200, 30, "readyz")
    assert face.get("/readyz").json() == {"ready": True, "problems": []}
    face.ws.supervisorctl("stop", "results")
    try:
        stopped = ["results is STOPPED"]
        wait_for(lambda: face.get("/readyz").json()["problems"] == stopped, 15, "readyz to see the stopped output")
        assert face.get("/readyz").status_code == 503
    finally:
        face.ws.supervisorctl("start", "results")
    wait_for(lambda: face.get("/readyz").status_code == 200, 30, "readyz to recover")
    pid = next(p["pid"] for p in status_json(face.ws)["processes"] if p["name"] == "detector")
    os.kill(pid, signal.SIGKILL)  # supervisord restarts it: one restart, counted by the process itself

    def restarted() -> bool:
        detector = next(p for p in status_json(face.ws)["processes"] if p["name"] == "detector")
        return detector["state"] == "RUNNING" and detector["restarts"] == 1

    wait_for(restarted, 60, "the detector's restart")


@pytest.mark.parametrize("backend", backends(), indirect=True)
def test_metrics_read_every_broker(bus_env: Any) -> None:
    """Counters, latency and states go through each broker's flow and come out of /metrics' collector alike."""
    bus = bus_env.connect()
    stream = bus_env.stream
    bus.flow.count(stream, counters.FRAMES_IN, 5)
    bus.flow.count(stream, counters.delivered("out"), 4)
    for seconds in (0.03, 0.03, 0.03, 2.0):
        bus.flow.count(stream, counters.latency("out", seconds))
        bus.flow.count(stream, counters.latency_sum("out"), round(seconds * 1000))
    bus.flow.flush_counts()
    status = {"at": time.time(), "processes": [], "broker": {"ok": True}, **broker_side(bus, [stream], [])}
    assert status["streams"][stream]["latency"]["count"] == 4
    assert status["streams"][stream]["latency"]["p50_s"] == pytest.approx(0.025 + 0.025 * 2 / 3)
    families = {f.name: f for f in text_string_to_metric_families(exposition(lambda: status).decode())}
    values = {(s.name, s.labels.get("le")): s.value for f in families.values() for s in f.samples
              if s.labels.get("stream") == stream}  # fmt: skip
    assert values[("framefarm_stream_frames_in_total", None)] == 5
    assert values[("framefarm_output_delivered_total", None)] == 4
    assert values[("framefarm_latency_seconds_bucket", "0.05")] == 3
    assert values[("framefarm_latency_seconds_bucket", "+Inf")] == 4
    assert values[("framefarm_latency_seconds_sum", None)] == pytest.approx(2.09)


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    assert quantile({}, 0.5) is None
    assert quantile({"100": 10}, 0.5) == pytest.approx(0.075)  # halfway between 50 and 100 ms
    assert quantile({"5": 99, "inf": 1}, 0.99) == pytest.approx(0.005)
    assert quantile({"inf": 3}, 0.5) == 60.0  # beyond the last bound: reported as that bound


def test_a_module_counts_its_starts_and_keeps_its_last_error(tmp_path: Path) -> None:
    log = logging.getLogger("framefarm.test-health")
    first = Health(tmp_path, "cam")
    log.addHandler(first)
    try:
        log.error("cannot open rtsp://user:secret@cam/stream: refused\ntraceback follows")
    finally:
        log.removeHandler(first)
        first.close()
    fields = read_health(tmp_path / "cam.json")
    assert fields["starts"] == 1 and fields["last_error"] == "cannot open rtsp://user:***@cam/stream: refused"
    Health(tmp_path, "cam").close()  # restarted: the count goes on, the reason it stopped stays shown
    fields = read_health(tmp_path / "cam.json")
    assert fields["starts"] == 2 and "refused" in fields["last_error"]


def test_chromium_and_tmux_are_installed() -> None:
    """The browser and terminal tests need them; scripts/install-peers.sh installs both."""
    assert Path(CHROMIUM).exists() and shutil.which("tmux")


def test_the_face_speaks_https_with_its_certificate_and_checks_the_files(tmp_path: Path) -> None:
    """Relative paths are the pipeline file's, whatever folder the master runs in (--foreground keeps its own)."""
    ws = Workspace(tmp_path / "tls")
    ws.root.mkdir()
    tls, trusted = server_certificate(ws.root)
    http = f"    listen: 127.0.0.1:0\n    tls: {{cert: {tls['cert']}, key: {tls['key']}}}\n"
    pipeline = "pipeline:\n  inputs:\n    - {name: dir_images, alias: photos, tag: photos, path: in}\n"
    pipeline += "  outputs:\n    - {name: image_files, alias: results, path: out}\n"
    ws.write(f"service:\n  runtime_dir: run\n  stop_timeout: 5s\n  http:\n{http}{pipeline}")
    command = [sys.executable, "-m", "framefarm.cli", "start", "--foreground", "-c", str(ws.config)]
    master = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        web = ws.root / "run" / "web.json"
        wait_for(web.exists, 60, f"the web face's address ({ws.logs()})")
        url = json.loads(web.read_text())["url"]
        assert url.startswith("https://127.0.0.1:")
        assert httpx.get(f"{url}healthz", verify=trusted).text == "ok\n"
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer in plain HTTP
            httpx.get(f"{url.replace('https', 'http')}healthz", timeout=5)
    finally:
        ws.pipectl("-s", "stop", check=False)
        master.wait(60)
        ws.force_stop()
    (ws.root / "other.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    for key, said in (("missing.key", f"service.http.tls.key: {ws.root / 'missing.key'} is not a file"),
                      ("other.key", "are not a PEM certificate chain and its unencrypted key")):  # fmt: skip
        ws.write(ws.config.read_text().replace(f"key: {tls['key']}", f"key: {key}"))
        refused = ws.pipectl("-t", check=False)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        tls["key"] = key
