"""IPO: Identity Preference Optimisation (Azar et al. 2024) on pairs from the list."""

from __future__ import annotations

from dataclasses import dataclass

from rankalign.losses._util import check_pair_mode, check_positive, clean, list_metrics, pair_mask, pair_mean
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import PairMode, hparam
from rankalign.losses.registry import register_loss


@dataclass
class IPOParams(PairMode):
    """IPO hyper-parameters: ``pair_mode`` (shared) and tau."""

    ipo_tau: float = hparam(0.1, "IPO regularisation tau; the target margin is 1/(2 tau) (Azar et al., "
                                 "arXiv:2310.12036, eq. 17).")


@register_loss("ipo")
class IPOLoss(ListwiseLoss):
    """IPO squared loss (Azar et al., arXiv:2310.12036, eq. 17; a baseline of SPO, OpenReview Ek50sQQI1w).

    Formula: ``h_wl = ratio(y_w) - ratio(y_l)``, ``ratio = logp_pi - logp_ref``;
    ``L = mean over pairs (w, l) of (h_wl - 1/(2 tau))^2``, pairs per ``pair_mode``.
    Metrics use ratio itself as the implicit reward (IPO has no beta).

    Shapes: ``policy``/``reference`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``for each list: r = ratio in best-first order;
    loss = mean((r[a] - r[b] - 1/(2*tau))**2 for (a, b) in pairs)``.
    """

    needs_reference = True

    hyperparams = IPOParams

    def __init__(self, **hparams: float | str) -> None:
        super().__init__(**hparams)
        self.tau = check_positive("ipo_tau", self.hparams.ipo_tau)
        self.pair_mode = check_pair_mode(self.hparams.pair_mode)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask
        r = clean(batch.sorted(batch.ratio), smask)  # [B, M]
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        per_pair = (r[:, :, None] - r[:, None, :] - 1.0 / (2.0 * self.tau)) ** 2  # [B, M, M]
        return LossOutput(pair_mean(per_pair, pairs), list_metrics(batch, r, r))
