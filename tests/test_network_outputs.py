"""Outputs ``http``, ``tcp`` and ``udp`` against real receivers on 127.0.0.1 (written here, independently of the
kinds), on the in-memory bus; and once end to end through pipectl with the detector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import trustme
from test_config import problems, write

from framefarm.bus.base import Bus, frame_key
from framefarm.message import FrameMessage
from framefarm.modules import counters
from framefarm.outputs.base import Output
from framefarm.outputs.http import HttpOutput
from framefarm.outputs.tcp import TcpOutput
from framefarm.outputs.udp import UdpOutput

from conftest import MEDIA
from harness import running, stage_context
from peers import wait_for
from workspace import Workspace

DOG = (MEDIA / "dog.jpg").read_bytes()
SECRET = "webhook-secret"
FAST_RETRY = {"min_backoff": "100ms", "max_backoff": "500ms", "max_retries": 100}
DETECTIONS = [
    {"class_id": 16, "class_name": "dog", "confidence": 0.9, "box": [120, 220, 320, 540], "yolo": [0.3, 0.7, 0.3, 0.6]},
    {"class_id": 2, "class_name": "car", "confidence": 0.4, "box": [460, 70, 690, 170], "yolo": [0.8, 0.2, 0.3, 0.2]},
    {"class_id": 1, "class_name": "bicycle", "confidence": 0.7, "box": [13, 12, 56, 42], "yolo": [0.1, 0.1, 0.1, 0.1]},
]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def output(kind: type[Output], tmp_path: Path, bus_url: str, **options: Any) -> Output:
    raw = {"name": kind.kind_name(), "alias": "out", **options}
    return kind(stage_context(bus_url, tmp_path, kind.Options.model_validate(raw)))


def send(bus: Bus, seq: int, detections: list[dict] | None = None, source: str | None = None) -> str:
    """A frame of the dog photo with ``detections`` (default DETECTIONS) queued for the output; its id."""
    key = frame_key("cam")
    message = FrameMessage(
        stream="cam", input="cam", source=source or f"photo-{seq}.jpg", seq=seq, captured_at=time.time(),
        width=768, height=576, key=key, format="jpeg", model="m",
        detections=DETECTIONS if detections is None else detections,
    )  # fmt: skip
    assert bus.flow.admit("cam", key, limit=1000, ttl=600)
    bus.frames.put(key, DOG, ttl=600, refs=1)
    bus.send("out", message.model_dump(exclude_none=True))
    return message.frame_id


def count(out: Output, name: str) -> int:
    return out.ctx.bus.flow.counters().get("cam", {}).get(name, 0)


def state(out: Output) -> dict[str, Any]:
    return out.ctx.bus.flow.reports().get("out", {})


# ---- http ----


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: answers each request with the next of ``script`` (then 200), checks the signature
    and keeps every body it accepted (``taken``), with how many requests came at all (``requests``)."""

    script: list[tuple[int, dict[str, str]]]
    taken: list[Any]
    requests: list[str]
    verified: list[bool]
    authorizations: list[str]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.requests.append(self.headers.get("Content-Type", ""))
        cls.authorizations.append(self.headers.get("Authorization", ""))
        timestamp = self.headers.get("X-Framefarm-Timestamp", "")
        wanted = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(self.headers.get("X-Framefarm-Signature", ""), f"sha256={wanted}")
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        status, headers = cls.script.pop(0) if cls.script else (200, {})
        if status == 200:
            cls.verified.append(signed and fresh)
            cls.taken.append(json.loads(body) if "json" in cls.requests[-1] else body.decode())
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        answer = b'{"error": "no such camera"}' if status == 400 else b"{}"
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def hook(
    port: int, script: list[tuple[int, dict[str, str]]], tls: ssl.SSLContext | None = None
) -> Iterator[type[Hook]]:
    fresh = {"script": list(script), "taken": [], "requests": [], "verified": [], "authorizations": []}
    handler = type("Handler", (Hook,), fresh)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def authority(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA made here: a server context for 'localhost' and the CA's PEM file for the client."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return context, tmp_path / "ca.pem"


def test_http_results_arrive_signed_through_a_receiver_down_for_30s_then_503_and_429(
    tmp_path: Path, bus_url: str, authority: tuple[ssl.SSLContext, Path]
) -> None:
    context, ca_file = authority
    port = free_port()
    out = output(
        HttpOutput, tmp_path, bus_url, url=f"https://localhost:{port}/hook", ca_file=ca_file, secret=SECRET,
        retry={"min_backoff": "200ms", "max_backoff": "2s", "max_retries": 60},
    )  # fmt: skip
    with running(out):
        ids = [send(out.ctx.bus, seq) for seq in range(5)]
        wait_for(lambda: count(out, counters.retried("out")) >= 5, 20, "first failed attempts")
        down = state(out)
        time.sleep(30)  # the receiver stays away for 30 s
        script = [(503, {}), (503, {}), (429, {"Retry-After": "1"})]
        with hook(port, script, context) as received:
            wait_for(lambda: len(received.taken) >= 5, 60, "every result")
            wait_for(lambda: count(out, counters.delivered("out")) == 5, 10, "the counts")
    assert sorted(r["id"] for r in received.taken) == sorted(ids)  # each once, none lost
    assert all(received.verified) and received.requests.count("application/json") == 8  # 3 refused + 5 taken
    assert down["state"] == "failing" and "ConnectError" in down["last_error"]
    assert state(out)["state"] == "delivering" and state(out)["sent"] == 5
    assert {d["class_name"] for d in received.taken[0]["detections"]} == {"dog", "car", "bicycle"}
    assert out.ctx.bus.flow.in_flight("cam") == 0


def test_http_4xx_is_rejected_once_and_counted_and_batches_are_json_arrays(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    out = output(HttpOutput, tmp_path, bus_url, url=f"http://127.0.0.1:{port}/hook", retry=FAST_RETRY)
    with hook(port, [(400, {})]) as received, running(out):
        send(out.ctx.bus, 0)
        wait_for(lambda: count(out, counters.rejected("out")) == 1, 20, "the rejection")
        time.sleep(1)  # a retry would come within the backoff (100-500 ms)
    assert received.requests == ["application/json"] and received.taken == []
    assert "answered 400 Bad Request" in state(out)["last_error"] and "no such camera" in state(out)["last_error"]
    assert state(out)["failed"] == 1 and out.ctx.bus.flow.in_flight("cam") == 0

    batched = output(
        HttpOutput, tmp_path, bus_url, url=f"http://127.0.0.1:{port}/hook", batch=4, flush_interval="300ms"
    )
    with hook(port, []) as received, running(batched):
        ids = [send(batched.ctx.bus, seq) for seq in range(10)]
        wait_for(lambda: sum(len(body) for body in received.taken) >= 10, 20, "all ten results")
    assert all(isinstance(body, list) and 1 <= len(body) <= 4 for body in received.taken)
    assert sorted(r["id"] for body in received.taken for r in body) == sorted(ids)


def test_http_basic_and_bearer_auth_and_a_client_certificate(
    tmp_path: Path, bus_url: str, authority: tuple[ssl.SSLContext, Path]
) -> None:
    port = free_port()
    basic = output(HttpOutput, tmp_path, bus_url, url=f"http://cam%20ops:p%40ss@127.0.0.1:{port}/hook")
    with hook(port, []) as received, running(basic):
        send(basic.ctx.bus, 0)
        wait_for(lambda: len(received.taken) == 1, 20, "the result")
    assert received.authorizations == ["Basic " + base64.b64encode(b"cam ops:p@ss").decode()]
    assert "p@ss" not in state(basic)["last_error"] and "p%40ss" not in basic.shown

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    ca.configure_trust(server_tls)
    server_tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no request
    client = ca.issue_cert("framefarm-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
    url = f"https://localhost:{port}/hook"
    common = {"url": url, "ca_file": tmp_path / "server-ca.pem", "token": "t0k", "retry": FAST_RETRY}
    with hook(port, [], server_tls) as received:
        without = output(HttpOutput, tmp_path, bus_url, **common)
        with running(without):
            send(without.ctx.bus, 1)
            wait_for(lambda: count(without, counters.retried("out")) >= 1, 20, "a refused handshake")
        with_cert = output(HttpOutput, tmp_path, bus_url, client_cert=tmp_path / "client.pem", **common)
        with running(with_cert):
            wait_for(lambda: len(received.taken) == 1, 20, "the result over mutual TLS")
    assert received.authorizations == ["Bearer t0k"]


def test_http_yolo_format_filters_and_an_annotated_snapshot(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    yolo = output(HttpOutput, tmp_path, bus_url, url=url, format="yolo", classes=["dog", 1], min_confidence=0.5)
    with hook(port, []) as received, running(yolo):
        frame_id = send(yolo.ctx.bus, 3, source="door.jpg")
        send(yolo.ctx.bus, 4, detections=[DETECTIONS[1]])  # nothing passes min_confidence, but it is still sent
        wait_for(lambda: len(received.taken) == 2, 20, "the YOLO results")
    first, second = sorted(received.taken, key=lambda text: json.loads(text.splitlines()[0][2:])["seq"])
    header, *lines = first.splitlines()
    assert json.loads(header.removeprefix("# ")) == {"id": frame_id, "stream": "cam", "seq": 3, "source": "door.jpg"}
    assert [line.split()[0] for line in lines] == ["16", "1"]  # the car is filtered out (class and confidence)
    assert second.count("\n") == 1

    snap = output(
        HttpOutput, tmp_path, bus_url, url=url, snapshot="annotated", snapshot_max_side=320, only_with_detections=True
    )
    with hook(port, []) as received, running(snap):
        send(snap.ctx.bus, 5, detections=[])
        send(snap.ctx.bus, 6)
        wait_for(lambda: len(received.taken) == 1 and count(snap, counters.filtered("out")) == 1, 20, "one result")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(received.taken[0]["snapshot"]), np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.resize(cv2.imdecode(np.frombuffer(DOG, np.uint8), cv2.IMREAD_COLOR), (320, 240))
    assert image.shape == (240, 320, 3) and received.taken[0]["seq"] == 6
    assert np.abs(image.astype(int) - plain).mean() > 1  # boxes and labels were drawn on it


def test_network_outputs_check_their_options(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """\
pipeline:
  inputs:
    - name: dir_images
      tag: cam
      path: in
  outputs:
    - name: http
      url: https://hooks.example/frames
      format: yolo
      batch: 8
      snapshot: raw
      ca_file: missing.pem
    - name: tcp
      host: 127.0.0.1
      port: 9000
      format: yolo
""",
    )
    assert problems(config) == [
        "pipeline.yaml:11: pipeline.outputs[0].snapshot: a snapshot travels in JSON results: set format: json, or "
        "snapshot: none",
        "pipeline.yaml:10: pipeline.outputs[0].batch: a batch is a JSON array: set format: json, or batch: 1",
        f"pipeline.yaml:12: pipeline.outputs[0].ca_file: {tmp_path / 'missing.pem'} is not a file",
        "pipeline.yaml:13: pipeline.outputs[1].framing: YOLO results are several lines: use framing: length with "
        "format: yolo",
    ]


# ---- tcp ----


class TcpReceiver:
    """Reads records in either framing (its own reader), ``drop_after`` records per connection then closes it."""

    def __init__(
        self, port: int, framing: str, drop_after: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.framing, self.drop_after, self.tls = framing, drop_after, tls
        self.records: list[dict] = []
        self.connections = 0
        self.conn: socket.socket | None = None
        self.listener = socket.create_server(("127.0.0.1", port))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.conn = conn
            with conn, conn.makefile("rb") as stream:
                for taken in range(self.drop_after or 10**9):
                    record = self.read(stream)
                    if record is None:
                        break
                    self.records.append(record)
                    if taken + 1 == self.drop_after:
                        conn.shutdown(socket.SHUT_RDWR)

    def read(self, stream: Any) -> dict | None:
        if self.framing == "jsonl":
            line = stream.readline()
            return json.loads(line) if line.endswith(b"\n") else None
        header = stream.read(4)
        if len(header) < 4:
            return None
        (size,) = struct.unpack(">I", header)
        return json.loads(stream.read(size))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone would leave it listening)
        self.listener.close()
        if self.conn is not None and self.conn.fileno() != -1:
            self.conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("framing", ["jsonl", "length"])
def test_tcp_reconnects_after_a_dropped_connection_and_keeps_up_to_max_pending(
    tmp_path: Path, bus_url: str, framing: str
) -> None:
    port = free_port()
    out = output(
        TcpOutput, tmp_path, bus_url, host="127.0.0.1", port=port, framing=framing, max_pending=3, retry=FAST_RETRY
    )
    receiver = TcpReceiver(port, framing, drop_after=3)
    with running(out):
        first = [send(out.ctx.bus, seq) for seq in range(3)]
        wait_for(lambda: len(receiver.records) == 3 and count(out, counters.delivered("out")) == 3, 20, "3 records")
        receiver.close()  # it dropped the connection after 3 records, and now it is gone
        later = [send(out.ctx.bus, seq) for seq in range(3, 8)]
        wait_for(lambda: count(out, counters.dropped("out")) == 2, 20, "two dropped past max_pending")
        while_away = state(out)
        receiver = TcpReceiver(port, framing)
        wait_for(lambda: len(receiver.records) == 3, 20, "the three that waited")
        receiver.close()
    assert sorted(r["id"] for r in receiver.records) == sorted(later[:3])  # the first three waited, two were dropped
    assert while_away["state"] == "failing" and while_away["dropped"] == 2
    assert any(said in while_away["last_error"] for said in ("Connection refused", "(max_pending) already wait"))
    assert count(out, counters.delivered("out")) == 6 and out.ctx.bus.flow.in_flight("cam") == 0
    assert first and receiver.connections == 1


def test_tcp_over_tls_notices_the_receiver_closing_before_the_next_record(
    tmp_path: Path, bus_url: str, authority: tuple[ssl.SSLContext, Path]
) -> None:
    context, ca_file = authority
    port = free_port()
    out = output(TcpOutput, tmp_path, bus_url, host="localhost", port=port, tls=True, ca_file=ca_file, retry=FAST_RETRY)
    receiver = TcpReceiver(port, "jsonl", drop_after=2, tls=context)  # TLS 1.3: it sends session tickets too
    with running(out):
        ids = [send(out.ctx.bus, seq) for seq in range(2)]
        wait_for(lambda: len(receiver.records) == 2 and count(out, counters.delivered("out")) == 2, 20, "2 records")
        ids += [send(out.ctx.bus, seq) for seq in range(2, 4)]
        wait_for(lambda: len(receiver.records) == 4, 20, "2 more over a new connection")
        receiver.close()
    assert sorted(r["id"] for r in receiver.records) == sorted(ids) and receiver.connections == 2
    assert count(out, counters.retried("out")) == 0  # the close was seen before writing, nothing had to be resent


# ---- udp ----


def udp_receiver(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(10)
    return sock


def reassembled(sock: socket.socket, results: int) -> tuple[list[dict], list[bytes]]:
    """Read datagrams until ``results`` whole results are in; (results, every datagram)."""
    datagrams, parts, whole = [], {}, []
    while len(whole) < results:
        data = sock.recv(65536)
        datagrams.append(data)
        piece = json.loads(data)  # every datagram is valid JSON on its own
        if "parts" not in piece:
            whole.append(piece)
            continue
        parts.setdefault(piece["id"], {})[piece["part"]] = piece["data"]
        if len(parts[piece["id"]]) == piece["parts"]:
            whole.append(json.loads("".join(parts[piece["id"]][i] for i in range(piece["parts"]))))
    return whole, datagrams


def test_udp_splits_a_large_result_into_valid_json_datagrams_and_filters(tmp_path: Path, bus_url: str) -> None:
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    out = output(UdpOutput, tmp_path, bus_url, host="127.0.0.1", port=port, snapshot="raw", classes=[16, "bicycle"])
    with running(out):
        frame_id = send(out.ctx.bus, 1, source='a ünïcode "name".jpg')
        results, datagrams = reassembled(receiver, 1)
    assert len(datagrams) > 5 and all(len(d) <= 1400 for d in datagrams)
    assert results[0]["id"] == frame_id and results[0]["source"] == 'a ünïcode "name".jpg'
    assert [d["class_name"] for d in results[0]["detections"]] == ["dog", "bicycle"]
    assert base64.b64decode(results[0]["snapshot"])[:2] == b"\xff\xd8"


def test_udp_over_ipv6_and_yolo_parts_each_with_their_header(tmp_path: Path, bus_url: str) -> None:
    receiver = udp_receiver(socket.AF_INET6, "::1")
    port = receiver.getsockname()[1]
    many = [dict(DETECTIONS[0], confidence=0.5 + i / 100) for i in range(20)]
    out = output(UdpOutput, tmp_path, bus_url, host="::1", port=port, format="yolo", max_datagram=300)
    with running(out):
        frame_id = send(out.ctx.bus, 2, detections=many)
        datagrams = [receiver.recv(65536)]
        parts = json.loads(datagrams[0].decode().splitlines()[0].removeprefix("# "))["parts"]
        datagrams += [receiver.recv(65536) for _ in range(parts - 1)]
        receiver.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing more
            receiver.recv(65536)
    headers = [json.loads(d.decode().splitlines()[0].removeprefix("# ")) for d in datagrams]
    assert parts > 1 and [(h["id"], h["part"], h["parts"]) for h in headers] == [
        (frame_id, i, parts) for i in range(parts)
    ]
    assert sum(len(d.decode().splitlines()) - 1 for d in datagrams) == 20 and all(len(d) <= 300 for d in datagrams)


def test_udp_to_a_multicast_group_on_loopback(tmp_path: Path, bus_url: str) -> None:
    group = "239.255.42.99"
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    receiver.bind(("0.0.0.0", 0))
    receiver.settimeout(10)
    membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)  # Linux lets loopback join
    port = receiver.getsockname()[1]
    out = output(UdpOutput, tmp_path, bus_url, host=group, port=port, multicast_interface="127.0.0.1", ttl=3)
    with running(out):
        frame_id = send(out.ctx.bus, 1)
        results, _ = reassembled(receiver, 1)
        ttl = out.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL)
    assert results[0]["id"] == frame_id and ttl == 3


# ---- end to end ----


def test_photos_in_detections_out_over_http_tcp_and_udp(tmp_path: Path) -> None:
    http_port, tcp_port = free_port(), free_port()
    udp = udp_receiver()
    outputs = f"""\
    - name: http
      alias: hook
      url: http://127.0.0.1:{http_port}/frames
    - name: tcp
      alias: socket
      host: 127.0.0.1
      port: {tcp_port}
    - name: udp
      alias: datagrams
      host: 127.0.0.1
      port: {udp.getsockname()[1]}
"""
    ws = Workspace(tmp_path)
    ws.write(ws.yaml(out_extra=outputs))
    tcp = TcpReceiver(tcp_port, "jsonl")
    try:
        with hook(http_port, []) as received:
            ws.pipectl("start")
            ws.drop("dog.jpg", "dog.jpg")
            ws.drop("person.jpg", "person.jpg")
            over_udp, _ = reassembled(udp, 2)
            wait_for(lambda: len(received.taken) == 2 and len(tcp.records) == 2, 60, f"results ({ws.logs()})")
            wait_for(lambda: "sent 2" in ws.pipectl("status").stdout.split("outputs:")[-1], 10, "the states")
            status = ws.pipectl("status").stdout.split("outputs:")[1]
    finally:
        ws.force_stop()
        tcp.close()
    for alias in ("hook", "socket", "datagrams", "results"):
        assert f"  {alias}  delivering for" in status and "sent 2 retried 0 failed 0 dropped 0" in status, status
    for results in (received.taken, tcp.records, over_udp):
        found = {r["source"]: {d["class_name"] for d in r["detections"]} for r in results}
        assert "dog" in found["dog.jpg"] and "person" in found["person.jpg"], found
