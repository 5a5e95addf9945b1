"""Flow state without a shared store: in-flight bounds kept by each input, counters kept in nsqd.

In-flight bound. Only a stream's input admits its frames, so the input's process holds the stream's
in-flight table itself. Outputs (and stages that discard a frame) send "done" notices, batched every
DONE_BATCH_S, to the stream's ephemeral topic ``_ff.done.<stream>#ephemeral``; the input reads them and
ends the entry after its last release (``refs``). An entry nobody ends expires after the frame's TTL, as
in Redis. nsqd's /stats could not do this: it counts messages per queue, not frames per stream.

Counters. Each process adds to local counters (bus/counts.py) and publishes the deltas to the
durable topic ``_ff.counters``. ``counters()`` (``pipectl status``) reads every message waiting there,
publishes their sum as one message and then FINs them: the sum of all messages in the topic is always the
total, the reader's view is exact when it is the only reader, and a reader that dies before its FIN makes
nsqd redeliver the parts (counted twice then, never lost).

Reports (each stream's latest state) travel in the same topic, as ``{"reports": {stream: fields}}``; the
compaction keeps, per stream, the report with the latest ``at`` and writes it into its sum message, so the
topic always holds every stream's newest report, and a redelivered old one never wins over a newer.

Sequence numbers come from the input's clock (microseconds at its first frame, then +1 per frame): unique
and increasing across restarts while a stream stays under a million frames per second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dramatiq.errors import BrokerConnectionError

from ...backoff import Backoff
from ...errors import BusError
from ..base import Flow
from ..counts import Deltas, Reports
from .client import Subscription
from .http import backlog
from .protocol import nsq_name

if TYPE_CHECKING:
    from .broker import NsqBroker

log = logging.getLogger(__name__)

DONE_BATCH_S = 0.002  # releases that come this close together go out as one message
COUNTERS_TOPIC = "_ff.counters"  # "_" cannot start an alias, so no queue is named like this
DONE_PREFIX = "_ff.done."
EPHEMERAL = "#ephemeral"  # nsqd drops the topic and its notices when the input is gone
DONE_RDY = 100
COMPACT_BATCH = 1000  # under nsqd's default max-rdy-count (2500)
COMPACT_IDLE_S = 0.3  # no message for this long: every waiting delta was read
LISTEN_POLL_S = 0.2  # how soon a closing bus's listener notices


def done_topic(stream: str) -> str:
    return nsq_name(stream, prefix=DONE_PREFIX, suffix=EPHEMERAL)


def is_internal(topic: str) -> bool:
    return topic.startswith("_ff.")


@dataclass
class _Entry:
    expires: float  # monotonic
    refs: int | None = None  # releases still expected; None until the frame is put


def _merge(body: dict, totals: defaultdict[str, Counter[str]], latest: Reports) -> None:
    """Add one counters-topic message into ``totals`` and ``latest`` (per stream, the report with the latest
    ``at`` wins)."""
    for stream, values in body.get("counts", {}).items():
        totals[stream].update(values)
    for stream, fields in body.get("reports", {}).items():
        if fields.get("at", 0) >= latest.get(stream, {}).get("at", 0):
            latest[stream] = fields


class NsqFlow(Flow):
    def __init__(self, broker: NsqBroker) -> None:
        super().__init__()
        self.broker = broker
        self._lock = threading.Lock()
        self._tracked: dict[str, dict[str, _Entry]] = {}  # stream -> key -> entry (streams this input admits)
        self._seq: dict[str, int] = {}
        self._outbox: defaultdict[str, list[str]] = defaultdict(list)  # stream -> done notices to send
        self._stop = threading.Event()
        self._wake = threading.Event()  # done notices are waiting to be sent
        self._threads: dict[str, threading.Thread] = {}

    # -- in-flight bound (input side) --

    def admit(self, stream: str, key: str, *, limit: int, ttl: float) -> bool:
        self._start(f"done:{stream}", self._listen, stream)
        now = time.monotonic()
        with self._lock:
            table = self._tracked.setdefault(stream, {})
            while table:  # admitted in order with the stream's one TTL: the oldest expire first
                oldest = next(iter(table))
                if table[oldest].expires > now:
                    break
                del table[oldest]
            if len(table) >= limit:
                return False
            table[key] = _Entry(now + ttl)
            return True

    def expect(self, key: str, refs: int) -> None:
        """The frame was stored for ``refs`` releases (the store calls this from ``put``)."""
        with self._lock:
            for table in self._tracked.values():
                if key in table:
                    table[key].refs = refs

    def forget(self, key: str) -> None:
        """The frame was never sent (it could not be stored): it is not in flight."""
        with self._lock:
            for table in self._tracked.values():
                table.pop(key, None)

    def _apply(self, stream: str, notices: bytes) -> None:
        with self._lock:
            table = self._tracked.get(stream, {})
            for line in notices.decode().splitlines():
                key, _, every_ref = line.partition(" ")
                entry = table.get(key)
                if entry is None:
                    continue
                entry.refs = 0 if every_ref or entry.refs is None else entry.refs - 1
                if entry.refs <= 0:
                    del table[key]

    def _listen(self, stream: str) -> None:
        """Read the stream's done notices until closed; reconnect with backoff when nsqd goes away."""
        topic, backoff = done_topic(stream), Backoff()
        while not self._stop.is_set():
            try:
                subscription = Subscription(self.broker.endpoints, topic, "flow" + EPHEMERAL, max_in_flight=DONE_RDY)
                with closing(subscription.open()):
                    backoff.reset()
                    self._read_notices(stream, subscription)
            except (BrokerConnectionError, BusError) as exc:
                delay = backoff.next_delay()
                log.warning("done notices of %s: %s; retrying in %.1fs", stream, exc, delay)
                self._stop.wait(delay)

    def _read_notices(self, stream: str, subscription: Subscription) -> None:
        while not self._stop.is_set():
            message = subscription.next(time.monotonic() + LISTEN_POLL_S)
            if message is not None:
                self._apply(stream, message.body)
                message.conn.command(b"FIN", message.id)

    # -- releases (output side) --

    def done(self, stream: str, key: str, *, every_ref: bool = False) -> None:
        """One consumer is done with ``key`` (all of them when ``every_ref``); its input hears of it soon."""
        self._start("flush", self._flush_forever)
        with self._lock:
            self._outbox[stream].append(f"{key} *" if every_ref else key)
        self._wake.set()

    def _flush_forever(self) -> None:
        """Send done notices soon after they appear: the input is waiting for them."""
        while not self._stop.is_set():
            if self._wake.wait(LISTEN_POLL_S):
                self._wake.clear()
                self._stop.wait(DONE_BATCH_S)
                self._flush_done()

    def _flush_done(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, defaultdict(list)
        for stream, keys in outbox.items():
            try:
                self.broker.publish(done_topic(stream), ["\n".join(keys).encode()])
            except (BrokerConnectionError, OSError) as exc:  # the frames' TTLs end them instead
                log.warning("cannot tell %s that %d frames are done: %s", stream, len(keys), exc)

    # -- sequence numbers --

    def next_seq(self, stream: str) -> int:
        with self._lock:
            seq = self._seq.get(stream) or time.time_ns() // 1000
            self._seq[stream] = seq + 1
            return seq

    def in_flight(self, stream: str | None = None) -> int:
        """Frames in flight of ``stream`` (known in its input's process only, 0 elsewhere); without a stream,
        every message waiting, deferred or in flight in the pipeline's queues on every nsqd."""
        if stream is not None:
            now = time.monotonic()
            with self._lock:
                return sum(entry.expires > now for entry in self._tracked.get(stream, {}).values())
        total = 0
        for topic in self.broker.endpoints.topics():
            name = topic["topic_name"]
            if not is_internal(name) and not name.endswith(".XQ"):
                total += sum(backlog(topic, name))
        return total

    # -- counters --

    def write_counts(self, deltas: Deltas) -> None:
        try:
            self.broker.publish(COUNTERS_TOPIC, [json.dumps({"counts": deltas}).encode()])
        except (BrokerConnectionError, OSError) as exc:
            raise BusError(f"nsqd unreachable: {exc}") from exc

    def write_reports(self, reports: Reports) -> None:
        try:
            self.broker.publish(COUNTERS_TOPIC, [json.dumps({"reports": reports}).encode()])
        except (BrokerConnectionError, OSError) as exc:
            raise BusError(f"nsqd unreachable: {exc}") from exc

    def counters(self) -> dict[str, dict[str, int]]:
        """Every stream's totals; compacts the deltas waiting in nsqd into one message (see module doc)."""
        return self._read()[0]

    def reports(self) -> Reports:
        """Every stream's latest report; compacts the topic as ``counters`` does."""
        return self._read()[1]

    def _read(self) -> tuple[dict[str, dict[str, int]], Reports]:
        self.flush_counts()
        if not sum(self.broker.backlog(COUNTERS_TOPIC)):
            return {}, {}
        subscription = Subscription(self.broker.endpoints, COUNTERS_TOPIC, COUNTERS_TOPIC, max_in_flight=COMPACT_BATCH)
        with closing(subscription.open()):
            return self._compact(subscription)

    def _compact(self, subscription: Subscription) -> tuple[dict[str, dict[str, int]], Reports]:
        """Rounds of up to COMPACT_BATCH messages, each replaced by its sum (and newest reports), until a round
        finds the topic empty; the last round read every earlier round's sum, so its sum is the total."""
        while True:
            batch, totals, latest = [], defaultdict(Counter), {}
            deadline = time.monotonic() + COMPACT_IDLE_S
            while len(batch) < COMPACT_BATCH and (message := subscription.next(deadline)) is not None:
                batch.append(message)
                _merge(json.loads(message.body), totals, latest)
                deadline = time.monotonic() + COMPACT_IDLE_S
            result = {stream: dict(values) for stream, values in totals.items()}
            if len(batch) < COMPACT_BATCH:
                subscription.pause()  # our own sum must not come back to this reader, unFINed
            if batch:
                self.broker.publish(COUNTERS_TOPIC, [json.dumps({"counts": result, "reports": latest}).encode()])
                for message in batch:
                    message.conn.command(b"FIN", message.id)
            if len(batch) < COMPACT_BATCH:
                return result, latest

    # -- lifetime --

    def _start(self, name: str, target, *args: str) -> None:
        if name in self._threads or self._stop.is_set():
            return
        with self._lock:
            if name not in self._threads:
                thread = threading.Thread(target=target, args=args, name=f"nsq-flow-{name}", daemon=True)
                self._threads[name] = thread
                thread.start()

    def close(self) -> None:
        """Send what is still buffered (done notices, counters) and stop the background threads."""
        self._stop.set()
        self._wake.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=2 * LISTEN_POLL_S)
        self._flush_done()
        super().close()
