"""KTO: Kahneman-Tversky Optimisation (Ethayarajh et al. 2024) applied to lists."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankalign.losses._util import check_nonnegative, check_positive, clean, list_lengths, list_metrics
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput, masked_mean
from rankalign.losses.params import Beta, hparam
from rankalign.losses.registry import register_loss


@dataclass
class KTOParams(Beta):
    """KTO hyper-parameters: ``beta`` (shared) and the two class weights."""

    kto_lambda_d: float = hparam(1.0, "KTO weight lambda_D of desirable responses (Ethayarajh et al., "
                                      "arXiv:2402.01306, eq. 8).")
    kto_lambda_u: float = hparam(1.0, "KTO weight lambda_U of undesirable responses.")


@register_loss("kto")
class KTOLoss(ListwiseLoss):
    """KTO with desirable/undesirable labels taken from the list's order.

    Paper: KTO (Ethayarajh et al., arXiv:2402.01306) eq. 7-8, a baseline of SPO (OpenReview
    Ek50sQQI1w); the list reading is the project's (docs/methods.md#kto).

    Desirable responses: the explicit labels when the list has them (``batch.desirable``
    >= 0: unpaired feedback, every response labelled, docs/methods.md#kto-unpaired; such a
    list may hold a single response); otherwise the top half of the target order, positions
    ``k < ceil(n/2)`` (0-based, n the list's length; the middle response of an odd list is
    desirable, so n_D >= n_U as the KTO paper's recommended ratio lambda_D n_D / (lambda_U n_U)
    >= 1 suggests). The rest are undesirable.

    Formula: ``z0 = max(0, mean of mismatched_ratio over every real candidate of the
    batch)``, detached (mismatched_ratio = logp_pi - logp_ref of a response given another
    list's prompt); ``l_i = lambda_D * (1 - sigmoid(beta * (ratio_i - z0)))`` if desirable,
    ``lambda_U * (1 - sigmoid(beta * (z0 - ratio_i)))`` otherwise; ``L = mean_i l_i`` over
    the list's real candidates.

    Shapes: ``policy``/``reference``/``mismatched_*`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``z0 = max(0, mean(mp - mr over all real candidates));
    for each list: loss = mean(lD*(1-sig(beta*(r[k]-z0))) if k < ceil(n/2)
    else lU*(1-sig(beta*(z0-r[k]))) for k in range(n))`` (r in best-first order; with labels,
    ``label[k]`` replaces ``k < ceil(n/2)``).
    """

    needs_reference = True
    needs_mismatched = True
    accepts_single_response = True

    hyperparams = KTOParams

    def __init__(self, **hparams: float) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)
        self.lambda_d = check_nonnegative("kto_lambda_d", self.hparams.kto_lambda_d)
        self.lambda_u = check_nonnegative("kto_lambda_u", self.hparams.kto_lambda_u)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        mis_policy, mis_reference = batch.mismatched_policy, batch.mismatched_reference
        if mis_policy is None or mis_reference is None:  # pragma: no cover - check_inputs raised
            raise ValueError("kto needs mismatched_policy and mismatched_reference")
        smask = batch.sorted_mask  # [B, M]
        r = clean(batch.sorted(batch.ratio), smask)  # [B, M]
        with torch.no_grad():
            mis = clean(mis_policy - mis_reference, batch.mask)  # [B, M]
            z0 = masked_mean(mis, batch.mask).clamp(min=0).detach()  # scalar
        n = list_lengths(batch)[:, None]  # [B, 1]
        pos = torch.arange(r.shape[1], device=r.device)[None, :]  # [1, M]
        desirable = 2 * pos < n  # pos < ceil(n/2)
        if batch.desirable is not None:  # explicit labels (-1: the list has none)
            label = batch.sorted(batch.desirable)  # [B, M]
            desirable = torch.where(label >= 0, label == 1, desirable)
        per = torch.where(desirable,
                          self.lambda_d * (1 - torch.sigmoid(self.beta * (r - z0))),
                          self.lambda_u * (1 - torch.sigmoid(self.beta * (z0 - r))))  # [B, M]
        loss = masked_mean(per, smask, dim=1)  # [B]
        metrics = list_metrics(batch, self.beta * r, self.beta * r)
        metrics["kl"] = z0
        with torch.no_grad():  # the implicit reward of each class (labelled or by position)
            metrics["rewards/desirable"] = masked_mean(self.beta * r, smask & desirable)
            metrics["rewards/undesirable"] = masked_mean(self.beta * r, smask & ~desirable)
        return LossOutput(loss, metrics)
