"""``/metrics``: the status (supervisord/status.py) in Prometheus's text format, through prometheus-client.

A custom collector turns the latest status into metric families at each scrape, so the numbers are those of
``pipectl status``: a stream's counter ``frames_in`` is ``framefarm_stream_frames_in_total{stream=...}``; an
output's ``delivered.<output>`` is ``framefarm_output_delivered_total{stream=...,output=...}``; the
capture-to-delivery latency is the histogram ``framefarm_latency_seconds{stream,output}``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..modules import counters
from ..supervisord.sampler import STALE_AFTER_S
from ..supervisord.status import Status

PREFIX = "framefarm"
NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")
MS_PER_S = 1000


def metric_name(*parts: str) -> str:
    return NOT_NAME.sub("_", "_".join((PREFIX, *parts)))


class StatusCollector(Collector):
    def __init__(self, latest: Callable[[], Status]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        status = self.latest()
        age = time.time() - status["at"]
        yield GaugeMetricFamily(metric_name("status_age_seconds"), "Time since the status was read.", value=age)
        yield from _processes(status)
        up = status["broker"]["ok"] and age <= STALE_AFTER_S
        yield GaugeMetricFamily(metric_name("broker_up"), "1 when the broker answered lately.", value=int(up))
        if not up:
            return
        yield from _streams(status["streams"])
        queues = GaugeMetricFamily(metric_name("queue_depth"), "Messages waiting in a stage's queue.", labels=["queue"])
        for queue, depth in status["queues"].items():
            queues.add_metric([queue], depth)
        yield queues


def _processes(status: Status) -> Iterator[Metric]:
    up = GaugeMetricFamily(metric_name("process_up"), "1 when supervisord says RUNNING.", labels=["process"])
    restarts = CounterMetricFamily(
        metric_name("process_restarts"), "Starts after the first since `pipectl start`.", labels=["process"]
    )
    uptime = GaugeMetricFamily(metric_name("process_uptime_seconds"), "Time since it started.", labels=["process"])
    for process in status["processes"]:
        up.add_metric([process["name"]], 1 if process["state"] == "RUNNING" else 0)
        restarts.add_metric([process["name"]], process["restarts"])
        if process["uptime_s"] is not None:
            uptime.add_metric([process["name"]], process["uptime_s"])
    yield from (up, restarts, uptime)


def _streams(streams: dict[str, Any]) -> Iterator[Metric]:
    families: dict[str, CounterMetricFamily] = {}

    def family(name: str, labels: list[str], what: str) -> CounterMetricFamily:
        if name not in families:
            families[name] = CounterMetricFamily(name, what, labels=labels)
        return families[name]

    in_flight = GaugeMetricFamily(metric_name("frames_in_flight"), "Frames in the pipeline.", labels=["stream"])
    latency = HistogramMetricFamily(
        metric_name("latency_seconds"), "Capture to delivery, per output.", labels=["stream", "output"]
    )
    for stream, fields in streams.items():
        in_flight.add_metric([stream], fields["in_flight"])
        for counter, value in fields["counters"].items():
            what, _, output = counter.partition(".")
            if output:
                family(metric_name("output", what), ["stream", "output"], f"Frames counted {what} by an output.")
                families[metric_name("output", what)].add_metric([stream, output], value)
            else:
                family(metric_name("stream", what), ["stream"], f"Frames counted {what}.")
                families[metric_name("stream", what)].add_metric([stream], value)
        for output, histogram in fields["histograms"].items():
            latency.add_metric([stream, output], _cumulative(histogram["buckets"]), histogram["sum_ms"] / MS_PER_S)
    yield from families.values()
    yield from (in_flight, latency)


def _cumulative(buckets: dict[str, int]) -> list[tuple[str, float]]:
    """Prometheus's buckets: cumulative counts per upper bound in seconds, ending with +Inf."""
    result, total = [], 0
    for bound in counters.LATENCY_BOUNDS_MS:
        total += buckets.get(str(bound), 0)
        result.append((str(bound / MS_PER_S), total))
    result.append(("+Inf", total + buckets.get(counters.OPEN_BOUND, 0)))
    return result


def exposition(latest: Callable[[], Status]) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(latest))
    return generate_latest(registry)
