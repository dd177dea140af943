"""Small tensor helpers shared by the loss modules (masking, pairs, labels, metrics).

Everything works in *sorted* space: ``batch.sorted(x)`` puts each list best first, so
position 0 is the best response and positions ``>= n`` (the list's length) are padding.
Computing in sorted space makes every loss invariant to the order in which the
candidates are stored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rankalign.losses.base import ListLogps

PAIR_MODES = ("1vso", "pw")


def clean(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` with padded entries replaced by 0, so NaN/inf padding never reaches a gradient."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def sorted_rewards(batch: ListLogps, beta: float) -> tuple[Tensor, Tensor]:
    """``(sorted_mask [B, M], s [B, M])``: implicit rewards ``beta * ratio`` in best-first order,
    0 at padded candidates (the common start of the reference-model losses)."""
    smask = batch.sorted_mask  # [B, M]
    return smask, clean(beta * batch.sorted(batch.ratio), smask)


def masked_logsumexp(values: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """log sum exp of ``values`` over ``dim`` where ``mask`` is True.

    A slice with no True entry is treated as all-True (its result is meaningless and the
    caller must drop it); this keeps the forward and backward passes free of NaN.
    """
    safe = mask | ~mask.any(dim=dim, keepdim=True)
    return values.masked_fill(~safe, float("-inf")).logsumexp(dim=dim)


def check_pair_mode(pair_mode: str) -> str:
    """Validate ``pair_mode`` ('1vso' or 'pw')."""
    mode = str(pair_mode).lower()
    if mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {list(PAIR_MODES)} (got {pair_mode!r}); "
                         "'1vso' pairs the best response with each other one, 'pw' uses all pairs")
    return mode


def check_positive(name: str, value: float) -> float:
    """Raise a clear ValueError unless ``value`` > 0."""
    if not float(value) > 0:
        raise ValueError(f"{name} must be > 0 (got {value!r})")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    """Raise a clear ValueError unless ``value`` >= 0."""
    if not float(value) >= 0:
        raise ValueError(f"{name} must be >= 0 (got {value!r})")
    return float(value)


def pair_mask(sorted_mask: Tensor, pair_mode: str) -> Tensor:
    """``[B, M, M]`` bool: True at (p, q) when position p is ranked above q and both are real.

    ``'1vso'`` keeps only p = 0 (the best against each other), ``'pw'`` every p < q.
    """
    m = sorted_mask.shape[1]
    idx = torch.arange(m, device=sorted_mask.device)
    above = idx[:, None] < idx[None, :]  # [M, M]
    if pair_mode == "1vso":
        above = above & (idx[:, None] == 0)
    return above[None] & sorted_mask[:, :, None] & sorted_mask[:, None, :]


def pair_mean(values: Tensor, pairs: Tensor) -> Tensor:
    """``[B]`` mean of ``values`` ``[B, M, M]`` over the True entries of ``pairs``."""
    v = torch.where(pairs, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return v.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1).to(values.dtype)


def list_lengths(batch: ListLogps) -> Tensor:
    """``[B]`` number of real candidates per list."""
    return batch.mask.sum(dim=1)


def list_labels(batch: ListLogps) -> Tensor:
    """``[B, M]`` labels psi_i in storage order (docs/methods.md#labels).

    ``batch.labels`` when present (the trainer computes them once, in the data path, with
    :func:`rankalign.data.record.order_labels`); else the same rule in tensor form:
    ``batch.scores`` when present, else ``n - position`` with n the list's own length (so
    padding a list does not change its labels). A test checks that both forms agree.
    """
    if batch.labels is not None:
        return batch.labels.to(batch.policy.dtype)
    if batch.scores is not None:
        return batch.scores.to(batch.policy.dtype)
    b, m = batch.order.shape
    positions = torch.empty_like(batch.order)
    positions.scatter_(1, batch.order, torch.arange(m, device=batch.order.device).expand(b, m))
    n = list_lengths(batch)[:, None]
    return (n - positions).to(batch.policy.dtype)


def sorted_apdf(batch: ListLogps) -> Tensor:
    """``[B, M, M]`` APDF matrix with rows and columns in best-first order."""
    if batch.apdf is None:
        raise ValueError("this loss needs the APDF matrix (ListLogps.apdf is None)")
    b, m = batch.order.shape
    rows = torch.gather(batch.apdf, 1, batch.order[:, :, None].expand(b, m, m))
    return torch.gather(rows, 2, batch.order[:, None, :].expand(b, m, m))


@torch.no_grad()
def list_metrics(batch: ListLogps, score: Tensor, reward: Tensor | None = None) -> dict[str, Tensor]:
    """Cheap detached metrics (TRL names where they exist).

    Args:
        batch: the lists.
        score: ``[B, M]`` sorted per-candidate score whose order is compared with the
            target order for ``ranking/accuracy`` (beta * ratio for reference methods,
            the mean token log-prob otherwise).
        reward: ``[B, M]`` sorted implicit rewards (beta * ratio) for reference methods.

    Returns:
        ``logps/chosen``, ``logps/rejected`` (summed log-probs, best vs the rest),
        ``ranking/accuracy`` (fraction of ordered pairs p above q with score_p > score_q)
        and, with ``reward``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
        ``rewards/accuracies`` (best against each other response).
    """
    smask = batch.sorted_mask
    pol = batch.sorted(batch.policy).detach()
    score = score.detach()
    rest = smask.clone()
    rest[:, 0] = False
    out = {
        "logps/chosen": pol[:, 0].mean(),
        "logps/rejected": _mean_where(pol, rest),
    }
    pairs = pair_mask(smask, "pw")
    out["ranking/accuracy"] = _mean_where((score[:, :, None] > score[:, None, :]).to(score.dtype), pairs)
    if reward is not None:
        reward = reward.detach()
        n_rest = rest.sum(1).clamp(min=1).to(reward.dtype)
        rejected = clean(reward, rest).sum(1) / n_rest  # [B]
        out["rewards/chosen"] = reward[:, 0].mean()
        out["rewards/rejected"] = rejected.mean()
        out["rewards/margins"] = (reward[:, 0] - rejected).mean()
        out["rewards/accuracies"] = _mean_where((reward[:, :1] > reward).to(reward.dtype), rest)
    return out


def _mean_where(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(values.dtype)
    return (clean(values, mask) * m).sum() / m.sum().clamp(min=1)


def plackett_luce_nll(s: Tensor, smask: Tensor) -> Tensor:
    """``[B]`` Plackett-Luce negative log-likelihood of the best-first order of ``s`` ``[B, M]``.

    ``sum_{k=0}^{n-2} (logsumexp_{j >= k, j real} s_j - s_k)`` with n the list's length
    (SeAdpra, arXiv:2502.12189, eq. 24/27); padded positions never enter a sum.
    """
    m = s.shape[1]
    idx = torch.arange(m, device=s.device)
    suffix = (idx[None, :] >= idx[:, None])[None] & smask[:, None, :]  # [B, K, M]: j >= k, j real
    lse = masked_logsumexp(s[:, None, :].expand(-1, m, -1), suffix, dim=-1)  # [B, K]
    return clean(lse - s, stage_mask(smask)).sum(dim=1)


def stage_mask(smask: Tensor) -> Tensor:
    """``[B, M]`` True at positions k with a real position k+1 (stages/rounds 0..n-2)."""
    stage = torch.zeros_like(smask)
    stage[:, :-1] = smask[:, 1:]
    return stage
