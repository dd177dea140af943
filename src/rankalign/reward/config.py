"""The config of ``rankalign train-rm``: :class:`RewardConfig`.

``RewardConfig`` = ``transformers.TrainingArguments`` + the fields every training command
shares (:class:`rankalign.training.config.ModelTrainingConfig`: data, base model, lengths,
LoRA) + the reward-model fields below. YAML + flags through
:func:`rankalign.training.config.load_config` (``cls=RewardConfig``); unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rankalign.losses._util import PAIR_MODES
from rankalign.reward.losses import RM_LOSSES
from rankalign.training.config import ModelTrainingConfig, _f

#: orders a reward model can train on (SeAdpra's dynamic ranking is a policy-side order)
RM_ORDER_SOURCES = ("auto", "gold", "scores", "community")
#: the ``--help`` groups of the reward-model fields (the rest are TrainingArguments')
GROUPS = {
    "run": "what to train, on what, where to",
    "model": "base model and LoRA",
    "data": "records, orders, lengths and the held-out split",
}


@dataclass
class RewardConfig(ModelTrainingConfig):
    """Everything ``rankalign train-rm`` needs (docs/evaluation.md#reward-models)."""

    rm_loss: str = _f("bt", "Reward-model loss: bt (Bradley-Terry on pairs of each list) or pl (Plackett-Luce "
                            "over the whole list).", "run")
    pair_mode: str = _f("1vso", "Pairs Bradley-Terry trains on: 1vso (the best response against each other one) "
                                "or pw (every ordered pair).", "run")
    order_source: str = _f("auto", "Order to train on: auto (ranking > scores > community), gold, scores or "
                                   "community.", "data")
    eval_fraction: float = _f(0.1, "Without --eval_data: this fraction of the lists of --data (a split seeded by "
                                   "--seed) is held out for the final evaluation; 0 = no held-out evaluation.",
                              "data")
    score_batch_size: int = _f(8, "Pairs per forward when scoring the held-out lists.", "data")
    output_dir: str | None = _f("runs/reward_model", "Where checkpoints, the reward model, train_log.jsonl and "
                                                     "eval_metrics.json go.", "run")

    def effective_order_source(self) -> str:
        """The order the run trains on (``auto``: ranking > scores > community)."""
        return self.order_source

    def problems(self) -> list[str]:
        """Every cross-field problem of this config (empty when valid)."""
        out: list[str] = []
        if self.rm_loss not in RM_LOSSES:
            out.append(f"rm_loss: {self.rm_loss!r} is not one of {', '.join(RM_LOSSES)}")
        if self.pair_mode not in PAIR_MODES:
            out.append(f"pair_mode: {self.pair_mode!r} is not one of {', '.join(PAIR_MODES)}")
        if self.order_source not in RM_ORDER_SOURCES:
            out.append(f"order_source: {self.order_source!r} is not one of {', '.join(RM_ORDER_SOURCES)}")
        if not 0 <= self.eval_fraction < 1:
            out.append(f"eval_fraction: {self.eval_fraction} must be in [0, 1)")
        if self.score_batch_size < 1:
            out.append(f"score_batch_size: {self.score_batch_size} must be >= 1")
        out.extend(self.common_problems())
        return out


def load_reward_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> RewardConfig:
    """:class:`RewardConfig` from YAML + overrides (overrides win; unknown keys are a ConfigError)."""
    from rankalign.training.config import load_config

    return load_config(yaml_path, overrides, cls=RewardConfig)  # type: ignore[no-any-return]
