"""``rankalign study CONFIG``: label quality, then every (method, seed) cell trained and
evaluated on held-out lists, then the study report (docs/study.md). Resumable: run the same
command again after a crash or a stop and only unfinished cells are computed."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study", allow_abbrev=False,
        help="run a study from a YAML: label quality of ranking rules, methods x seeds, report (resumable)",
        description="Read CONFIG (YAML; docs/study.md lists every key), build the lists, measure how well each "
                    "ranking rule agrees with human choices, train and evaluate every (method, seed) cell on "
                    "held-out lists (ranking accuracy, PrefHit@1, PrefRecall@3, reward), and write "
                    "OUTPUT_DIR/study.md + study.html + study.json + report/. Finished cells are never "
                    "recomputed; a crash loses at most the cell in progress. Several workers (one per GPU) may run "
                    "the same study at once: each cell is locked by the worker computing it.",
    )
    p.add_argument("config", help="the study's YAML file")
    p.add_argument("--output-dir", default=None, help="override the YAML's output_dir")
    p.add_argument("--work-dir", default=None, help="override the YAML's work_dir (models, built lists)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted for sections (YAML values): --set train.max_steps=200 "
                        "--set data.train_lists=null --set model=HuggingFaceTB/SmolLM2-135M-Instruct; repeatable")
    p.add_argument("--only-labels", action="store_true", help="stop after the label-quality table")
    p.add_argument("--max-cells", type=int, default=None,
                   help="compute at most N unfinished cells this time, then write the report (a slice of a "
                        "long study; run again to continue)")
    p.add_argument("--breadth-first", action="store_true",
                   help="take unfinished cells seed by seed (every method's first seed, then the second, ...) "
                        "instead of method by method, so that a slice covers every method once first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rankalign.errors import ConfigError
    from rankalign.study.config import load_study_config
    from rankalign.study.run import run_study

    if args.max_cells is not None and args.max_cells < 0:
        raise ConfigError([f"--max-cells must be >= 0, got {args.max_cells}"])
    import yaml

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=200"])
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError([f"--set {item!r}: the value is not valid YAML ({exc})"]) from None
    overrides.update({k: v for k, v in (("output_dir", args.output_dir), ("work_dir", args.work_dir))
                      if v is not None})
    cfg = load_study_config(args.config, overrides)
    out = run_study(cfg, only_labels=args.only_labels, max_cells=args.max_cells,
                    breadth_first=args.breadth_first, command=reproduce_command(args))
    print(f"wrote {out / 'study.md'}, {out / 'study.html'}, {out / 'study.json'}")
    return 0


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that reproduces the study's results: the config and every option that
    changes them (not --max-cells / --breadth-first / --only-labels, which only pick the slice)."""
    import shlex

    parts = ["rankalign", "study", args.config]
    for flag, value in (("--output-dir", args.output_dir), ("--work-dir", args.work_dir)):
        if value is not None:
            parts += [flag, value]
    for item in args.set:
        parts += ["--set", item]
    return shlex.join(parts)

