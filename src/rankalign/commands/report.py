"""``rankalign report RUN_DIR... --out DIR``: a Markdown + self-contained HTML report over runs.

Options are the fields of :class:`rankalign.report.ReportOptions` (defaults and help texts
defined once there). See :mod:`rankalign.report.build` for the sections.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from rankalign.cli_fields import add_dataclass_fields, given_values, type_hints


def register(subparsers: Any) -> None:
    from rankalign.report.options import ReportOptions

    p = subparsers.add_parser(
        "report", allow_abbrev=False,
        help="one Markdown + one self-contained HTML report over many train/eval runs",
        description="Read run folders written by `rankalign train` (train_log.jsonl, rankalign_config.json) "
                    "and/or `rankalign eval` (metrics.json, generations.jsonl) and write DIR/report.md (+ "
                    "figures/), DIR/report.html (figures embedded, no script, no network) and DIR/report.json: "
                    "methods with CIs and paired differences to a baseline, ablations (runs named BASE-no_PART "
                    "or BASE-only_PART), training curves, sweeps over any varying setting, metric consistency, "
                    "APDF heatmaps of chosen lists, sample generations.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    names = add_dataclass_fields(p, fields(ReportOptions), types=type_hints(ReportOptions))
    p.set_defaults(func=run, option_names=names)


def options_from_args(args: argparse.Namespace) -> Any:
    """The options given on the command line, the dataclass defaults for the rest."""
    from rankalign.cli_fields import build_dataclass
    from rankalign.report.options import ReportOptions

    return build_dataclass(ReportOptions, given_values(args, args.option_names))


def run(args: argparse.Namespace) -> int:
    from rankalign.report import build_report

    out = build_report(args.run_dirs, options_from_args(args))
    print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'report.json'}")
    return 0
