"""DPO from lists: pairwise Bradley-Terry (DPO-BT) and list-wise Plackett-Luce (DPO-PL)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rankalign.losses._util import (
    check_pair_mode,
    check_positive,
    list_metrics,
    pair_mask,
    pair_mean,
    plackett_luce_nll,
    sorted_rewards,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import Beta, PairMode
from rankalign.losses.registry import register_loss


@dataclass
class DPOBTParams(Beta, PairMode):
    """DPO-BT hyper-parameters: ``beta`` and ``pair_mode`` (both shared)."""


@register_loss("dpo_bt")
class DPOBTLoss(ListwiseLoss):
    """DPO (Bradley-Terry) on pairs formed from each list.

    Paper: DPO (Rafailov et al., arXiv:2305.18290) eq. 7, as SeAdpra (arXiv:2502.12189)
    eq. 23 writes it; the pairs from a list follow SPO (OpenReview Ek50sQQI1w) §5: ``'1vso'``
    (DPO-1vsO) pairs the best response with each other one, ``'pw'`` (DPO-pw) uses every
    ordered pair (w ranked above l).

    Formula: ``s_i = beta * (logp_pi(y_i) - logp_ref(y_i))``;
    ``L = mean over pairs (w, l) of -log sigmoid(s_w - s_l)``. Reduction: the mean over the
    list's pairs (each pair counts as one DPO example; at M = 2 this is exactly DPO).

    Shapes: ``policy``/``reference`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: s = [beta*(p-r) ...] in best-first order;
    loss = mean(-log(sigmoid(s[a] - s[b])) for a < b in pairs)``.
    """

    needs_reference = True
    hyperparams = DPOBTParams

    def __init__(self, **hparams: float | str) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)
        self.pair_mode = check_pair_mode(self.hparams.pair_mode)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask, s = sorted_rewards(batch, self.beta)  # [B, M] each
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        per_pair = -F.logsigmoid(s[:, :, None] - s[:, None, :])  # [B, M, M]
        loss = pair_mean(per_pair, pairs)  # [B]
        return LossOutput(loss, list_metrics(batch, s, s))


@register_loss("dpo_pl")
class DPOPLLoss(ListwiseLoss):
    """DPO with the Plackett-Luce model over the whole list.

    Paper: SeAdpra (Yang et al., arXiv:2502.12189) App. C.2.1 eq. 27, the Plackett-Luce form of
    DPO (Rafailov et al., arXiv:2305.18290, App. A.3).

    Formula: ``s_i = beta * (logp_pi(y_i) - logp_ref(y_i))``, tau the target order
    (best first), n the list's length:
    ``L = -sum_{k=1}^{n-1} log( exp(s_tau(k)) / sum_{j=k}^{n} exp(s_tau(j)) )``.
    At n = 2 it equals DPO-BT.

    Shapes: ``policy``/``reference`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: s in best-first order;
    loss = sum(log(sum(exp(s[j]) for j in range(k, n))) - s[k] for k in range(n - 1))``.
    """

    needs_reference = True
    hyperparams = Beta

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask, s = sorted_rewards(batch, self.beta)  # [B, M] each
        loss = plackett_luce_nll(s, smask)
        return LossOutput(loss, list_metrics(batch, s, s))

