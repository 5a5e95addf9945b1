"""pipectl: the nginx-style face of framefarm (``-t``, ``-s reload|stop|quit|reopen``, start, render, status)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from . import __version__
from .bus import backend, check_service
from .config.describe import describe_kind
from .config.pipeline import Pipeline, load_pipeline
from .config.registry import REGISTRIES
from .config.schema import DEFAULT_STOP_TIMEOUT_S
from .config.urls import redact_text, redact_url
from .errors import BusError, ConfigError, FramefarmError
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
from .supervisord.status import collect
from .top import top
from .views import status_lines

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
    status = commands.add_parser("status", parents=[common], help="show the processes, streams, queues and outputs")
    status.add_argument("--json", action="store_true", help="the whole status as one JSON object, for scripts")
    commands.add_parser("top", parents=[common], help="the status, refreshed every second (q quits)")
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
    for folder in (layout.health, layout.previews):  # restarts count from this start; no preview of an old run
        shutil.rmtree(folder, ignore_errors=True)
    layout.web_file.unlink(missing_ok=True)
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


def cmd_status(config: Path, args: argparse.Namespace) -> int:
    running = Running.of(config)
    try:
        bus = running.bus()
    except FramefarmError as exc:
        bus, trouble = None, redact_text(str(exc))
    try:
        status = collect(running, bus)
    finally:
        if bus is not None:
            bus.close()
    if bus is None:
        status["broker"] = {"ok": False, "error": trouble}
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print("\n".join(status_lines(status)))
    return EXIT_OK


def cmd_top(config: Path, _args: argparse.Namespace) -> int:
    top(Running.of(config).layout)
    return EXIT_OK


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
    "top": cmd_top,
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
