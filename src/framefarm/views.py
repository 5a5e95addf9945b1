"""How the status (supervisord/status.py) reads in a terminal: ``pipectl status``'s lines and ``pipectl top``'s
tables. Every text that may quote a URL is redacted once more here, whatever reported it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .config.types import say_duration as duration
from .config.urls import redact_text
from .supervisord.status import Status

REPORT_OLD_S = 5.0  # a state reported longer ago than this is shown with its age: its module may be gone
DROPS = ("dropped", "stale", "missing", "failed", "dead")  # counter names (prefixes) that mean a frame was lost


def status_lines(status: Status) -> Iterator[str]:
    """``pipectl status``: processes, then (when the broker answers) streams, queues, inputs, files, outputs."""
    yield f"{'PROCESS':32} {'STATE':10} {'PID':>8} {'UPTIME':>9} {'RESTARTS':>8}  LAST ERROR"
    for p in status["processes"]:
        uptime, error = duration(p["uptime_s"]), redact_text(p["last_error"] or "")
        yield f"{p['name']:32} {p['state']:10} {p['pid'] or '-':>8} {uptime:>9} {p['restarts']:>8}  {error}"
    if status.get("web"):
        yield f"\nstatus page: {status['web']}"
    if not status["broker"]["ok"]:
        yield f"\nbroker: {redact_text(status['broker']['error'] or '')}"
        return
    yield f"\nframes in flight: {status['in_flight']}"
    for name, stream in status["streams"].items():
        yield f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(stream["counters"].items()))
        latency = stream["latency"]
        if latency["count"]:
            p50, p99 = seconds(latency["p50_s"]), seconds(latency["p99_s"])
            yield f"  capture to delivery: p50 {p50}, p99 {p99} ({latency['count']} deliveries)"
    if status["queues"]:
        yield "\nqueues: " + ", ".join(f"{name} {depth}" for name, depth in status["queues"].items())
    now = status["at"]
    for title, group, line in (
        ("live inputs", status["inputs"], input_line),
        ("files", status["files"], file_line),
        ("outputs", status["outputs"], output_line),
    ):
        if group:
            yield f"\n{title}:"
        for name, fields in group.items():
            yield f"  {name}  {aged(line(fields, now), fields, now)}"


def input_line(fields: Mapping[str, Any], now: float) -> str:
    last = fields.get("last_frame_at")
    drops = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in (fields.get("drops") or {}).items())
    return _joined(
        f"{fields.get('state', '?')} for {now - fields.get('since', now):.0f}s",
        f"fps in {fields.get('fps_in', 0):.1f} sent {fields.get('fps_sent', 0):.1f}",
        f"last frame {now - last:.1f}s ago" if last else "no frame yet",
        f"reconnects {fields.get('reconnects', 0)}",
        f"not sent: {drops}" if drops else "",
        f"source {redact_text(str(fields.get('source', '')))}",
        _last_error(fields),
    )


def file_line(fields: Mapping[str, Any], _now: float) -> str:
    total = fields.get("total")
    done = fields.get("done", 0)
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return _joined(
        f"{fields.get('state', '?')} {redact_text(str(fields.get('file', '')))}",
        f"{done} of {total or '?'} frames{share}",
        f"{fields.get('fps', 0):.1f} fps",
        f"about {duration(fields['eta_s'])} left" if fields.get("eta_s") is not None else "",
        f"files done {fields.get('files_done', 0)}",
    )


def output_line(fields: Mapping[str, Any], now: float) -> str:
    counts = ("sent", "retried", "failed", "dropped", "filtered")
    return _joined(
        f"{fields.get('state', '?')} for {now - fields.get('since', now):.0f}s",
        " ".join(f"{name} {fields.get(name, 0)}" for name in counts),
        _last_error(fields),
    )


def _last_error(fields: Mapping[str, Any]) -> str:
    return f"last error: {redact_text(str(fields['last_error']))}" if fields.get("last_error") else ""


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def aged(line: str, fields: Mapping[str, Any], now: float) -> str:
    if now - fields.get("at", now) > REPORT_OLD_S:
        return f"{line}; (reported {now - fields['at']:.0f}s ago)"
    return line


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def dropped(counters: Mapping[str, int]) -> int:
    return sum(value for name, value in counters.items() if name.startswith(DROPS))


def top_view(status: Status) -> Group:
    """``pipectl top``'s screen: processes, streams with their rates and recent latency, queues, outputs."""
    processes = Table("process", "state", "pid", "uptime", "restarts", "last error", expand=True, title_justify="left")
    for p in status["processes"]:
        style = "green" if p["state"] == "RUNNING" else "red"
        error = redact_text(p["last_error"] or "")
        processes.add_row(
            p["name"], Text(p["state"], style), str(p["pid"] or "-"), duration(p["uptime_s"]), str(p["restarts"]), error
        )
    stamp = time.strftime("%H:%M:%S", time.localtime(status["at"]))
    parts: list[Any] = [Text(f"framefarm  {status['runtime_dir']}  {stamp}  (q quits)", "bold"), processes]
    broker = status["broker"]
    if not broker["ok"]:
        parts.append(Text(f"broker: {redact_text(broker['error'] or '')}", "red"))
        return Group(*parts)
    streams = Table("stream", "fps in", "fps out", "in flight", "published", "dropped", "p50", "p99", expand=True)
    for name, s in status["streams"].items():
        latency = s["recent"] if s.get("recent", {}).get("count") else s["latency"]
        streams.add_row(
            name,
            f"{s.get('fps_in', 0):.1f}",
            f"{s.get('fps_out', 0):.1f}",
            str(s["in_flight"]),
            str(s["counters"].get("published", 0)),
            str(dropped(s["counters"])),
            seconds(latency["p50_s"]),
            seconds(latency["p99_s"]),
        )
    queues = Table("queue", "waiting", expand=True)
    for name, depth in status["queues"].items():
        queues.add_row(name, str(depth))
    outputs = Table("output", "state", "fps", "sent", "retried", "failed", "dropped", expand=True)
    for name, f in status["outputs"].items():
        outputs.add_row(
            name,
            f.get("state", "?"),
            f"{f.get('fps', 0):.1f}",
            *(str(f.get(k, 0)) for k in ("sent", "retried", "failed", "dropped")),
        )
    parts += [streams, queues, outputs]
    parts += [Text(f"{name}  {file_line(f, status['at'])}") for name, f in status["files"].items()]
    return Group(*parts)
