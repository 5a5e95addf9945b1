"""The body of every module process: ``python -m framefarm.runner SNAPSHOT`` (what supervisord runs).

Exit codes: 0 after a requested stop; EXIT_CONFIG when the snapshot is invalid; EXIT_FAILURE when the
module cannot go on, so that supervisord restarts it. It never hangs: SIGTERM sets the stop flag and
every loop watches it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import logs
from .bus import connect
from .config.envexpand import expand
from .config.registry import REGISTRIES
from .config.routing import Routes
from .config.schema import ServiceOptions
from .config.urls import redact_text
from .errors import FramefarmError
from .lifeline import die_with_parent
from .modules.base import Module
from .modules.context import ModuleContext
from .modules.health import Health
from .plugins import load_kinds

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64
EXIT_CONFIG = 78  # sysexits EX_CONFIG

log = logging.getLogger("framefarm.runner")


def build_context(snapshot: dict[str, Any]) -> tuple[type[Module[Any]], ModuleContext[Any]]:
    """Expand ``${VAR}`` from this process's environment and validate, exactly as ``pipectl -t`` does."""
    missing: list[str] = []

    def on_missing(_loc: Any, name: str) -> None:
        missing.append(name)

    service = ServiceOptions.model_validate(expand(snapshot["service"], os.environ, on_missing))
    options_raw = {**expand(snapshot["module"], os.environ, on_missing), "alias": snapshot["alias"]}
    broker = expand(snapshot["broker"], os.environ, on_missing)
    if missing:
        raise FramefarmError(f"environment variables not set: {', '.join(sorted(set(missing)))}")
    kind = REGISTRIES[snapshot["section"]].get(snapshot["kind"])
    if kind is None or not issubclass(kind, Module):
        raise FramefarmError(f'{snapshot["section"]} kind "{snapshot["kind"]}" is not installed')
    options = kind.Options.model_validate(options_raw)
    base_dir = Path(snapshot["config"]).parent
    ctx = ModuleContext(
        alias=snapshot["alias"],
        options=options,
        service=service,
        routes=Routes.from_json(snapshot["routes"]),
        bus=connect(broker, service),
        base_dir=base_dir,
        runtime_dir=(base_dir / service.runtime_dir).resolve(),
        log=logging.getLogger(f"framefarm.{snapshot['alias']}"),
    )
    return kind, ctx


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m framefarm.runner SNAPSHOT.json", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()  # from the start: a module told to stop while it starts up exits cleanly
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    snapshot = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    # Its starts and last error, for the status views; the snapshot lives in <runtime_dir>/modules
    health = Health.of_this_process(Path(args[0]).resolve().parent.parent, snapshot["alias"])
    # Info until the options are validated; the format asked for already, so that a config error is a JSON line too
    fmt = "json" if snapshot["service"].get("log_format") == "json" else "text"
    logs.configure(snapshot["alias"], fmt, also=[health])
    load_kinds()
    try:
        kind, ctx = build_context(snapshot)
    except ValidationError as exc:  # keys and messages only: the values may hold secrets
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        log.error("invalid module config in %s: %s", args[0], redact_text(problems))
        return EXIT_CONFIG
    except FramefarmError as exc:
        log.error("invalid module config in %s: %s", args[0], redact_text(str(exc)))
        return EXIT_CONFIG
    logs.configure(ctx.alias, ctx.service.log_format, ctx.options.log_level or ctx.service.log_level, [health])
    die_with_parent(signal.SIGTERM)  # supervisord killed: stop gracefully instead of running on as an orphan
    log.info("starting %s %s", snapshot["section"][:-1], snapshot["kind"])
    try:
        kind(ctx).serve(stop)
    except Exception:
        log.exception("module failed; exiting so that supervisord restarts it")
        return EXIT_FAILURE
    finally:
        ctx.bus.close()
    log.info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
