"""``rankalign data``: convert public preference sets to list-wise records, list the formats.

Sub-commands::

    rankalign data formats
    rankalign data convert --format FMT INPUT --out OUT(.jsonl|.parquet|folder) [--limit N]
        [--on-error skip|raise] [--OPTION VALUE ...] [--option KEY=VALUE ...]
    rankalign data stackexchange ...      (the dump pipeline, when installed)

The options of a format are the fields of its source's options dataclass
(:mod:`rankalign.data.sources`): ``convert --help`` shows one group per format, and they are
given as ``--context last`` (or ``--option context=last``, the same). Unknown options, an
option of another format and values of the wrong type are one-line errors before anything
is read. ``convert`` checks that the output can be written before it reads the input,
prints the load report (kept / skipped per reason) to stderr and writes the output
atomically: nothing is written when the input yields no record or fails.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

from rankalign.errors import UserError


def register(subparsers: Any) -> None:
    """Add the ``data`` parser and its sub-commands to the top-level ``subparsers``."""
    from rankalign.cli_fields import add_dataclass_fields, type_hints
    from rankalign.data.sources import SOURCES, available_sources

    parser = subparsers.add_parser(
        "data", help="build list-wise data sets from public preference data",
        description="Convert public preference data sets to list-wise records (one prompt, a ranked "
                    "list of responses; see docs/data.md).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    fmts = sub.add_parser("formats", help="list the input formats `convert` reads, with their options")
    fmts.set_defaults(func=run_formats)

    conv = sub.add_parser(
        "convert", allow_abbrev=False, help="convert a public data set file to list-wise records",
        description="Convert INPUT (a .jsonl/.json file, plain or .gz/.bz2/.xz/.zst, a .parquet file, a "
                    "datasets folder, or hf:NAME[:SPLIT]) to list-wise records. The options of each "
                    "format are listed below; give them as --NAME VALUE or --option NAME=VALUE.",
    )
    conv.add_argument("--format", "-f", dest="fmt", required=True, metavar="FORMAT",
                      help=f"the input's format: {', '.join(available_sources())} (see `rankalign data formats`)")
    conv.add_argument("input", metavar="INPUT", help="input file, datasets folder, or hf:NAME[:SPLIT]")
    conv.add_argument("--out", "-o", required=True,
                      help="output: NAME.jsonl, NAME.parquet, or a folder name without suffix (datasets)")
    conv.add_argument("--limit", type=int, default=None, help="keep at most N records")
    conv.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                      help="skip (count) invalid rows, or stop at the first one (default: skip)")
    conv.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                      help="a format option, the same as --KEY VALUE, e.g. -O context=last (repeatable)")
    added: list[str] = []
    for name in available_sources():
        source = SOURCES[name]
        fields = source.option_fields()
        if not fields:
            continue
        group = conv.add_argument_group(f"options of --format {name}")
        shared = [f.name for f in fields if f.name in added]
        if shared:  # an option name two formats share is one flag, typed by the chosen format
            group.description = "also " + ", ".join(f"--{n}" for n in shared) + " (listed above)"
        added += add_dataclass_fields(group, fields, types=type_hints(source.options), skip=added)
    conv.set_defaults(func=run_convert, accepts_extra=True, format_option_names=tuple(added))

    import importlib

    try:
        data_stackexchange = importlib.import_module("rankalign.commands.data_stackexchange")
    except ModuleNotFoundError as exc:
        if exc.name != "rankalign.commands.data_stackexchange":
            raise
    else:
        data_stackexchange.register(sub)


def _option_items(items: list[str]) -> list[tuple[str, str]]:
    """``--option KEY=VALUE`` items as ``(key, value)`` pairs."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. --option context=last")
        out.append((key.strip(), value.strip()))
    return out


def _extra_items(extra: list[str]) -> list[tuple[str, str]]:
    """Flags argparse did not know (``--name value``, ``--name=value``, a bare ``--name`` =
    true) as ``(name, value)`` pairs, so that a misspelt option gets a close match."""
    out = []
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise UserError(f"unexpected argument {tok!r}; format options are written --NAME VALUE")
        key, sep, value = tok[2:].partition("=")
        if sep:
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
            i += 2
        else:
            value = "true"
            i += 1
        out.append((key, value))
    return out


#: the flags of `convert` itself, for the close match of a misspelt one
_CONVERT_FLAGS = ("format", "out", "limit", "on_error", "option")


def _format_options(args: argparse.Namespace, source: Any) -> Any:
    """The options of ``source`` from the flags, ``--option`` items and unknown flags.

    Raises:
        UserError: an option given twice; :class:`~rankalign.errors.ConfigError` for
            unknown options (close matches and the valid ones) and ill-typed values.
    """
    from rankalign.cli_fields import given_values

    given = list(given_values(args, getattr(args, "format_option_names", ())).items())
    given += _option_items(args.option)
    own = {f.name for f in source.option_fields()}
    for key, value in _extra_items(list(getattr(args, "extra", []) or [])):
        norm = key.replace("-", "_")
        hint = difflib.get_close_matches(norm, _CONVERT_FLAGS, n=1) if norm not in own else []
        if hint and not difflib.get_close_matches(norm, own, n=1):  # a misspelt flag of convert itself
            raise UserError(f"unknown argument --{key} (did you mean --{hint[0].replace('_', '-')}?)")
        given.append((key, value))
    values: dict[str, Any] = {}
    for key, value in given:
        norm = key.replace("-", "_")
        if norm in values:
            raise UserError(f"option {norm!r} is given twice (as --{key} and --option, or repeated); give it once")
        values[norm] = value
    return source.make_options(values, where=f"--format {source.name}")


def run_formats(args: argparse.Namespace) -> int:
    """Print every format with its one-line description and its options."""
    from rankalign.cli_fields import add_dataclass_fields, type_hints
    from rankalign.data.sources import SOURCES, available_sources

    names = available_sources()
    width = max(len(n) for n in names)
    for name in names:
        source = SOURCES[name]
        print(f"{name:<{width}}  {source.description}")
        fields = source.option_fields()
        if fields:  # the same flags and help as `convert --help`, from the same dataclass
            helper = argparse.ArgumentParser(prog=name, add_help=False, usage=argparse.SUPPRESS)
            add_dataclass_fields(helper, fields, types=type_hints(source.options))
            for line in helper.format_help().splitlines():
                if line.startswith(" "):
                    print(f"  {line}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Load ``args.input`` with the chosen format and write the records to ``args.out``."""
    from rankalign.data.io import LoadReport, check_output_path, write_records
    from rankalign.data.sources import get_source, load_dataset_file

    source = get_source(args.fmt)
    options = _format_options(args, source)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    check_output_path(args.out)  # before a long read, not after it
    report = LoadReport()
    records = load_dataset_file(source.name, args.input, report=report, on_error=args.on_error,
                                limit=args.limit, options=options)
    print(report.summary(), file=sys.stderr)
    if not records:
        raise UserError(f"no record could be made from {args.input} as {source.name!r}; "
                        f"nothing written to {args.out}")
    n = write_records(records, args.out)
    sizes: dict[int, int] = {}
    for rec in records:
        sizes[rec.num_responses] = sizes.get(rec.num_responses, 0) + 1
    dist = ", ".join(f"{m}: {c}" for m, c in sorted(sizes.items()))
    print(f"wrote {n} record(s) to {args.out} (responses per list -> records: {dist})")
    return 0
