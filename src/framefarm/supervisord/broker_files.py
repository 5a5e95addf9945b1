"""The embedded broker's files: owner-only, never older than the state the broker last had.

They hold frames (pictures from the inputs), so the folder is 0700 and the files 0600 (the server itself runs
with umask 077, see render). What the server loads at start must be the newest state it had: the AOF. Two kinds
of file could bring older state back, and both are dealt with before the server starts (``before_start``):

- ``queues.rdb``, the snapshot an older framefarm wrote at ``-s stop``. Where no AOF exists yet it is what the
  last stop queued: it is turned into the AOF once (a server loads it and rewrites it as the AOF), then
  removed. Where an AOF exists it is older than the AOF: removed.
- with ``persist: false`` nothing is kept: an AOF left from when persist was on is removed, so that turning
  persist on again never loads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from ..errors import MasterError
from . import embedded

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SERVER_UMASK = 0o077  # what the server creates is 0600 / 0700
UPGRADE_SOCKET = "old.sock"  # shorter than broker.sock, so it fits wherever that one does
UPGRADE_TIMEOUT_S = 120.0
POLL_S = 0.05


def make_private(runtime_dir: Path) -> None:
    """Create the data folder owner-only, and make what is already in it owner-only (an older framefarm's
    snapshot was 0644)."""
    folder = embedded.data_dir(runtime_dir)
    folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _make_private(folder)


def before_start(runtime_dir: Path, persist: bool, log: Path) -> list[str]:
    """Leave the data folder holding nothing older than the broker's last state, before it starts (and only
    then: a running broker's AOF is never touched). Return what was done, for the log; ``log`` takes the
    output of the server that converts an older snapshot."""
    folder = embedded.data_dir(runtime_dir)
    if persist:
        return [line for line in [upgrade_snapshot(runtime_dir, log)] if line]
    removed = []
    for stale in (folder / embedded.AOF_DIR, folder / embedded.SNAPSHOT_NAME):
        if stale.exists():
            _remove(stale)
            removed.append(f"removed {stale}: service.persist is off, the embedded broker keeps nothing")
    return removed


def upgrade_snapshot(runtime_dir: Path, log: Path) -> str | None:
    """Deal with an older framefarm's ``queues.rdb`` (see the module's docstring); say what was done."""
    folder = embedded.data_dir(runtime_dir)
    snapshot, aof = folder / embedded.SNAPSHOT_NAME, folder / embedded.AOF_DIR
    if not snapshot.exists():
        return None
    if aof.exists():
        snapshot.unlink()
        return f"removed {snapshot}: older than the embedded broker's append-only file, which holds its state"
    _snapshot_to_aof(runtime_dir, log)
    snapshot.unlink()
    return f"moved the queues of {snapshot} into the embedded broker's append-only file"


def _snapshot_to_aof(runtime_dir: Path, log: Path) -> None:
    """Load the snapshot in a server of its own and have it write its AOF (``CONFIG SET appendonly yes``
    rewrites the whole dataset), then shut it down: the broker then starts from that AOF."""
    socket = runtime_dir / UPGRADE_SOCKET
    args = embedded.server_args(runtime_dir, persist=False)
    args[args.index("--unixsocket") + 1] = str(socket)
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_private_umask)
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=UPGRADE_TIMEOUT_S)
    try:
        _wait(lambda: _answers(client, process, log), "to load it")
        client.config_set("appendonly", "yes")
        _wait(lambda: _rewritten(client), "to write it as an append-only file")
        client.shutdown(nosave=True)  # the AOF is fsynced on the way out
        process.wait(timeout=UPGRADE_TIMEOUT_S)
    except (redis.RedisError, OSError, subprocess.TimeoutExpired) as exc:
        raise MasterError(f"cannot turn {embedded.SNAPSHOT_NAME} into an append-only file: {exc}; see {log}") from exc
    finally:
        client.close()
        if process.poll() is None:  # it failed half way: the snapshot stays, the next start tries again
            process.kill()
            process.wait()


def _private_umask() -> None:
    os.umask(SERVER_UMASK)


def _answers(client: redis.Redis, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise MasterError(f"the broker could not load {embedded.SNAPSHOT_NAME} (exit {process.returncode}); see {log}")
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):  # not listening yet, or still loading
        return False


def _rewritten(client: redis.Redis) -> bool:
    info = client.info("persistence")
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise MasterError("the broker failed to write its append-only file (see its log)")
    busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
    return info.get("aof_rewrites", 0) >= 1 and not busy


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + UPGRADE_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise MasterError(f"the broker took over {UPGRADE_TIMEOUT_S:.0f}s {what}")
        time.sleep(POLL_S)


def _make_private(folder: Path) -> None:
    folder.chmod(PRIVATE_DIR)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(parent, name), PRIVATE_DIR)
        for name in files:
            os.chmod(os.path.join(parent, name), PRIVATE_FILE)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
