"""Output ``mjpeg``: real HTTP clients on 127.0.0.1 read the previews while frames arrive on the in-memory bus."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from test_network_outputs import DOG, count, free_port, output, send

from framefarm.modules import counters
from framefarm.outputs.mjpeg import MjpegOutput

from harness import repeating, running, server_certificate
from peers import wait_for


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def jpegs(url: str, wanted: int) -> list[np.ndarray]:
    """The first ``wanted`` JPEGs of a multipart/x-mixed-replace stream, decoded (a reader of its own)."""
    found: list[np.ndarray] = []
    buffer = b""
    with httpx.stream("GET", url, timeout=20) as answer:
        assert answer.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        for chunk in answer.iter_bytes():
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length:"))[15:])
                if len(rest) < length + 2:
                    break
                found.append(cv2.imdecode(np.frombuffer(rest[:length], np.uint8), cv2.IMREAD_COLOR))
                buffer = rest[length + 2 :]
                if len(found) == wanted:
                    return found
    raise AssertionError(f"the stream ended after {len(found)} frames")


def sending(out: MjpegOutput, every: float = 0.03) -> AbstractContextManager[None]:
    """Frames for the output until the block ends."""
    return repeating(lambda seq: send(out.ctx.bus, seq), every)


def test_several_browsers_each_get_annotated_frames_and_the_latest_still(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = output(MjpegOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", max_side=320, token="look")
    with running(out):
        before = httpx.get(f"{url}/cam.jpg?token=look")
        unauthorized = httpx.get(f"{url}/cam.jpg")
        results: list[list[np.ndarray]] = []
        with sending(out):
            readers = [
                threading.Thread(target=lambda: results.append(jpegs(f"{url}/cam.mjpg?token=look", 3)))
                for _ in range(3)
            ]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(30)
            still = httpx.get(f"{url}/cam.jpg", headers={"authorization": "Bearer look"})
    assert before.status_code == 404 and unauthorized.status_code == 401
    assert len(results) == 3 and all(image.shape == (240, 320, 3) for frames in results for image in frames)
    plain = cv2.resize(cv2.imdecode(np.frombuffer(DOG, np.uint8), cv2.IMREAD_COLOR), (320, 240))
    assert np.abs(results[0][0].astype(int) - plain).mean() > 1  # the boxes are drawn
    assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"


def test_previews_over_https(tmp_path: Path, bus_url: str) -> None:
    tls, trusted = server_certificate(tmp_path)
    port = free_port()
    out = output(MjpegOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", tls=tls)
    with running(out), sending(out):
        wait_for(lambda: httpx.get(f"https://127.0.0.1:{port}/cam.jpg", verify=trusted).status_code == 200)
        jpeg = httpx.get(f"https://127.0.0.1:{port}/cam.jpg", verify=trusted).content
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer in plain HTTP
            httpx.get(f"http://127.0.0.1:{port}/cam.jpg")
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3


def test_a_client_that_never_reads_holds_up_no_one_and_costs_no_memory(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = output(MjpegOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", annotated=False)
    frames = 600
    with running(out):
        for seq in range(3):
            send(out.ctx.bus, seq)
        wait_for(lambda: httpx.get(f"{url}/cam.jpg").status_code == 200, 20, "a first frame")
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /cam.mjpg HTTP/1.1\r\nHost: preview\r\n\r\n")  # and never reads a byte
        time.sleep(0.5)
        rss = rss_bytes()
        for seq in range(3, frames):
            send(out.ctx.bus, seq)
        got = jpegs(f"{url}/cam.mjpg", 2)  # another client still gets frames
        wait_for(lambda: count(out, counters.delivered("out")) == frames, 60, "every frame through the output")
        grown = rss_bytes() - rss
        stalled.close()
    assert len(got) == 2 and got[0].shape == (576, 768, 3)
    # Kept for that client, 600 frames of ~85 KB would be ~50 MiB; the allocator alone moves a few MiB.
    assert grown < 16 * 2**20, f"{grown / 2**20:.1f} MiB more with a client that reads nothing"
