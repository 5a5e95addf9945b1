"""Module kinds register here under their config name; the core looks names up and names none itself."""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar, TypeVar

from ..errors import RegistryError
from .schema import ModuleOptions, ServiceOptions
from .yamlpos import Loc

log = logging.getLogger(__name__)

SECTIONS = ("inputs", "processors", "outputs")
ENTRY_POINT_GROUPS = {section: f"framefarm.{section}" for section in SECTIONS}


@dataclass(frozen=True)
class CheckContext:
    """What a kind's ``check`` and ``folders`` may look at: paths resolve against the config file's folder;
    ``tags`` are the tags of the frames that reach the module (an input's own tag)."""

    base_dir: Path
    service: ServiceOptions
    tags: tuple[str, ...] = ()

    def resolve(self, path: Path | str) -> Path:
        return (self.base_dir / Path(path).expanduser()).resolve()


@dataclass(frozen=True)
class FolderUse:
    """A folder a module reads new files from or writes files into, as the kind declares it.

    ``tree``: the sub-folders too (a recursive watch; an output that makes sub-folders of its own).
    ``pipectl -t`` compares every module's folders: a folder that one module writes and another watches
    would feed results back in a loop, and two modules watching one folder would race for its files.
    """

    key: Loc  # the option that names the folder, within the module (``("path",)``)
    path: Path  # resolved, absolute
    writes: bool  # False: reads (watches) it
    tree: bool = False


class ModuleKind:
    """A module kind: its ``Options`` model plus a ``check`` run by ``pipectl -t``, start and reload."""

    Options: ClassVar[type[ModuleOptions]]

    @classmethod
    def kind_name(cls) -> str:
        annotation = cls.Options.model_fields["name"].annotation
        values = typing.get_args(annotation)
        if typing.get_origin(annotation) is not typing.Literal or len(values) != 1:
            raise RegistryError(f"{cls.__qualname__}.Options.name must be Literal['<kind>']")
        return str(values[0])

    @classmethod
    def check(cls, options: ModuleOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        """Yield ``(key path, message)`` for what would fail at start: files, models, ports. Opens no stream."""
        yield from ()

    @classmethod
    def frame_side(cls, options: ModuleOptions, ctx: CheckContext) -> int | None:
        """The longest frame side this processor or output needs: 0 when it never reads the frame, None for the
        whole frame (the default: a kind must say it can do with less). Inputs store frames no larger than every
        stage of their route needs, so the bus carries, and the detector reads, no pixel it would throw away."""
        return None

    @classmethod
    def takes_raw_frames(cls, options: ModuleOptions) -> bool:
        """Whether this output also takes its tags' frames before detection, from live inputs: every camera frame
        then reaches it, with or without room at the detectors (a video output with ``boxes: latest``)."""
        return False

    @classmethod
    def folders(cls, options: ModuleOptions, ctx: CheckContext) -> Iterator[FolderUse]:
        """The folders this module watches or writes files into (none by default); see FolderUse."""
        yield from ()


K = TypeVar("K", bound=type[ModuleKind])


class Registry:
    """The kinds of one section (inputs, processors or outputs)."""

    def __init__(self, section: str) -> None:
        self.section = section
        self._kinds: dict[str, type[ModuleKind]] = {}

    def register(self, kind: K) -> K:
        name = kind.kind_name()
        if kind.Options.section != self.section:
            raise RegistryError(f"{kind.__qualname__} is a {kind.Options.section} kind, not {self.section}")
        if name in self._kinds and self._kinds[name] is not kind:
            raise RegistryError(f'{self.section} kind "{name}" is registered twice')
        undocumented = [f for f, info in kind.Options.model_fields.items() if not info.description]
        if undocumented:
            raise RegistryError(f'{self.section} kind "{name}": options without description: {undocumented}')
        self._kinds[name] = kind
        return kind

    def get(self, name: str) -> type[ModuleKind] | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)


REGISTRIES = {section: Registry(section) for section in SECTIONS}
inputs, processors, outputs = (REGISTRIES[s] for s in SECTIONS)


def load_plugins() -> list[str]:
    """Register third-party kinds from their entry points; return what failed to load."""
    failures = []
    for section, group in ENTRY_POINT_GROUPS.items():
        for point in entry_points(group=group):
            try:
                REGISTRIES[section].register(point.load())
            except Exception as exc:
                failures.append(f"plugin {point.name} ({point.value}) in {group}: {exc}")
                log.error("cannot load %s", failures[-1])
    return failures
