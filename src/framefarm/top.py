"""``pipectl top``: the status redrawn every REFRESH_S on the terminal's alternate screen until q (or Ctrl-C)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.live import Live

from .errors import FramefarmError
from .supervisord.render import Layout
from .supervisord.sampler import Sampler
from .supervisord.status import Trend
from .views import top_view

REFRESH_S = 1.0
QUIT_KEYS = ("q", "Q")


def top(layout: Layout) -> None:
    if not sys.stdin.isatty():
        raise FramefarmError("pipectl top needs a terminal; scripts read `pipectl status --json`")
    sampler = Sampler(layout, Trend())
    try:
        with keys() as key, Live(console=Console(), screen=True, auto_refresh=False) as live:
            while True:
                live.update(top_view(sampler.sample()), refresh=True)
                pressed = key(REFRESH_S)
                if any(k in pressed for k in QUIT_KEYS):
                    return
    except KeyboardInterrupt:
        return
    finally:
        sampler.close()


@contextlib.contextmanager
def keys() -> Iterator[Callable[[float], str]]:
    """A reader of the keys pressed (waiting up to its argument, in seconds), the terminal in cbreak mode meanwhile:
    keys come one by one, unechoed, and Ctrl-C still interrupts."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(wait: float) -> str:
        ready, _, _ = select.select([fd], [], [], wait)
        return os.read(fd, 64).decode(errors="ignore") if ready else ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
