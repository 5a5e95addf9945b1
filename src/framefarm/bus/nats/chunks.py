"""Frames kept on the frames stream (those that do not travel inline): chunks, a deadline and a refs count.

A frame up to the server's max payload is one message on ``framefarm.frame.<key>.0``; a larger one is split
into chunks on ``.1``, ``.2``..., the head (``.0``) written last so that a reader that finds it finds every
chunk. A frame whose in-flight entry counts its releases (it was admitted by the process that put it) needs
nothing more; one put without admission and with several consumers keeps its count on ``.refs``. Expiry: the
stream's ``max_age`` is the larger of ``frames.ttl`` and ``frames.lossless_ttl``; each frame also carries its
own deadline, checked by ``get``, and on servers 2.11+ a ``Nats-TTL`` header so its storage is reclaimed at
that deadline too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from ...errors import FrameMissing
from ..base import NAMESPACE
from .jetstream import token
from .link import NatsLink
from .subjectmap import SubjectMap
from .wire import Received

HEADER_ROOM = 4096  # bytes of the server's max payload left for headers when a frame is split into chunks
EXPIRES = "Framefarm-Expires"
CHUNKS = "Framefarm-Chunks"
REFS = "Framefarm-Refs"
KEY_MEMORY = 4096  # keys remembered by a KeyMemory


class KeyMemory:
    """A bounded, thread-safe set of frame keys: what this process learnt of frames it read, for their release."""

    def __init__(self, size: int = KEY_MEMORY) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)

    def pop(self, key: str) -> bool:
        """Whether ``key`` was remembered; forgotten from here on."""
        with self._lock:
            return self._keys.pop(key, 0) is None


def _expired(msg: Received) -> bool:
    deadline = msg.headers.get(EXPIRES)
    return deadline is not None and time.time() > float(deadline)


def _take_ref(data: bytes | None) -> tuple[bytes | None, bool]:
    """One consumer is done: (new refs value or None to leave it, whether that was the last reference)."""
    left = int(data) if data else 1  # no refs entry: a single consumer (or the frame expired)
    return (str(left - 1).encode(), False) if left > 1 else (None, True)


class StreamFrames:
    """Frames on ``framefarm.frame.<key>.<chunk>``, a refs count (only when above one) on ``....refs``.

    Raises nats-py's errors (the frame store translates them) and FrameMissing."""

    def __init__(self, link: NatsLink, *, max_age: float) -> None:
        self.link = link
        self.map = SubjectMap(link, f"{NAMESPACE}-frames", f"{NAMESPACE}.frame", max_age=max_age)
        self._single = KeyMemory()  # keys of frames read here that have one consumer: their release skips a lookup

    def _base(self, key: str) -> str:
        return f"{self.map.prefix}.{token(key)}"

    def put(self, key: str, data: bytes, ttl: float, refs: int, max_payload: int) -> None:
        """Store ``data``; ``refs`` above one is kept beside it (pass 1 when the in-flight entry counts them)."""
        self.map.ensure()
        size = max(1, max_payload - HEADER_ROOM)
        chunks = [data] if len(data) <= size else [data[i : i + size] for i in range(0, len(data), size)]
        base = self._base(key)
        ttl_header = {"Nats-TTL": str(max(1, math.ceil(ttl)))} if self.map.msg_ttl else {}
        for i, chunk in enumerate(chunks[1:], start=1):
            self.map.put(f"{base}.{i}", chunk, ttl_header)
        if refs > 1:
            self.map.put(f"{base}.refs", str(refs).encode(), ttl_header)
        head = {EXPIRES: f"{time.time() + ttl:.3f}", CHUNKS: str(len(chunks)), REFS: str(refs), **ttl_header}
        self.map.put(f"{base}.0", chunks[0], head)  # last: a reader that finds the head finds every chunk

    def get(self, key: str) -> bytes:
        base = self._base(key)
        head = self.map.get(f"{base}.0")
        if head is None or _expired(head):
            raise FrameMissing(f"frame {key} expired or was released")
        if head.headers.get(REFS) == "1":
            self._single.add(key)
        rest = [self.map.get(f"{base}.{i}") for i in range(1, int(head.headers.get(CHUNKS, "1")))]
        if any(msg is None for msg in rest):
            raise FrameMissing(f"frame {key} lost a chunk (expired or released while read)")
        return b"".join([head.data, *(msg.data for msg in rest if msg)])

    def release(self, key: str) -> bool:
        """One consumer of a frame with no in-flight entry is done; purge it after the last. True when it was."""
        if not self._single.pop(key) and not self.map.update(f"{self._base(key)}.refs", _take_ref):
            return False
        self.purge(key)
        return True

    def purge(self, key: str) -> None:
        self._single.pop(key)
        self.map.purge(f"{self._base(key)}.>")
