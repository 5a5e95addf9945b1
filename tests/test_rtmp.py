"""Input ``rtmp``: pulling from nginx-rtmp fed by an ffmpeg publisher, and listening for publishers that push,
one after the other, as an encoder (OBS, a camera) does."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from framefarm.ingest.rtmp import Rtmp, RtmpOptions
from framefarm.modules import counters

from harness import queued, running
from livehelp import counts, live_input, report
from peers import free_port, nginx_rtmp, publisher, wait_for


def test_pull_from_an_rtmp_server(tmp_path: Path, bus_url: str) -> None:
    with nginx_rtmp(tmp_path) as port:
        url = f"rtmp://127.0.0.1:{port}/live/cam"
        with publisher(url, tmp_path / "publisher.log"):
            cam = live_input(Rtmp, tmp_path, bus_url, url=url, max_in_flight=1000)
            with running(cam):
                wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 25, 30, "25 frames through nginx")
                state = report(cam)
    frames = queued(cam.ctx.bus)
    assert state["state"] == "streaming" and frames[0].source == url
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_listen_takes_one_publisher_after_another(tmp_path: Path, bus_url: str) -> None:
    listen = f"rtmp://127.0.0.1:{free_port()}/live/key"
    cam = live_input(Rtmp, tmp_path, bus_url, listen=listen, max_in_flight=1000)
    with running(cam):
        wait_for(lambda: report(cam).get("state") == "listening", 10, "listening")
        for push in range(1, 3):
            before = counts(cam).get(counters.PUBLISHED, 0)
            with publisher(listen, tmp_path / f"push{push}.log", seconds=5) as proc:
                wait_for(lambda b=before: counts(cam).get(counters.PUBLISHED, 0) >= b + 25, 20, f"push {push}")
                assert report(cam)["state"] == "streaming"
                proc.wait(20)  # it pushed its 5 s and left
            wait_for(lambda: report(cam).get("state") == "listening", 10, f"listening again after push {push}")
        assert counts(cam).get(counters.RECONNECTS, 0) == 0  # a publisher leaving is no failure: no backoff
    assert queued(cam.ctx.bus)[0].source == listen.replace("/key", "/***")  # the stream key admits publishers


@pytest.mark.parametrize(
    "options",
    [{}, {"url": "rtmp://a/live/x", "listen": "rtmp://127.0.0.1:1935/live/x"}, {"listen": "http://127.0.0.1/x"}],
)
def test_either_url_or_listen(options: dict) -> None:
    with pytest.raises(ValidationError):
        RtmpOptions(name="rtmp", tag="t", **options)
