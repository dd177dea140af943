"""Dataclass fields as command-line flags, and flag/YAML values back to typed fields.

Every option of rankalign is a dataclass field with its default and a ``help`` text in the
field's metadata; the CLI is generated from those fields, never declared a second time.
This module is the one bridge, used by ``train``, ``data convert`` and ``data
stackexchange``:

- :func:`add_dataclass_fields` adds a field as ``--name`` (and ``--name-with-dashes``) to an
  ``argparse`` parser or argument group, with ``default=SUPPRESS`` so that only the flags a
  user typed reach :func:`given_values` — YAML values and dataclass defaults stay in force
  for the rest (flags win over YAML, YAML over defaults);
- :func:`coerce_value` turns a string from the command line or a YAML scalar into the
  field's type;
- :func:`build_dataclass` builds a dataclass from such values and reports every unknown
  key (with close matches and the valid keys) and every bad value in one
  :class:`~rankalign.errors.ConfigError`.

It imports neither torch nor transformers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from rankalign.errors import ConfigError

_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}
_NULL = {"none", "null", ""}


def field_default(f: dataclasses.Field) -> Any:
    """The field's default value (``default_factory()`` called), or ``None`` when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (empty when one cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: types are inferred from defaults
        return {}


def _type_name(annotation: Any, default: Any) -> str:
    if annotation is None:
        annotation = type(default) if default is not None else str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return origin.__name__.upper()
    if args:
        return "|".join(_type_name(a, None) for a in args)
    return getattr(annotation, "__name__", str(annotation)).upper()


def _is_bool(annotation: Any, default: Any) -> bool:
    if annotation is None:
        return isinstance(default, bool)
    return annotation is bool or (bool in typing.get_args(annotation)
                                  and all(a in (bool, type(None)) for a in typing.get_args(annotation)))


def field_help(f: dataclasses.Field) -> str:
    """The field's help text with its default, as ``--help`` shows it."""
    text = str(f.metadata.get("help", "")).strip()
    default = field_default(f)
    shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default: {shown})".replace("%", "%%")


def add_dataclass_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    fields: Iterable[dataclasses.Field],
    *,
    types: Mapping[str, Any] | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Add every init field of ``fields`` as ``--name`` / ``--name-with-dashes``.

    Values stay strings (converted later by :func:`coerce_value`), and nothing is stored
    for a flag that is not given (``default=SUPPRESS``). A boolean takes an optional value:
    ``--use_lora`` means true, ``--use_lora false`` false.

    Args:
        parser: the parser or argument group to add to.
        fields: dataclass fields (``dataclasses.fields(cls)``); fields with ``init=False``,
            names starting with ``_`` and names in ``skip`` are left out.
        types: resolved annotations by field name (:func:`type_hints`), for metavars and
            booleans; inferred from the default when missing.
    Returns:
        The names added, in order.
    """
    types = types or {}
    added: list[str] = []
    for f in fields:
        if not f.init or f.name.startswith("_") or f.name in skip:
            continue
        flags = [f"--{f.name}"]
        if "_" in f.name:
            flags.append(f"--{f.name.replace('_', '-')}")
        default = field_default(f)
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": field_help(f)}
        if _is_bool(types.get(f.name), default):
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs["metavar"] = _type_name(types.get(f.name), default)
        parser.add_argument(*flags, **kwargs)
        added.append(f.name)
    return added


def given_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The values of ``names`` that were given on the command line (see ``default=SUPPRESS``)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def coerce_value(name: str, value: Any, annotation: Any = None, default: Any = None) -> Any:
    """Turn a command-line string or YAML scalar into the type ``annotation`` (or the default's).

    Raises:
        ValueError: the value cannot be read as that type (the message names ``name``).
    """
    if annotation is None:
        annotation = type(default) if default is not None else str
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    if origin in (list, dict):
        kinds = [origin]
    if isinstance(value, str) and optional and value.strip().lower() in _NULL:
        return None
    if value is None:
        if optional or default is None:
            return None
        raise ValueError(f"{name}: null is not allowed (expected {getattr(kinds[0], '__name__', kinds[0])})")
    for kind in kinds:
        converted = _convert(kind, value)
        if converted is not _NO:
            return converted
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ValueError(f"{name}: cannot read {value!r} as {names}")


_NO = object()


def _convert(kind: Any, value: Any) -> Any:
    """``value`` as ``kind``, or ``_NO`` when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return bool(value) if isinstance(value, int) and value in (0, 1) else _NO
    if kind in (int, float):
        if isinstance(value, bool):
            return _NO
        if kind is int and isinstance(value, float):
            return int(value) if value.is_integer() else _NO
        try:
            return kind(value) if isinstance(value, (int, float, str)) else _NO
        except ValueError:
            return _NO
    if kind is list or typing.get_origin(kind) is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return _NO
    if kind is dict or typing.get_origin(kind) is dict:
        if isinstance(value, dict):
            return value
        return json.loads(value) if isinstance(value, str) else _NO
    if kind is str:
        if isinstance(value, list):  # YAML lists for comma-separated string fields
            return ",".join(str(v) for v in value)
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _NO
    return value  # enums and other types: the dataclass converts


def unknown_key_message(key: str, valid: Iterable[str], where: str) -> str:
    """``"<where>: unknown key 'x' (did you mean 'y'?); valid keys: ..."``."""
    valid = sorted(valid)
    hint = difflib.get_close_matches(key, valid, n=3)
    text = f"{where}: unknown key {key!r}"
    if hint:
        text += f" (did you mean {', '.join(repr(h) for h in hint)}?)"
    return text + f"; valid keys: {', '.join(valid)}"


def coerce_fields(cls: type, values: Mapping[str, Any], *, where: str | Mapping[str, str] = "command line",
                  problems: list[str] | None = None) -> dict[str, Any]:
    """``values`` converted to the types of ``cls``'s init fields; keys may use '-' for '_'.

    Args:
        where: where the values came from (a file name, "command line"), or one such
            source per key, for the messages.
        problems: a list to append every problem to; when ``None`` the problems are raised
            together as a :class:`ConfigError`.
    """
    own = problems is None
    problems = [] if problems is None else problems
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    types = type_hints(cls)
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        source = where if isinstance(where, str) else where.get(raw_key, where.get(key, "command line"))
        if key not in fields:
            problems.append(unknown_key_message(key, fields, source))
            continue
        try:
            out[key] = coerce_value(key, value, types.get(key), field_default(fields[key]))
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"{source}: {exc}")
    if own and problems:
        raise ConfigError(problems)
    return out


def build_dataclass(cls: type, values: Mapping[str, Any], *, where: str | Mapping[str, str] = "command line") -> Any:
    """``cls(**values)`` with every value converted to its field's type.

    Raises:
        ConfigError: every unknown key and every bad value, together; a ``ValueError``
            from the dataclass's own checks (``__post_init__``) becomes one too.
    """
    kwargs = coerce_fields(cls, values, where=where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError([str(exc)]) from None
