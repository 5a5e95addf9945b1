"""Load and validate a pipeline file; every problem is reported with file:line and key path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .astext import text_fixes, with_texts
from .envexpand import expand
from .folders import Use, conflicts, runtime_dir_problems
from .registry import REGISTRIES, SECTIONS, CheckContext, FolderUse, ModuleKind
from .routing import Routes, Stage
from .schema import ServiceOptions
from .urls import MASK, check_urls, redact_text
from .yamlpos import Document, Loc, format_loc, load_document

TOP_LEVEL_KEYS = ("service", "pipeline")
MIN_MASKED_SECRET = 3  # shorter "passwords" would mask letters all over the messages
RUNTIME_DIR_LOC: Loc = ("service", "runtime_dir")
ServiceCheck = Callable[[ServiceOptions], Iterable[tuple[Loc, str]]]
RuntimeCheck = Callable[[Path, ServiceOptions, Path], Iterable[str]]  # (config file, service, runtime dir)


@dataclass(frozen=True)
class ModuleSpec:
    """One configured module instance."""

    section: str
    kind: type[ModuleKind]
    options: Any  # the kind's Options model
    raw: dict[str, Any]  # as written, ${VAR} unexpanded: what snapshots keep, so secrets stay out of files

    @property
    def alias(self) -> str:
        return str(self.options.alias)


@dataclass(frozen=True)
class Pipeline:
    path: Path
    service: ServiceOptions
    raw_service: dict[str, Any]
    modules: tuple[ModuleSpec, ...]
    routes: Routes

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def runtime_dir(self) -> Path:
        return (self.base_dir / self.service.runtime_dir).resolve()

    def module(self, alias: str) -> ModuleSpec:
        return next(m for m in self.modules if m.alias == alias)


class _Collector:
    """Problems as ``file:line: key: message``, with every known password masked.

    A URL that cannot be parsed is *sealed*: its own problem is reported, nothing else about that option,
    and no check reads it, since any message about it could quote a piece of its password.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[str] = list(doc.problems)
        self.secrets: set[str] = set()
        self.sealed: list[Loc] = []

    def add(self, loc: Loc, message: str) -> None:
        if self.is_sealed(loc):
            return
        self._append(loc, message)

    def seal(self, loc: Loc, message: str) -> None:
        self._append(loc, message)
        self.sealed.append(loc)

    def _append(self, loc: Loc, message: str) -> None:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= MIN_MASKED_SECRET:
                message = message.replace(secret, MASK)
        key = f" {format_loc(loc)}:" if loc else ""
        self.problems.append(f"{self.doc.where(loc)}:{key} {redact_text(message)}")

    def is_sealed(self, loc: Loc) -> bool:
        return any(loc[: len(sealed)] == sealed for sealed in self.sealed)

    def touches_sealed(self, prefix: Loc) -> bool:
        """Whether a sealed option lies under ``prefix``: checks of that part must not read it."""
        return any(sealed[: len(prefix)] == prefix for sealed in self.sealed)

    def add_validation(self, base: Loc, error: ValidationError) -> None:
        for item in error.errors():
            loc = (*base, *item["loc"])
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown option"
            self.add(loc, message)


@dataclass(frozen=True)
class Checks:
    """The checks of other layers that ``pipectl -t``, start and reload add (config imports none of them):
    the broker backend's (``service``) and the master's on the runtime dir (``runtime``)."""

    service: ServiceCheck | None = None
    runtime: RuntimeCheck | None = None


def load_pipeline(
    path: Path | str,
    env: Mapping[str, str] | None = None,
    *,
    deep: bool = True,
    check_service: ServiceCheck | None = None,
    check_runtime: RuntimeCheck | None = None,
    missing_hint: str = "",
) -> Pipeline:
    """Parse, expand, validate and cross-check ``path``; raise ConfigError listing every problem.

    ``deep`` runs each kind's ``check`` (files exist, models load) and compares the folders modules use.
    ``check_service`` and ``check_runtime`` come from the layers above (see Checks). ``missing_hint`` follows
    "${VAR} is not set" (reload says where the running pipeline's variables come from).
    """
    path = Path(path).resolve()
    doc = load_document(path)
    out = _Collector(doc)
    if doc.problems and doc.data is None:
        raise ConfigError(out.problems)
    raw = doc.data if isinstance(doc.data, dict) else {}
    if not isinstance(doc.data, dict):
        out.add((), "the file must be a mapping with `service` and `pipeline`")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            out.add((key,), f"unknown section (known: {', '.join(TOP_LEVEL_KEYS)})")
    env = os.environ if env is None else env
    data = expand(raw, env, lambda loc, name: out.add(loc, f"${{{name}}} is not set{missing_hint}"))
    _check_urls(raw, data, env, out)

    service, raw_service = _validate_service(data.get("service") or {}, raw.get("service") or {}, out)
    problems_before = len(out.problems)
    modules = _validate_modules(data.get("pipeline"), raw.get("pipeline"), out)
    modules_valid = len(out.problems) == problems_before
    sides = _frame_sides(path, service, modules, out) if deep else {}

    def stage(module: ModuleSpec) -> Stage:
        raw = module.section == "outputs" and module.kind.takes_raw_frames(module.options)
        return Stage(module.alias, module.options.match, sides.get(module.alias), raw)

    routes = Routes(
        processors=tuple(stage(m) for m in modules if m.section == "processors"),
        outputs=tuple(stage(m) for m in modules if m.section == "outputs"),
    )
    if modules_valid:  # routing checks on half the modules would only mislead
        _check_routing(modules, routes, out)
    if deep:
        _deep_checks(path, service, modules, Checks(check_service, check_runtime), out)
    if out.problems or service is None:
        raise ConfigError(out.problems)
    return Pipeline(path, service, raw_service, tuple(modules), routes)


def _frame_sides(
    path: Path, service: ServiceOptions | None, modules: list[ModuleSpec], out: _Collector
) -> dict[str, int | None]:
    """What each stage needs of a frame (ModuleKind.frame_side; models are loaded for it)."""
    ctx = CheckContext(base_dir=path.parent, service=service or ServiceOptions())
    sides: dict[str, int | None] = {}
    for index, module in _indexed(modules):
        if module.section == "inputs":
            continue
        try:
            sides[module.alias] = module.kind.frame_side(module.options, ctx)
        except Exception as exc:  # a kind's bug is a problem of its config, not a traceback of pipectl
            out.add(("pipeline", module.section, index), f"cannot tell what it needs of a frame: {exc!r}")
    return sides


def _check_urls(raw: Any, data: Any, env: Mapping[str, str], out: _Collector) -> None:
    """Seal every URL whose password would break parsing (see _Collector); learn the others' passwords."""
    for finding in check_urls(raw, data, env):
        if finding.problem:
            out.seal(finding.loc, finding.problem)
        out.secrets.update(finding.secrets)


def _deep_checks(
    path: Path, service: ServiceOptions | None, modules: list[ModuleSpec], checks: Checks, out: _Collector
) -> None:
    """What would fail at start: the runtime dir, the broker backend's limits, each kind's files, models and
    ports, and folders that modules would share in a loop."""
    runtime_dir = _service_checks(path, service, checks, out) if service is not None else None
    ctx = CheckContext(base_dir=path.parent, service=service or ServiceOptions())
    for index, module in _indexed(modules):
        if not out.touches_sealed(("pipeline", module.section, index)):
            for loc, message in module.kind.check(module.options, ctx):
                out.add(("pipeline", module.section, index, *loc), message)
    if runtime_dir is not None:
        for loc, message in conflicts(_folder_uses(modules, ctx, runtime_dir), out.doc.line):
            out.add(loc, message)


def _service_checks(path: Path, service: ServiceOptions, checks: Checks, out: _Collector) -> Path | None:
    """The runtime dir's and the broker backend's checks; return the runtime dir, None if it cannot be resolved."""
    if checks.service is not None and not out.touches_sealed(("service",)):
        for loc, message in checks.service(service):
            out.add(loc, message)
    for loc, message in service.http.tls.problems(lambda file: path.parent / file):
        out.add(("service", "http", *loc), message)
    try:
        runtime_dir = (path.parent / service.runtime_dir).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        out.add(RUNTIME_DIR_LOC, f"{path.parent / service.runtime_dir} cannot be resolved: {exc}")
        return None
    problems = list(runtime_dir_problems(runtime_dir))
    if checks.runtime is not None:
        problems.extend(checks.runtime(path, service, runtime_dir))
    for message in problems:
        out.add(RUNTIME_DIR_LOC, message)
    return runtime_dir


def _folder_uses(modules: list[ModuleSpec], ctx: CheckContext, runtime_dir: Path) -> list[Use]:
    """Every folder a module declares, plus the runtime dir (logs, state and sockets land there)."""
    uses = [Use(("service",), FolderUse(("runtime_dir",), runtime_dir, writes=True, tree=True))]
    input_tags = [m.options.tag for m in modules if m.section == "inputs"]
    for index, module in _indexed(modules):
        if module.section == "inputs":
            tags = (module.options.tag,)
        else:
            tags = tuple(tag for tag in input_tags if Stage(module.alias, module.options.match).covers(tag))
        for folder in module.kind.folders(module.options, replace(ctx, tags=tags)):
            uses.append(Use(("pipeline", module.section, index), folder))
    return uses


def _validate_service(data: Any, raw: Any, out: _Collector) -> tuple[ServiceOptions | None, dict[str, Any]]:
    validated = _validate(ServiceOptions, data, raw, ("service",), out)
    if validated is None:
        return None, raw if isinstance(raw, dict) else {}
    service, _, raw = validated
    return service, raw


def _validate(model: type[BaseModel], data: Any, raw: Any, base: Loc, out: _Collector) -> tuple[Any, Any, Any] | None:
    """(options, data, raw) validated; a typed YAML scalar given where text is expected (``alias: 12``,
    ``tag: 2024-01-01``) is taken as its text as written, in ``data`` and ``raw`` alike (snapshots keep raw)."""
    try:
        return model.model_validate(data), data, raw
    except ValidationError as exc:
        error = exc
    fixes = text_fixes(error, base, out.doc.texts)
    if fixes:
        data, raw = with_texts(data, fixes), with_texts(raw, fixes)
        try:
            return model.model_validate(data), data, raw
        except ValidationError as exc:
            error = exc
    out.add_validation(base, error)
    return None


def _validate_modules(data: Any, raw: Any, out: _Collector) -> list[ModuleSpec]:
    if not isinstance(data, dict):
        out.add(("pipeline",), "`pipeline` must be a mapping with inputs, processors and outputs")
        return []
    for key in data:
        if key not in SECTIONS:
            out.add(("pipeline", key), f"unknown section (known: {', '.join(SECTIONS)})")
    modules: list[ModuleSpec] = []
    counters: dict[str, int] = {}
    for section in SECTIONS:
        entries = data.get(section) or []
        if not isinstance(entries, list):
            out.add(("pipeline", section), "must be a list of modules")
            continue
        for index, entry in enumerate(entries):
            spec = _validate_module(section, index, entry, raw[section][index], counters, out)
            if spec:
                modules.append(spec)
    if not data.get("inputs"):
        out.add(("pipeline",), "no inputs: nothing would ever flow")
    _check_aliases(modules, out)
    return modules


#: supervisord programs of framefarm's own, beside the modules (supervisord/render.py).
WEB_PROGRAM = "web-face"
BROKER_PROGRAM = "embedded-broker"
RESERVED_ALIASES = (WEB_PROGRAM, BROKER_PROGRAM)


def _check_aliases(modules: list[ModuleSpec], out: _Collector) -> None:
    seen: set[str] = set()
    for index, module in _indexed(modules):
        if module.alias in seen:
            out.add(("pipeline", module.section, index, "alias"), f'alias "{module.alias}" is used twice')
        elif module.alias in RESERVED_ALIASES:
            out.add(("pipeline", module.section, index, "alias"), f'alias "{module.alias}" names a framefarm process')
        seen.add(module.alias)


def _validate_module(
    section: str, index: int, entry: Any, raw: Any, counters: dict[str, int], out: _Collector
) -> ModuleSpec | None:
    loc: Loc = ("pipeline", section, index)
    registry = REGISTRIES[section]
    if not isinstance(entry, dict) or "name" not in entry:
        out.add(loc, f"each module needs a `name` (known {section} kinds: {', '.join(registry.names())})")
        return None
    kind = registry.get(str(entry["name"]))
    if kind is None:
        known = ", ".join(registry.names()) or "none"
        out.add((*loc, "name"), f'unknown {section[:-1]} kind "{entry["name"]}" (known: {known})')
        return None
    counters[kind.kind_name()] = counters.get(kind.kind_name(), 0) + 1
    if entry.get("alias") is None:
        entry = {**entry, "alias": f"{kind.kind_name()}.{counters[kind.kind_name()]}"}
    validated = _validate(kind.Options, entry, raw, loc, out)
    if validated is None:
        return None
    options, _, raw = validated
    return ModuleSpec(section, kind, options, raw)


def _indexed(modules: list[ModuleSpec]) -> list[tuple[int, ModuleSpec]]:
    """(index within its section, module): the position needed to point at its lines."""
    counts: dict[str, int] = {}
    result = []
    for module in modules:
        result.append((counts.get(module.section, 0), module))
        counts[module.section] = counts.get(module.section, 0) + 1
    return result


def _check_routing(modules: list[ModuleSpec], routes: Routes, out: _Collector) -> None:
    tags = [m.options.tag for m in modules if m.section == "inputs"]
    for index, module in _indexed(modules):
        loc: Loc = ("pipeline", module.section, index)
        if module.section == "inputs":
            if not routes.outputs_for(module.options.tag):
                out.add(
                    (*loc, "tag"),
                    f'no output matches tag "{module.options.tag}": its frames would go nowhere',
                )
        elif not any(Stage(module.alias, module.options.match).covers(tag) for tag in tags):
            out.add((*loc, "match"), f'no input produces a tag matching "{module.options.match}"')
