"""The NATS frame store: frame bytes with a TTL and a refs count, on one stream used as a map."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from typing import Any

from nats.aio.msg import Msg

from ...errors import FrameMissing
from ..base import NAMESPACE, FrameStore
from .flow import NatsFlow
from .jetstream import SubjectMap, run_for_store, token
from .link import NatsLink

HEADER_ROOM = 4096  # bytes of the server's max payload left for headers when a frame is split into chunks
EXPIRES = "Framefarm-Expires"
CHUNKS = "Framefarm-Chunks"
REFS = "Framefarm-Refs"
SINGLE_REF_MEMORY = 4096  # keys of frames read here that have one consumer: their release skips a lookup


def _ttl_header(store: SubjectMap, ttl: float) -> dict[str, str]:
    return {"Nats-TTL": str(max(1, math.ceil(ttl)))} if store.msg_ttl else {}


def _expired(msg: Msg) -> bool:
    deadline = msg.headers.get(EXPIRES) if msg.headers else None
    return deadline is not None and time.time() > float(deadline)


def _take_ref(data: bytes | None) -> tuple[bytes | None, bool]:
    """One consumer is done: (new refs value or None to leave it, whether that was the last reference)."""
    left = int(data) if data else 1  # no refs entry: a single consumer (or the frame expired)
    return (str(left - 1).encode(), False) if left > 1 else (None, True)


class NatsFrameStore(FrameStore):
    """Frames on ``framefarm.frame.<key>.<chunk>``, the refs count (only when above one) on ``....refs``."""

    def __init__(self, link: NatsLink, flow: NatsFlow, *, max_age: float) -> None:
        self.link = link
        self.flow = flow
        self.map = SubjectMap(link, f"{NAMESPACE}-frames", f"{NAMESPACE}.frame", max_age=max_age)
        self._single: OrderedDict[str, None] = OrderedDict()  # loop thread only

    def _base(self, key: str) -> str:
        return f"{self.map.prefix}.{token(key)}"

    def put(self, key: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        run_for_store(self.link, self._put(key, data, ttl, refs))
        return {}

    async def _put(self, key: str, data: bytes, ttl: float, refs: int) -> None:
        await self.map.ensure()
        size = max(1, (await self.link.client()).max_payload - HEADER_ROOM)
        chunks = [data] if len(data) <= size else [data[i : i + size] for i in range(0, len(data), size)]
        base, ttl_header = self._base(key), _ttl_header(self.map, ttl)
        writes = [self.map.put(f"{base}.{i}", chunk, ttl_header) for i, chunk in enumerate(chunks) if i]
        if refs > 1:
            writes.append(self.map.put(f"{base}.refs", str(refs).encode(), ttl_header))
        await asyncio.gather(*writes)  # the head goes last: a reader that finds it finds every chunk
        head = {EXPIRES: f"{time.time() + ttl:.3f}", CHUNKS: str(len(chunks)), REFS: str(refs), **ttl_header}
        await self.map.put(f"{base}.0", chunks[0], head)

    def get(self, key: str) -> bytes:
        return run_for_store(self.link, self._get(key))

    async def _get(self, key: str) -> bytes:
        base = self._base(key)
        head = await self.map.get(f"{base}.0")
        if head is None or _expired(head):
            raise FrameMissing(f"frame {key} expired or was released")
        count = int(head.headers.get(CHUNKS, "1")) if head.headers else 1
        if head.headers and head.headers.get(REFS) == "1":
            self._single[key] = None
            if len(self._single) > SINGLE_REF_MEMORY:
                self._single.popitem(last=False)
        if count == 1:
            return head.data
        rest = await asyncio.gather(*(self.map.get(f"{base}.{i}") for i in range(1, count)))
        if any(msg is None for msg in rest):
            raise FrameMissing(f"frame {key} lost a chunk (expired or released while read)")
        return b"".join([head.data, *(msg.data for msg in rest if msg)])

    def release(self, key: str, stream: str) -> bool:
        return run_for_store(self.link, self._release(key, stream))

    async def _release(self, key: str, stream: str) -> bool:
        base = self._base(key)
        single = self._single.pop(key, 0) is None
        if not single and not await self.map.update(f"{base}.refs", _take_ref):
            return False
        await asyncio.gather(self.map.purge(f"{base}.>"), self.flow.remove(stream, key))
        return True

    def discard(self, key: str, stream: str) -> None:
        run_for_store(self.link, self._discard(key, stream))

    async def _discard(self, key: str, stream: str) -> None:
        await asyncio.gather(self.map.purge(f"{self._base(key)}.>"), self.flow.remove(stream, key))
