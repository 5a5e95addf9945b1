"""Start real servers for tests on free loopback ports, and stop them by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
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


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; its output goes to ``log`` for post-mortems."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port) or proc.poll() is not None, what=f"{args[0]} on port {port}")
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def redis_server(tmp: Path, port: int | None = None) -> Iterator[str]:
    binary = require_binary("redis-server", "apt-get install -y redis-server")
    port = port or free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    with running(args, port, tmp / f"redis-{port}.log"):
        yield f"redis://127.0.0.1:{port}/0"
