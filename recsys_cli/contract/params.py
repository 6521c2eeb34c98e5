"""What a component's constructor accepts, declared in its signature and checked before it is built.

A constructor declares the type of each argument and, with ``typing.Annotated``, its range::

    def __init__(self, dim: PositiveInt, dropout: Fraction = 0.1, cell: Literal["gru", "lstm"] = "gru")

:func:`recsys_cli.checks.validate_config` walks every ``_target_`` node of a composed config and
checks each value against these hints (:func:`problem`) before anything is prepared or built, so
``model.dim=0`` or ``model.dropout=1.5`` is one line naming the key, not a traceback after the
data was read. Hints of other libraries' classes are checked the same way (their types only).
"""

from __future__ import annotations

import inspect
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union


@dataclass(frozen=True)
class Range:
    """The interval a numeric argument must lie in: ``min <= value <= max`` (``< max`` with
    ``max_open``); a bound that is None is not checked."""

    min: float | None = None
    max: float | None = None
    max_open: bool = False

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.min is not None and value < self.min:
            return False
        return self.max is None or value < self.max or (value == self.max and not self.max_open)

    def describe(self, noun: str) -> str:
        if self.max is None:
            return f"{noun} >= {self.min:g}"
        if self.min is None:
            return f"{noun} {'<' if self.max_open else '<='} {self.max:g}"
        return f"{noun} in [{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"


PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
NonNegative = Annotated[float, Range(min=0)]
# a share or probability below 1: dropout, data.cold_items
Fraction = Annotated[float, Range(0, 1, max_open=True)]

_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_NONE = type(None)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a config value (a scalar, or a list / mapping node) can be an argument of type
    ``hint``. Unknown typing forms accept anything; a class accepts its instances (and a string
    where it is a path type); a nested node is left to the component it configures."""
    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, (typing.TypeVar, str, typing.ForwardRef)):
        return True
    if origin is Annotated:
        return _accepts(hint.__origin__, value)
    if origin in (Union, types.UnionType):
        return any(_accepts(member, value) for member in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is _NONE:
        return value is None
    if hint in (bool, int, float, str):
        if isinstance(value, bool):
            return hint is bool
        return isinstance(value, float | int) if hint is float else isinstance(value, hint)
    if not isinstance(value, (str, int, float, bool, _NONE)):
        return True  # a list or mapping node: its own checks (or the component's) apply
    cls = origin or hint
    if not isinstance(cls, type):
        return True  # a typing form this check does not know
    return isinstance(value, cls) or (isinstance(value, str) and issubclass(cls, os.PathLike))


def _describe(hint: Any) -> str:
    """What a user may write for an argument of type ``hint`` ('an integer >= 1', ...)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        ranges = [e for e in extras if isinstance(e, Range)]
        noun = _describe(base)
        return ranges[0].describe(noun) if ranges else noun
    if origin in (Union, types.UnionType):
        members = typing.get_args(hint)
        literal = [m for m in members if typing.get_origin(m) is Literal]
        choices = tuple(a for m in literal for a in typing.get_args(m))
        names = [_describe(m) for m in members if m is not _NONE and m not in literal]
        names += [_describe(Literal[choices])] if choices else []
        names = [n for n in dict.fromkeys(names) if n]
        null = " (or null)" if _NONE in members else ""
        return " or ".join(names) + null if names else "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(origin or hint, type) and issubclass(origin or hint, (list, tuple)):
        return "a list"
    return _NOUNS.get(hint, "")


def problem(hint: Any, value: Any, default: Any = inspect.Parameter.empty) -> str | None:
    """What is wrong with ``value`` for an argument declared as ``hint`` ('use an integer >= 1'),
    or None when it fits (``None`` fits where it is the default)."""
    if value is None and default is None:
        return None
    wanted = _describe(hint) or "a value of the declared type"
    if not _accepts(hint, value):
        return f"use {wanted}"
    if typing.get_origin(hint) is Annotated and isinstance(value, int | float):
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, Range) and not extra.contains(float(value)):
                return f"use {wanted}"
    return None


def declared_hints(target: Callable) -> dict[str, tuple[Any, Any]]:
    """{argument: (type hint, default)} of a class's constructor or a function; arguments whose
    hint cannot be evaluated are left out."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    init = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:  # noqa: BLE001 - an unresolvable hint anywhere: evaluate them one by one
        hints = {}
        namespace = getattr(inspect.unwrap(init), "__globals__", {})
        for name, param in signature.parameters.items():
            hint = param.annotation
            if hint is param.empty:
                continue
            try:
                hints[name] = eval(hint, namespace) if isinstance(hint, str) else hint  # noqa: S307
            except Exception:  # noqa: BLE001 - a name only imported for type checkers
                continue
    return {
        name: (hints[name], param.default)
        for name, param in signature.parameters.items()
        if name in hints and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    }
