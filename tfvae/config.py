"""Validation of configuration mappings against typed fields.

Every configurable thing in tfvae (a model's constructor, a network spec, the training
recipe of a preset) declares its fields with type annotations. `validate` checks a plain
mapping (from YAML, JSON or keyword overrides) against them:

* an unknown key is rejected with the list of valid keys (and the closest one);
* a value of the wrong type, or one that fails a declared check (a size of 0, a negative
  rate), is rejected with what was expected and what came;
* YAML lists become tuples where a tuple is declared, ints become floats where a float is,
  and numeric strings such as ``1e-3`` (which YAML 1.1 reads as a string) become floats.

Checks are attached with ``typing.Annotated``: ``Annotated[int, POSITIVE]``.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Callable, Literal


class ConfigError(ValueError):
    """A configuration value or key is not valid."""


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint on a value: `test(value)` must be true; `expected` says it in words."""

    test: Callable[[Any], bool]
    expected: str


POSITIVE = Check(lambda v: v > 0, "> 0")
NON_NEGATIVE = Check(lambda v: v >= 0, ">= 0")
UNIT_INTERVAL = Check(lambda v: 0 <= v <= 1, "in [0, 1]")
ALL_POSITIVE = Check(lambda v: all(i > 0 for i in v), "all entries > 0")

PositiveInt = Annotated[int, POSITIVE]
NonNegativeInt = Annotated[int, NON_NEGATIVE]
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
Sizes = Annotated[tuple[int, ...], ALL_POSITIVE]

_MISSING = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    annotation: Any
    default: Any = _MISSING


def fields_of(target) -> list[Field]:
    """The typed fields of a dataclass, or the keyword parameters of a callable or a class."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        out = []
        for f in dataclasses.fields(target):
            default = f.default if f.default is not dataclasses.MISSING else _MISSING
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            out.append(Field(f.name, hints[f.name], default))
        return out
    if not inspect.isclass(target):
        return _parameters(target, set())
    # A class's fields: its __init__'s, and where that takes **kwargs and hands them to
    # super().__init__ (a variant's `**base`), those of the next __init__ up the MRO that it
    # does not declare itself, and so on until an __init__ without **kwargs.
    out, seen = [], set()
    for klass in target.__mro__:
        if "__init__" not in vars(klass):
            continue
        out += _parameters(klass.__init__, seen)
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values()):
            break
    return out


def _parameters(function, seen: set) -> list[Field]:
    """The named parameters of `function` (not self, *args, **kwargs) not in `seen`; adds them to it."""
    hints = typing.get_type_hints(function, include_extras=True)
    out = []
    for p in inspect.signature(function).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in seen:
            continue
        seen.add(p.name)
        out.append(Field(p.name, hints.get(p.name, Any), p.default))
    return out


def describe(annotation) -> str:
    """Human-readable form of a type annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base = describe(args[0])
        checks = [a.expected for a in args[1:] if isinstance(a, Check)]
        return f"{base} ({', '.join(checks)})" if checks else base
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        item = args[0] if args else Any
        return f"a list, each item {describe(item)}"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "a mapping"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "anything"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


class _Mismatch(Exception):
    pass


def coerce(value, annotation):
    """`value` converted to `annotation` where the conversion is lossless; raises _Mismatch."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Annotated:
        value = coerce(value, args[0])
        for check in args[1:]:
            if isinstance(check, Check) and not check.test(value):
                raise _Mismatch()
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch()
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch()
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch()
    if origin in (tuple, list):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _Mismatch()
        item = args[0] if args else Any
        items = tuple(coerce(v, item) for v in value)
        return items if origin is tuple else list(items)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch()
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch()
    if annotation is int:
        if isinstance(value, bool):
            raise _Mismatch()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch()
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Mismatch()
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise _Mismatch() from None
        if not math.isfinite(number):  # inf or nan (YAML .inf, .nan, "1e400")
            raise _Mismatch()
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch()
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise _Mismatch()


def validate(target, values: Mapping | None, where: str, fill_defaults: bool = True) -> dict:
    """Checks `values` against the fields of `target` and returns the coerced mapping.

    Args:
      target: a dataclass, a class (its ``__init__``) or a function.
      values: the mapping to check (None means empty).
      where: what the mapping is, for messages ("model 'vae'", "training section").
      fill_defaults: add declared defaults for keys that are absent.
    Raises:
      ConfigError: unknown key, missing required key, or a value of the wrong type.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in fields_of(target)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(sorted(fields))}.")
        try:
            out[key] = coerce(value, fields[key].annotation)
        except _Mismatch:
            raise ConfigError(
                f"{where}: {key!r} must be {describe(fields[key].annotation)}, got {value!r}") from None
    for name, f in fields.items():
        if name in out:
            continue
        if f.default is _MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} ({describe(f.annotation)})")
        if fill_defaults:
            out[name] = f.default
    return out
