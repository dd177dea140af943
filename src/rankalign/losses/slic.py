"""SLiC-HF: calibration hinge on sequence log-likelihoods plus an NLL regulariser."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankalign.losses._util import (
    check_nonnegative,
    check_pair_mode,
    clean,
    list_metrics,
    pair_mask,
    pair_mean,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import PairMode, hparam
from rankalign.losses.registry import register_loss


@dataclass
class SLiCParams(PairMode):
    """SLiC hyper-parameters: ``pair_mode`` (shared), the margin and the regulariser weight."""

    slic_delta: float = hparam(1.0, "SLiC hinge margin delta (Zhao et al., arXiv:2305.10425, eq. 3).")
    slic_lambda: float = hparam(0.1, "SLiC weight of the NLL regulariser on the best response.")


@register_loss("slic")
class SLiCLoss(ListwiseLoss):
    """SLiC rank-calibration loss on pairs from the list (Zhao et al., arXiv:2305.10425; a baseline of
    SeAdpra, arXiv:2502.12189).

    Formula (docs/methods.md#slic): ``L = mean over pairs (w, l) of max(0, delta - logp(y_w) + logp(y_l))
    + lambda * NLL(y_1)``, logp = summed token log-probs, NLL = token-mean negative
    log-likelihood of the best response y_1 (the regularisation target). Pairs per
    ``pair_mode`` ('1vso' best vs each other, 'pw' all ordered pairs), averaged.

    Shapes: ``policy``/``lengths`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: p = policy in best-first order;
    loss = mean(max(0, delta - p[a] + p[b]) for (a, b) in pairs) + lam * (-p[0] / len[0])``.
    """

    hyperparams = SLiCParams

    def __init__(self, **hparams: float | str) -> None:
        super().__init__(**hparams)
        self.delta = check_nonnegative("slic_delta", self.hparams.slic_delta)
        self.lam = check_nonnegative("slic_lambda", self.hparams.slic_lambda)
        self.pair_mode = check_pair_mode(self.hparams.pair_mode)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask
        logp = clean(batch.sorted(batch.policy), smask)  # [B, M]
        avg = clean(batch.sorted(batch.avg), smask)  # [B, M]
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        hinge = torch.relu(self.delta - logp[:, :, None] + logp[:, None, :])  # [B, M, M]
        loss = pair_mean(hinge, pairs) - self.lam * avg[:, 0]  # [B]
        return LossOutput(loss, list_metrics(batch, avg))
