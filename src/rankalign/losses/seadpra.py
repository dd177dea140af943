"""SeAdpra: Self-supervised Attribute-aware Dynamic Preference Ranking Alignment.

Paper: Yang, Zhao, Hu, Li, arXiv:2502.12189 (2025), called SeAdpra below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rankalign.losses._util import (
    check_nonnegative,
    check_positive,
    clean,
    list_metrics,
    masked_logsumexp,
    sorted_apdf,
    stage_mask,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import hparam
from rankalign.losses.registry import register_loss


@dataclass
class SeAdpraParams:
    """SeAdpra hyper-parameters."""

    seadpra_alpha: float = hparam(0.01, "SeAdpra weight alpha of the Perceptual Alignment (SFT) term "
                                        "(Yang et al., arXiv:2502.12189, eq. 13).")
    weight_eps: float = hparam(1e-8, "SeAdpra: lower clamp of the APDF weights W_r, W_p before their log.")


@register_loss("seadpra")
class SeAdpraLoss(ListwiseLoss):
    """SeAdpra loss ``L = L_Pc + alpha * L_Pa`` on the dynamic ranking D^R.

    Paper: SeAdpra §2.3-2.4, eq. 6-13; docs/methods.md#seadpra-loss for the decisions below.

    ``batch.order`` is D^R (best first; the trainer supplies the dynamic ranking since
    ``default_order = "dynamic"``), ``batch.apdf`` the multi-APDF matrix Delta_M
    ``[B, M, M]``, ``a_i = avg(R_i)`` the mean token log-prob (eq. 12), n the list's length.

    * ``L_Pa = -a_{D^R[0]}`` (eq. 6).
    * ``L_Pc = -sum_{m=1}^{n-1} log( tau_r(b) / (tau_r(b) + sum_{i != b} tau_p(i)) )``,
      ``b = D^R[m-1]`` (0-based), every real response i != b takes part in every round
      (eq. 9), with ``log tau_r(b) = a_b + log max(W_r, eps)`` (eq. 10) and
      ``log tau_p(i) = a_i + log max(W_p(i), eps)`` (eq. 11).
    * ``W_r = prod_k max_j delta_k(b, j)`` (eq. 7), the product over attributes of each
      single-attribute matrix's row maximum, read from ``batch.apdf_row_max`` (written by
      ``rankalign rank`` as the record's ``apdf_row_max``). Without it (data ranked
      elsewhere) W_r falls back to ``max_j Delta_M(b, j)``, which agrees with eq. 7 whenever
      the attributes' row maxima fall on the same column (always for one attribute).
    * ``W_p`` (eq. 8): the n-1 off-diagonal entries of row b of Delta_M sorted ascending,
      handed to the negatives in D^R order (position ascending, skipping b): the
      response ranked highest gets the smallest penalty. In round 1 that is the negative
      nearest the positive; in later rounds the already-aligned responses ranked above b
      come first ("the penalty for responses ranked higher in D^R is minimized").

    Weights are clamped to >= ``weight_eps`` before the log, so an all-zero APDF gives a
    finite loss (then every weight is eps, which cancels: plain ListNet rounds).

    Shapes: ``policy``/``lengths`` ``[B, M]``, ``apdf`` ``[B, M, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list (indices in D^R order): for r in range(n-1):
    row = [D[r][j] for j != r]; w = sorted(row); negs = [j for j in range(n) if j != r];
    num = exp(a[r]) * max(D[r]); den = num + sum(exp(a[j]) * w[k] for k, j in enumerate(negs));
    loss -= log(num / den)``; then ``loss += alpha * (-a[0])``.
    """

    needs_apdf = True
    default_order = "dynamic"

    hyperparams = SeAdpraParams

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.alpha = check_nonnegative("seadpra_alpha", self.hparams.seadpra_alpha)
        self.weight_eps = check_positive("weight_eps", self.hparams.weight_eps)
        self.log_eps = math.log(self.weight_eps)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask  # [B, M]
        b, m = smask.shape
        a = clean(batch.sorted(batch.avg), smask)  # [B, M] avg log-prob, D^R order
        pair_real = smask[:, :, None] & smask[:, None, :]  # [B, R, J]
        delta = clean(sorted_apdf(batch).to(a.dtype), pair_real).detach()  # [B, R, J] Delta_M in D^R order
        idx = torch.arange(m, device=a.device)
        diag = (idx[:, None] == idx[None, :])[None]  # [1, R, J]

        if batch.apdf_row_max is not None:  # W_r(round r) = prod_k max_j delta_k(r, j), eq. 7
            w_r = clean(batch.sorted(batch.apdf_row_max).to(a.dtype), smask).detach()  # [B, R]
        else:  # fallback: max over real j of Delta_M(r, j)
            w_r = delta.masked_fill(~pair_real, float("-inf")).amax(dim=2)  # [B, R]
            w_r = clean(w_r, smask)
        # W_p: off-diagonal real entries of row r sorted ascending, given to negatives j != r
        # in position order: negative j gets the (j - [j > r])-th smallest.
        off = pair_real & ~diag  # [B, R, J]
        ascending = delta.masked_fill(~off, float("inf")).sort(dim=2).values  # [B, R, J]
        slot = (idx[None, :] - (idx[None, :] > idx[:, None]).long()).clamp(min=0)  # [R, J]
        w_p = torch.gather(ascending, 2, slot[None].expand(b, m, m))  # [B, R, J]
        w_p = clean(w_p, off)  # finite everywhere (inf only at non-negatives)

        weight = torch.where(diag, w_r[:, :, None], w_p)  # [B, R, J]
        log_w = weight.clamp(min=self.weight_eps).log()  # [B, R, J]
        log_tau = a[:, None, :] + log_w  # [B, R, J]: log tau_r on the diagonal, log tau_p elsewhere
        lse = masked_logsumexp(log_tau, pair_real, dim=2)  # [B, R]
        log_pos = torch.diagonal(log_tau, dim1=1, dim2=2)  # [B, R]
        l_pc = clean(lse - log_pos, stage_mask(smask)).sum(dim=1)  # [B]
        l_pa = -a[:, 0]  # [B]
        metrics = list_metrics(batch, a)
        metrics["seadpra/l_pc"] = l_pc.detach().mean()
        metrics["seadpra/l_pa"] = l_pa.detach().mean()
        return LossOutput(l_pc + self.alpha * l_pa, metrics)
