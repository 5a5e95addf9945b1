"""Input ``rtsp`` against the real GStreamer RTSP server: TCP and UDP, H.264 and H.265, a server killed and started
again, a server that accepts and says nothing, one that freezes mid-stream, a wrong path, wrong credentials."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from framefarm.ingest.rtsp import Rtsp
from framefarm.modules import counters

from harness import queued, running
from livehelp import LOGGER, counts, live_input, report
from peers import children, cmdline, free_port, rtsp_server, wait_for

SIZE = "320x180"  # small frames: the server, the decoder and the test share two cores


def not_sent(c: dict[str, int]) -> int:
    return sum(c.get(k, 0) for k in (counters.DROPPED_FULL, counters.DROPPED_STALE, counters.SKIPPED_FPS, "failed"))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_frames_flow_over_tcp_and_udp_with_stream_timestamps_and_capture_times(
    tmp_path: Path, bus_url: str, transport: str
) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, transport=transport, max_in_flight=1000)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 25, 20, "25 frames")
            state = report(cam)
    frames = queued(cam.ctx.bus)
    assert state["state"] == "streaming" and state["source"] == url and state["last_error"] is None
    assert frames[0].source == url and (frames[0].width, frames[0].height) == (320, 180)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))  # the stream's own clock, increasing
    assert all(abs(f.captured_at - time.time()) < 30 for f in frames)
    total = counts(cam)
    assert total[counters.FRAMES_IN] == total[counters.PUBLISHED] + not_sent(total)  # every frame counted once


def test_h265_decodes(tmp_path: Path, bus_url: str) -> None:
    with rtsp_server(tmp_path, codec="h265", size=SIZE) as url:
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, max_in_flight=1000)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 10, 20, "10 H.265 frames")
    assert queued(cam.ctx.bus)[0].width == 320


def test_a_server_killed_and_started_again_is_reconnected_and_frames_flow_again(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    cam = live_input(Rtsp, tmp_path, bus_url, url=f"rtsp://127.0.0.1:{port}/cam", max_in_flight=1000, stall_timeout=3)
    with running(cam):
        with rtsp_server(tmp_path, port, size=SIZE):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 10, 20, "frames before the kill")
        wait_for(lambda: report(cam).get("state") in ("reconnecting", "failed", "connecting"), 10, "the loss seen")
        before = counts(cam)[counters.PUBLISHED]
        time.sleep(1.5)  # down for a while: attempts fail, with backoff
        with rtsp_server(tmp_path, port, size=SIZE):
            wait_for(lambda: counts(cam)[counters.PUBLISHED] >= before + 10, 30, "frames after the restart")
            assert report(cam)["state"] == "streaming"
    assert counts(cam)[counters.RECONNECTS] >= 1


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts every connection and never says a word: a camera gone half-dead."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def test_a_server_that_accepts_and_says_nothing_is_a_stall_within_stall_timeout(tmp_path: Path, bus_url: str) -> None:
    with silent_server() as port:
        cam = live_input(
            Rtsp, tmp_path, bus_url, url=f"rtsp://127.0.0.1:{port}/cam", stall_timeout=1.5, open_timeout=60,
            read_timeout=60, reconnect={"initial": 5, "max": 5},
        )  # fmt: skip
        started = time.monotonic()
        with running(cam):
            wait_for(lambda: "no frame for 1.5s" in (report(cam).get("last_error") or ""), 10, "the stall")
            detected = time.monotonic() - started
            stopping = time.monotonic()
        stopped = time.monotonic() - stopping  # the reader still sits in a 60 s open: stop must not wait for it
    assert detected < 1.5 + 1.5  # the watchdog, not the 60 s timeouts
    assert stopped < 3
    assert counts(cam)[counters.RECONNECTS] == 1


def test_a_server_frozen_mid_stream_is_a_stall_and_the_stream_comes_back(tmp_path: Path, bus_url: str) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        server = next(p for p in children() if "rtsp_server.py" in cmdline(p))
        cam = live_input(Rtsp, tmp_path, bus_url, url=url, max_in_flight=1000, stall_timeout=1.5, read_timeout=30)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 10, 20, "frames")
            os.kill(server, signal.SIGSTOP)  # the socket stays open; nothing more comes
            try:
                wait_for(lambda: "no frame for 1.5s" in (report(cam).get("last_error") or ""), 8, "the stall")
            finally:
                os.kill(server, signal.SIGCONT)
            before = counts(cam)[counters.PUBLISHED]
            wait_for(lambda: counts(cam)[counters.PUBLISHED] >= before + 10, 30, "frames after the freeze")


def test_a_wrong_path_is_a_clear_error_retried_with_growing_backoff_never_a_crash(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with rtsp_server(tmp_path, size=SIZE) as url:
        cam = live_input(
            Rtsp, tmp_path, bus_url, url=url + "-nope", failed_after=2, reconnect={"initial": 0.2, "max": 1}
        )
        with caplog.at_level(logging.INFO, logger=LOGGER), running(cam):
            wait_for(lambda: counts(cam).get(counters.RECONNECTS, 0) >= 4, 20, "four attempts")
            state = report(cam)
    assert state["state"] == "failed" and "404 Not Found" in state["last_error"]
    delays = [
        float(r.getMessage().split("reconnecting in ")[1].split("s")[0])
        for r in caplog.records
        if "reconnecting in" in r.getMessage()
    ]
    assert len(delays) >= 4 and max(delays[2:]) >= 0.5  # backing off: 0.1-0.2, 0.2-0.4, then 0.4-0.8 and up
    assert any("404 Not Found" in r.getMessage() for r in caplog.records)


def test_wrong_credentials_are_refused_clearly_and_the_password_shows_nowhere(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with rtsp_server(tmp_path, size=SIZE, user="viewer", password="Right-Pass-1") as url:
        good = url.replace("rtsp://", "rtsp://viewer:Right-Pass-1@")
        bad = url.replace("rtsp://", "rtsp://viewer:Wrong%40Pass-2@")
        ok = live_input(Rtsp, tmp_path, bus_url, alias="ok", url=good, max_in_flight=1000)
        refused = live_input(Rtsp, tmp_path, bus_url, alias="refused", url=bad, failed_after=2)
        with caplog.at_level(logging.DEBUG), running(ok), running(refused):
            wait_for(lambda: counts(ok).get(counters.PUBLISHED, 0) >= 5, 20, "frames with the right password")
            wait_for(lambda: counts(refused).get(counters.RECONNECTS, 0) >= 2, 20, "the refusals")
            states = (report(ok), report(refused))
    assert states[1]["state"] == "failed" and "401 Unauthorized" in states[1]["last_error"]
    assert states[1]["source"] == url.replace("rtsp://", "rtsp://viewer:***@")
    assert queued(ok.ctx.bus)[0].source == url.replace("rtsp://", "rtsp://viewer:***@")
    everything = caplog.text + repr(states) + repr([m.model_dump() for m in queued(ok.ctx.bus)[:5]])
    for secret in ("Right-Pass-1", "Wrong%40Pass-2", "Wrong@Pass-2"):
        assert secret not in everything
