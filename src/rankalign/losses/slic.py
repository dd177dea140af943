"""SLiC-HF: calibration hinge on sequence log-likelihoods plus an NLL regulariser."""

from __future__ import annotations

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
from rankalign.losses.hparams import DEFAULTS
from rankalign.losses.registry import register_loss


@register_loss("slic")
class SLiCLoss(ListwiseLoss):
    """SLiC rank-calibration loss on pairs from the list (Zhao et al. 2023; seed 000 baseline).

    Formula (SPEC §5): ``L = mean over pairs (w, l) of max(0, delta - logp(y_w) + logp(y_l))
    + lambda * NLL(y_1)``, logp = summed token log-probs, NLL = token-mean negative
    log-likelihood of the best response y_1 (the regularisation target). Pairs per
    ``pair_mode`` ('1vso' best vs each other, 'pw' all ordered pairs), averaged.

    Shapes: ``policy``/``lengths`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: p = policy in best-first order;
    loss = mean(max(0, delta - p[a] + p[b]) for (a, b) in pairs) + lam * (-p[0] / len[0])``.
    """

    def __init__(self, slic_delta: float = DEFAULTS.slic_delta, slic_lambda: float = DEFAULTS.slic_lambda,
                 pair_mode: str = DEFAULTS.pair_mode) -> None:
        super().__init__()
        self.delta = check_nonnegative("slic_delta", slic_delta)
        self.lam = check_nonnegative("slic_lambda", slic_lambda)
        self.pair_mode = check_pair_mode(pair_mode)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask
        logp = clean(batch.sorted(batch.policy), smask)  # [B, M]
        avg = clean(batch.sorted(batch.avg), smask)  # [B, M]
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        hinge = torch.relu(self.delta - logp[:, :, None] + logp[:, None, :])  # [B, M, M]
        loss = pair_mean(hinge, pairs) - self.lam * avg[:, 0]  # [B]
        return LossOutput(loss, list_metrics(batch, avg))
