"""Input ``http``: a real server on a free port, httpx as the client, frames on the in-memory bus (and once
end to end through pipectl with the detector)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from test_config import VALID, problems, write
from test_mjpeg import USER, Camera

from framefarm.ingest.base import Input
from framefarm.ingest.http import Http
from framefarm.modules import counters

from conftest import MEDIA
from harness import png_of_size, queued, running
from livehelp import counts, live_input, report
from peers import wait_for
from workspace import Workspace

DOG = (MEDIA / "dog.jpg").read_bytes()
PERSON = (MEDIA / "person.jpg").read_bytes()
TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, verify: Any = True) -> bool:
    try:
        return httpx.get(f"{url}/healthz", verify=verify, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def server(
    tmp_path: Path, bus_url: str, scheme: str = "http", verify: Any = True, **options: Any
) -> Iterator[tuple[Input, str]]:
    """An ``http`` input serving on a free port; yields it and its base URL once /healthz answers."""
    port = free_port()
    upload = live_input(Http, tmp_path, bus_url, alias="uploads", listen=f"127.0.0.1:{port}", **options)
    url = f"{scheme}://127.0.0.1:{port}"
    with running(upload):
        wait_for(lambda: answers(url, verify), 10, "the server to answer /healthz")
        yield upload, url


def post(
    url: str, data: bytes, content_type: str = "image/jpeg", token: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"content-type": content_type, **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{url}/v1/frames", content=data, headers=headers, **kwargs)


def test_a_raw_jpeg_is_one_frame_whose_id_is_answered(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url) as (upload, url):
        answer = post(url, DOG, params={"source": "phone-7"})
    frames = queued(upload.ctx.bus)
    assert answer.status_code == 202 and len(answer.json()["ids"]) == 1
    assert len(frames) == 1 and frames[0].key.endswith(":" + answer.json()["ids"][0])
    assert (frames[0].format, frames[0].width, frames[0].height) == ("jpeg", 768, 576)
    assert (frames[0].source, frames[0].stream) == ("phone-7", "uploads")
    assert upload.ctx.bus.frames.fetch(frames[0]) == DOG


def test_multipart_with_two_files_is_two_frames_named_by_their_files(tmp_path: Path, bus_url: str) -> None:
    files = [("file", ("dog.jpg", DOG, "image/jpeg")), ("file", ("person.jpg", PERSON, "image/jpeg"))]
    with server(tmp_path, bus_url) as (upload, url):
        answer = httpx.post(f"{url}/v1/frames", files=files, params={"tag": "uploads.door"})
    frames = queued(upload.ctx.bus)
    assert answer.status_code == 202 and len(set(answer.json()["ids"])) == 2
    assert [f.source for f in frames] == ["dog.jpg", "person.jpg"]
    assert {f.stream for f in frames} == {"uploads.door"}
    assert upload.ctx.bus.frames.fetch(frames[1]) == PERSON


def test_token_missing_is_401_wrong_is_403_right_is_202_and_healthz_needs_none(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url, token=TOKEN) as (upload, url):
        missing = post(url, DOG)
        wrong = post(url, DOG, token="nope")
        right = post(url, DOG, token=TOKEN)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in missing.json()["error"]
    assert wrong.status_code == 403 and wrong.json()["error"] == "wrong token"
    assert right.status_code == 202 and len(queued(upload.ctx.bus)) == 1
    assert queued(upload.ctx.bus)[0].source == right.json()["ids"][0]  # no name given: named by its id


def test_a_body_over_max_body_is_413_whether_declared_or_streamed(tmp_path: Path, bus_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield DOG[:1000]
        yield DOG[1000:]

    with server(tmp_path, bus_url, max_body="4KiB") as (upload, url):
        declared = post(url, DOG)
        streamed = post(url, chunks())  # type: ignore[arg-type]  # chunked: no Content-Length
    assert declared.status_code == 413 and "over max_body (4096)" in declared.json()["error"]
    assert streamed.status_code == 413 and "over max_body" in streamed.json()["error"]
    assert queued(upload.ctx.bus) == []


def test_other_content_types_are_415_and_bad_images_422(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url, max_pixels=1_000_000) as (upload, url):
        text = post(url, b"hello", "text/plain")
        garbage = post(url, b"this is not an image at all", "image/png")
        truncated = post(url, DOG[:20000])
        bomb = post(url, png_of_size(5000, 5000), "image/png")
        mixed = httpx.post(
            f"{url}/v1/frames",
            files=[("a", ("dog.jpg", DOG, "image/jpeg")), ("b", ("cut.jpg", DOG[:9000], "image/jpeg"))],
        )
    assert text.status_code == 415 and "'text/plain' is not taken" in text.json()["error"]
    assert garbage.status_code == 422 and "not a JPEG, PNG" in garbage.json()["error"]
    assert truncated.status_code == 422 and "truncated JPEG" in truncated.json()["error"]
    assert bomb.status_code == 422 and "over max_pixels" in bomb.json()["error"]
    assert mixed.status_code == 422 and mixed.json()["error"].startswith("cut.jpg: truncated JPEG")
    assert queued(upload.ctx.bus) == []  # a request with a bad image publishes nothing, not even its good ones


def test_a_full_stream_is_503_with_retry_after_and_a_tag_no_output_takes_is_422(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url, max_in_flight=1, retry_after=3) as (upload, url):
        first = post(url, DOG)
        second = post(url, PERSON)
        bad_tag = post(url, DOG, params={"tag": "a b"})
        drops = counts(upload).get(counters.DROPPED_FULL, 0)
    assert first.status_code == 202
    assert second.status_code == 503 and second.headers["retry-after"] == "3"
    assert "max_in_flight" in second.json()["error"] and second.json()["accepted"] == []
    assert bad_tag.status_code == 422 and "tag 'a b'" in bad_tag.json()["error"]
    assert len(queued(upload.ctx.bus)) == 1 and drops == 1


def test_https_with_a_certificate_made_here(tmp_path: Path, bus_url: str) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    tls = {"cert": "server.pem", "key": "server.key"}
    with server(tmp_path, bus_url, "https", trusted, tls=tls) as (upload, url):
        answer = post(url, DOG, verify=trusted)
        with pytest.raises(httpx.ConnectError):
            post(url, DOG)  # the system's CAs do not trust it
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer in plain HTTP
            post(url.replace("https", "http"), DOG)
    assert answer.status_code == 202 and len(queued(upload.ctx.bus)) == 1


def test_uploaded_photos_get_detections_end_to_end(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    port = free_port()
    inputs = f"    - name: http\n      alias: uploads\n      tag: uploads\n      listen: 127.0.0.1:{port}\n"
    text = ws.yaml()
    start, end = text.index("    - name: dir_images"), text.index("  processors:")
    ws.write(text[:start] + inputs + text[end:])
    try:
        ws.pipectl("start")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 60, f"the upload server ({ws.logs()})")
        for name, data in (("dog", DOG), ("person", PERSON)):
            assert post(url, data, params={"source": name}).status_code == 202
        results = {r["source"]: r for r in ws.wait_results(2)}
    finally:
        ws.force_stop()
    assert "dog" in {d["class_name"] for d in results["dog"]["detections"]}
    assert "person" in {d["class_name"] for d in results["person"]["detections"]}


class Snapshots(Camera):
    """A camera's snapshot URL behind digest authentication, with ETags: ``images[0]`` until the test changes it;
    ``down`` answers 500; ``served`` counts 200s (full answers) and ``unchanged`` 304s."""

    scheme = "digest"
    images: list[bytes] = [DOG]
    down = False
    served = 0
    unchanged = 0

    def do_GET(self) -> None:
        cls = type(self)
        if not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", self._digest_challenge())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if cls.down:
            self.send_error(500, "camera busy")
            return
        image = cls.images[0]
        etag = f'"{hashlib.sha256(image).hexdigest()[:16]}"'
        if self.headers.get("If-None-Match") == etag:
            cls.unchanged += 1
            self.send_response(304)
            self.end_headers()
            return
        cls.served += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(image)))
        self.end_headers()
        self.wfile.write(image)


@contextmanager
def snapshot_camera() -> Iterator[tuple[type[Snapshots], str]]:
    handler = type("Handler", (Snapshots,), {"images": [DOG], "down": False, "served": 0, "unchanged": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://{USER}:S3cret%3Apw@127.0.0.1:{httpd.server_address[1]}/snapshot.jpg"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_poll_publishes_each_change_once_behind_digest_and_recovers_from_failures(tmp_path: Path, bus_url: str) -> None:
    with snapshot_camera() as (cam, url):
        poller = live_input(Http, tmp_path, bus_url, url=url, interval=0.1, allow_private=True, max_in_flight=100)
        with running(poller):
            wait_for(lambda: cam.unchanged >= 3, 20, "polls of an unchanged image")
            cam.images[0] = PERSON
            wait_for(lambda: len(queued(poller.ctx.bus)) == 2, 20, "the changed image")
            cam.down = True
            wait_for(lambda: report(poller).get("failures", 0) >= 2, 20, "failures in the report")
            failing = report(poller)
            cam.down = False
            wait_for(lambda: report(poller).get("failures") == 0, 20, "the recovery")
            wait_for(lambda: cam.unchanged >= 6, 20, "polls after the recovery")
    frames = queued(poller.ctx.bus)
    assert [poller.ctx.bus.frames.fetch(f) for f in frames] == [DOG, PERSON]  # each change once, no repeat
    assert cam.served == 2
    assert failing["state"] == "failing" and "500" in failing["last_error"]
    assert "S3cret" not in str(failing) and "failures in a row" in failing["last_error"]
    assert frames[0].source == url.replace("S3cret%3Apw", "***")


def test_poll_refuses_a_private_address_unless_allowed(tmp_path: Path, bus_url: str) -> None:
    with snapshot_camera() as (cam, url):
        poller = live_input(Http, tmp_path, bus_url, url=url, interval=0.1)
        with running(poller):
            wait_for(lambda: report(poller).get("failures", 0) >= 1, 20, "the refusal")
    assert "a private address; set allow_private: true" in report(poller)["last_error"]
    assert cam.served == 0 and queued(poller.ctx.bus) == []


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path) -> None:
    http_input = "    - name: http\n      alias: uploads\n      tag: cam.uploads\n      tls: {cert: cert.pem}\n"
    text = VALID.replace(
        "    - name: dir_images\n      alias: uploads\n      tag: cam.uploads\n      path: ${INBOX:-in}\n", http_input
    )
    found = problems(write(tmp_path, text))
    assert found == [
        "pipeline.yaml:9: pipeline.inputs[0].tls: set both cert and key for HTTPS, or neither",
        f"pipeline.yaml:9: pipeline.inputs[0].tls.cert: {tmp_path / 'cert.pem'} is not a file",
    ]


def test_200_concurrent_uploads_are_200_frames_with_distinct_ids(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url, max_in_flight=1000) as (upload, url), ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: post(url, DOG, params={"source": f"photo-{i}"}), range(200)))
    frames = queued(upload.ctx.bus)
    ids = [answer.json()["ids"][0] for answer in replies if answer.status_code == 202]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert sorted(f.key.rpartition(":")[2] for f in frames) == sorted(ids)
    assert sorted(f.source for f in frames) == sorted(f"photo-{i}" for i in range(200))
    assert len({f.seq for f in frames}) == 200
