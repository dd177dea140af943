"""Format name -> data source registry. A new source is one module plus one decorator line.

A source is a loader function ``load(source, options, *, report, on_error, limit) ->
list[ListRecord]`` registered with its options dataclass::

    @dataclass
    class MyOptions:
        lang: str = field(default="en", metadata={"help": "keep rows in this language"})

    @register_source("my_format", options=MyOptions)
    def load_my_format(source, options, *, report, on_error, limit):
        "My data set's rows -> lists of 2 (the docstring's first line is the description)."
        ...

The decorator returns a :class:`DataSource`: call it like a function
(``load_my_format(path, lang="de", limit=10)``); keyword options are checked and converted
to the dataclass's field types. ``rankalign data convert`` turns every field into a flag
(``--lang de``) and ``rankalign data formats`` lists them, so the options are written once.
Names are case-insensitive and ``-`` equals ``_``; a name or an option that collides with
an existing one is refused at registration.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord
from rankalign.data.sources.base import Source, check_on_error
from rankalign.errors import ConfigError, UserError

LoadFn = Callable[..., list[ListRecord]]

#: option names a source may not use: they are the flags of `rankalign data convert`
#: itself, or keywords of every loader call
RESERVED_OPTIONS = frozenset({
    "format", "fmt", "input", "out", "limit", "on_error", "option", "help", "report", "source", "options",
    "command", "data_command", "func", "extra", "accepts_extra",
})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a source that takes none."""


class DataSource:
    """A registered source: its name, loader, options dataclass and one-line description.

    Calling it loads: ``source(path_or_rows, *, report=None, on_error="skip", limit=None,
    options=None, **values)``; give the options either as an instance of :attr:`options`
    or as keywords (strings are converted to the field types).
    """

    def __init__(self, name: str, load: LoadFn, options: type, description: str) -> None:
        self.name = name
        self.load = load
        self.options = options
        self.description = description
        self.__doc__ = load.__doc__
        self.__name__ = getattr(load, "__name__", name)
        self.__module__ = getattr(load, "__module__", __name__)

    def __repr__(self) -> str:
        return f"<data source {self.name!r} ({self.__module__}.{self.__name__})>"

    def option_fields(self) -> list[dataclasses.Field]:
        """The dataclass fields of this source's options (the ones a user can set)."""
        return [f for f in dataclasses.fields(self.options) if f.init and not f.name.startswith("_")]

    def make_options(self, values: Mapping[str, Any], *, where: str | None = None) -> Any:
        """Build the options from ``values`` (strings or typed values; keys may use ``-``).

        Raises:
            ConfigError: every unknown option (with close matches and the valid ones) and
                every value that is not of its field's type or not one of its choices.
        """
        from rankalign.cli_fields import build_dataclass

        where = where or f"options of format {self.name!r}"
        if values and not self.option_fields():
            raise ConfigError([f"{where}: unknown option {str(k)!r}; format {self.name!r} takes no options"
                               for k in values])
        opts = build_dataclass(self.options, values, where=where)
        self.check_options(opts, where=where)
        return opts

    def check_options(self, opts: Any, *, where: str | None = None) -> None:
        """Check an options instance: its class, and every ``Literal[...]`` field's choices.

        Raises:
            TypeError: ``opts`` is not an instance of :attr:`options`.
            ConfigError: a value outside its field's choices.
        """
        if not isinstance(opts, self.options):
            raise TypeError(f"format {self.name!r} takes {self.options.__name__} options, "
                            f"got {type(opts).__name__}")
        where = where or f"options of format {self.name!r}"
        problems = []
        for name, choices in option_choices(self.options).items():
            value = getattr(opts, name)
            if value not in choices:
                shown = ", ".join(repr(c) for c in choices)
                problems.append(f"{where}: {name}: expected one of {shown}, got {value!r}")
        if problems:
            raise ConfigError(problems)

    def __call__(
        self,
        source: Source,
        *,
        report: LoadReport | None = None,
        on_error: str = "skip",
        limit: int | None = None,
        options: Any = None,
        **values: Any,
    ) -> list[ListRecord]:
        """Load ``source`` (a path or rows) into records; see the loader's docstring.

        Raises:
            ConfigError: an unknown or ill-typed option.
            ValueError: a bad ``on_error`` or a negative ``limit``.
        """
        if options is not None and values:
            raise TypeError("give the options as options=... or as keywords, not both")
        if options is None:
            options = self.make_options(values)
        else:
            self.check_options(options)
        check_on_error(on_error)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        report = report if report is not None else LoadReport()
        return self.load(source, options, report=report, on_error=on_error, limit=limit)


def option_choices(options: type) -> dict[str, tuple[Any, ...]]:
    """Field name -> its allowed values, for the fields annotated ``Literal[...]``."""
    from rankalign.cli_fields import type_hints

    out = {}
    for name, hint in type_hints(options).items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            out[name] = args
        elif args and any(typing.get_origin(a) is typing.Literal for a in args):  # Optional[Literal]
            out[name] = tuple(v for a in args for v in (typing.get_args(a) if typing.get_origin(a)
                                                         is typing.Literal else (None,)))
    return out


_REGISTRY: dict[str, DataSource] = {}

#: format name -> :class:`DataSource`, a live read-only view of the registry
SOURCES: Mapping[str, DataSource] = MappingProxyType(_REGISTRY)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_source(
    name: str, *, options: type = NoOptions, description: str | None = None
) -> Callable[[LoadFn], DataSource]:
    """Decorator: register ``load(source, options, *, report, on_error, limit)`` as format ``name``.

    Args:
        name: the format name (``--format NAME``); duplicates are refused.
        options: a dataclass whose fields are the source's options, each with a default
            and ``metadata={"help": ...}``; a ``Literal[...]`` annotation limits a field to
            its choices.
        description: one line for ``rankalign data formats``; by default the first line of
            the loader's docstring.
    Returns:
        A decorator that returns the :class:`DataSource`.
    Raises:
        ValueError: a duplicate name, no description, or an option name reserved by the
            command line.
        TypeError: ``options`` is not a dataclass, or ``load`` has the wrong signature.
    """

    def deco(load: LoadFn) -> DataSource:
        key = _key(name)
        if key in _REGISTRY:
            raise ValueError(f"data source {name!r} is already registered by {_REGISTRY[key].__module__}")
        if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise TypeError(f"options of data source {name!r} must be a dataclass, got {options!r}")
        try:
            inspect.signature(load).bind("source", None, report=None, on_error="skip", limit=None)
        except TypeError:
            raise TypeError(f"the loader of data source {name!r} must take (source, options, *, report, "
                            f"on_error, limit); {getattr(load, '__name__', load)} does not") from None
        reserved = sorted(f.name for f in dataclasses.fields(options) if f.name in RESERVED_OPTIONS)
        if reserved:
            raise ValueError(f"data source {name!r}: option name(s) {reserved} are taken by "
                             "`rankalign data convert` itself; rename them")
        text = description
        if text is None:
            lines = (load.__doc__ or "").strip().splitlines()
            text = lines[0] if lines else ""
        if not text.strip():
            raise ValueError(f"data source {name!r} needs a description (a docstring or description=...)")
        source = DataSource(key, load, options, text.strip().replace("``", ""))
        _REGISTRY[key] = source
        return source

    return deco


def unregister_source(name: str) -> DataSource:
    """Remove the source ``name`` from the registry (for tests and plug-ins); returns it.

    Raises:
        UserError: no source has that name.
    """
    source = get_source(name)
    del _REGISTRY[source.name]
    return source


def get_source(name: str) -> DataSource:
    """The source registered as ``name``.

    Raises:
        UserError: no such format (with close matches and the registered names).
    """
    key = _key(name)
    if key not in _REGISTRY:
        hint = difflib.get_close_matches(key, list(_REGISTRY), n=2)
        did = f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else ""
        raise UserError(f"unknown data format {name!r}{did}; choose one of {', '.join(available_sources())}")
    return _REGISTRY[key]


def available_sources() -> list[str]:
    """Sorted names of every registered source."""
    return sorted(_REGISTRY)


def available_formats() -> dict[str, str]:
    """Format name -> its one-line description, sorted by name."""
    return {name: _REGISTRY[name].description for name in available_sources()}


def _hf_rows(spec: str) -> Any:
    """Rows of ``hf:NAME[:SPLIT]`` via ``datasets.load_dataset`` (network on the user's side)."""
    body = spec[len("hf:"):]
    name, _, split = body.partition(":")
    if not name:
        raise UserError(f"{spec!r}: give a data set name, e.g. hf:Anthropic/hh-rlhf:test")
    import datasets

    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # offline, unknown name, missing split: one clear message
        raise UserError(
            f"could not load Hugging Face data set {name!r} (split {split or 'train'!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(this needs network access to the hub, or a local copy: download the files and "
            "pass their path instead)"
        ) from None


def load_dataset_file(
    fmt: str,
    path: str | os.PathLike[str] | Iterable[dict[str, Any]],
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    options: Any = None,
    **values: Any,
) -> list[ListRecord]:
    """Load ``path`` with the source registered as ``fmt``.

    Args:
        fmt: a format name (``rankalign data formats``).
        path: a file, a ``datasets`` folder, rows, or ``"hf:NAME[:SPLIT]"`` (split ``train``
            by default) to read a hub data set with ``datasets.load_dataset``.
        report: filled with kept/skipped counts.
        on_error: ``"skip"`` or ``"raise"``.
        limit: keep at most this many records.
        options: an instance of the source's options dataclass, or
        values: its options as keywords (e.g. ``context="last"`` for oasst1).
    Raises:
        UserError: an unknown format or option (:class:`ConfigError`), or an unreachable
            hub data set.
    """
    source = get_source(fmt)
    if options is None:
        options = source.make_options(values)
        values = {}
    rows: Any = path
    if isinstance(path, str) and path.startswith("hf:"):
        rows = _hf_rows(path)
    return source(rows, report=report, on_error=on_error, limit=limit, options=options, **values)
