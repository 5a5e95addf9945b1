"""Load and validate a pipeline file; every problem is reported with file:line and key path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .envexpand import expand
from .registry import REGISTRIES, SECTIONS, CheckContext, ModuleKind
from .routing import Routes, Stage
from .schema import ServiceOptions
from .yamlpos import Document, Loc, format_loc, load_document

TOP_LEVEL_KEYS = ("service", "pipeline")
ServiceCheck = Callable[[ServiceOptions], Iterable[tuple[Loc, str]]]


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
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[str] = list(doc.problems)

    def add(self, loc: Loc, message: str) -> None:
        key = f" {format_loc(loc)}:" if loc else ""
        self.problems.append(f"{self.doc.where(loc)}:{key} {message}")

    def add_validation(self, base: Loc, error: ValidationError) -> None:
        for item in error.errors():
            loc = (*base, *item["loc"])
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown option"
            self.add(loc, message)


def load_pipeline(
    path: Path | str,
    env: Mapping[str, str] | None = None,
    *,
    deep: bool = True,
    check_service: ServiceCheck | None = None,
) -> Pipeline:
    """Parse, expand, validate and cross-check ``path``; raise ConfigError listing every problem.

    ``deep`` runs each kind's ``check`` (files exist, models load); modules skip it for speed at start.
    ``check_service`` is the broker backend's own check (the bus layer passes it: config imports no backend).
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
    data = expand(raw, os.environ if env is None else env, lambda loc, name: out.add(loc, f"${{{name}}} is not set"))

    service = _validate_service(data.get("service") or {}, out)
    problems_before = len(out.problems)
    modules = _validate_modules(data.get("pipeline"), raw.get("pipeline"), out)
    modules_valid = len(out.problems) == problems_before
    routes = Routes(
        processors=tuple(Stage(m.alias, m.options.match) for m in modules if m.section == "processors"),
        outputs=tuple(Stage(m.alias, m.options.match) for m in modules if m.section == "outputs"),
    )
    if modules_valid:  # routing checks on half the modules would only mislead
        _check_routing(modules, routes, out)
    if deep:
        _deep_checks(path, service, modules, check_service, out)
    if out.problems or service is None:
        raise ConfigError(out.problems)
    return Pipeline(path, service, raw.get("service") or {}, tuple(modules), routes)


def _deep_checks(
    path: Path, service: ServiceOptions | None, modules: list[ModuleSpec], check: ServiceCheck | None, out: _Collector
) -> None:
    """What would fail at start: the broker backend's limits, each kind's files, models and ports."""
    if check is not None and service is not None:
        for loc, message in check(service):
            out.add(loc, message)
    ctx = CheckContext(base_dir=path.parent, service=service or ServiceOptions())
    for index, module in _indexed(modules):
        for loc, message in module.kind.check(module.options, ctx):
            out.add(("pipeline", module.section, index, *loc), message)


def _validate_service(data: Any, out: _Collector) -> ServiceOptions | None:
    try:
        service = ServiceOptions.model_validate(data)
    except ValidationError as exc:
        out.add_validation(("service",), exc)
        return None
    return service


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


def _check_aliases(modules: list[ModuleSpec], out: _Collector) -> None:
    seen: set[str] = set()
    for index, module in _indexed(modules):
        if module.alias in seen:
            out.add(("pipeline", module.section, index, "alias"), f'alias "{module.alias}" is used twice')
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
    try:
        options = kind.Options.model_validate(entry)
    except ValidationError as exc:
        out.add_validation(loc, exc)
        return None
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
