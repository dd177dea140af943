"""List-wise losses (SPEC §5), registered by name.

>>> from rankalign.losses import build_loss, available_losses
>>> loss = build_loss("dpo_pl", beta=0.1)

Each method is one module; importing this package registers them all. Names are
case-insensitive and '-' equals '_' (``DPO-PL`` == ``dpo_pl``).
"""

from rankalign.losses import (  # noqa: F401  (imported to register the losses)
    dpo,
    ipo,
    kto,
    lipo,
    pro,
    rrhf,
    seadpra,
    sft,
    slic,
    spo,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput, masked_mean
from rankalign.losses.hparams import DEFAULTS, LossHyperParams
from rankalign.losses.registry import (
    available_losses,
    build_loss,
    build_loss_from_config,
    get_loss_class,
    loss_parameters,
    register_loss,
)

__all__ = [
    "DEFAULTS",
    "ListLogps",
    "ListwiseLoss",
    "LossHyperParams",
    "LossOutput",
    "available_losses",
    "build_loss",
    "build_loss_from_config",
    "get_loss_class",
    "loss_parameters",
    "masked_mean",
    "register_loss",
]
