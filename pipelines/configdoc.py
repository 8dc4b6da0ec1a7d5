"""Write a commented example run config from the config models themselves.

Generated rather than hand-written, so `terracorpus config init` can never drift from what
`config check` accepts: every key, its default and its description come from
:mod:`terracorpus.pipelines.config`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.fields import FieldInfo

from terracorpus.pipelines.config import RunConfig, section_fields

_HEADER = """\
# terracorpus run config. Check it with `terracorpus config check FILE`;
# run it with `terracorpus curate FILE`. Unknown keys are rejected, naming the allowed ones.
"""


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, default=str)


def _lines(fields: dict[str, FieldInfo], values: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for name, field in fields.items():
        value = values.get(name)
        sub = section_fields(field.annotation)
        doc = field.description or (field.annotation.__doc__ if sub is not None else "")
        doc = " ".join((doc or "").split("\n\n")[0].split())  # a section's first paragraph
        if sub is not None and isinstance(value, dict):
            out.append(f"{pad}{name}:" + (f"  # {doc}" if doc else ""))
            out.extend(_lines(sub, value, indent + 2))
            continue
        out.append(f"{pad}{name}: {_scalar(value)}" + (f"  # {doc}" if doc else ""))
    return out


def example_config(overrides: dict[str, Any] | None = None) -> str:
    """A commented YAML run config with every key at its default (plus ``overrides``)."""
    cfg = RunConfig.model_validate(overrides or {})
    values = cfg.model_dump(mode="json")
    return _HEADER + "\n".join(_lines(RunConfig.model_fields, values, 0)) + "\n"
