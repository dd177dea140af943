"""List-wise losses (SPEC §5), registered by name.

>>> from rankalign.losses import build_loss, available_losses
>>> loss = build_loss("dpo_pl", beta=0.1)

Each method is one module of this package; importing the package imports (and so
registers) every module in it, so a new method is one new file plus one decorator line. Names are
case-insensitive and '-' equals '_' (``DPO-PL`` == ``dpo_pl``).
"""

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


def _register_all() -> None:
    """Import every method module of this package so its ``@register_loss`` runs."""
    import importlib
    import pkgutil

    infrastructure = {"base", "hparams", "registry"}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name not in infrastructure and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()

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
