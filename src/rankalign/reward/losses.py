"""Losses of a scalar reward model trained on lists (docs/evaluation.md#reward-models).

Both take the rewards of each list in *sorted* space, best first (``s [B, M]``, position 0
is the best response; ``smask [B, M]`` is False at padded positions), and return one loss
per list ``[B]``; the trainer takes the mean over the lists of a micro-batch.

* Bradley-Terry on the pairs of each list (Bradley & Terry 1952; the reward-model loss of
  Ouyang et al., arXiv:2203.02155, eq. 1, and of DPO's derivation, Rafailov et al.,
  arXiv:2305.18290, eq. 2): ``mean over pairs (p above q) of -log sigmoid(s_p - s_q)``.
* Plackett-Luce over the whole list (Plackett 1975; the list-wise form used by PRO, Song
  et al., arXiv:2306.17492, eq. 4, and SeAdpra, arXiv:2502.12189, eq. 24):
  ``(1 / (n-1)) sum_{k=0}^{n-2} (logsumexp_{j >= k} s_j - s_k)`` — the negative
  log-likelihood of the gold order, averaged over its n - 1 choices so that its scale
  matches Bradley-Terry's per-pair mean. At M = 2 both are ``-log sigmoid(s_0 - s_1)``.

Imports torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankalign.losses._util import check_pair_mode, pair_mask, pair_mean, plackett_luce_nll, stage_mask

RM_LOSSES = ("bt", "pl")


def bt_pairs(smask: Tensor, pair_mode: str, labels: Tensor | None = None) -> Tensor:
    """``[B, M, M]`` the ordered pairs (p above q) Bradley-Terry trains on.

    ``pair_mode`` ``'1vso'``: the best against each other response; ``'pw'``: every pair.
    With ``labels [B, M]`` (sorted, e.g. scores), pairs whose labels are equal (tied
    ratings) are left out: the gold order does not say which of the two is better.
    """
    pairs = pair_mask(smask, check_pair_mode(pair_mode))  # [B, M, M]
    if labels is not None:
        pairs = pairs & (labels[:, :, None] != labels[:, None, :])
    return pairs


def bradley_terry_loss(s: Tensor, smask: Tensor, pair_mode: str = "1vso", labels: Tensor | None = None) -> Tensor:
    """``[B]`` Bradley-Terry loss: ``mean over pairs (p above q) of -log sigmoid(s_p - s_q)``.

    Args:
        s: ``[B, M]`` rewards, best first (sorted space).
        smask: ``[B, M]`` True at real responses.
        pair_mode: ``'1vso'`` (best vs others) or ``'pw'`` (all ordered pairs).
        labels: ``[B, M]`` sorted labels; pairs with equal labels are skipped (see :func:`bt_pairs`).
    Returns:
        One loss per list (0 for a list without any pair).

    Naive equivalent::

        for b: losses = [-log(sigmoid(s[b,p] - s[b,q])) for p < q < n_b (p == 0 for 1vso)]
               out[b] = mean(losses)
    """
    pairs = bt_pairs(smask, pair_mode, labels)
    diff = s[:, :, None] - s[:, None, :]  # [B, M, M] s_p - s_q
    return pair_mean(-F.logsigmoid(diff), pairs)


def plackett_luce_loss(s: Tensor, smask: Tensor) -> Tensor:
    """``[B]`` Plackett-Luce loss: ``(1/(n-1)) sum_{k=0}^{n-2} (logsumexp_{k <= j < n} s_j - s_k)``.

    The negative log-likelihood of choosing the gold best, then the best of the rest, ...
    (:func:`rankalign.losses._util.plackett_luce_nll`), divided by the number of choices
    ``n - 1`` of each list (n its length).

    Naive equivalent::

        for b: out[b] = mean(logsumexp(s[b, k:n_b]) - s[b, k] for k in range(n_b - 1))
    """
    stages = stage_mask(smask).sum(dim=1).clamp(min=1).to(s.dtype)  # [B] n - 1
    return plackett_luce_nll(s, smask) / stages


def reward_model_loss(name: str, s: Tensor, smask: Tensor, *, pair_mode: str = "1vso",
                      labels: Tensor | None = None) -> Tensor:
    """``[B]`` the loss ``name`` (``'bt'`` or ``'pl'``) of sorted rewards ``s``."""
    if name == "bt":
        return bradley_terry_loss(s, smask, pair_mode, labels)
    if name == "pl":
        return plackett_luce_loss(s, smask)
    raise ValueError(f"rm_loss must be one of {list(RM_LOSSES)} (got {name!r})")


@torch.no_grad()
def reward_metrics(s: Tensor, smask: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
    """Detached training metrics of sorted rewards ``s [B, M]`` (TRL's reward-model names).

    ``rewards/chosen`` (the best's reward), ``rewards/rejected`` (mean of the others'),
    ``rewards/margins`` (their difference), ``rewards/accuracies`` (best above each other
    response) and ``ranking/accuracy`` (every untied ordered pair in the right order).
    """
    s = s.detach()
    rest = smask.clone()
    rest[:, 0] = False
    n_rest = rest.sum(1).clamp(min=1).to(s.dtype)
    rejected = torch.where(rest, s, torch.zeros_like(s)).sum(1) / n_rest  # [B]
    right = (s[:, :, None] > s[:, None, :]).to(s.dtype)  # [B, M, M]
    return {
        "rewards/chosen": s[:, 0].mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (s[:, 0] - rejected).mean(),
        "rewards/accuracies": pair_mean(right, bt_pairs(smask, "1vso", labels)).mean(),
        "ranking/accuracy": pair_mean(right, bt_pairs(smask, "pw", labels)).mean(),
    }
