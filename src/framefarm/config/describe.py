"""``pipectl describe``: a kind's options, defaults and descriptions, straight from its schema."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from .registry import ModuleKind


def describe_kind(section: str, kind: type[ModuleKind]) -> str:
    fields = kind.Options.model_fields
    lines = [f"{kind.kind_name()} ({section[:-1]}): {fields['name'].description}"]
    for name, info in fields.items():
        if name == "name":
            continue
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = f"default {info.default_factory()!r}"
        else:
            default = f"default {info.default!r}" if info.default is not PydanticUndefined else ""
        lines.append(f"  {name:16} {default:28} {info.description}")
    return "\n".join(lines)
