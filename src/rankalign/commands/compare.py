"""``rankalign compare RUN_A RUN_B``: paired differences of two evaluation runs (docs/evaluation.md#comparing-runs).

::

    rankalign compare runs/eval_seadpra runs/eval_dpo [--metrics PrefHit@1,ranking/top1] [--out diff.json|diff.md]

Each run is a ``rankalign eval --output-dir`` folder (or one of its per-example files).
Values are paired by record id; for every metric both runs have, one line says by how much
A beats or trails B, with the paired bootstrap CI and the sign-flip p-value
(:mod:`rankalign.evaluation.compare`). The options are the fields of :class:`CompareOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import UserError


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class CompareOptions:
    """Options of ``rankalign compare``."""

    metrics: str | None = _opt(None, "comma-separated metrics to compare (names as in metrics.json, e.g. "
                                     "PrefHit@1,ranking/top1); none: every metric both runs have")
    out: str | None = _opt(None, "also write the comparison to this file: .md for a Markdown table, else JSON")
    n_boot: int = _opt(10000, "bootstrap resamples for the CI, and random sign flips for the p-value")
    alpha: float = _opt(0.05, "1 - confidence level of the interval")
    seed: int = _opt(0, "random seed of the bootstrap and the sign flips")
    names: str | None = _opt(None, "display names of the two runs, comma-separated; none: the folder names")

    def __post_init__(self) -> None:
        problems = []
        if self.n_boot < 1:
            problems.append(f"--n_boot must be >= 1, got {self.n_boot}")
        if not 0 < self.alpha < 1:
            problems.append(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.names is not None and len([n for n in self.names.split(",") if n.strip()]) != 2:
            problems.append(f"--names: give two names separated by a comma, got {self.names!r}")
        if problems:
            from rankalign.errors import ConfigError

            raise ConfigError(problems)


def register(subparsers: Any) -> None:
    from rankalign.cli_fields import add_dataclass_fields, type_hints

    p = subparsers.add_parser(
        "compare", help="paired comparison of two eval runs: per-prompt differences, bootstrap CI, p-value",
        description="Pair the per-prompt metric values of two `rankalign eval` runs by record id and report, for "
                    "every metric both have, the mean difference A - B with a paired bootstrap CI and a two-sided "
                    "paired sign-flip permutation p-value.")
    p.add_argument("run_a", metavar="RUN_A", help="an eval output folder (or its generations.jsonl / ranking.jsonl)")
    p.add_argument("run_b", metavar="RUN_B", help="the run to compare against (the baseline)")
    add_dataclass_fields(p, dataclasses.fields(CompareOptions), types=type_hints(CompareOptions))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rankalign.cli_fields import build_dataclass, given_values
    from rankalign.evaluation.compare import compare_runs, load_run
    from rankalign.evaluation.report import write_json, write_text
    from rankalign.outputs import check_can_create, writing

    opts = build_dataclass(CompareOptions, given_values(args, [f.name for f in dataclasses.fields(CompareOptions)]))
    if opts.out is not None:
        if Path(opts.out).is_dir():
            raise UserError(f"--out {opts.out!r} is a folder; give a file name (.json or .md)")
        check_can_create(opts.out, "--out", beside=True)
    names = [n.strip() for n in opts.names.split(",")] if opts.names else [None, None]
    a, b = load_run(args.run_a, names[0]), load_run(args.run_b, names[1])
    metrics = [m.strip() for m in opts.metrics.split(",") if m.strip()] if opts.metrics else None
    result = compare_runs(a, b, metrics=metrics, n_boot=opts.n_boot, seed=opts.seed, alpha=opts.alpha)
    for line in result.lines():
        print(line)
    for note in result.notes():
        print(f"note: {note}")
    print(f"(A - B per prompt; {100 * (1 - opts.alpha):.0f}% paired bootstrap CI, {opts.n_boot} resamples; "
          "p: two-sided paired sign-flip permutation test)")
    if opts.out is not None:
        with writing(opts.out):
            if opts.out.endswith(".md"):
                write_text(result.markdown(), opts.out)
            else:
                write_json(result.to_dict(), opts.out)
        print(f"wrote {opts.out}")
    return 0
