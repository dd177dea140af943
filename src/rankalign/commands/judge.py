"""``rankalign judge --data IN --out OUT (--base-url URL --model NAME | --local-model PATH)``.

Ranks every list with a chat model following SeAdpra's labelling rules (arXiv:2502.12189,
Fig. 12) and writes the records with the judged order as ``ranking`` and its provenance in
``meta.judge``. Options are the fields of :class:`rankalign.judge.options.JudgeOptions`.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from rankalign.cli_fields import add_dataclass_fields, given_values, type_hints


def register(subparsers: Any) -> None:
    from rankalign.judge.options import JudgeOptions

    p = subparsers.add_parser(
        "judge", allow_abbrev=False,
        help="rank lists with a chat model (OpenAI-compatible endpoint or local) as gold `ranking`",
        description="Ask a chat model to rank each list's answers by relevance, then popularity weighed by age "
                    "(SeAdpra's labelling rules, arXiv:2502.12189 Fig. 12); store the order as the record's "
                    "`ranking` and the judge, prompt version and raw answer in `meta.judge`. Answers are cached "
                    "in OUT.judge-cache.jsonl, so a killed run resumes without asking again. Unparseable answers "
                    "and refusals are counted and left out, never guessed. Prints the agreement with the "
                    "community order (Kendall tau, top-1).",
    )
    names = add_dataclass_fields(p, fields(JudgeOptions), types=type_hints(JudgeOptions))
    p.add_argument("--quiet", action="store_true", help="no progress bar (same as --progress false)")
    p.set_defaults(func=run, option_names=names)


def run(args: argparse.Namespace) -> int:
    from rankalign.cli_fields import build_dataclass
    from rankalign.judge import judge_file
    from rankalign.judge.options import JudgeOptions

    values = given_values(args, args.option_names)
    if args.quiet:
        values["progress"] = False
    opts = build_dataclass(JudgeOptions, values)
    summary = judge_file(opts)
    print(summary.text())
    print(f"wrote {opts.out} ({summary.counts['judged']} records); answers cached in {opts.cache_path}")
    return 0
