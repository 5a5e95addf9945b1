"""What a running pipeline is doing, gathered into one JSON-ready dict.

``pipectl status`` (text and ``--json``), ``pipectl top``, the web face's page and its ``/metrics`` all read this,
so they agree. Processes come from this host's supervisord and the modules' health files; counters, states and
queue depths from the broker, which every host shares. ``Trend`` adds what needs two samples: rates and the
latency of the last few seconds.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

from ..bus.base import Bus
from ..config.urls import redact_text
from ..errors import FramefarmError, MasterError
from ..ingest.dir_videos import FILES_ROLE
from ..modules import counters
from ..modules.health import read as read_json
from ..outputs.delivery import ROLE as OUTPUT_ROLE
from .render import Layout
from .running import Running

REDIS_SCHEMES = ("redis", "rediss", "unix")
TREND_WINDOW_S = 10.0  # rates and recent latency are taken over about this long
DELIVERED = counters.delivered("")  # the prefix of every output's delivered counter
Status = dict[str, Any]
Histogram = dict[str, int]  # bucket bound (ms, or "inf") -> frames in that bucket (not cumulative)


def collect(running: Running, bus: Bus | None) -> Status:
    """Everything at once; without a ``bus`` (or when the broker does not answer) the processes only, and why."""
    try:
        found = processes(running)
    except MasterError as exc:  # supervisord went away since it was found running
        found, master = [], redact_text(str(exc))
    else:
        master = None
    status: Status = {
        "at": time.time(),
        "runtime_dir": str(running.layout.root),
        "web": web_address(running.layout),
        "master": master,
        "processes": found,
        "previews": previews(running.layout),
        "broker": {"ok": False, "error": "not connected"},
        "dashboard": broker_scheme(running) in REDIS_SCHEMES,  # the Dramatiq dashboard reads Redis brokers only
    }
    if bus is None:
        return status
    try:
        status |= broker_side(bus, running.aliases("inputs"), stages(running))
        status["broker"] = {"ok": True, "error": None}
    except (*bus.transient_errors, FramefarmError) as exc:
        status["broker"] = {"ok": False, "error": redact_text(f"the broker does not answer: {exc}")}
    return status


def broker_scheme(running: Running) -> str:
    """The broker URL's scheme (after ``${VAR}``s), empty when it cannot be told."""
    try:
        url = str(running.expand(running.snapshots[0]["broker"], "service.broker")) if running.snapshots else ""
    except MasterError:
        return ""
    return url.partition("://")[0]


def web_address(layout: Layout) -> str | None:
    """The web face's URL as it said when it bound its port, if it did."""
    return read_json(layout.web_file).get("url")


def previews(layout: Layout) -> dict[str, Any]:
    """The latest detected frame of each input on this host: its seq, capture time and detections."""
    found = {}
    for about in sorted(layout.previews.glob("*.json")):
        fields = read_json(about)
        if fields and about.with_suffix(".jpg").exists():
            found[about.stem] = fields
    return found


def processes(running: Running) -> list[dict[str, Any]]:
    """This host's processes as supervisord and their health files tell them."""
    result = []
    for info in running.master.processes():
        health = read_json(running.layout.health / f"{info['name']}.json")
        up = info["statename"] == "RUNNING"
        result.append(
            {
                "name": info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}",
                "state": info["statename"],
                "pid": info["pid"] or None,
                "uptime_s": info["now"] - info["start"] if up else None,
                "restarts": max(0, int(health.get("starts", 1)) - 1),
                "last_error": health.get("last_error") or info.get("spawnerr") or None,
                "last_error_at": health.get("last_error_at"),
                "description": info["description"],
            }
        )
    return result


def broker_side(bus: Bus, inputs: Iterable[str], queues: Iterable[str]) -> Status:
    """Streams (counters, frames in flight, latency), queue depths and the modules' reported states: of ``inputs``
    and of every stream that has counters, and of the stages' ``queues``."""
    totals = bus.flow.counters()
    reports = bus.flow.reports()
    streams = {}
    for name in sorted(set(inputs) | set(totals)):
        plain, histograms = split_latency(totals.get(name, {}))
        streams[name] = {
            "counters": plain,
            "in_flight": bus.flow.in_flight(name),
            "histograms": histograms,  # capture-to-delivery latency per output
            "latency": latency_summary(histograms),  # since the counters began
        }
    by_role: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}, "files": {}}
    for name, fields in sorted(reports.items()):
        for text in ("source", "last_error"):  # whoever reported it: no password reaches a page or a script
            if isinstance(fields.get(text), str):
                fields[text] = redact_text(fields[text])
        role = fields.get("role")
        by_role["outputs" if role == OUTPUT_ROLE else "files" if role == FILES_ROLE else "inputs"][name] = fields
    return {
        "in_flight": sum(stream["in_flight"] for stream in streams.values()),
        "streams": streams,
        "queues": {queue: bus.pending(queue) for queue in queues},
        **by_role,
    }


def stages(running: Running) -> list[str]:
    """The queues of the running pipeline's processors and outputs, in route order."""
    names: list[str] = []
    for snapshot in running.snapshots:
        routes = snapshot.get("routes") or {}
        for stage in (*routes.get("processors", ()), *routes.get("outputs", ())):
            if stage[0] not in names:
                names.append(stage[0])
    return names


def split_latency(totals: Mapping[str, int]) -> tuple[dict[str, int], dict[str, Any]]:
    """A stream's counters apart from its latency histograms: (counters, {output: {"buckets", "sum_ms"}})."""
    plain: dict[str, int] = {}
    latency: dict[str, Any] = {}
    for name, value in totals.items():
        if name.startswith(counters.LATENCY_PREFIX):
            output, _, bound = name.removeprefix(counters.LATENCY_PREFIX).rpartition(".le")
            latency.setdefault(output, {"buckets": {}, "sum_ms": 0})["buckets"][bound] = value
        elif name.startswith(counters.LATENCY_SUM_PREFIX):
            output = name.removeprefix(counters.LATENCY_SUM_PREFIX)
            latency.setdefault(output, {"buckets": {}, "sum_ms": 0})["sum_ms"] = value
        else:
            plain[name] = value
    return plain, latency


def merged(histograms: Iterable[Mapping[str, Any]]) -> Histogram:
    """The buckets of several histograms added up (a stream's latency over all its outputs)."""
    total: Counter[str] = Counter()
    for histogram in histograms:
        total.update(histogram["buckets"])
    return dict(total)


def quantile(buckets: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile in seconds, interpolated within its bucket as Prometheus's histogram_quantile does;
    None without a frame. One in the open bucket is reported as the highest bound."""
    bounds = [*(str(b) for b in counters.LATENCY_BOUNDS_MS), counters.OPEN_BOUND]
    count = sum(buckets.get(b, 0) for b in bounds)
    if count <= 0:
        return None
    rank, seen, lower = q * count, 0, 0.0
    for bound in bounds:
        inside = buckets.get(bound, 0)
        if bound == counters.OPEN_BOUND:
            break
        if inside and seen + inside >= rank:
            return (lower + (float(bound) - lower) * (rank - seen) / inside) / 1000
        seen, lower = seen + inside, float(bound)
    return counters.LATENCY_BOUNDS_MS[-1] / 1000


def latency_summary(histograms: Mapping[str, Any]) -> dict[str, Any]:
    """Deliveries (a frame counts once per output), and the p50 and p99 of their capture-to-delivery latency."""
    buckets = merged(histograms.values())
    return {"count": sum(buckets.values()), "p50_s": quantile(buckets, 0.5), "p99_s": quantile(buckets, 0.99)}


class Trend:
    """Rates and recent latency from the samples of the last ``TREND_WINDOW_S`` (for views that refresh)."""

    def __init__(self, window: float = TREND_WINDOW_S) -> None:
        self.window = window
        self.samples: deque[Status] = deque()

    def add(self, status: Status) -> Status:
        """``status`` with ``fps_in`` and ``fps_out`` per stream, ``fps`` per output and ``recent`` latency."""
        while self.samples and status["at"] - self.samples[0]["at"] > self.window:
            self.samples.popleft()
        old = self.samples[0] if self.samples else None
        self.samples.append(status)
        if old is None or "streams" not in status or "streams" not in old:
            return status
        span = status["at"] - old["at"]
        for name, stream in status["streams"].items():
            before = old["streams"].get(name, {"counters": {}, "histograms": {}})
            stream.update(_stream_trend(stream, before, span))
        delivered = _delivered_per_output(status["streams"])
        delivered_then = _delivered_per_output(old["streams"])
        for name, fields in status.get("outputs", {}).items():
            fields["fps"] = (delivered.get(name, 0) - delivered_then.get(name, 0)) / span
        return status


def _stream_trend(now: Mapping[str, Any], then: Mapping[str, Any], span: float) -> dict[str, Any]:
    def rate(value: int, before: int) -> float:
        return max(0, value - before) / span

    count, old = now["counters"], then["counters"]
    delivered = [name for name in count if name.startswith(DELIVERED)]
    out = max((rate(count[name], old.get(name, 0)) for name in delivered), default=0.0)
    recent = Counter(merged(now["histograms"].values()))
    recent.subtract(merged(then["histograms"].values()))
    return {
        "fps_in": rate(count.get(counters.FRAMES_IN, 0), old.get(counters.FRAMES_IN, 0)),
        "fps_out": out,
        "recent": {"count": sum(recent.values()), "p50_s": quantile(recent, 0.5), "p99_s": quantile(recent, 0.99)},
    }


def _delivered_per_output(streams: Mapping[str, Any]) -> Counter[str]:
    total: Counter[str] = Counter()
    for stream in streams.values():
        for name, value in stream["counters"].items():
            if name.startswith(DELIVERED):
                total[name.removeprefix(DELIVERED)] += value
    return total
