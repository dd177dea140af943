"""SPA's self-refinement loss: DPO with label smoothing on the least-confident pairs.

Paper: Kim, Lee, Shin, Kim, "Spread Preference Annotation: Direct Preference Judgment for
Efficient LLM Alignment" (SPA), arXiv:2406.04412, §4.2, eq. 9-12 (docs/methods.md#spa).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rankalign.losses._util import (
    check_nonnegative,
    check_pair_mode,
    check_positive,
    clean,
    list_metrics,
    pair_mask,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import Beta, PairMode, hparam
from rankalign.losses.registry import register_loss


@dataclass
class SPALogps(ListLogps):
    """:class:`ListLogps` plus the de-coupled log-probs SPA's noise detection reads.

    Attributes:
        decoupled: ``[B, M]`` summed log-probs of each response under the de-coupled model
            ``softmax((1 + lambda) h_theta - lambda h_ref)`` per token (SPA eq. 12), computed
            from the policy's and the reference's logits of the same forward passes.
    """

    decoupled: Tensor | None = None


@dataclass
class SPAParams(Beta, PairMode):
    """SPA self-refinement hyper-parameters (Kim et al., arXiv:2406.04412, §4.2 and §5.1)."""

    spa_alpha: float = hparam(0.1, "Label-smoothing weight alpha on the flagged (least-confident) pairs "
                                   "(SPA, arXiv:2406.04412, eq. 10).")
    spa_k: float = hparam(10.0, "K: percent of pairs flagged as possibly mislabelled, the least confident ones "
                                "(SPA eq. 9); 0 flags none (plain DPO), 100 all but the most confident.")
    spa_lambda: float = hparam(0.5, "lambda of the de-coupled noise detection (1 + lambda) h_theta - lambda h_ref "
                                    "(SPA eq. 12); 0 = the policy's own confidence (eq. 9).")
    spa_warmup: float = hparam(0.2, "Fraction of the training steps before label smoothing starts (SPA §5.1: 20%).")


@register_loss("spa")
class SPALoss(ListwiseLoss):
    """SPA self-refinement loss (Kim et al., arXiv:2406.04412, eq. 9-12).

    For each pair (w above l) of a list (``pair_mode``; a list of two is the paper's
    pair), with ``s_i = beta * (logp_pi(y_i) - logp_ref(y_i))`` and ``m = s_w - s_l``:

    - confidence ``c = sigmoid(beta * (logp~(y_w) - logp_ref(y_w)) - beta * (logp~(y_l) -
      logp_ref(y_l)))`` where ``logp~`` is the de-coupled log-prob (eq. 11-12; the batch's
      ``decoupled`` field). Without it (a plain :class:`ListLogps`) ``logp~`` is
      approximated by ``(1 + lambda) logp_pi - lambda logp_ref`` — the same mixture taken
      per sequence, which drops the per-token normalisers of eq. 12;
    - ``tau`` = the K-th percentile (linear interpolation) of the confidences of the
      micro-batch's pairs together with the last ``window`` pairs seen (see below);
      ``z = 1`` when ``c < tau`` and training is past the warm-up (eq. 9), else 0;
    - ``L = mean over pairs of -((1 - alpha z) log sigmoid(m) + alpha z log sigmoid(-m))`` (eq. 10).

    With no pair flagged (K = 0, alpha = 0, or during the warm-up) this is DPO-BT.
    ``c``, ``tau`` and ``z`` carry no gradient.

    Run-time state (not hyper-parameters; the SPA trainer sets them): ``progress`` in
    [0, 1], the fraction of training done (1.0 outside a trainer, so the smoothing is on);
    ``history``, a bounded deque of recent confidences (``maxlen`` 0 by default: the
    percentile is taken over the micro-batch alone). The paper takes tau over the round's
    whole data set; a window of recent pairs approximates that without a second pass.

    Shapes: ``policy``/``reference``/``decoupled`` ``[B, M]`` -> ``loss`` ``[B]``.

    Naive equivalent: ``c = [sigmoid(beta*((1+lam)(r_w - r_l)))] over all pairs; tau =
    percentile(c + history, K); per list: mean(-((1-a z) log sig(m) + a z log sig(-m)))``.
    """

    needs_reference = True
    hyperparams = SPAParams

    def __init__(self, **hparams: float | str) -> None:
        super().__init__(**hparams)
        hp = self.hparams
        self.beta = check_positive("beta", hp.beta)
        self.pair_mode = check_pair_mode(hp.pair_mode)
        self.alpha = check_nonnegative("spa_alpha", hp.spa_alpha)
        self.lam = check_nonnegative("spa_lambda", hp.spa_lambda)
        for name, value, top in (("spa_alpha", hp.spa_alpha, 1.0), ("spa_k", hp.spa_k, 100.0),
                                 ("spa_warmup", hp.spa_warmup, 1.0)):
            if not (math.isfinite(float(value)) and 0.0 <= float(value) <= top):
                raise ValueError(f"{name} must be in [0, {top:g}] (got {value!r})")
        self.k = float(hp.spa_k)
        self.warmup = float(hp.spa_warmup)
        self.progress = 1.0
        self.history: deque[float] = deque(maxlen=0)

    def decoupled_rewards(self, batch: ListLogps) -> Tensor:
        """``[B, M]`` de-coupled implicit rewards ``beta * (logp~ - logp_ref)`` in storage order, detached."""
        decoupled = getattr(batch, "decoupled", None)
        if decoupled is None:  # the sequence-level mixture (the per-token normalisers dropped)
            decoupled = (1 + self.lam) * batch.policy - self.lam * batch.reference
        return (self.beta * (decoupled - batch.reference)).detach()

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask = batch.sorted_mask  # [B, M]
        s = clean(self.beta * batch.sorted(batch.ratio), smask)  # [B, M] best first
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        margin = s[:, :, None] - s[:, None, :]  # [B, M, M]
        with torch.no_grad():
            d = clean(batch.sorted(self.decoupled_rewards(batch)), smask)  # [B, M]
            conf = torch.sigmoid(d[:, :, None] - d[:, None, :])  # [B, M, M]
            flagged, tau = self._flag(conf, pairs)  # [B, M, M] float, scalar
        z = self.alpha * flagged
        per_pair = -((1 - z) * F.logsigmoid(margin) + z * F.logsigmoid(-margin))  # [B, M, M]
        per_pair = torch.where(pairs, per_pair, torch.zeros((), dtype=per_pair.dtype, device=per_pair.device))
        loss = per_pair.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1).to(per_pair.dtype)  # [B]
        metrics = list_metrics(batch, s, s)
        n_pairs = pairs.sum().clamp(min=1)
        metrics["spa/flagged"] = flagged[pairs].sum() / n_pairs
        metrics["spa/confidence"] = conf[pairs].sum() / n_pairs
        metrics["spa/threshold"] = tau
        return LossOutput(loss, metrics)

    def _flag(self, conf: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """``(z [B, M, M] in {0, 1}, tau)``: pairs whose confidence is below the K-th percentile."""
        values = conf[pairs].double()  # [P]
        pool = torch.cat([values, torch.tensor(list(self.history), dtype=torch.float64, device=values.device)])
        if self.history.maxlen:
            self.history.extend(values.tolist())
        if len(pool) == 0:
            return torch.zeros_like(conf), torch.zeros((), dtype=conf.dtype, device=conf.device)
        tau = torch.quantile(pool, self.k / 100.0)
        if not (self.progress >= self.warmup and self.k > 0 and self.alpha > 0):
            return torch.zeros_like(conf), tau.to(conf.dtype)
        z = ((conf.double() < tau) & pairs).to(conf.dtype)
        return z, tau.to(conf.dtype)
