"""SPO and SPO-abs: soft-label list-wise preference optimisation.

Paper: "A Novel Listwise Alignment Approach for Language Models with Explicit Rewards",
ICLR 2025 submission, OpenReview Ek50sQQI1w (called SPO below).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankalign.losses._util import check_positive, clean, list_labels, list_metrics, masked_logsumexp
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import Beta, hparam
from rankalign.losses.registry import register_loss


def spo_cross_entropy(batch: ListLogps, beta: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B] SPO loss, [B, M] sorted student logits s = beta * ratio)``; see :class:`SPOLoss`."""
    smask = batch.sorted_mask  # [B, M]
    s = clean(beta * batch.sorted(batch.ratio), smask)  # [B, M] student logits
    r = clean(batch.sorted(list_labels(batch)), smask).detach()  # [B, M] teacher rewards
    t_logits = r / alpha
    log_p = t_logits - masked_logsumexp(t_logits, smask)[:, None]  # teacher log soft labels
    p = clean(log_p.exp(), smask)  # [B, M], 0 at padding
    log_q = s - masked_logsumexp(s, smask)[:, None]  # student log-softmax over real candidates
    loss = -clean(p * log_q, smask).sum(dim=1)  # [B]
    return loss, s


@dataclass
class SPOParams(Beta):
    """SPO hyper-parameters: ``beta`` (shared, the student) and the teacher temperature."""

    spo_alpha: float = hparam(1.0, "SPO teacher temperature alpha: soft labels softmax(r / alpha) "
                                   "(OpenReview Ek50sQQI1w, eq. 7).")


@register_loss("spo")
class SPOLoss(ListwiseLoss):
    """SPO: cross-entropy between teacher soft labels and the student's softmax.

    Paper: SPO eq. 7-8 (DPO as the alpha -> 0, K = 2 special case: eq. 9-10).

    Formula: teacher ``p_i = softmax_i(r_i / alpha)`` with ``r`` = ``batch.scores`` when
    present, else ``batch.labels``, else ``n - position``; student
    ``q_i = softmax_i(s_i)``, ``s_i = beta * (logp_pi(y_i) - logp_ref(y_i))``;
    ``L = -sum_i p_i log q_i`` over the list's real candidates. The seed's r_theta is the
    plain log-ratio (beta = 1); the extra beta (default 0.1, as for every reference
    method) makes SPO with alpha -> 0 at M = 2 equal DPO-BT with the same beta.

    Shapes: ``policy``/``reference``/``scores`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: p = softmax([x/alpha for x in r]);
    q = softmax([beta*x for x in ratio]); loss = -sum(p[i]*log(q[i]) for i in range(n))``.
    """

    needs_reference = True

    hyperparams = SPOParams

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)
        self.alpha = check_positive("spo_alpha", self.hparams.spo_alpha)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        loss, s = spo_cross_entropy(batch, self.beta, self.alpha)
        return LossOutput(loss, list_metrics(batch, s, s))


@register_loss("spo_abs")
class SPOAbsLoss(SPOLoss):
    """SPO-abs: SPO plus an absolute-value regulariser on the student rewards.

    Paper: SPO Table 1 (eq. 11's signs are inconsistent; Table 1's bounded form is used).

    Formula: ``L = L_SPO + (1/n) * sum_i sigmoid(-s_i)``, ``s_i = beta * ratio_i``, n the
    list's length (the term pushes every s_i up, so likelihoods do not all decrease).

    Shapes: ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``spo(list) + sum(1/(1+exp(s[i])) for i in range(n)) / n``.
    """

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        loss, s = spo_cross_entropy(batch, self.beta, self.alpha)
        smask = batch.sorted_mask
        n = smask.sum(dim=1).clamp(min=1).to(s.dtype)  # [B]
        absolute = clean(torch.sigmoid(-s), smask).sum(dim=1) / n  # [B]
        metrics = list_metrics(batch, s, s)
        metrics["spo_abs/absolute_term"] = absolute.detach().mean()
        return LossOutput(loss + absolute, metrics)
