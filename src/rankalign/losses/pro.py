"""PRO: Preference Ranking Optimisation (Song et al., arXiv:2306.17492), as the official code computes it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankalign.losses._util import (
    check_nonnegative,
    clean,
    list_lengths,
    list_metrics,
    masked_logsumexp,
    stage_mask,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import hparam
from rankalign.losses.registry import register_loss

PRO_SFT_MODES = ("sum", "mean")


@dataclass
class PROParams:
    """PRO hyper-parameters."""

    pro_sft_weight: float = hparam(0.05, "PRO SFT coefficient; the term is weighted by this times (n-1)^2 "
                                         "(Song et al., arXiv:2306.17492, §3.3).")
    pro_sft_mode: str = hparam("sum", "PRO SFT term: 'sum' of token log-probs (official code) or 'mean' (token mean).")
    pro_use_scores: bool = hparam(True, "PRO: use reward scores as dynamic temperature when the data has scores.")


@register_loss("pro")
class PROLoss(ListwiseLoss):
    """PRO one-to-N list-wise contrast plus an SFT term.

    Paper: PRO (Song et al., arXiv:2306.17492) eq. 4-9; behaviour of the official code
    (DAMO-ConvAI/PRO, ``train/utils/process_manager.py``), as docs/methods.md#pro explains.

    Formula, with ``a_i = avg(y_i)`` (mean token log-prob) in best-first order, n the
    list's length and, when reward scores r are used, gaps ``g_ki = r_k - r_i``:

    * logits of stage k (k = 1..n-1): ``z_ki = a_i * g_ki`` for i > k and
      ``z_kk = a_k * max_{i>k} g_ki`` (the official multiplicative form of the dynamic
      temperature 1/T, gaps not clamped); without scores ``z_ki = a_i`` (T = 1);
    * ``L_rank = sum_{k=1}^{n-1} (logsumexp_{i >= k} z_ki - z_kk)``;
    * ``L = L_rank + pro_sft_weight * (n-1)^2 * SFT(y_1)``, SFT = ``-logp(y_1)`` (``'sum'``,
      the official code) or ``-avg(y_1)`` (``'mean'``).

    The official code averages each stage over the batch and then sums the stages; here
    each list sums its stages and the trainer averages over lists, which is the same.

    Shapes: ``policy``/``lengths``/``scores`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list (best first): loss = sum over k < n-1 of
    log(sum(exp(z[k][i]) for i in range(k, n))) - z[k][k]; loss += w*(n-1)**2 * sft``.
    """

    hyperparams = PROParams

    def __init__(self, **hparams: float | str | bool) -> None:
        super().__init__(**hparams)
        pro_sft_mode, pro_use_scores = self.hparams.pro_sft_mode, self.hparams.pro_use_scores
        self.sft_weight = check_nonnegative("pro_sft_weight", self.hparams.pro_sft_weight)
        if pro_sft_mode not in PRO_SFT_MODES:
            raise ValueError(f"pro_sft_mode must be one of {list(PRO_SFT_MODES)} (got {pro_sft_mode!r}): "
                             "'sum' = summed token log-probs (official PRO code), 'mean' = token mean")
        self.sft_mode = pro_sft_mode
        if not isinstance(pro_use_scores, bool):  # bool("false") is True: refuse, do not guess
            raise ValueError(f"pro_use_scores must be true or false (got {pro_use_scores!r})")
        self.use_scores = pro_use_scores

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask  # [B, M]
        m = smask.shape[1]
        a = clean(batch.sorted(batch.avg), smask)  # [B, M]
        idx = torch.arange(m, device=a.device)
        later = (idx[None, :] > idx[:, None])[None] & smask[:, None, :]  # [B, K, I]: i > k, i real
        diag = torch.eye(m, dtype=torch.bool, device=a.device)[None]  # [1, K, I]
        stages = stage_mask(smask)  # [B, K]
        if self.use_scores and batch.scores is not None:
            r = clean(batch.sorted(batch.scores.to(a.dtype)), smask).detach()  # [B, M]
            gap = r[:, :, None] - r[:, None, :]  # [B, K, I] = r_k - r_i
            max_gap = gap.masked_fill(~later, float("-inf")).amax(dim=2)  # [B, K]
            max_gap = clean(max_gap, stages)  # 0 where a stage has no negative
            factor = torch.where(diag, max_gap[:, :, None], gap)  # [B, K, I]
            z = a[:, None, :] * factor  # [B, K, I]
        else:
            z = a[:, None, :].expand(-1, m, -1)  # [B, K, I]
        members = later | (diag & smask[:, :, None])  # i >= k, i real
        lse = masked_logsumexp(z, members, dim=2)  # [B, K]
        z_pos = torch.diagonal(z, dim1=1, dim2=2)  # [B, K] = z_kk
        rank_loss = clean(lse - z_pos, stages).sum(dim=1)  # [B]
        if self.sft_mode == "sum":
            sft = -clean(batch.sorted(batch.policy), smask)[:, 0]
        else:
            sft = -a[:, 0]
        n = list_lengths(batch).to(a.dtype)  # [B]
        loss = rank_loss + self.sft_weight * (n - 1) ** 2 * sft
        return LossOutput(loss, list_metrics(batch, a))
