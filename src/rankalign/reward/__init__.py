"""Scalar reward models trained on lists (``rankalign train-rm``) and used to score responses
(``rankalign score``, the reward column of ``rankalign eval``); docs/evaluation.md#reward-models.

>>> from rankalign.reward import load_reward_model, score_responses
>>> model, tok = load_reward_model("runs/rm")                        # doctest: +SKIP
>>> score_responses(model, tok, ["How do I brew?"], ["Use hot water."])  # doctest: +SKIP
[0.41]
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_reward_model": "rankalign.reward.model",
    "score_responses": "rankalign.reward.model",
    "RewardConfig": "rankalign.reward.config",
    "load_reward_config": "rankalign.reward.config",
    "train_reward_model": "rankalign.reward.train",
    "bradley_terry_loss": "rankalign.reward.losses",
    "plackett_luce_loss": "rankalign.reward.losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rankalign.reward' has no attribute {name!r}")
