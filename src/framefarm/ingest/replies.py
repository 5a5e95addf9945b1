"""The results of an input's own frames, for clients that wait for them (``?wait=true``) or ask later.

The input names a reply queue in each frame's message; the last processor on the frame's route (or the input
itself, when no processor takes the tag) sends the frame's result there once its detections are ready. The input
consumes that queue like any stage, so it works on every broker and with any number of detector workers, and a
result sent while the input was restarting waits in the queue.

What is kept lives in this process, for ``ttl`` and at most ``limit`` frames: a frame accepted before a restart of
the input is unknown until its result arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..bus.base import Bus
from ..bus.worker import consuming

PREFIX = "_replies."  # aliases start with a letter or digit: no stage's queue can be named like this
PENDING, DONE, FAILED, UNKNOWN = "pending", "done", "failed", "unknown"
REPLY_THREADS = 1  # storing a result is a dict update


def reply_queue(alias: str) -> str:
    """The queue on which the input ``alias`` receives its frames' results."""
    return PREFIX + alias


@dataclass(slots=True)
class Entry:
    expires: float
    result: dict[str, Any] | None = None  # set when done
    error: str | None = None  # set when failed: the frame was given up and no result will come
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return DONE if self.result is not None else FAILED if self.error is not None else PENDING

    def answer(self) -> dict[str, Any] | None:
        """The result when done, ``{"error": ...}`` when failed, None while pending."""
        return self.result if self.result is not None else {"error": self.error} if self.error is not None else None


class Replies:
    """Frame id -> pending or done (with its result), oldest forgotten first after ``ttl`` or past ``limit``."""

    def __init__(self, *, ttl: float, limit: int) -> None:
        self.ttl, self.limit = ttl, limit
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # in order of expiry: every entry lives ``ttl``

    def expect(self, frame_id: str) -> None:
        """``frame_id`` is about to be published: pending from now on (before its result can arrive)."""
        with self.lock:
            self.entries[frame_id] = Entry(time.monotonic() + self.ttl)
            self._forget_old()

    def forget(self, frame_id: str) -> None:
        """``frame_id`` was not published after all."""
        with self.lock:
            self.entries.pop(frame_id, None)

    def arrived(self, frame_id: str, result: dict[str, Any] | None, error: str | None = None) -> None:
        """The result of ``frame_id``, or the ``error`` it was given up for (again, after a redelivery: the newer
        one is kept); wakes its waiters."""
        with self.lock:
            entry = self.entries.pop(frame_id, None) or Entry(0.0)
            entry.result, entry.error, entry.expires = result, error, time.monotonic() + self.ttl
            self.entries[frame_id] = entry
            waiters, entry.waiters = entry.waiters, []
            self._forget_old()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, future)

    def state(self, frame_id: str) -> tuple[str, dict[str, Any] | None]:
        """(pending | done | failed | unknown, the result when done or ``{"error": ...}`` when failed)."""
        with self.lock:
            self._forget_old()
            entry = self.entries.get(frame_id)
        if entry is None:
            return UNKNOWN, None
        return entry.state, entry.answer()

    async def wait(self, frame_ids: list[str], timeout: float) -> list[dict[str, Any] | None]:
        """What ``frame_ids`` came to (see ``Entry.answer``) once none is pending, or after ``timeout`` (None for
        those still pending)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        with self.lock:
            for frame_id in frame_ids:
                entry = self.entries.get(frame_id)
                if entry is not None and entry.state == PENDING:
                    future = loop.create_future()
                    entry.waiters.append((loop, future))
                    futures.append(future)
        try:
            if futures:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*futures), timeout)
        finally:  # also when the client went away: its futures leave the entries
            with self.lock:
                entries = [self.entries.get(frame_id) for frame_id in frame_ids]
                for entry in entries:
                    if entry is not None:
                        entry.waiters = [(lp, f) for lp, f in entry.waiters if f not in futures]
        return [entry.answer() if entry is not None else None for entry in entries]

    def on_reply(self, payload: dict[str, Any]) -> None:
        """The reply queue's handler: ``{"id", "result"}`` (results.reply_payload) or ``{"id", "error"}``
        (results.failure_payload)."""
        self.arrived(payload["id"], payload.get("result"), payload.get("error"))

    def _forget_old(self) -> None:
        """Forget the oldest entries while they are past ``ttl`` or too many, but none a client waits for."""
        now = time.monotonic()
        while self.entries:
            frame_id, entry = next(iter(self.entries.items()))
            if entry.waiters or (entry.expires > now and len(self.entries) <= self.limit):
                return
            del self.entries[frame_id]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@contextlib.contextmanager
def receiving(bus: Bus, alias: str, replies: Replies, *, stop_timeout: float) -> Iterator[None]:
    """Consume ``alias``'s reply queue into ``replies`` for as long as the block runs."""
    with consuming(bus, reply_queue(alias), replies.on_reply, threads=REPLY_THREADS, stop_timeout=stop_timeout):
        yield
