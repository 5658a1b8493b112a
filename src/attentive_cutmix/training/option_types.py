"""Types of config options: the check every option's value goes through, and the words its errors use."""
from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError


def describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}[hint]


def conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """(does ``value`` have type ``hint``, the value as a plain Python value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, plain = conform(value, arg)
            if ok:
                return True, plain
        return False, value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [conform(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), [plain for _, plain in items]
    if hint is type(None):
        return value is None, value
    if hint is bool:  # never 'false', 0 or 'no': bool('false') is True
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        return ok, value if isinstance(value, (int, float)) or not ok else float(value)
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"no type check for {hint!r}; add one to option_types.conform")  # a new field type needs one


def why(value: Any, hint: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
            return "; a quoted number is a string in YAML: write it without quotes"
        except ValueError:
            pass
        if value.lower() in ("true", "false", "yes", "no", "on", "off") and "true or false" in describe(hint):
            return "; write true or false without quotes"
    if isinstance(value, float) and not math.isfinite(value):
        return "; it must be finite"
    return ""


def check_values(values: Mapping[str, Any], hint_of: Callable[[str], Any], source: str) -> dict[str, Any]:
    """Check each value against ``hint_of(key)`` (None: not checked); ``ConfigError`` naming key, value and the
    expected type. Returns the values as plain Python values (a numpy integer becomes an int)."""
    plain = {}
    for key, value in values.items():
        hint = hint_of(key)
        if hint is None:
            plain[key] = value
            continue
        ok, plain[key] = conform(value, hint)
        if not ok:
            kind = "null" if value is None else type(value).__name__
            raise ConfigError(f"option {key} must be {describe(hint)}, got {key}={value!r} ({kind}) in {source}"
                              f"{why(value, hint)}")
    return plain


__all__ = ["describe", "conform", "why", "check_values"]
