"""Processes left over from an earlier run of a runtime dir: found by their command lines, and stopped.

A kill -9 of supervisord used to leave every module running; the next ``start`` then ran a second set beside
them (two brokers on one socket, two inputs on one folder). Modules and the embedded broker now die with
supervisord (framefarm.lifeline), but not everywhere nor always: a process that is stopped (SIGSTOP, a
debugger) cannot act on its death signal, another OS has no such signal, and a program may have been started
by hand from the rendered config. So ``pipectl start`` (and ``-s stop`` when no master runs) looks through
/proc for every process whose command line names this runtime dir's module snapshots, its broker socket or
its supervisord.conf, and stops it as supervisord would: SIGTERM (with SIGCONT, so that a stopped process can
act on it), a deadline, then SIGKILL. Modules go first and the broker last, so that modules that stop
gracefully can still hand back their prefetched messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MasterError
from . import embedded
from .render import Layout

PROC = Path("/proc")
KILL_WAIT_S = 10.0  # after SIGKILL: only an uninterruptible sleep (a hung disk) takes longer
POLL_S = 0.05
STAT_STATE, STAT_STARTTIME = 0, 19  # fields 3 and 22 of /proc/PID/stat, counted after the ``(comm)`` field
EXITED_STATES = {"Z", "X"}  # a zombie whose new parent does not reap it has exited all the same
SHOWN_ARGS = 6
ROUNDS = 3  # a leftover supervisord may spawn a module while it is being stopped: look again, a few times


@dataclass(frozen=True)
class Leftover:
    """One process of the runtime dir; ``started`` tells it from a later process given the same pid."""

    pid: int
    started: str
    args: tuple[bytes, ...]
    broker: bool

    def __str__(self) -> str:
        shown = b" ".join(self.args[:SHOWN_ARGS]).decode("utf-8", "backslashreplace")
        return f"pid {self.pid} ({shown}{' ...' if len(self.args) > SHOWN_ARGS else ''})"

    def alive(self) -> bool:
        """Still this process and not yet exited."""
        status = _stat(self.pid)
        return status is not None and status[STAT_STARTTIME] == self.started and status[STAT_STATE] not in EXITED_STATES

    def signal(self, signum: int) -> None:
        if self.alive():
            # exited in between, or another user's: clear() then names it as one it cannot stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


@dataclass(frozen=True)
class Markers:
    """What in a command line ties a process to one runtime dir, as bytes (/proc gives bytes)."""

    modules: bytes  # a prefix: every module's snapshot lives in there
    socket: bytes
    conf: bytes

    @classmethod
    def of(cls, layout: Layout) -> Markers:
        return cls(
            os.fsencode(layout.modules) + b"/",
            os.fsencode(layout.root / embedded.SOCKET_NAME),
            os.fsencode(layout.conf),
        )

    def broker(self, args: Iterable[bytes]) -> bool:
        """The embedded broker: ``--unixsocket PATH``, or ``unixsocket:PATH`` where the server set its title."""
        return any(arg == self.socket or arg.endswith(b":" + self.socket) for arg in args)

    def holds(self, args: tuple[bytes, ...]) -> bool:
        if any(arg.startswith(self.modules) for arg in args) or self.broker(args):
            return True
        return self.conf in args and any(arg.endswith(b"supervisord") for arg in args)


def clear(layout: Layout, timeout: float) -> list[str]:
    """Find and stop every leftover of ``layout``'s runtime dir (``timeout``: how long each wave may take to
    stop gracefully); one line per process stopped. MasterError if one cannot be stopped, as starting beside
    it would run two of it."""
    report: list[str] = []
    for _ in range(ROUNDS):
        leftovers = find(layout)
        if not leftovers:
            return report
        killed = stop(leftovers, timeout)
        report += [f"stopped a leftover of {layout.root}: {p}{' (SIGKILL)' if p in killed else ''}" for p in leftovers]
    left = find(layout)
    if left:
        raise MasterError(f"cannot stop what is left of an earlier run of {layout.root}: {', '.join(map(str, left))}")
    return report


def find(layout: Layout) -> list[Leftover]:
    """Every live process (but this one) whose command line ties it to ``layout``'s runtime dir."""
    markers, found = Markers.of(layout), []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = tuple((entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0"))
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if not markers.holds(args):
            continue
        status = _stat(int(entry.name))
        if status is not None and status[STAT_STATE] not in EXITED_STATES:
            found.append(Leftover(int(entry.name), status[STAT_STARTTIME], args, markers.broker(args)))
    return found


def stop(leftovers: list[Leftover], timeout: float) -> list[Leftover]:
    """Stop the modules (and any supervisord) first, the broker last: SIGTERM, ``timeout``, then SIGKILL.
    Return those that a SIGKILL was needed for."""
    killed = []
    for wave in ([p for p in leftovers if not p.broker], [p for p in leftovers if p.broker]):
        for process in wave:
            process.signal(signal.SIGTERM)
            process.signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs again
        if _wait_gone(wave, timeout):
            continue
        for process in wave:
            if process.alive():
                killed.append(process)
                process.signal(signal.SIGKILL)
        _wait_gone(wave, KILL_WAIT_S)
    return killed


def _wait_gone(processes: list[Leftover], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after ``(comm)`` (which may hold spaces and parentheses); None once gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()
