"""Supervised fine-tuning on the best response of each list (docs/methods.md#sft)."""

from __future__ import annotations

from rankalign.losses._util import list_metrics
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.registry import register_loss


@register_loss("sft")
class SFTLoss(ListwiseLoss):
    """Token-mean negative log-likelihood of the top-ranked response.

    Paper: SeAdpra (Yang et al., arXiv:2502.12189) eq. 6 (the Perceptual Alignment term, used alone
    as the SFT baseline).

    Formula: ``L = -avg(y_1) = -logp(y_1) / |y_1|``, y_1 = the best response (``order[:, 0]``).

    Shapes: ``batch.policy``/``batch.lengths`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: best = order[0]; loss = -policy[best] / lengths[best]``.
    """

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        avg = batch.sorted(batch.avg)  # [B, M] best first
        loss = -avg[:, 0]  # [B]
        return LossOutput(loss, list_metrics(batch, avg))
