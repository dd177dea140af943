"""``rankalign spa``: Spread Preference Annotation (Kim et al., arXiv:2406.04412), pairwise or list-wise.

::

    rankalign spa --data SEED.jsonl --prompts PROMPTS.jsonl --output-dir DIR [--config spa.yaml]
        [--rounds 3] [--spa_list_size 2] [--judge_data HELDOUT.jsonl] [--any train key VALUE ...]

Every SPA option (:class:`rankalign.iterative.spa.SPAOptions`) and every key of
``rankalign train`` (the training config and the hyper-parameters of ``dpo_bt`` / ``spa`` /
the list-wise method) is a flag or a YAML key; flags win over the YAML file. A killed run
resumes when started again with the same command (docs/iterative.md).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_DESCRIPTION = ("SPA: DPO on a small labelled seed set, then rounds of sampling from the policy, judging the "
                "samples by its implicit reward against the initial model, and refinement training with label "
                "smoothing on the least-confident pairs (or list-wise SPA with --spa_list_size > 2). Options can "
                "also be set in a YAML file given by --config; flags win over it.")


class _FullHelp(argparse.Action):
    """``-h``: the help of the full, generated parser (``parser.build_full``, built on demand)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None) -> None:
        parser.build_full().print_help()  # type: ignore[attr-defined]
        parser.exit()


def register_iterative(subparsers: Any, name: str, help_text: str, description: str, build: Any, func: Any) -> None:
    """A sub-command whose options are parsed by ``build()`` (a generated parser) in ``func``."""
    parser = subparsers.add_parser(name, add_help=False, allow_abbrev=False, description=description, help=help_text)
    parser.build_full = build  # type: ignore[attr-defined]
    parser.add_argument("-h", "--help", action=_FullHelp, help="show every option, grouped, and exit")
    parser.set_defaults(func=func, accepts_extra=True)


def register(subparsers: Any) -> None:
    register_iterative(subparsers, "spa", "SPA: spread a small labelled seed set by self-judged, self-refined rounds",
                       _DESCRIPTION, build_spa_parser, run)


def build_iterative_parser(prog: str, description: str, usage: str, options_cls: type,
                           groups: dict[str, str]) -> argparse.ArgumentParser:
    """``rankalign train``'s generated parser plus one group per ``groups`` entry of ``options_cls``'s fields."""
    import dataclasses

    from rankalign.cli_fields import add_dataclass_fields, type_hints
    from rankalign.commands.train import build_train_parser

    parser = build_train_parser(prog=prog)
    parser.description, parser.usage = description, usage
    types = type_hints(options_cls)
    fields = dataclasses.fields(options_cls)
    for group, title in groups.items():
        add_dataclass_fields(parser.add_argument_group(title),
                             [f for f in fields if f.metadata.get("group") == group], types=types)
    return parser


def build_spa_parser() -> argparse.ArgumentParser:
    """``rankalign train``'s generated parser plus the SPA and generation groups."""
    from rankalign.iterative.spa import SPAOptions

    return build_iterative_parser(
        "rankalign spa", _DESCRIPTION,
        "%(prog)s --data SEED --prompts PROMPTS --output-dir DIR [--config SPA.yaml] [--KEY VALUE ...]", SPAOptions,
        {"spa": "spa: rounds, prompts, list-wise SPA, judge", "generation": "generation: sampling from the policy"})


def parse_iterative_args(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, Any]:
    """Flat key -> value from the YAML file (if any) and the flags (flags win)."""
    from pathlib import Path

    from rankalign.cli_fields import given_values
    from rankalign.commands.train import parse_overrides
    from rankalign.training.config import read_yaml

    known, unknown = parser.parse_known_args(argv)
    names = [a.dest for a in parser._actions if a.dest not in ("help", "config_file")]
    values: dict[str, Any] = {}
    if known.config_file:
        values = {str(k).replace("-", "_"): v for k, v in read_yaml(Path(known.config_file)).items()}
    values.update(parse_overrides(unknown))
    values.update(given_values(known, names))
    return values


def parse_spa_args(argv: list[str]) -> dict[str, Any]:
    """Flat key -> value of ``rankalign spa``'s arguments."""
    return parse_iterative_args(build_spa_parser(), argv)


def run(args: argparse.Namespace) -> int:
    from rankalign.iterative.spa import SUMMARY, build_run, run_spa

    spa_run = build_run(parse_spa_args(list(getattr(args, "extra", []) or [])))
    summary = run_spa(spa_run)
    for info in summary["rounds"]:
        judge = info.get("judge")
        line = (f"round {info['round']}: {info['lists']} lists of {info['samples_per_prompt']}, {info['steps']} "
                f"step(s), judge confidence {info['mean_confidence']:.3f}")
        if judge:
            line += f", held-out agreement {judge['agreement']:.3f} [{judge['ci_low']:.3f}, {judge['ci_high']:.3f}]"
        print(line)
    print(f"summary written to {spa_run.output_dir / SUMMARY}")
    print(json.dumps({"final_model": str(spa_run.output_dir / f"round-{len(summary['rounds'])}")}))
    return 0
