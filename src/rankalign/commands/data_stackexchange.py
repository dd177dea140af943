"""``rankalign data stackexchange DUMP --out DIR``: StaCoCoQA from StackExchange dumps.

See :mod:`rankalign.data.stackexchange` for the pipeline, the filters and the decisions
(token counts, broken XML, ids). The build options are generated from the fields of
:class:`~rankalign.data.stackexchange.StackExchangeOptions` (their defaults and help texts
are defined once there).

Exit codes: 0 on success (also when an XML error cut a file short: the rows before it are
kept and a warning is printed; ``--strict`` turns that into an error), 2 on bad input
(an empty or corrupt dump, no Posts.xml, invalid options, an output path that is a file)
with a one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from rankalign.cli_fields import add_dataclass_fields, given_values, type_hints
from rankalign.data.stackexchange.options import StackExchangeOptions


def register(data_subparsers: Any) -> None:
    """Add the ``stackexchange`` sub-command to the ``rankalign data`` sub-parsers."""
    p = data_subparsers.add_parser(
        "stackexchange", help="build StaCoCoQA-style list-wise records from a StackExchange dump", allow_abbrev=False,
        description="Stream-parse a StackExchange dump (Posts.xml plain/.gz/.bz2/.zst/.7z, or a folder of "
                    "site folders), join answers to questions, apply the StaCoCoQA steps (accepted answer, "
                    "code block, HTML to text, quality filters), sample and split 9:1. Writes DIR/train.jsonl, "
                    "DIR/test.jsonl, DIR/summary.json, DIR/stats.csv, DIR/stats.md, DIR/stats.png.",
    )
    p.add_argument("dump", metavar="DUMP", help="Posts.xml[.gz|.bz2|.zst|.7z], a site folder, or a folder of sites")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created when missing)")
    group = p.add_argument_group("build options (the fields of StackExchangeOptions)")
    names = add_dataclass_fields(group, fields(StackExchangeOptions), types=type_hints(StackExchangeOptions))
    group.add_argument("--no-code-filter", dest="code_filter", action="store_const", const="false",
                       default=argparse.SUPPRESS, help="same as --code-filter false")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bars (same as --progress false; without either, bars show on a terminal)")
    p.set_defaults(func=run, option_names=names)


def options_from_args(args: argparse.Namespace) -> StackExchangeOptions:
    """The options given on the command line, the dataclass defaults for the rest."""
    values = given_values(args, getattr(args, "option_names", [f.name for f in fields(StackExchangeOptions)]))
    if getattr(args, "quiet", False):
        values["progress"] = False
    elif "progress" not in values:
        values["progress"] = sys.stderr.isatty()
    return StackExchangeOptions.from_dict(values, where="command line")


def run(args: argparse.Namespace) -> int:
    """Build the data set; print the summary (kept, dropped per reason, XML warnings)."""
    from rankalign.data.stackexchange import build_stacocoqa

    summary = build_stacocoqa(args.dump, args.out, options_from_args(args))
    print(summary.text())
    print(f"wrote {args.out}/train.jsonl, test.jsonl, summary.json, stats.csv, stats.md, stats.png")
    return 0
