"""Tie a process's life to its parent's: when supervisord dies, its modules and broker go with it.

Without this a ``kill -9`` of supervisord leaves every module running as an orphan, and the next ``start``
launches a second set beside them (two inputs on one folder, two brokers on one socket). Linux delivers
``PR_SET_PDEATHSIG``'s signal when the parent exits; the setting survives ``exec``, so
``python -m framefarm.lifeline CMD ARGS...`` gives the same guarantee to a program that is not Python
(the embedded redis-server). Elsewhere it does nothing: ``pipectl start`` still finds and stops leftovers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_USAGE = 64


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``signum`` when the parent exits; True where it is supported (Linux).

    If the parent already died before the call (we were reparented), the signal is sent now.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols hold libc's prctl; no ldconfig fork
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return False
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), signum)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m framefarm.lifeline CMD ARGS...``: exec CMD, which then dies with this process's parent."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m framefarm.lifeline COMMAND [ARGS...]", file=sys.stderr)
        return EXIT_USAGE
    die_with_parent()
    os.execvp(args[0], args)
    return EXIT_USAGE  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
