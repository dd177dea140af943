"""``rankalign train-rm``: train a scalar reward model on list-wise records.

::

    rankalign train-rm --data FILE --output-dir DIR [--rm_loss bt|pl] [--pair_mode 1vso|pw]
        [--eval_data FILE | --eval_fraction 0.1] [--config rm.yaml] [--key value ...]

Every field of :class:`rankalign.reward.config.RewardConfig` (the reward-model fields, the
shared data/model/LoRA fields and all of ``transformers.TrainingArguments``) is a flag;
``rankalign train-rm --help`` lists them, grouped, generated from the dataclass (the same
generator as ``rankalign train``). Flags win over the YAML file; unknown keys are errors.
At the end the held-out pairwise accuracy, Kendall tau, top-1 and NDCG (bootstrap CIs) are
printed and written to ``eval_metrics.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

_DESCRIPTION = ("Train a scalar reward model (a one-label sequence classifier initialised from a causal LM) on "
                "list-wise records with Bradley-Terry (pairs of each list) or Plackett-Luce (the whole list), then "
                "report held-out pairwise accuracy, Kendall tau, top-1 and NDCG with bootstrap CIs. Every option "
                "can also be set in a YAML file given by --config; flags win over the file.")


def register(subparsers: Any) -> None:
    """Add the ``train-rm`` parser; its options are parsed in :func:`run` by the generated parser."""
    from rankalign.commands.train import FullHelp

    parser = subparsers.add_parser(
        "train-rm", add_help=False, allow_abbrev=False, description=_DESCRIPTION,
        help="train a reward model on list-wise records (Bradley-Terry or Plackett-Luce)")
    parser.add_argument("-h", "--help", action=FullHelp, build=build_train_rm_parser,
                        help="show every option, grouped, and exit")
    parser.set_defaults(func=run, accepts_extra=True)


def build_train_rm_parser(prog: str = "rankalign train-rm") -> argparse.ArgumentParser:
    """The full parser, generated from :class:`RewardConfig` (groups run, model, data, TrainingArguments)."""
    from rankalign.commands.train import build_config_parser
    from rankalign.reward.config import GROUPS, RewardConfig

    return build_config_parser(
        RewardConfig, GROUPS, prog=prog, description=_DESCRIPTION,
        usage="%(prog)s --data FILE --output-dir DIR [--rm_loss bt|pl] [--config RM.yaml] [--KEY VALUE ...]")


def run(args: argparse.Namespace) -> int:
    from rankalign.commands.train import parse_train_args, print_final_loss
    from rankalign.reward.config import load_reward_config
    from rankalign.reward.train import EVAL_METRICS, format_eval_metrics, train_reward_model
    from rankalign.training.trainer import TRAIN_LOG

    config_file, overrides = parse_train_args(list(getattr(args, "extra", []) or []), build_train_rm_parser())
    config = load_reward_config(config_file, overrides)
    result = train_reward_model(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print_final_loss(result)
        print(format_eval_metrics(result.metrics))
        kind = "adapter" if config.use_lora and not config.merge_lora else "reward model"
        print(f"{kind} written to {result.output_dir}")
        print(f"per-step log: {os.path.join(result.output_dir, TRAIN_LOG)}; held-out metrics: "
              f"{os.path.join(result.output_dir, EVAL_METRICS)}")
    sys.stdout.flush()
    return 0
