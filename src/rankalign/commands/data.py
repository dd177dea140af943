"""``rankalign data``: convert public preference sets to list-wise records, list the formats.

Sub-commands::

    rankalign data formats
    rankalign data convert --format FMT INPUT --out OUT(.jsonl|.parquet|folder) [--limit N]
        [--on-error skip|raise] [--option KEY=VALUE ...]
    rankalign data stackexchange ...      (the dump pipeline, when installed)

``convert`` prints the load report (kept / skipped per reason) to stderr and writes the
output atomically: nothing is written when the input yields no record or fails.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rankalign.errors import UserError


def register(subparsers: Any) -> None:
    """Add the ``data`` parser and its sub-commands to the top-level ``subparsers``."""
    from rankalign.data.loaders import LOADERS

    parser = subparsers.add_parser(
        "data", help="build list-wise data sets from public preference data",
        description="Convert public preference data sets to list-wise records (SPEC §2).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    fmts = sub.add_parser("formats", help="list the input formats `convert` reads")
    fmts.set_defaults(func=run_formats)

    conv = sub.add_parser(
        "convert", help="convert a public data set file to list-wise records",
        description="Convert INPUT (a .jsonl/.json/.parquet file, a datasets folder, or hf:NAME[:SPLIT]) "
                    "to list-wise records.",
    )
    conv.add_argument("--format", "-f", dest="fmt", required=True, choices=sorted(LOADERS),
                      help="the input's format (see `rankalign data formats`)")
    conv.add_argument("input", metavar="INPUT", help="input file, datasets folder, or hf:NAME[:SPLIT]")
    conv.add_argument("--out", "-o", required=True,
                      help="output: NAME.jsonl, NAME.parquet, or a folder name without suffix (datasets)")
    conv.add_argument("--limit", type=int, default=None, help="keep at most N records")
    conv.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                      help="skip (count) invalid rows, or stop at the first one (default: skip)")
    conv.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                      help="a loader option, e.g. context=last for oasst1 (repeatable)")
    conv.set_defaults(func=run_convert)

    import importlib

    try:
        data_stackexchange = importlib.import_module("rankalign.commands.data_stackexchange")
    except ModuleNotFoundError as exc:
        if exc.name != "rankalign.commands.data_stackexchange":
            raise
    else:
        data_stackexchange.register(sub)


def _parse_options(items: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. --option context=last")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def run_formats(args: argparse.Namespace) -> int:
    """Print every format with a one-line description."""
    from rankalign.data.loaders import available_formats

    formats = available_formats()
    width = max(len(n) for n in formats)
    for name, doc in formats.items():
        print(f"{name:<{width}}  {doc}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Load ``args.input`` with the chosen format and write the records to ``args.out``."""
    from rankalign.data.io import LoadReport, write_records
    from rankalign.data.loaders import load_dataset_file

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    report = LoadReport()
    records = load_dataset_file(
        args.fmt, args.input, report=report, on_error=args.on_error, limit=args.limit,
        **_parse_options(args.option),
    )
    print(report.summary(), file=sys.stderr)
    if not records:
        raise UserError(f"no record could be made from {args.input} as {args.fmt!r}; nothing written to {args.out}")
    n = write_records(records, args.out)
    sizes: dict[int, int] = {}
    for rec in records:
        sizes[rec.num_responses] = sizes.get(rec.num_responses, 0) + 1
    dist = ", ".join(f"{m}: {c}" for m, c in sorted(sizes.items()))
    print(f"wrote {n} record(s) to {args.out} (responses per list -> records: {dist})")
    return 0
