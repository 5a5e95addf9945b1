"""Input ``mjpeg``: ffmpeg's mpjpeg server, and a camera server written here (real sockets, Python's http.server)
for what ffmpeg cannot do: basic and digest authentication, TLS with a self-signed certificate."""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from framefarm.ingest.mjpeg import Mjpeg
from framefarm.modules import counters

from conftest import MEDIA
from harness import queued, running
from livehelp import counts, live_input, report
from peers import mjpeg_server, wait_for

JPEG = (MEDIA / "eagle.jpg").read_bytes()
USER, PASSWORD = "admin", "S3cret:pw"
REALM = "camera"


def test_frames_from_ffmpegs_mpjpeg_server_are_its_jpegs_as_sent(tmp_path: Path, bus_url: str) -> None:
    with mjpeg_server(tmp_path) as url:
        cam = live_input(Mjpeg, tmp_path, bus_url, url=url, max_in_flight=1000)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 25, 20, "25 frames")
            state = report(cam)
        frames = queued(cam.ctx.bus)
        data = cam.ctx.bus.frames.fetch(frames[0])
    assert state["state"] == "streaming" and frames[0].source == url
    assert (frames[0].format, frames[0].width, frames[0].height, frames[0].scale) == ("jpeg", 640, 360, 1.0)
    assert data[:2] == b"\xff\xd8" and data.rstrip(b"\r\n").endswith(b"\xff\xd9")  # one whole JPEG, not re-encoded


def test_max_side_shrinks_the_frames(tmp_path: Path, bus_url: str) -> None:
    with mjpeg_server(tmp_path) as url:
        cam = live_input(Mjpeg, tmp_path, bus_url, url=url, service={"frames": {"max_side": 320}})
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 3, 20, "frames")
    frame = queued(cam.ctx.bus)[0]
    assert (frame.width, frame.height, frame.scale) == (640, 360, 0.5)  # the original's size, stored at half
    assert frame.stored_size == (320, 180)


class Camera(http.server.BaseHTTPRequestHandler):
    """An MJPEG camera: JPEGs at 10 fps as multipart/x-mixed-replace, parts without Content-Length, behind basic
    or digest authentication (``scheme``)."""

    scheme = "basic"
    nonce = secrets.token_hex(8)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self._authorized():
            self.send_response(401)
            challenge = f'Basic realm="{REALM}"' if self.scheme == "basic" else self._digest_challenge()
            self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", 'multipart/x-mixed-replace; boundary="cam frame"')
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"--cam frame\r\nContent-Type: image/jpeg\r\n\r\n" + JPEG + b"\r\n")
                time.sleep(0.1)
        except OSError:
            return

    def _digest_challenge(self) -> str:
        return f'Digest realm="{REALM}", nonce="{self.nonce}", qop="auth", algorithm=MD5'

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.scheme == "basic":
            return header == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if not header.startswith("Digest "):
            return False
        fields = dict(
            (k.strip(), v.strip().strip('"')) for k, v in (item.split("=", 1) for item in header[7:].split(","))
        )
        md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731 (RFC 2617's H)
        ha1, ha2 = md5(f"{USER}:{REALM}:{PASSWORD}"), md5(f"GET:{fields.get('uri')}")
        expected = md5(f"{ha1}:{self.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        return fields.get("username") == USER and fields.get("response") == expected


@contextmanager
def camera(scheme: str, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("Handler", (Camera,), {"scheme": scheme})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/video"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("scheme", "auth"), [("basic", "auto"), ("digest", "auto"), ("basic", "basic"), ("digest", "digest")]
)
def test_basic_and_digest_authentication(tmp_path: Path, bus_url: str, scheme: str, auth: str) -> None:
    with camera(scheme) as url:
        cam = live_input(Mjpeg, tmp_path, bus_url, url=url.replace("//", f"//{USER}:S3cret%3Apw@"), auth=auth)
        with running(cam):
            wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 3, 20, "frames behind authentication")
    assert cam.ctx.bus.frames.fetch(queued(cam.ctx.bus)[0]) == JPEG
    assert queued(cam.ctx.bus)[0].source == url.replace("//", f"//{USER}:***@")


def test_a_wrong_password_is_a_clear_refusal(tmp_path: Path, bus_url: str) -> None:
    with camera("digest") as url:
        cam = live_input(Mjpeg, tmp_path, bus_url, url=url.replace("//", f"//{USER}:Nope-7x@"), failed_after=2)
        with running(cam):
            wait_for(lambda: report(cam).get("state") == "failed", 20, "the refusal")
            state = report(cam)
    assert "refused, 401 Unauthorized" in state["last_error"] and "Nope-7x" not in state["last_error"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("trust", ["system", "ca_file", "verify_off"])
def test_tls_verifies_against_the_system_cas_a_ca_file_or_not_at_all(
    tmp_path: Path, bus_url: str, certificate: tuple[Path, Path], trust: str
) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*certificate)
    options = {"system": {}, "ca_file": {"ca_file": str(certificate[0])}, "verify_off": {"verify": False}}[trust]
    with camera("basic", tls) as url:
        cam = live_input(
            Mjpeg, tmp_path, bus_url, url=url.replace("//", f"//{USER}:S3cret%3Apw@"), failed_after=1, **options
        )
        with running(cam):
            if trust == "system":  # a self-signed certificate: refused, and said so
                wait_for(lambda: report(cam).get("state") == "failed", 20, "the refusal")
                assert "CERTIFICATE_VERIFY_FAILED" in report(cam)["last_error"]
            else:
                wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 3, 20, "frames over TLS")
