"""``rankalign pro-bootstrap``: PRO self-bootstrapping (Song et al., arXiv:2306.17492).

::

    rankalign pro-bootstrap --data LISTS.jsonl --reward_model RM_DIR --output-dir DIR
        [--bootstrap_rounds 1] [--added_candidates 2] [--any train key VALUE ...]

Each round samples candidates from the policy, adds them to every list, ranks the grown
lists with the reward model and continues PRO training (docs/iterative.md). Every key of
``rankalign train`` (``method`` aside: always ``pro``) is a flag or a YAML key.
"""

from __future__ import annotations

import argparse
from typing import Any

_DESCRIPTION = ("PRO self-bootstrapping: sample candidates from the policy, add them to each list, rank the lists "
                "with a reward model, continue PRO training; repeat. Options can also be set in a YAML file given "
                "by --config; flags win over it.")


def build_bootstrap_parser() -> argparse.ArgumentParser:
    from rankalign.commands.spa import build_iterative_parser
    from rankalign.iterative.pro_bootstrap import BootstrapOptions

    return build_iterative_parser(
        "rankalign pro-bootstrap", _DESCRIPTION,
        "%(prog)s --data LISTS --reward_model RM --output-dir DIR [--config RUN.yaml] [--KEY VALUE ...]",
        BootstrapOptions, {"bootstrap": "bootstrap: reward model, rounds, added candidates",
                           "generation": "generation: sampling from the policy"})


def register(subparsers: Any) -> None:
    from rankalign.commands.spa import register_iterative

    register_iterative(subparsers, "pro-bootstrap", "PRO self-bootstrapping: grow lists with policy samples "
                       "ranked by a reward model", _DESCRIPTION, build_bootstrap_parser, run)


def run(args: argparse.Namespace) -> int:
    from rankalign.commands.spa import parse_iterative_args
    from rankalign.iterative.pro_bootstrap import SUMMARY, build_bootstrap, run_bootstrap

    boot = build_bootstrap(parse_iterative_args(build_bootstrap_parser(), list(getattr(args, "extra", []) or [])))
    summary = run_bootstrap(boot)
    for info in summary["rounds"]:
        print(f"round {info['round']}: {info['lists']} lists, {info['added']} sampled candidates added "
              f"({info['sampled_best']:.1%} of lists now led by a sample), {info['steps']} step(s)")
    print(f"summary written to {boot.base.output_dir}/{SUMMARY}")
    return 0
