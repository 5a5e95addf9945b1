"""Folders: a runtime dir that cannot be used, and folders that modules would share in a way that cannot work.

An output that writes into a folder an input watches feeds its results back in as new input, forever; two
inputs that watch one folder race for each file. The core names no kind: each kind declares its folders
(``ModuleKind.folders``) and this compares them, plus the runtime dir, which the master writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from .registry import FolderUse
from .yamlpos import Loc, format_loc


@dataclass(frozen=True)
class Use:
    """A FolderUse placed in the file: ``owner`` is the module's key path, ``loc`` the option's."""

    owner: Loc
    folder: FolderUse

    @property
    def loc(self) -> Loc:
        return (*self.owner, *self.folder.key)


def _covers(use: FolderUse, other: FolderUse) -> bool:
    """Whether a folder ``other`` names is among those ``use`` touches."""
    return other.path == use.path or (use.tree and use.path in other.path.parents)


def overlap(a: FolderUse, b: FolderUse) -> bool:
    """Whether some folder is touched by both: the same one, or one inside the other's tree."""
    return _covers(a, b) or _covers(b, a)


def conflicts(uses: list[Use], line_of: Callable[[Loc], int]) -> Iterator[tuple[Loc, str]]:
    """``(key path, message)`` for each pair of modules whose folders cannot be shared; the message names
    the other line. A module's own folders are its own business (an input skips its done_dir)."""
    for first, second in combinations(uses, 2):
        a, b = first.folder, second.folder
        if first.owner == second.owner or (a.writes and b.writes) or not overlap(a, b):
            continue
        if not a.writes and not b.writes:
            yield (
                second.loc,
                (
                    f"watches {b.path}, which {format_loc(first.loc)} (line {line_of(first.loc)}) watches too: "
                    "each file would go to one of them at random; give each input its own folder"
                ),
            )
            continue
        writer, reader = (first, second) if a.writes else (second, first)
        yield (
            writer.loc,
            (
                f"writes into {writer.folder.path}, which {format_loc(reader.loc)} (line {line_of(reader.loc)}) "
                "watches: what is written there would be read back in, in a loop; use a folder outside it"
            ),
        )


def runtime_dir_problems(root: Path) -> Iterator[str]:
    """A runtime dir must be a writable folder, or one that can be created (checked without creating it)."""
    try:
        if root.exists():
            if not root.is_dir():
                yield f"{root} exists and is not a folder"
            elif not os.access(root, os.W_OK | os.X_OK):
                yield f"{root} is not writable"
            return
        existing = next(parent for parent in root.parents if parent.exists())
    except OSError as exc:
        yield f"{root} cannot be used: {exc.strerror or exc}"
        return
    if not existing.is_dir():
        yield f"{root} cannot be created: {existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        yield f"{root} cannot be created: {existing} is not writable"
