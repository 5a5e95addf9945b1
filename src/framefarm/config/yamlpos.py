"""YAML loading that remembers the line of every key, so errors can say file:line.

Whatever the file holds (bytes that are not UTF-8, a binary, tags, anchors that refer to themselves, merge
keys, nesting a thousand deep), the result is data plus problems that each name a line: PyYAML's own errors
(ConstructorError, ValueError from a date like 2024-13-45, RecursionError from a recursive anchor) never
escape as tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024  # a pipeline file is a few KiB; a bigger one is not one
MAX_DEPTH = 64  # nesting of mappings and lists; PyYAML's composer recurses and would overflow near 300
MAX_NODES = 100_000  # values after alias expansion: stops "billion laughs" files
TAG = "tag:yaml.org,2002:"
MERGE_TAG = TAG + "merge"
MAP_TAG, SEQ_TAG = TAG + "map", TAG + "seq"
TEXT_TAGS = {TAG + "str", TAG + "value"}  # `=` resolves to !!value, which PyYAML cannot construct
TYPED_SCALAR_TAGS = {TAG + name for name in ("null", "bool", "int", "float", "timestamp")}
CONTROL_CHARS = {chr(c) for c in range(32)} - {"\t", "\n", "\r"}


@dataclass
class Document:
    """A parsed YAML file: plain Python data plus the 1-based line of every path in it.

    ``texts`` keeps the text as written of every scalar that YAML typed (``12``, ``1.10``, ``2024-01-01``,
    ``yes``), so options that take text can accept it as fluent-bit does.
    """

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    texts: dict[Loc, str] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Loc) -> str:
        return f"{self.path.name}:{self.line(loc)}"

    def problem(self, line: int, loc: Loc, message: str) -> None:
        key = f" {format_loc(loc)}:" if loc else ""
        self.problems.append(f"{self.path.name}:{line}:{key} {message}")


def format_loc(loc: Loc) -> str:
    """``("pipeline", "outputs", 1, "match")`` -> ``pipeline.outputs[1].match``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_text(path: Path, *, lenient: bool = False) -> tuple[str | None, str | None]:
    """(text, problem): the file decoded as UTF-8, or why it cannot be (with the line of the first bad byte).

    ``lenient`` replaces bytes that are not UTF-8 instead, for readers that only need one value of the file.
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror or exc}"
    if len(data) > MAX_FILE_BYTES:
        return None, f"{path.name}:1: more than {MAX_FILE_BYTES // 1024 // 1024} MiB: not a pipeline file"
    try:
        return data.decode("utf-8-sig", errors="replace" if lenient else "strict"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, (
            f"{path.name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): "
            "save the file as UTF-8; is it a pipeline file?"
        )


def load_document(path: Path) -> Document:
    """Parse ``path``; undecodable bytes, syntax errors and duplicate keys become problems with their line."""
    text, problem = read_text(path)
    if text is None:
        return Document(path=path, data=None, problems=[problem or f"{path}: cannot read"])
    return parse_document(path, text)


def parse_document(path: Path, text: str) -> Document:
    """Parse ``text`` (the content of ``path``) into a Document."""
    doc = Document(path=path, data=None)
    binary = next((i for i, c in enumerate(text) if c in CONTROL_CHARS), None)
    if binary is not None:
        doc.problem(text.count("\n", 0, binary) + 1, (), "control characters: this is not a text file")
        return doc
    try:
        _check_depth(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        doc.problem(_error_line(exc, text), (), f"invalid YAML: {_error_message(exc)}")
        return doc
    except _TooDeep as exc:
        doc.problem(exc.line, (), f"nested more than {MAX_DEPTH} levels deep")
        return doc
    if node is not None:
        converter = _Converter(doc)
        try:
            doc.data = converter.convert(node, ())
        except _TooLarge as exc:
            doc.data = None
            doc.problem(exc.line, (), f"more than {MAX_NODES} values once aliases are expanded")
    return doc


def _error_line(exc: yaml.YAMLError, text: str) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # ReaderError: a character index
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


def _error_message(exc: yaml.YAMLError) -> str:
    """PyYAML's reason without its "in <unicode string>, position N" trailer (file:line says where)."""
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"character #x{code:04x} is not allowed in YAML: is it a text file?"
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    return ", ".join(str(p) for p in parts if p) or str(exc)


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _TooLarge(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _check_depth(text: str) -> None:
    """PyYAML's parser is iterative but its composer recurses: refuse deep nesting before composing."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Converter:
    """Nodes to plain data, recording lines and problems; guards against cycles and alias bombs."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()  # nodes being converted: meeting one again is a recursive anchor
        self.count = 0

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        self.doc.lines.setdefault(loc, line)
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge(line)
        if id(node) in self.active:
            self.doc.problem(self.doc.line(loc), loc, "an anchor that contains itself (recursive alias)")
            return None
        if len(self.active) > MAX_DEPTH:
            self.doc.problem(self.doc.line(loc), loc, f"nested more than {MAX_DEPTH} levels deep through aliases")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, loc)
            return self._scalar(node, loc)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any] | None:
        if node.tag != MAP_TAG:
            return self._unsupported(node, loc)
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        own: set[str] = set()
        for key_node, value_node, merged in self._pairs(node, loc):
            key = self._key(key_node, loc)
            if key is None:
                continue
            if not merged:
                if key in own:
                    self.doc.problem(key_node.start_mark.line + 1, (*loc, key), "duplicate key")
                own.add(key)
            entries[key] = (key_node, value_node)  # later wins: own keys over merged ones
        result: dict[str, Any] = {}
        for key, (key_node, value_node) in entries.items():
            self.doc.lines[(*loc, key)] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, (*loc, key))
        return result

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> Iterator[tuple[yaml.Node, yaml.Node, bool]]:
        """(key, value, merged) of a mapping with its ``<<`` merge keys resolved: merged keys first, so the
        mapping's own keys override them; of several merged mappings the first wins, as YAML specifies."""
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            if not sources or not all(isinstance(s, yaml.MappingNode) for s in sources):
                self.doc.problem(key_node.start_mark.line + 1, loc, "`<<` merges a mapping or a list of mappings")
                continue
            for source in reversed(sources):
                if id(source) in self.active:
                    self.doc.problem(key_node.start_mark.line + 1, loc, "`<<` merges a mapping into itself")
                    continue
                self.active.add(id(source))
                try:
                    yield from ((k, v, True) for k, v, _ in self._pairs(source, loc))
                finally:
                    self.active.discard(id(source))
        yield from ((k, v, False) for k, v in node.value if k.tag != MERGE_TAG)

    def _key(self, node: yaml.Node, loc: Loc) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or not (node.tag in TEXT_TAGS or node.tag in TYPED_SCALAR_TAGS):
            self.doc.problem(node.start_mark.line + 1, loc, "a key must be a plain name")
            return None
        return str(node.value)

    def _sequence(self, node: yaml.SequenceNode, loc: Loc) -> list[Any] | None:
        if node.tag != SEQ_TAG:
            return self._unsupported(node, loc)
        return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]

    def _scalar(self, node: yaml.Node, loc: Loc) -> Any:
        if node.tag in TEXT_TAGS:
            return node.value
        if node.tag not in TYPED_SCALAR_TAGS:
            return self._unsupported(node, loc)
        try:
            value = self.constructor.construct_object(node)
        except Exception:  # PyYAML's constructors raise ValueError, KeyError...: an impossible date is text
            if node.tag == TAG + "timestamp":
                return node.value
            self.doc.problem(node.start_mark.line + 1, loc, f"not a valid !!{node.tag.removeprefix(TAG)}")
            return None
        if value is not None and not isinstance(value, str):
            self.doc.texts[loc] = node.value
        return value

    def _unsupported(self, node: yaml.Node, loc: Loc) -> None:
        tag = "!!" + node.tag.removeprefix(TAG) if node.tag.startswith(TAG) else node.tag
        self.doc.problem(
            node.start_mark.line + 1,
            loc,
            f"unsupported YAML tag {tag}: pipeline files use plain YAML; take values from the environment "
            "with ${VAR}",
        )
        return None


def find_value(path: Path, text: str, loc: Loc) -> tuple[bool, Any]:
    """(known, value) of the scalar at ``loc``, for readers that need one value of a file that may be broken
    elsewhere (``pipectl status`` on an edited file). ``(True, None)``: the file does not give it.

    A file whose YAML does not parse is read event by event up to its error: a value written before the
    error is found; one that could only come after it is not known.
    """
    doc = parse_document(path, text)
    if isinstance(doc.data, dict):
        value: Any = doc.data
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return loc not in doc.lines, None  # present but unreadable (a bad tag): not known
        return True, doc.texts.get(loc, value)
    return _find_before_error(text, loc)


def _find_before_error(text: str, loc: Loc) -> tuple[bool, Any]:
    """Walk the events of ``text`` until ``loc``'s value, the end of its mapping, or the error."""
    stack: list[list[Any]] = []  # per open collection: [path, is_mapping, key or index, expecting a key]
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                closed = stack.pop()
                if tuple(closed[0]) == loc[:-1]:
                    return True, None  # its mapping ended without it
                _advance(stack)
            elif isinstance(event, yaml.NodeEvent):
                where = _node_path(stack)
                if where is None:  # a mapping key
                    if not isinstance(event, yaml.ScalarEvent):
                        break  # a list or mapping as a key: no path leads past it
                    stack[-1][2], stack[-1][3] = event.value, False
                    continue
                if isinstance(event, yaml.ScalarEvent) and where == loc:
                    return True, event.value
                if isinstance(event, yaml.CollectionStartEvent):
                    stack.append([where, isinstance(event, yaml.MappingStartEvent), 0, True])
                else:
                    _advance(stack)
    except yaml.YAMLError:
        pass
    return False, None


def _node_path(stack: list[list[Any]]) -> Loc | None:
    """The path of the next node, or None when it is a mapping's key."""
    if not stack:
        return ()
    path, is_mapping, position, expecting_key = stack[-1]
    if is_mapping and expecting_key:
        return None
    return (*path, position)


def _advance(stack: list[list[Any]]) -> None:
    """A value is complete: its mapping expects the next key, its list the next index."""
    if stack:
        if stack[-1][1]:
            stack[-1][3] = True
        else:
            stack[-1][2] += 1
