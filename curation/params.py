"""Settings declared once: each field's default, bounds and description in one place.

Curation's parameter records (:class:`~terracorpus.curation.groups.GroupParams`,
:class:`~terracorpus.curation.ap.APParams`, :class:`~terracorpus.curation.selection.
SelectionPolicy`) declare every field with :func:`setting`. The bounds and the description
live in the dataclass field's metadata, where two readers find them:

- :func:`check_settings`, called by each record's ``__post_init__``, so a record built in code
  is checked too;
- the run config (``pipelines.config``), whose sections are these records validated by
  pydantic, which reads the same metadata (``ge``/``gt``/``le``/``lt``/``description``) and
  names the bad key.

``Literal`` annotations are the allowed choices of a string setting, for both readers.
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_CHECKS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def setting(
    default: T,
    description: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> T:
    """A dataclass field with its default, bounds and user-facing description.

    Typed as its default so the record reads as plain attributes; at run time it is a
    ``dataclasses.Field`` whose metadata the config boundary and :func:`check_settings` read.
    """
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata: dict[str, Any] = {k: v for k, v in bounds.items() if v is not None}
    if description:
        metadata["description"] = description
    out: T = dataclasses.field(default=default, metadata=metadata)
    return out


def bounds_text(meta: typing.Mapping[str, Any]) -> str:
    """The range a field's metadata allows, as ``[0, 1]``, ``(0, 1]``, ``>= 1`` or ``< 0``."""
    lower = next(((k, meta[k]) for k in ("ge", "gt") if k in meta), None)
    upper = next(((k, meta[k]) for k in ("le", "lt") if k in meta), None)
    if lower and upper:
        left = "[" if lower[0] == "ge" else "("
        right = "]" if upper[0] == "le" else ")"
        return f"in {left}{lower[1]:g}, {upper[1]:g}{right}"
    key, bound = lower or upper or ("", 0)
    return f"{_SYMBOLS[key]} {bound:g}" if key else ""


def _violates(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    return any(key in meta and not ok(value, meta[key]) for key, ok in _CHECKS.items())


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The choices of a ``Literal`` (or ``Literal | None``) annotation; () for anything else."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = typing.get_args(annotation)
    if args and type(None) in args:
        return tuple(c for a in args if a is not type(None) for c in _choices(a))
    return ()


def setting_problems(record: Any) -> list[str]:
    """What is wrong with a record's values against its fields' bounds and choices."""
    hints = typing.get_type_hints(type(record))
    problems = []
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        choices = _choices(hints.get(f.name))
        if choices and value not in choices:
            names = ", ".join(repr(c) for c in choices)
            problems.append(f"{f.name} must be one of {names}, not {value!r}")
        elif isinstance(value, (int, float)) and _violates(value, f.metadata):
            problems.append(f"{f.name} must be {bounds_text(f.metadata)}, got {value!r}")
    return problems


def check_settings(record: Any, error: type[Exception]) -> None:
    """Raise ``error`` naming every field of ``record`` outside its bounds or choices."""
    problems = setting_problems(record)
    if problems:
        raise error("; ".join(problems))


def project(record: Any, cls: type[T]) -> T:
    """The ``cls`` record holding the values of ``record``'s fields of the same names (a config
    section that carries ``cls``'s settings among others, narrowed to them)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: getattr(record, n) for n in names})
