"""The typed container every loss reads, the output every loss returns, and the base class.

Reduction rule: a loss returns one value per list (``[B]``); the trainer takes the mean
over the lists of a micro-batch. Under data parallelism each rank averages its own lists
and the gradients are averaged across ranks (DDP), so with equal per-rank batch sizes the
result equals the mean over the global batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class ListLogps:
    """Log-probabilities of a batch of lists, and what the losses need besides.

    Shapes: B lists, M = the longest list in the batch; shorter lists are padded and
    ``mask`` is False at padded candidates.

    Attributes:
        policy: ``[B, M]`` summed token log-probs of each response under the policy.
        lengths: ``[B, M]`` response token counts (>= 1 at real candidates).
        mask: ``[B, M]`` bool, True for real candidates.
        order: ``[B, M]`` long, candidate indices best first; for a list of m < M the
            first m entries are a permutation of ``0..m-1`` and the rest are ``m..M-1``.
        reference: ``[B, M]`` summed log-probs under the frozen reference model.
        scores: ``[B, M]`` explicit rewards (higher is better).
        labels: ``[B, M]`` labels psi_i (scores, else M - position; docs/methods.md#labels).
        apdf: ``[B, M, M]`` multi-APDF matrix Delta_M (SeAdpra), 0 at padded rows/columns.
        apdf_row_max: ``[B, M]`` SeAdpra's W_r per response, prod_k max_j delta_k(i, j) over
            the single-attribute APDF matrices (SeAdpra, arXiv:2502.12189, eq. 7); optional.
        mismatched_policy / mismatched_reference: ``[B, M]`` log-probs of each response
            given another list's prompt (KTO's z0 estimate).
        desirable: ``[B, M]`` long, explicit binary feedback per response (unpaired data,
            docs/methods.md#kto-unpaired): 1 desirable, 0 undesirable, -1 where the list has no
            labels (and at padding); None when no list of the batch has labels.
    """

    policy: Tensor
    lengths: Tensor
    mask: Tensor
    order: Tensor
    reference: Tensor | None = None
    scores: Tensor | None = None
    labels: Tensor | None = None
    apdf: Tensor | None = None
    apdf_row_max: Tensor | None = None
    mismatched_policy: Tensor | None = None
    mismatched_reference: Tensor | None = None
    desirable: Tensor | None = None

    @property
    def avg(self) -> Tensor:
        """``[B, M]`` mean token log-prob, logp(y)/|y| (PRO, arXiv:2306.17492, eq. 6; SeAdpra, arXiv:2502.12189, eq. 12)."""
        return self.policy / self.lengths.clamp(min=1).to(self.policy.dtype)

    @property
    def ratio(self) -> Tensor:
        """``[B, M]`` logp_policy - logp_ref."""
        if self.reference is None:
            raise ValueError("this loss needs reference log-probs (ListLogps.reference is None)")
        return self.policy - self.reference

    def sorted(self, values: Tensor) -> Tensor:
        """Reorder ``[B, M]`` values best first (by ``order``)."""
        return torch.gather(values, 1, self.order)

    @property
    def sorted_mask(self) -> Tensor:
        """``[B, M]`` mask in best-first order: True at positions < list length."""
        return torch.gather(self.mask, 1, self.order)

    @property
    def top(self) -> Tensor:
        """``[B]`` index of each list's best response."""
        return self.order[:, 0]

    def to(self, device: torch.device | str) -> ListLogps:
        kwargs = {f.name: (getattr(self, f.name).to(device) if getattr(self, f.name) is not None else None)
                  for f in fields(self)}
        return ListLogps(**kwargs)


@dataclass
class LossOutput:
    """``loss``: ``[B]`` per-list losses (the trainer reduces); ``metrics``: detached scalars."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class NoHyperParams:
    """A loss without hyper-parameters."""


class ListwiseLoss(nn.Module):
    """Base class: hyper-parameters in ``__init__``, tensors in ``forward``.

    ``hyperparams`` is the dataclass of the loss's hyper-parameters (declared next to the
    loss, see :mod:`rankalign.losses.params`); ``__init__`` takes them as keyword
    arguments, fills the rest from their defaults and keeps them as ``self.hparams``.
    Class attributes say what the trainer has to provide; it checks them before loading
    any model.
    """

    name: ClassVar[str] = ""
    hyperparams: ClassVar[type] = NoHyperParams
    needs_reference: ClassVar[bool] = False
    needs_scores: ClassVar[bool] = False
    needs_apdf: ClassVar[bool] = False
    needs_mismatched: ClassVar[bool] = False
    #: whether the method trains on lists of one response (labelled desirable/undesirable: KTO on
    #: unpaired feedback); the trainer refuses such lists for every other method
    accepts_single_response: ClassVar[bool] = False
    #: the order the method trains on by default: "auto" (gold > scores > community, docs/methods.md#orders) or "dynamic" (SeAdpra)
    default_order: ClassVar[str] = "auto"

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        valid = [f.name for f in dataclasses.fields(self.hyperparams)]
        unknown = sorted(set(hparams) - set(valid))
        if unknown:
            raise ValueError(f"loss {self.name!r} got unknown hyper-parameter(s) {unknown}; valid: {valid}")
        self.hparams = self.hyperparams(**hparams)

    def forward(self, batch: ListLogps) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_inputs(self, batch: ListLogps) -> None:
        missing = []
        if self.needs_reference and batch.reference is None:
            missing.append("reference")
        if self.needs_scores and batch.scores is None:
            missing.append("scores")
        if self.needs_apdf and batch.apdf is None:
            missing.append("apdf")
        if self.needs_mismatched and (batch.mismatched_policy is None or batch.mismatched_reference is None):
            missing.append("mismatched_policy/mismatched_reference")
        if missing:
            raise ValueError(f"loss {self.name!r} needs {', '.join(missing)} in its ListLogps")


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is True (0 where nothing is selected)."""
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)
