"""Flow state in Redis: a sorted set of in-flight frames per stream (scored by expiry), seqs, counter hashes, and
one hash of every stream's latest report (JSON)."""

from __future__ import annotations

import json
import time

import redis

from ..base import Flow
from ..counts import Deltas, Reports
from .keys import key

# KEYS: inflight zset, scored by expiry; optionally the stream's seq counter. ARGV: now, expires_at, limit, member.
# Entries whose frame expired (nobody released it) are pruned first. Returns 0 when full, else the frame's seq
# (with the counter) or 1.
_ADMIT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[4])
if KEYS[2] then return redis.call('incr', KEYS[2]) end
return 1
"""

# KEYS: the reports hash. ARGV: triples of stream, at, JSON. A report older than the one kept is ignored.
_REPORT = """
for i = 1, #ARGV, 3 do
  local kept = redis.call('hget', KEYS[1], ARGV[i])
  if not kept or tonumber(cjson.decode(kept)['at']) <= tonumber(ARGV[i + 1]) then
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return 1
"""


class RedisFlow(Flow):
    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self.client = client
        self._admit = client.register_script(_ADMIT)
        self._report = client.register_script(_REPORT)

    def admit(self, stream: str, frame: str, *, limit: int, ttl: float) -> bool:
        now = time.time()
        return bool(self._admit(keys=[key("inflight", stream)], args=[now, now + ttl, limit, frame]))

    def admit_numbered(self, stream: str, frame: str, *, limit: int, ttl: float) -> int | None:
        now = time.time()
        seq = self._admit(keys=[key("inflight", stream), key("seq", stream)], args=[now, now + ttl, limit, frame])
        return int(seq) or None

    def next_seq(self, stream: str) -> int:
        return int(self.client.incr(key("seq", stream)))

    def in_flight(self, stream: str | None = None) -> int:
        keys = [key("inflight", stream)] if stream else list(self.client.scan_iter(key("inflight", "*")))
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for name in keys:
                pipe.zremrangebyscore(name, "-inf", now)
                pipe.zcard(name)
            return sum(pipe.execute()[1::2])

    def write_counts(self, deltas: Deltas) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for stream, amounts in deltas.items():
                for counter, amount in amounts.items():
                    pipe.hincrby(key("stats", stream), counter, amount)
            pipe.execute()

    def counters(self) -> dict[str, dict[str, int]]:
        self.flush_counts()
        prefix = key("stats", "")
        return {
            name.decode()[len(prefix) :]: {k.decode(): int(v) for k, v in self.client.hgetall(name).items()}
            for name in self.client.scan_iter(prefix + "*")
        }

    def write_reports(self, reports: Reports) -> None:
        args = [item for stream, fields in reports.items() for item in (stream, fields["at"], json.dumps(fields))]
        self._report(keys=[key("reports")], args=args)

    def reports(self) -> Reports:
        self.flush_counts()
        return {name.decode(): json.loads(data) for name, data in self.client.hgetall(key("reports")).items()}
