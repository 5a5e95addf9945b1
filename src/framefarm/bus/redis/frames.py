"""Frames as Redis keys with a TTL and, for frames with several consumers, a refs count beside them."""

from __future__ import annotations

from typing import Any

import redis

from ...errors import FrameMissing
from ..base import FrameStore
from .keys import key

# KEYS: frame, refs, inflight zset. Deletes the frame on the last release and ends its in-flight entry.
# A frame stored for one consumer has no refs key: DECR of a missing key gives -1, the last release.
_RELEASE = """
local left = redis.call('decr', KEYS[2])
if left <= 0 then
  redis.call('del', KEYS[1], KEYS[2])
  redis.call('zrem', KEYS[3], KEYS[1])
  return 1
end
return 0
"""


class RedisFrameStore(FrameStore):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE)

    def put(self, frame: str, data: bytes, *, ttl: float, refs: int) -> dict[str, Any]:
        """One SET for a frame with one consumer (the release script counts a missing refs key as 1)."""
        ttl_ms = max(1, int(ttl * 1000))
        if refs == 1:
            self.client.set(frame, data, px=ttl_ms)
            return {}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(frame, data, px=ttl_ms)
            pipe.set(frame + ":refs", refs, px=ttl_ms)
            pipe.execute()
        return {}

    def get(self, frame: str) -> bytes:
        data = self.client.get(frame)
        if data is None:
            raise FrameMissing(f"frame {frame} expired or was released")
        return data

    def release(self, frame: str, stream: str) -> bool:
        return bool(self._release(keys=[frame, frame + ":refs", key("inflight", stream)]))

    def discard(self, frame: str, stream: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(frame, frame + ":refs")
            pipe.zrem(key("inflight", stream), frame)
            pipe.execute()
