"""Talk to a running supervisord over its unix socket: the nginx-style signals of pipectl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from ..errors import MasterError
from .render import Layout

READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 120.0
REOPEN_TIMEOUT_S = 10.0
POLL_S = 0.2
RUNNING_STATES = {"RUNNING", "STARTING", "BACKOFF"}


@dataclass(frozen=True)
class ReloadResult:
    added: list[str]
    changed: list[str]
    removed: list[str]


class Master:
    """The supervisord of one runtime dir."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.layout.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def pid(self) -> int | None:
        """supervisord's pid when it is alive, else None (a stale pid file is ignored)."""
        try:
            pid = int(self.layout.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def start(self, *, foreground: bool) -> None:
        """Start supervisord on the rendered config; in the foreground this process becomes supervisord."""
        if self.running():
            raise MasterError(
                f"already running in {self.layout.root} (pid {self.pid()}): use `pipectl -s reload` or `-s stop`"
            )
        # UTF-8 mode: supervisord reads its file as UTF-8 whatever the locale (paths may be non-ASCII)
        args = [sys.executable, "-X", "utf8", "-m", "supervisor.supervisord", "-c", str(self.layout.conf)]
        if foreground:
            os.execv(sys.executable, [*args, "-n"])
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MasterError(f"supervisord failed to start: {result.stderr.strip() or result.stdout.strip()}")
        self._wait(self.running, READY_TIMEOUT_S, "supervisord did not come up")

    def processes(self) -> list[dict[str, Any]]:
        return self._call(lambda rpc: rpc.supervisor.getAllProcessInfo())

    def reload(self) -> ReloadResult:
        """Apply the re-rendered config: ``reread`` + ``update``, restarting only changed programs."""

        def apply(rpc: Any) -> ReloadResult:
            [[added, changed, removed]] = rpc.supervisor.reloadConfig()
            for name in removed + changed:
                rpc.supervisor.stopProcessGroup(name)
                rpc.supervisor.removeProcessGroup(name)
            for name in added + changed:
                rpc.supervisor.addProcessGroup(name)
            return ReloadResult(sorted(added), sorted(changed), sorted(removed))

        return self._call(apply)

    def stop_programs(self, names: list[str]) -> None:
        def stop(rpc: Any) -> None:
            for name in names:
                try:
                    rpc.supervisor.stopProcessGroup(name)
                except xmlrpc.client.Fault as fault:
                    if "NOT_RUNNING" not in fault.faultString:
                        raise

        self._call(stop)

    def shutdown(self) -> None:
        """Stop every program in reverse start order, then supervisord; wait until it has exited."""
        pid = self.pid()
        if pid is None:
            raise MasterError(f"not running in {self.layout.root}")
        self._call(lambda rpc: rpc.supervisor.shutdown())
        self._wait(lambda: self.pid() is None, EXIT_TIMEOUT_S, f"supervisord (pid {pid}) did not exit")

    def reopen_logs(self) -> None:
        """SIGUSR2: supervisord reopens its own and every running child's log file (after logrotate moved them).

        supervisord handles the signal on its next loop turn; returning only once each moved log file is
        back means a line logged after ``-s reopen`` lands in the new file, never in the moved one.
        """
        pid = self.pid()
        if pid is None:
            raise MasterError(f"not running in {self.layout.root}")
        running = [p["stdout_logfile"] for p in self.processes() if p["statename"] == "RUNNING"]
        moved = [path for path in [self.layout.supervisord_log, *map(Path, running)] if not path.exists()]
        os.kill(pid, signal.SIGUSR2)
        self._wait(
            lambda: all(path.exists() for path in moved),
            REOPEN_TIMEOUT_S,
            f"supervisord (pid {pid}) did not reopen the moved logs within {REOPEN_TIMEOUT_S:.0f}s: "
            + ", ".join(map(str, moved)),
        )

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self.rpc())
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise MasterError(f"cannot reach supervisord at {self.layout.socket}: {exc}") from exc
        except xmlrpc.client.Fault as exc:
            raise MasterError(f"supervisord refused: {exc.faultString}") from exc

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise MasterError(message)
            time.sleep(POLL_S)
