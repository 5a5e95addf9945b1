"""``pipectl describe``: a kind's options, defaults and descriptions, straight from its schema."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .registry import ModuleKind


def describe_kind(section: str, kind: type[ModuleKind]) -> str:
    fields = kind.Options.model_fields
    lines = [f"{kind.kind_name()} ({section[:-1]}): {fields['name'].description}"]
    lines.extend(_option_lines(kind.Options, prefix=""))
    return "\n".join(lines)


def _option_lines(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """One line per option; a nested group (``reconnect``, ``retry``) as ``group.option`` lines."""
    for name, info in model.model_fields.items():
        if name == "name" and not prefix:
            continue
        nested = info.annotation if isinstance(info.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            yield from _option_lines(nested, prefix=f"{prefix}{name}.")
            continue
        yield f"  {prefix + name:20} {_default(info):28} {info.description}"


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return f"default {info.default_factory()!r}"  # type: ignore[call-arg]
    return f"default {info.default!r}" if info.default is not PydanticUndefined else ""
