"""LiPO-lambda: list-wise preference optimisation with LambdaLoss weights (Liu et al. 2024)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rankalign.losses._util import check_positive, clean, list_labels, list_metrics, sorted_rewards
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import Beta
from rankalign.losses.registry import register_loss


@register_loss("lipo")
class LiPOLoss(ListwiseLoss):
    """LiPO-lambda (Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank",
    arXiv:2402.01878, eq. 5-7).

    Formula: ``s_i = beta * (logp_pi(y_i) - logp_ref(y_i))``; labels psi_i = scores, else
    ``batch.labels``, else ``n - position``; ``G_i = 2^psi_i - 1``;
    ``D(tau) = log2(1 + tau)``, tau_i = the 1-based rank of response i when the list is
    sorted by s descending (detached; ties broken by the target order);
    ``Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|``;
    ``L = -sum_{psi_i > psi_j} Delta_ij * log sigmoid(s_i - s_j)`` (summed, as in the paper).
    Labels should be modest ratings (2^psi overflows float32 above psi ~ 127).

    Shapes: ``policy``/``reference``/``scores`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: rank = positions of sorted(range(n), key=-s);
    loss = -sum(abs(2**psi[i]-2**psi[j]) * abs(1/log2(1+rank[i]) - 1/log2(1+rank[j]))
    * log(sigmoid(s[i]-s[j])) for i, j if psi[i] > psi[j])``.
    """

    needs_reference = True

    hyperparams = Beta

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask, s = sorted_rewards(batch, self.beta)  # [B, M] each
        psi = clean(batch.sorted(list_labels(batch)), smask).detach()  # [B, M]
        with torch.no_grad():
            # tau: 1-based rank by s descending among real candidates; a stable sort in
            # best-first space breaks ties by the target order (shuffle-invariant).
            key = s.detach().masked_fill(~smask, float("-inf"))
            perm = torch.sort(key, dim=1, descending=True, stable=True).indices  # [B, M]
            ranks = torch.empty_like(perm)
            m = s.shape[1]
            ranks.scatter_(1, perm, torch.arange(1, m + 1, device=s.device).expand_as(perm))
            inv_d = math.log(2.0) / torch.log1p(ranks.to(s.dtype))  # 1/log2(1 + tau)  [B, M]
            gain = torch.exp2(psi) - 1  # [B, M]
            delta = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_d[:, :, None] - inv_d[:, None, :]).abs()
            pairs = (psi[:, :, None] > psi[:, None, :]) & smask[:, :, None] & smask[:, None, :]  # [B, M, M]
        per_pair = -F.logsigmoid(s[:, :, None] - s[:, None, :]) * delta  # [B, M, M]
        loss = clean(per_pair, pairs).sum(dim=(1, 2))  # [B]
        return LossOutput(loss, list_metrics(batch, s, s))
