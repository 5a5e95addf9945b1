"""Input ``http``: a real server on a free port, httpx as the client, frames on the in-memory bus (and once
end to end through pipectl with the detector)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_config import VALID, problems, write
from test_mjpeg import USER, Camera

from framefarm.bus import connect
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import ServiceOptions
from framefarm.ingest.base import Input
from framefarm.ingest.http import Http
from framefarm.modules import counters
from framefarm.modules.context import ModuleContext
from framefarm.tasks.yolo import Yolo

from conftest import MEDIA, MODEL, NAMES
from harness import QUEUE, png_of_size, queued, running, server_certificate
from livehelp import counts, live_input, report
from peers import Restartable, wait_for
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


DETECTED = Routes(processors=(Stage("det", "*"),), outputs=(Stage(QUEUE, "*"),))


@contextmanager
def detector(tmp_path: Path, bus_url: str) -> Iterator[None]:
    """The real ``yolo`` processor on the bus, between the input and the sink (routes ``DETECTED``)."""
    service = ServiceOptions(broker=bus_url, runtime_dir=tmp_path / "run")
    options = Yolo.Options(name="yolo", alias="det", model=MODEL, names=NAMES, batch=4, max_wait=0.05)
    ctx = ModuleContext(
        alias="det",
        options=options,
        service=service,
        routes=DETECTED,
        bus=connect(bus_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger("det"),
    )
    with running(Yolo(ctx)):
        yield


def classes(result: dict[str, Any]) -> set[str]:
    return {d["class_name"] for d in result["detections"]}


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
        frame_id = right.json()["ids"][0]
        state_without = httpx.get(f"{url}/v1/frames/{frame_id}")
        state_with = httpx.get(f"{url}/v1/frames/{frame_id}", headers={"authorization": f"Bearer {TOKEN}"})
    assert state_without.status_code == 401 and state_with.status_code == 200
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
    tls, trusted = server_certificate(tmp_path)
    with server(tmp_path, bus_url, "https", trusted, tls=tls) as (upload, url):
        answer = post(url, DOG, verify=trusted)
        with pytest.raises(httpx.ConnectError):
            post(url, DOG)  # the system's CAs do not trust it
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer in plain HTTP
            post(url.replace("https", "http"), DOG)
    assert answer.status_code == 202 and len(queued(upload.ctx.bus)) == 1


def http_workspace(tmp_path: Path, broker: Restartable | None, port: int, **extra: str) -> Workspace:
    """The test pipeline with an ``http`` input (alias and tag ``uploads``) on ``port`` instead of its folder."""
    ws = Workspace(tmp_path, broker.url if broker else None)
    inputs = f"    - name: http\n      alias: uploads\n      tag: uploads\n      listen: 127.0.0.1:{port}\n"
    inputs += "".join(f"      {key}: {value}\n" for key, value in extra.items())
    text = ws.yaml(yolo_extra="      workers: 2\n")
    start, end = text.index("    - name: dir_images"), text.index("  processors:")
    ws.write(text[:start] + inputs + text[end:])
    return ws


def test_200_waiting_uploads_all_get_their_results_while_a_detector_worker_is_killed(
    tmp_path: Path, broker: Restartable | None
) -> None:
    """Every broker, two detector processes, one killed with -9 while the uploads wait: each one is answered 200
    with its own detections, and each result is also written once by the output."""
    port, count = free_port(), 200
    ws = http_workspace(tmp_path, broker, port, max_in_flight="1000", wait_timeout="150s")
    url = f"http://127.0.0.1:{port}"

    async def upload_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=count)) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{url}/v1/frames",
                        content=(DOG, PERSON)[i % 2],
                        headers={"content-type": "image/jpeg"},
                        params={"wait": "true", "source": f"p{i:03d}"},
                    )
                    for i in range(count)
                )
            )

    try:
        ws.pipectl("start")
        wait_for(lambda: answers(url), 60, f"the upload server ({ws.logs()})")
        with ThreadPoolExecutor(1) as pool:
            uploads = pool.submit(asyncio.run, upload_all())
            wait_for(lambda: len(ws.result_files()) >= 10, 120, f"the first results ({ws.logs()})")
            victim = next(name for name in ws.pids() if name.startswith("detector"))
            os.kill(ws.pids()[victim], signal.SIGKILL)
            replies = uploads.result(timeout=240)
        written = ws.wait_results(count, timeout=60)
    finally:
        ws.force_stop()
    assert [r.status_code for r in replies] == [200] * count, {r.status_code: r.text for r in replies}
    results = [r.json()["results"][0] for r in replies]
    assert [r["source"] for r in results] == [f"p{i:03d}" for i in range(count)]
    assert all("dog" in classes(r) for r in results[0::2]) and all("person" in classes(r) for r in results[1::2])
    assert sorted(r["source"] for r in written) == [f"p{i:03d}" for i in range(count)]
    assert victim.startswith("detector") and len(written) == count


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


def test_wait_true_answers_each_images_detections_and_get_tells_them_after(tmp_path: Path, bus_url: str) -> None:
    files = [("file", ("dog.jpg", DOG, "image/jpeg")), ("file", ("person.jpg", PERSON, "image/jpeg"))]
    with (
        detector(tmp_path, bus_url),
        server(tmp_path, bus_url, routes=DETECTED) as (_upload, url),
    ):
        answer = httpx.post(f"{url}/v1/frames", files=files, params={"wait": "true"}, timeout=60)
        ids = answer.json()["ids"]
        later = [httpx.get(f"{url}/v1/frames/{frame_id}").json() for frame_id in ids]
        unknown = httpx.get(f"{url}/v1/frames/0123456789abcdef")
    assert answer.status_code == 200, answer.text
    dog, person = answer.json()["results"]
    assert "dog" in classes(dog) and "person" in classes(person)
    assert (dog["source"], dog["width"], dog["model"]) == ("dog.jpg", 768, "yolov3-tiny-coco")
    assert [entry["state"] for entry in later] == ["done", "done"] and later[0]["result"] == dog
    assert unknown.status_code == 404 and unknown.json()["state"] == "unknown"


def test_wait_past_wait_timeout_is_504_and_the_result_still_comes_later(tmp_path: Path, bus_url: str) -> None:
    with server(tmp_path, bus_url, routes=DETECTED, wait_timeout="300ms") as (_upload, url):
        answer = post(url, DOG, params={"wait": "1", "source": "slow"})
        frame_id = answer.json()["ids"][0]
        pending = httpx.get(f"{url}/v1/frames/{frame_id}").json()
        with detector(tmp_path, bus_url):
            wait_for(lambda: httpx.get(f"{url}/v1/frames/{frame_id}").json()["state"] == "done", 60, "the result")
            done = httpx.get(f"{url}/v1/frames/{frame_id}").json()
    assert answer.status_code == 504 and "wait_timeout (0.3s)" in answer.json()["error"]
    assert answer.json()["pending"] == [frame_id] and answer.json()["results"] == [None]
    assert pending == {"id": frame_id, "state": "pending"}
    assert done["result"]["source"] == "slow" and "dog" in classes(done["result"])


def test_a_tag_no_processor_takes_is_answered_at_once_and_the_oldest_results_are_forgotten(
    tmp_path: Path, bus_url: str
) -> None:
    with server(tmp_path, bus_url, max_results=2) as (_upload, url):
        answers = [post(url, DOG, params={"wait": "true", "source": f"p{i}"}) for i in range(3)]
        states = [httpx.get(f"{url}/v1/frames/{a.json()['ids'][0]}").status_code for a in answers]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[2].json()["results"] == [
        {**answers[2].json()["results"][0], "source": "p2", "detections": [], "model": None}
    ]
    assert states == [404, 200, 200]  # max_results: 2


def test_a_frame_given_up_by_the_detector_is_answered_failed_at_once(tmp_path: Path, bus_url: str) -> None:
    with (
        detector(tmp_path, bus_url),
        server(tmp_path, bus_url, routes=DETECTED, max_age="1ms") as (_upload, url),
    ):
        answer = post(url, DOG, params={"wait": "true"}, timeout=60)
        frame_id = answer.json()["ids"][0]
        later = httpx.get(f"{url}/v1/frames/{frame_id}").json()
    assert answer.status_code == 200 and answer.json()["failed"] == [frame_id]  # not a 504 after wait_timeout
    assert answer.json()["results"] == [{"error": "skipped: older than its input's max_age"}]
    assert later == {"id": frame_id, "state": "failed", "error": "skipped: older than its input's max_age"}


def test_what_waiting_needs_is_checked_with_the_config(tmp_path: Path) -> None:
    http_input = (
        "    - name: http\n      alias: uploads\n      tag: cam.uploads\n      max_files: 10\n      max_results: 5\n"
        "      wait_timeout: 10m\n      result_ttl: 5m\n"
    )
    text = VALID.replace(
        "    - name: dir_images\n      alias: uploads\n      tag: cam.uploads\n      path: ${INBOX:-in}\n", http_input
    )
    assert problems(write(tmp_path, text)) == [
        "pipeline.yaml:10: pipeline.inputs[0].max_results: below max_files (10): one request's frames must all be kept",
        "pipeline.yaml:11: pipeline.inputs[0].wait_timeout: longer than result_ttl (300s), which keeps what it "
        "waits for",
    ]
