"""RRHF: rank responses to align language models with human feedback (Yuan et al. 2023)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rankalign.losses._util import check_nonnegative, clean, list_metrics, pair_mask
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import hparam
from rankalign.losses.registry import register_loss


@dataclass
class RRHFParams:
    """RRHF hyper-parameters."""

    rrhf_weight: float = hparam(1.0, "RRHF weight of the ranking hinge term (Yuan et al., arXiv:2304.05302, eq. 4).")
    rrhf_length_penalty: float = hparam(1.0, "RRHF length penalty: s(y) = logp(y) / |y|^length_penalty.")


@register_loss("rrhf")
class RRHFLoss(ListwiseLoss):
    """RRHF ranking loss plus SFT on the best response.

    Paper: RRHF (Yuan et al., arXiv:2304.05302) eq. 2-4 (a baseline of SeAdpra, arXiv:2502.12189);
    official code GanjinZero/RRHF
    ``train.py`` (rrhf_weight 1, length_penalty 1, SFT on the best response).

    Formula: ``s(y) = logp(y) / |y|^length_penalty``;
    ``L = rrhf_weight * sum_{i ranked above j} max(0, s(y_j) - s(y_i)) + NLL(y_1)``,
    NLL = token-mean negative log-likelihood of the best response. The sum runs over
    every ordered pair of the target order (the official code compares by reward; here
    the order is the reward order, so ties are broken by the order).

    Shapes: ``policy``/``lengths`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: s in best-first order;
    loss = w * sum(max(0, s[j] - s[i]) for i < j) - policy[0] / len[0]``.
    """

    hyperparams = RRHFParams

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.weight = check_nonnegative("rrhf_weight", self.hparams.rrhf_weight)
        self.length_penalty = float(self.hparams.rrhf_length_penalty)
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"rrhf_length_penalty must be a finite number (got {self.hparams.rrhf_length_penalty!r})")

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask
        lengths = batch.sorted(batch.lengths).clamp(min=1).to(batch.policy.dtype)  # [B, M]
        logp = clean(batch.sorted(batch.policy), smask)  # [B, M]
        s = logp / lengths.pow(self.length_penalty)  # [B, M]
        pairs = pair_mask(smask, "pw")  # [B, M, M]: i above j
        hinge = torch.relu(s[:, None, :] - s[:, :, None])  # [B, i, j] = max(0, s_j - s_i)
        rank = clean(hinge, pairs).sum(dim=(1, 2))  # [B]
        nll = -logp[:, 0] / lengths[:, 0]  # [B]
        avg = clean(batch.sorted(batch.avg), smask)
        return LossOutput(self.weight * rank + nll, list_metrics(batch, avg))
