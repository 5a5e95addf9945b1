"""pipectl: the nginx-style face of framefarm (``-t``, ``-s reload|stop|quit|reopen``, start, render, status)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .bus import backend, check_service
from .config.describe import describe_kind
from .config.pipeline import Pipeline, load_pipeline
from .config.registry import REGISTRIES
from .config.schema import DEFAULT_STOP_TIMEOUT_S
from .config.urls import redact_text, redact_url
from .errors import BusError, ConfigError, FramefarmError
from .outputs.delivery import ROLE as OUTPUT_ROLE
from .plugins import load_kinds
from .supervisord import broker_files, embedded, leftovers
from .supervisord.control import Master
from .supervisord.drain import quit_gracefully
from .supervisord.render import (
    ROLES,
    STOP_GRACE_S,
    Layout,
    check_runtime_dir,
    prune_snapshots,
    render,
    rendered_persist,
)
from .supervisord.running import Running, runtime_dir_of

EXIT_OK = 0
EXIT_FAILED = 1
DEFAULT_CONFIG = "pipeline.yaml"
SIGNALS = ("reload", "stop", "quit", "reopen")
UPGRADE_LOG = "embedded-broker-upgrade.log"  # the server that carries an older version's snapshot into the AOF


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipectl", description="Run and control a framefarm pipeline (like nginx, on supervisord)."
    )
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("FRAMEFARM_CONFIG", DEFAULT_CONFIG),
        help="pipeline file (default: $FRAMEFARM_CONFIG or ./pipeline.yaml)",
    )
    parser.add_argument("-t", action="store_true", help="test the configuration and exit")
    parser.add_argument("--connect", action="store_true", help="with -t: also check that the broker answers")
    parser.add_argument("-s", choices=SIGNALS, help="send a signal to the running master")
    parser.add_argument("-v", "--version", action="version", version=f"framefarm {__version__}")
    # -c is accepted after the command too (`pipectl start -c FILE`) without overriding the default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="pipeline file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = commands.add_parser("start", parents=[common], help="validate, render and start (the default)")
    start.add_argument("--foreground", action="store_true", help="run supervisord in the foreground")
    start.add_argument(
        "--role",
        choices=list(ROLES),
        default="all",
        help="all (default); workers: processors and outputs only, "
        "to add a host on the same broker; inputs: inputs only",
    )
    test = commands.add_parser("test", parents=[common], help="validate the configuration (same as -t)")
    test.add_argument("--connect", action="store_true", help="also check that the broker and frame store answer")
    commands.add_parser("render", parents=[common], help="write supervisord.conf into the runtime dir")
    commands.add_parser("status", parents=[common], help="show the processes and per-stream counters")
    describe = commands.add_parser("describe", parents=[common], help="list a module kind's options")
    describe.add_argument("kind", nargs="?", help="a kind name; without it, list every kind")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for failure in load_kinds():
        print(f"pipectl: warning: {failure}", file=sys.stderr)
    config = Path(args.config)
    try:
        if args.t or args.command == "test":
            return cmd_test(config, connect=args.connect)
        if args.s:
            return SIGNAL_HANDLERS[args.s](config)
        if args.command is None:
            args.foreground, args.role = False, "all"
        return COMMANDS[args.command or "start"](config, args)
    except ConfigError as exc:
        _print_problems(config, exc)
        return EXIT_FAILED
    except FramefarmError as exc:
        print(f"pipectl: {redact_text(str(exc))}", file=sys.stderr)  # a library's error may quote a URL
        return EXIT_FAILED


def _print_problems(config: Path, exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"configuration file {config} test failed", file=sys.stderr)


RUNNING_ENV_HINT = (
    " in the running pipeline's environment (its modules take variables from where it was started: "
    "set it there and restart, as a reload cannot change them)"
)


def load(config: Path, env: Mapping[str, str] | None = None, missing_hint: str = "") -> Pipeline:
    """The full validation, the same for ``-t``, start, render and reload: kinds' checks, the broker's and the
    runtime dir's."""
    return load_pipeline(
        config, env, check_service=check_service, check_runtime=check_runtime_dir, missing_hint=missing_hint
    )


def cmd_test(config: Path, *, connect: bool = False) -> int:
    try:
        pipeline = load(config)
    except ConfigError as exc:
        _print_problems(config, exc)
        return EXIT_FAILED
    if connect:
        check_connection(pipeline)
    print(f"configuration file {config} test is successful")
    return EXIT_OK


def check_connection(pipeline: Pipeline) -> None:
    """Ping the broker and frame store that the modules will use (the embedded one only if it runs)."""
    url = pipeline.service.broker or embedded.broker_url(pipeline.runtime_dir)
    if not pipeline.service.broker and not Master(Layout(pipeline.runtime_dir)).running():
        print("the embedded broker starts with the pipeline: nothing to connect to yet")
        return
    kind = backend(url)
    try:
        bus = kind(url, pipeline.service)
        try:
            bus.ping()
        finally:
            bus.close()
    except kind.transient_errors as exc:  # a client library's own error: said, not a traceback
        raise BusError(f"the broker does not answer: {exc}") from exc
    print(f"broker {redact_url(url)} answers")


def cmd_start(config: Path, args: argparse.Namespace) -> int:
    """Start, after stopping whatever an earlier run of the runtime dir left running (see leftovers) and
    leaving the embedded broker nothing older than its last state to load (see broker_files)."""
    pipeline = load(config)
    layout = Layout(pipeline.runtime_dir)
    master = Master(layout)
    if master.running():
        raise FramefarmError(f"already running in {layout.root} (pid {master.pid()}): use `pipectl -s reload`")
    _say(leftovers.clear(layout, pipeline.service.stop_timeout + STOP_GRACE_S))
    render(pipeline, args.role)
    prune_snapshots(layout)
    if not pipeline.service.broker:
        _say(broker_files.before_start(layout.root, pipeline.service.persist, layout.logs / UPGRADE_LOG))
    if not args.foreground:
        print(f"starting {len(pipeline.modules)} modules; logs in {layout.logs}")
    master.start(foreground=args.foreground)
    print(f"started; `pipectl -c {config} status` shows the processes")
    return EXIT_OK


def _say(lines: list[str]) -> None:
    for line in lines:
        print(f"pipectl: {line}", file=sys.stderr)


def cmd_render(config: Path, _args: argparse.Namespace) -> int:
    print(render(load(config)))
    return EXIT_OK


def cmd_status(config: Path, _args: argparse.Namespace) -> int:
    running = Running.of(config)
    print(f"{'PROCESS':32} {'STATE':10} {'PID':>8}  DESCRIPTION")
    for info in running.master.processes():
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        print(f"{name:32} {info['statename']:10} {info['pid'] or '-':>8}  {info['description']}")
    try:
        bus = running.bus()
    except FramefarmError as exc:
        print(f"\nbroker: {redact_text(str(exc))}")
        return EXIT_OK
    try:
        print(f"\nframes in flight: {bus.flow.in_flight()}")
        for stream, counters in sorted(bus.flow.counters().items()):
            print(f"{stream}: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
        _print_states(bus.flow.reports())
    except bus.transient_errors as exc:
        print(f"\nbroker unreachable: {redact_text(str(exc))}")
    finally:
        bus.close()
    return EXIT_OK


REPORT_OLD_S = 5.0  # a state reported longer ago than this is shown with its age: its module may be gone


def _print_states(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """The latest state of each live input and output, one indented line each, its texts redacted once more."""
    outputs = {name: fields for name, fields in reports.items() if fields.get("role") == OUTPUT_ROLE}
    inputs = {name: fields for name, fields in reports.items() if name not in outputs}
    now = time.time()
    for title, group, line in (("live inputs", inputs, _state_line), ("outputs", outputs, _delivery_line)):
        if group:
            print(f"\n{title}:")
        for name, fields in sorted(group.items()):
            print(f"  {name}  {line(fields, now)}")


def _delivery_line(fields: Mapping[str, Any], now: float) -> str:
    """An output's state: delivering or failing, what it sent, retried, failed, dropped and its last error."""
    counts = ("sent", "retried", "failed", "dropped", "filtered")
    parts = [
        f"{fields.get('state', '?')} for {now - fields.get('since', now):.0f}s",
        " ".join(f"{name} {fields.get(name, 0)}" for name in counts),
        f"last error: {redact_text(str(fields['last_error']))}" if fields.get("last_error") else "",
    ]
    return _aged("; ".join(part for part in parts if part), fields, now)


def _state_line(fields: Mapping[str, Any], now: float) -> str:
    last = fields.get("last_frame_at")
    drops = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in (fields.get("drops") or {}).items())
    parts = [
        f"{fields.get('state', '?')} for {now - fields.get('since', now):.0f}s",
        f"fps in {fields.get('fps_in', 0):.1f} sent {fields.get('fps_sent', 0):.1f}",
        f"last frame {now - last:.1f}s ago" if last else "no frame yet",
        f"reconnects {fields.get('reconnects', 0)}",
        f"not sent: {drops}" if drops else "",
        f"source {redact_text(str(fields.get('source', '')))}",
        f"last error: {redact_text(str(fields['last_error']))}" if fields.get("last_error") else "",
    ]
    return _aged("; ".join(part for part in parts if part), fields, now)


def _aged(line: str, fields: Mapping[str, Any], now: float) -> str:
    if now - fields.get("at", now) > REPORT_OLD_S:
        return f"{line}; (reported {now - fields['at']:.0f}s ago)"
    return line


def cmd_describe(_config: Path, args: argparse.Namespace) -> int:
    for section, registry in REGISTRIES.items():
        for name in registry.names():
            if args.kind in (None, name):
                print(describe_kind(section, registry.get(name)), end="\n\n" if args.kind is None else "\n")
    if args.kind and not any(registry.get(args.kind) for registry in REGISTRIES.values()):
        known = ", ".join(n for r in REGISTRIES.values() for n in r.names())
        print(f'pipectl: unknown kind "{args.kind}" (known: {known})', file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def signal_reload(config: Path) -> int:
    """Validate the file with the variables the running modules will see, then apply it; an invalid file,
    or one that moved the runtime dir, changes nothing."""
    try:
        running = Running.of(config)
    except FramefarmError:
        load(config)  # a file too broken to name its runtime dir: report all its problems, if that is why
        raise
    pipeline = load(config, running.env, RUNNING_ENV_HINT)
    layout = running.layout
    if pipeline.runtime_dir != layout.root:
        raise FramefarmError(
            f"service.runtime_dir now names {pipeline.runtime_dir}, but the pipeline runs in {layout.root}: "
            "stop it and start again to move it"
        )
    master = running.master
    persist = rendered_persist(layout)  # what the running broker does; switching would restart it (see render)
    if persist is not None and persist != pipeline.service.persist:
        _say([f"service.persist: {str(pipeline.service.persist).lower()} applies at the next start"])
    render(pipeline, layout.role(), persist)
    result = master.reload()
    prune_snapshots(layout)
    print(f"reloaded: added {result.added or '-'}, restarted {result.changed or '-'}, removed {result.removed or '-'}")
    return EXIT_OK


def signal_quit(config: Path) -> int:
    left = quit_gracefully(Running.of(config))
    if left:
        print(f"quit: drain timed out with {left} frames in flight; they stay queued for the next start")
    return EXIT_OK


def signal_stop(config: Path) -> int:
    """Stop the master; where none runs, what an earlier run left running (an error if nothing was)."""
    layout = Layout(runtime_dir_of(config))
    master = Master(layout)
    if master.pid() is None:
        stopped = leftovers.clear(layout, DEFAULT_STOP_TIMEOUT_S + STOP_GRACE_S)
        if not stopped:
            raise FramefarmError(f"not running in {layout.root}")
        _say(stopped)
        return EXIT_OK
    master.shutdown()
    return EXIT_OK


def signal_reopen(config: Path) -> int:
    Master(Layout(runtime_dir_of(config))).reopen_logs()
    return EXIT_OK


COMMANDS: dict[str, Callable[[Path, argparse.Namespace], int]] = {
    "start": cmd_start,
    "render": cmd_render,
    "status": cmd_status,
    "describe": cmd_describe,
}
SIGNAL_HANDLERS: dict[str, Callable[[Path], int]] = {
    "reload": signal_reload,
    "stop": signal_stop,
    "quit": signal_quit,
    "reopen": signal_reopen,
}

if __name__ == "__main__":
    sys.exit(main())
