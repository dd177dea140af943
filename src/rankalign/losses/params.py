"""How a loss declares its hyper-parameters, and the few that several losses share.

A loss declares its hyper-parameters next to its code, as a dataclass assigned to the
loss class's ``hyperparams`` attribute; each field has its default and a help text::

    @dataclass
    class MyParams(Beta):                      # shares ``beta`` with the DPO family
        my_margin: float = hparam(0.5, "Margin of my loss.")

    @register_loss("my_loss")
    class MyLoss(ListwiseLoss):
        hyperparams = MyParams
        ...

The registry collects every loss's fields into one flat namespace (``--beta``,
``--my_margin``) that the training config, YAML files and ``rankalign train --help`` read,
so adding a method with a new hyper-parameter is one new file. A name means one thing:
two losses may use the same hyper-parameter only by inheriting the dataclass that declares
it (below), never by declaring a second field of that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rankalign.losses.base import NoHyperParams


def hparam(default: Any, help_text: str) -> Any:
    """A hyper-parameter field: its default and the help text ``--help`` shows."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class Beta:
    """The inverse temperature of the implicit reward ``beta * (logp_pi - logp_ref)``."""

    beta: float = hparam(0.1, "Inverse temperature of the implicit reward beta * (logp_policy - logp_reference) "
                              "(DPO, Rafailov et al., arXiv:2305.18290, eq. 7).")


@dataclass
class PairMode:
    """How pairwise methods form pairs from a list."""

    pair_mode: str = hparam("1vso", "How pairs are formed from a list: '1vso' the best response against each "
                                    "other one (DPO-1vsO), 'pw' every ordered pair (DPO-pw); the two transforms "
                                    "of SPO (OpenReview Ek50sQQI1w) §5.")


__all__ = ["Beta", "NoHyperParams", "PairMode", "hparam"]
