"""YAML loading that remembers the line of every key, so errors can say file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


@dataclass
class Document:
    """A parsed YAML file: plain Python data plus the 1-based line of every path in it."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Loc) -> str:
        return f"{self.path.name}:{self.line(loc)}"


def format_loc(loc: Loc) -> str:
    """``("pipeline", "outputs", 1, "match")`` -> ``pipeline.outputs[1].match``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_document(path: Path) -> Document:
    """Parse ``path``; syntax errors and duplicate keys become problems with their line."""
    doc = Document(path=path, data=None)
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except OSError as exc:
        doc.problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        doc.problems.append(f"{path.name}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}")
        return doc
    if node is not None:
        doc.data = _convert(node, (), doc)
    return doc


def _convert(node: yaml.Node, loc: Loc, doc: Document) -> Any:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.SafeLoader(" ").construct_object(key_node))
            child = (*loc, key)
            if key in result:
                doc.problems.append(
                    f"{doc.path.name}:{key_node.start_mark.line + 1}: {format_loc(child)}: duplicate key"
                )
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*loc, i), doc) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(" ").construct_object(node)
