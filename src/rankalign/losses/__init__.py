"""List-wise losses, registered by name (formulas and papers: docs/methods.md).

>>> from rankalign.losses import build_loss, available_losses
>>> loss = build_loss("dpo_pl", beta=0.1)

Each method is one module of this package; importing the package imports (and so
registers) every module in it, so a new method is one new file: a decorated class and, if it
has hyper-parameters, their dataclass next to it (:mod:`rankalign.losses.params`). Names are
case-insensitive and '-' equals '_' (``DPO-PL`` == ``dpo_pl``).
"""

from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput, masked_mean
from rankalign.losses.params import Beta, NoHyperParams, PairMode, hparam
from rankalign.losses.registry import (
    available_losses,
    build_loss,
    default_hparams,
    get_loss_class,
    hyperparameters,
    loss_parameters,
    register_loss,
    reserve_names,
    unregister_loss,
)
from rankalign.plugins import import_modules

import_modules(__name__, __path__, {"base", "params", "registry"})  # registers every method module

__all__ = [
    "Beta",
    "ListLogps",
    "ListwiseLoss",
    "LossOutput",
    "NoHyperParams",
    "PairMode",
    "available_losses",
    "build_loss",
    "default_hparams",
    "get_loss_class",
    "hparam",
    "hyperparameters",
    "loss_parameters",
    "masked_mean",
    "register_loss",
    "reserve_names",
    "unregister_loss",
]
