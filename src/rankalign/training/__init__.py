"""List-wise preference training on ``transformers.Trainer``.

>>> from rankalign.training import ListwiseConfig, train
>>> result = train(ListwiseConfig(method="dpo_pl", data="lists.jsonl", output_dir="runs/x", max_steps=5))

Names are imported lazily, so ``import rankalign.training`` does not load transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ListwiseConfig": "rankalign.training.config",
    "load_config": "rankalign.training.config",
    "config_fields": "rankalign.training.config",
    "DEFAULT_MODEL": "rankalign.training.models",
    "load_model_and_tokenizer": "rankalign.training.models",
    "ListwiseTrainer": "rankalign.training.trainer",
    "TrainResult": "rankalign.training.trainer",
    "train": "rankalign.training.trainer",
    "ListCollator": "rankalign.training.logps",
    "TruncationStats": "rankalign.training.logps",
    "JsonlLogCallback": "rankalign.training.callbacks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rankalign.training' has no attribute {name!r}")
