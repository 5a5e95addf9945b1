"""Render supervisord.conf and one snapshot per module from a validated pipeline."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config.pipeline import BROKER_PROGRAM, WEB_PROGRAM, ModuleSpec, Pipeline
from ..config.schema import ServiceOptions
from ..errors import MasterError
from ..modules.health import HEALTH_FOLDER
from ..modules.preview import PREVIEW_FOLDER
from . import broker_files, embedded, ini

WEB_SECTION = "web"  # the web face's snapshot lives beside the modules' (so leftovers and pruning find it)
PRIORITY = {"broker": 10, "web": 50, "outputs": 100, "processors": 200, "inputs": 300}  # start order; stop is reversed
START_RETRIES = 10
STOP_GRACE_S = 5  # on top of service.stop_timeout, before supervisord kills
BROKER_STOPWAIT_S = 30  # the broker's shutdown fsyncs its AOF
CONF_NAME = "supervisord.conf"
ROLES = {
    "all": ("outputs", "processors", "inputs"),
    "workers": ("outputs", "processors"),  # another host's inputs feed them through the shared broker
    "inputs": ("inputs",),
}
SOCKET_NAME = "supervisor.sock"
LOGFILE_EXPANSIONS = 2  # supervisord expands %(...)s in a program's stdout_logfile twice
APPENDONLY = re.compile(r" --appendonly (yes|no) ")  # in the broker's command= line


@dataclass(frozen=True)
class Layout:
    """Where everything of one runtime dir lives."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / CONF_NAME

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_NAME

    @property
    def pidfile(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisord_log(self) -> Path:
        return self.logs / "supervisord.log"

    @property
    def modules(self) -> Path:
        return self.root / "modules"

    @property
    def health(self) -> Path:
        """One ``<process>.json`` per module process: its starts and last error (modules/health.py)."""
        return self.root / HEALTH_FOLDER

    @property
    def previews(self) -> Path:
        """The latest annotated frame and detections of each stream detected on this host (modules/preview.py)."""
        return self.root / PREVIEW_FOLDER

    @property
    def web_file(self) -> Path:
        """Where the web face says the address it listens on (its port may have been chosen at bind)."""
        return self.root / "web.json"

    @property
    def role_file(self) -> Path:
        return self.root / "role"

    def names(self, snapshot: Path) -> bool:
        """Whether supervisord.conf runs ``snapshot``. By file name (``<alias>-<digest>.json``, plain
        characters): the folder part is written escaped there."""
        conf = self.conf.read_text(encoding="utf-8") if self.conf.exists() else ""
        return f"/{snapshot.name}" in conf

    def role(self) -> str:
        """The role this runtime dir was started with (``all`` before the first start)."""
        return self.role_file.read_text().strip() if self.role_file.exists() else "all"


def broker_url(pipeline: Pipeline) -> str:
    """The broker URL as modules must use it: raw (``${VAR}`` unexpanded), or the embedded socket."""
    raw = pipeline.raw_service.get("broker")
    return str(raw) if raw else embedded.broker_url(pipeline.runtime_dir)


def snapshot(pipeline: Pipeline, module: ModuleSpec) -> dict[str, object]:
    """All a module process needs, with ``${VAR}`` left unexpanded so no secret lands on disk."""
    return {
        "config": str(pipeline.path),
        "section": module.section,
        "kind": module.kind.kind_name(),
        "alias": module.alias,
        "module": module.raw,
        "service": {key: value for key, value in pipeline.raw_service.items() if key != "http"},  # not theirs
        "broker": broker_url(pipeline),
        "routes": pipeline.routes.to_json(sides=module.section == "inputs"),  # see Routes.to_json
    }


def web_snapshot(pipeline: Pipeline) -> dict[str, object]:
    """What the web face needs of the service section: where it runs, its ``http`` options and how it logs (it
    reads the rest from the modules' snapshots at each sample, so a change elsewhere does not restart it)."""
    keys = ("runtime_dir", "http", "log_level", "log_format")
    return {
        "config": str(pipeline.path),
        "section": WEB_SECTION,
        "service": {key: value for key, value in pipeline.raw_service.items() if key in keys},
    }


def write_snapshots(pipeline: Pipeline, layout: Layout) -> dict[str, Path]:
    """One ``<alias>-<digest>.json`` per module (and the web face): the name changes exactly when the module's
    config does, which is what makes ``reread``/``update`` restart only changed modules."""
    layout.modules.mkdir(parents=True, exist_ok=True)
    paths = {}
    snapshots = [(module.alias, snapshot(pipeline, module)) for module in pipeline.modules]
    if pipeline.service.http.enabled:
        snapshots.append((WEB_PROGRAM, web_snapshot(pipeline)))
    for alias, content in snapshots:
        text = json.dumps(content, sort_keys=True, indent=1)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        path = layout.modules / f"{alias}-{digest}.json"
        if not path.exists():
            path.write_text(text, encoding="utf-8")
        paths[alias] = path
    return paths


def render(pipeline: Pipeline, role: str = "all", persist: bool | None = None) -> Path:
    """Write supervisord.conf (and the module snapshots) into the runtime dir; return its path.

    ``role`` picks the sections this host runs (see ROLES); only ``all`` runs the embedded broker, the
    others need ``service.broker`` shared with the other hosts. ``persist`` overrides ``service.persist``:
    a reload keeps the running broker's (switching restarts the broker, which would then start empty or,
    worse, from an AOF older than its memory). Snapshots of the previous render stay until
    ``prune_snapshots``: a running module that supervisord restarts before the reload is applied finds its own.
    """
    if role != "all" and not pipeline.service.broker:
        raise MasterError(f"--role {role} runs part of a pipeline: set service.broker to the broker it shares")
    layout = Layout(pipeline.runtime_dir)
    for folder in (layout.root, layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
    snapshots = write_snapshots(pipeline, layout)
    sections = [_header(pipeline, layout)]
    if not pipeline.service.broker:
        persist = pipeline.service.persist if persist is None else persist
        broker_files.make_private(layout.root)
        command = ini.command(embedded.server_args(layout.root, persist))
        broker = _program(BROKER_PROGRAM, command, PRIORITY["broker"], layout, stopwait=BROKER_STOPWAIT_S)
        sections.append(broker + f"umask={broker_files.SERVER_UMASK:03o}\n")
    stopwait = int(pipeline.service.stop_timeout) + STOP_GRACE_S
    if WEB_PROGRAM in snapshots:
        command = ini.command([sys.executable, "-m", "framefarm.web.face", str(snapshots[WEB_PROGRAM])])
        sections.append(_program(WEB_PROGRAM, command, PRIORITY["web"], layout, stopwait))
    for module in (m for m in pipeline.modules if m.section in ROLES[role]):
        command = ini.command([sys.executable, "-m", "framefarm.runner", str(snapshots[module.alias])])
        procs = getattr(module.options, "workers", 1)
        sections.append(_program(module.alias, command, PRIORITY[module.section], layout, stopwait, procs))
    layout.conf.write_text("\n".join(sections), encoding="utf-8")
    layout.role_file.write_text(role + "\n", encoding="utf-8")
    return layout.conf


def _header(pipeline: Pipeline, layout: Layout) -> str:
    """Paths go through ``ini.path`` (see ini); children run Python in UTF-8 mode, so that a non-ASCII path
    in their command line reads back the same whatever the host's locale."""
    here, source, conf = layout.root, ini.comment(str(pipeline.path)), ini.comment(str(layout.conf))
    return f"""; Generated by `pipectl render` from {source}. Do not edit: edit the pipeline and reload.
; Runs as is with `supervisord -c {conf}`.

[unix_http_server]
file={ini.path(layout.socket, here)}
chmod=0700

[supervisord]
logfile={ini.path(layout.supervisord_log, here)}
logfile_maxbytes=0
pidfile={ini.path(layout.pidfile, here)}
childlogdir={ini.path(layout.logs, here)}
directory={ini.path(pipeline.base_dir, here)}
identifier=framefarm
environment=PYTHONUNBUFFERED="1",PYTHONUTF8="1"

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{ini.path(layout.socket, here)}
"""


def _program(name: str, command: str, priority: int, layout: Layout, stopwait: int, procs: int = 1) -> str:
    process_name = "%(program_name)s" if procs == 1 else "%(program_name)s-%(process_num)d"
    log_name = name if procs == 1 else f"{name}-%(process_num)d"
    return f"""[program:{name}]
command={command}
process_name={process_name}
numprocs={procs}
priority={priority}
autostart=true
autorestart=true
startsecs=1
startretries={START_RETRIES}
stopsignal=TERM
stopwaitsecs={stopwait}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={ini.path(layout.logs, layout.root, expansions=LOGFILE_EXPANSIONS)}/{log_name}.log
stdout_logfile_maxbytes=0
"""


def rendered_persist(layout: Layout) -> bool | None:
    """Whether the embedded broker in supervisord.conf persists; None without one (or without the file)."""
    conf = layout.conf.read_text(encoding="utf-8") if layout.conf.exists() else ""
    match = APPENDONLY.search(conf) if f"[program:{BROKER_PROGRAM}]" in conf else None
    return match.group(1) == "yes" if match else None


def check_runtime_dir(config: Path, service: ServiceOptions, runtime_dir: Path) -> Iterator[str]:
    """For ``pipectl -t``: what ``render`` and ``start`` would refuse about the runtime dir and the config's
    folder: sockets too long for sun_path, names that supervisord.conf cannot hold (see ini)."""
    layout = Layout(runtime_dir)
    sockets = [layout.socket] + ([runtime_dir / embedded.SOCKET_NAME] if not service.broker else [])
    for socket in sockets:
        if not embedded.socket_fits(socket):
            yield (
                f"{socket} is longer than a unix socket path may be ({embedded.MAX_UNIX_SOCKET_PATH} bytes): "
                "choose a shorter runtime_dir"
            )
    try:
        ini.comment(str(config))
        for target in (layout.socket, config.parent):
            ini.path(target, layout.root)
    except MasterError as exc:
        yield str(exc)


def prune_snapshots(layout: Layout) -> None:
    """Delete snapshots that supervisord.conf no longer names (after the new config is applied)."""
    for path in layout.modules.glob("*.json"):
        if not layout.names(path):
            path.unlink(missing_ok=True)
