"""Held-out ranking accuracy of a policy: does the model order unseen lists like the gold order?

No generation is needed. Every response of a test list is scored by the policy, in one
forward pass per (prompt, response) sequence through the training path
(:func:`rankalign.training.logps.encode_list`, :class:`~rankalign.training.logps.ListCollator`,
:func:`~rankalign.training.logps.list_logps`), and the order of those scores is compared with
the gold order (:func:`rankalign.evaluation.metrics.gold_order`):

* reference-model methods (DPO family, IPO, KTO, LiPO, SPO): the implicit reward
  ``r(y) = beta * (logp_pi(y) - logp_ref(y))`` (DPO, Rafailov et al., arXiv:2305.18290, eq. 5),
  the quantity their losses push apart;
* reference-free methods (SeAdpra, PRO, RRHF, SLiC, SFT) and runs without a reference:
  the length-normalised log-prob ``logp_pi(y) / |y|`` (PRO, Song et al., arXiv:2306.17492,
  eq. 6; SeAdpra, arXiv:2502.12189, eq. 12).

Per list, with scores ``s`` [M], gold order ``g`` (best first) and gold relevance
``rel_i = M - 1 - position of i in g`` (the best gets M-1, the worst 0):

* **Kendall tau** (tau-b): ``(C - D) / sqrt(P * (P - T_s))`` over the ``P = M(M-1)/2`` pairs,
  ``C``/``D`` the pairs ``s`` orders like/unlike the gold, ``T_s`` the pairs tied in ``s``
  (the gold has no ties). 0 when every score is equal (no order at all).
* **top-1 accuracy**: ``1[argmax_i s_i == g_0]`` (a tie in the maximum goes to the lower index,
  as in PrefHit).
* **pairwise accuracy**: the fraction of the ``P`` gold pairs whose better response scores
  higher; a tie counts 1/2. Without ties it equals ``(1 + tau) / 2``.
* **NDCG**: ``DCG / IDCG`` with gain ``2^rel - 1`` and discount ``1 / log2(rank + 1)``
  (rank 1 = first) over the whole list, the predicted order being ``s`` sorted descending
  (stable: ties keep the lower index first) — Järvelin & Kekäläinen's NDCG with the graded
  gain of Burges et al. (LambdaRank), also LiPO's (Liu et al., arXiv:2402.01878, eq. 6).

Each mean over lists comes with a percentile bootstrap CI (:func:`metrics.estimate`). A list
whose gold order is missing or tied (:func:`metrics.gold_problem`) is skipped and counted
by reason.

Naive equivalent of the per-list metrics (what the tests check against)::

    pairs = [(g[a], g[b]) for a in range(M) for b in range(a + 1, M)]   # better, worse
    pairwise = mean(1 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0 for i, j in pairs)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord
from rankalign.evaluation import metrics as M

#: metric names, as metrics.json, ranking.jsonl and the training log (``eval_`` prefixed) show them
KENDALL, TOP1, PAIRWISE, NDCG = ("ranking/kendall_tau", "ranking/top1", "ranking/pairwise_accuracy",
                                 "ranking/ndcg")
RANKING_METRICS: tuple[str, ...] = (KENDALL, TOP1, PAIRWISE, NDCG)

#: what the scores are: the implicit reward, or the length-normalised log-prob
IMPLICIT_REWARD, AVG_LOGP = "implicit_reward", "avg_logp"


# ---------------------------------------------------------------------------- per-list metrics
def _relevance(gold: Sequence[int]) -> np.ndarray:
    """``rel [M]`` in storage order: M-1 for the gold best, 0 for the worst."""
    m = len(gold)
    rel = np.empty(m, dtype=np.float64)
    rel[np.asarray(gold, dtype=np.int64)] = np.arange(m - 1, -1, -1, dtype=np.float64)
    return rel


def predicted_order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices by descending score, best first; ties keep the lower index first.

    >>> predicted_order([0.1, 0.5, 0.5, -1.0])
    [1, 2, 0, 3]
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def list_ranking_metrics(scores: Sequence[float] | np.ndarray, gold: Sequence[int]) -> dict[str, float]:
    """Kendall tau-b, top-1, pairwise accuracy and NDCG of one list (definitions in the module docstring).

    Args:
        scores: ``[M]`` one score per response, higher = better.
        gold: the gold order, best first, a permutation of ``0..M-1``.
    Returns:
        ``{KENDALL, TOP1, PAIRWISE, NDCG}`` -> value.
    Raises:
        ValueError: sizes differ, ``gold`` is not a permutation, a score is NaN/inf, M < 2.

    >>> list_ranking_metrics([0.3, 0.1, 0.2], [0, 2, 1])[KENDALL]
    1.0
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = s.size
    if m < 2:
        raise ValueError(f"a list needs at least 2 responses to be ranked, got {m}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores hold NaN/inf: {s.tolist()}")
    if sorted(int(i) for i in gold) != list(range(m)):
        raise ValueError(f"gold order {list(gold)} is not a permutation of 0..{m - 1}")
    rel = _relevance(gold)
    iu = np.triu_indices(m, k=1)
    ds = np.sign(s[:, None] - s[None, :])[iu]  # [P] sign of the score difference of each pair
    dg = np.sign(rel[:, None] - rel[None, :])[iu]  # [P] +-1: the gold has no ties
    pairs = ds.size
    tied = int((ds == 0).sum())
    concordant_minus_discordant = float((ds * dg).sum())
    tau = concordant_minus_discordant / math.sqrt(pairs * (pairs - tied)) if tied < pairs else 0.0
    pairwise = float(((ds * dg > 0) + 0.5 * (ds == 0)).sum() / pairs)
    order = predicted_order(s)
    discount = 1.0 / np.log2(np.arange(2, m + 2, dtype=np.float64))  # [M] rank 1..M
    gains = 2.0 ** rel - 1.0
    dcg = float((gains[order] * discount).sum())
    idcg = float((gains[list(gold)] * discount).sum())
    return {KENDALL: float(tau), TOP1: float(order[0] == int(gold[0])), PAIRWISE: pairwise, NDCG: dcg / idcg}


# ---------------------------------------------------------------------------- scores from a policy
def response_scores(
    model: Any,
    tokenizer: Any,
    records: Sequence[ListRecord],
    *,
    ref_model: Any = None,
    adapter_reference: bool = False,
    beta: float = 0.1,
    max_length: int = 512,
    max_prompt_length: int = 256,
    batch_size: int = 2,
    show_progress: bool = False,
) -> tuple[list[np.ndarray], str]:
    """Score every response of every record with the policy (no generation).

    The log-probs come from the training path: each list is tokenised with
    :func:`~rankalign.training.logps.encode_list` (chat template, same truncation as
    training), ``batch_size`` lists are collated by :class:`~rankalign.training.logps.ListCollator`
    and :func:`~rankalign.training.logps.list_logps` returns the summed response log-probs
    ``[B, M]`` and lengths.

    Args:
        model: the policy (a causal LM, or a peft model).
        tokenizer: its tokenizer.
        records: the lists.
        ref_model: the reference model; with it the score is ``beta * (logp_pi - logp_ref)``.
        adapter_reference: use ``model`` with its LoRA adapter disabled as the reference
            (a peft model, or a transformers model with a loaded adapter).
        beta: the implicit reward's inverse temperature (it scales, never reorders).
        max_length, max_prompt_length: truncation, as in training.
        batch_size: lists per forward pass.
        show_progress: tqdm bar over lists.
    Returns:
        ``(scores, kind)``: one ``[M]`` array per record, and :data:`IMPLICIT_REWARD` or
        :data:`AVG_LOGP`.
    """
    import torch
    from tqdm.auto import tqdm

    from rankalign.training.logps import EncodedList, ListCollator, encode_list, list_logps

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kind = IMPLICIT_REWARD if (ref_model is not None or adapter_reference) else AVG_LOGP
    collate = ListCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    models = [m for m in (model, ref_model) if m is not None]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    out: list[np.ndarray] = []
    bar = tqdm(total=len(records), desc="scoring lists", unit="list", disable=not show_progress)
    try:
        for start in range(0, len(records), batch_size):
            items = []
            for rec in records[start:start + batch_size]:
                prompts, responses = encode_list(tokenizer, rec.prompt, [r.text for r in rec.responses],
                                                 max_length=max_length, max_prompt_length=max_prompt_length)
                n = len(responses)
                items.append(EncodedList(prompt_ids=prompts, response_ids=responses, order=list(range(n)),
                                         psi=[0.0] * n))
            batch = {k: v.to(device) for k, v in collate(items).items()}
            with torch.no_grad():
                policy, lengths = list_logps(model, batch)  # [B, M] each
                if ref_model is not None:
                    score = beta * (policy - list_logps(ref_model, batch)[0])
                elif adapter_reference:
                    score = beta * (policy - _adapter_disabled_logps(model, batch))
                else:
                    score = policy / lengths.clamp(min=1).to(policy.dtype)
            score = score.float().cpu().numpy()
            for row, it in enumerate(items):
                out.append(score[row, : len(it.response_ids)].astype(np.float64))
            bar.update(len(items))
    finally:
        bar.close()
        for m, was in zip(models, was_training):
            m.train(was)
    return out, kind


def _adapter_disabled_logps(model: Any, batch: dict[str, Any]) -> Any:
    """``list_logps`` of the base model: a peft model's ``disable_adapter()`` context, or a
    transformers model with a loaded adapter switched off and on again."""
    from rankalign.training.logps import list_logps

    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            return list_logps(model, batch)[0]
    if getattr(model, "_hf_peft_config_loaded", False):  # from_pretrained on an adapter folder
        model.disable_adapters()
        try:
            return list_logps(model, batch)[0]
        finally:
            model.enable_adapters()
    raise ValueError("adapter_reference=True needs a model with a LoRA adapter (peft); give ref_model instead")


# ---------------------------------------------------------------------------- whole evaluation
@dataclass
class RankingResult:
    """Held-out ranking accuracy of one set of scores.

    Attributes:
        metrics: name -> ``{"mean", "ci_low", "ci_high", "n"}`` (bootstrap CI over lists);
            empty when every list was skipped.
        examples: one row per scored list: id, gold and predicted order, scores, the four values.
        skipped: reason -> number of lists skipped (missing or tied gold order).
        kind: what the scores are (:data:`IMPLICIT_REWARD` or :data:`AVG_LOGP`).
        description: how they were obtained, in words (which reference; set by the caller).
    """

    metrics: dict[str, dict[str, float | int]]
    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    kind: str = AVG_LOGP
    description: str = ""

    def skipped_summary(self) -> str:
        """``"skipped 3 list(s): 2 tied community order, 1 no gold order"`` or ``""``."""
        if not self.skipped:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"skipped {sum(self.skipped.values())} list(s): {parts}"


def gold_split(records: Sequence[ListRecord]) -> tuple[list[int], dict[str, int]]:
    """``(indices of the records with a strict gold order, reason -> count of the others)``."""
    keep: list[int] = []
    skipped: Counter[str] = Counter()
    for i, rec in enumerate(records):
        reason = M.gold_problem(rec)
        if reason is None:
            keep.append(i)
        else:
            skipped[reason] += 1
    return keep, dict(skipped)


def ranking_accuracy(
    records: Sequence[ListRecord],
    scores: Sequence[Sequence[float] | np.ndarray],
    *,
    kind: str = AVG_LOGP,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> RankingResult:
    """The four ranking metrics of ``scores`` against each record's gold order, with CIs.

    Args:
        records: the lists.
        scores: one ``[M]`` score array per record (higher = better).
        kind: what the scores are (stored in the result).
        n_bootstrap, alpha, seed: bootstrap CI settings (:func:`metrics.estimate`).
    Returns:
        :class:`RankingResult`; lists without a strict gold order are counted in ``skipped``.
    """
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} score rows; give one row per record")
    keep, skipped = gold_split(records)
    per: dict[str, list[float]] = {name: [] for name in RANKING_METRICS}
    examples = []
    for i in keep:
        rec, s = records[i], np.asarray(scores[i], dtype=np.float64)
        if s.size != rec.num_responses:
            raise ValueError(f"record id={rec.id!r}: {rec.num_responses} responses but {s.size} scores")
        gold = M.gold_order(rec)
        values = list_ranking_metrics(s, gold)
        for name, v in values.items():
            per[name].append(v)
        examples.append({"id": rec.id, "gold_order": gold, "predicted_order": predicted_order(s),
                         "scores": [round(float(x), 6) for x in s], **values})
    estimates = ({name: M.estimate(v, n=n_bootstrap, alpha=alpha, seed=seed).to_dict() for name, v in per.items()}
                 if keep else {})
    return RankingResult(metrics=estimates, examples=examples, skipped=skipped, kind=kind)


def evaluate_ranking(
    model: Any,
    tokenizer: Any,
    records: Sequence[ListRecord],
    *,
    ref_model: Any = None,
    adapter_reference: bool = False,
    beta: float = 0.1,
    max_length: int = 512,
    max_prompt_length: int = 256,
    batch_size: int = 2,
    show_progress: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> RankingResult:
    """Score the lists that have a strict gold order (:func:`response_scores`), then :func:`ranking_accuracy`.

    Lists without one are never run through the model; they are counted in ``skipped``.
    """
    keep, skipped = gold_split(records)
    kept = [records[i] for i in keep]
    kind = IMPLICIT_REWARD if (ref_model is not None or adapter_reference) else AVG_LOGP
    scores: list[np.ndarray] = []
    if kept:
        scores, kind = response_scores(model, tokenizer, kept, ref_model=ref_model,
                                       adapter_reference=adapter_reference, beta=beta, max_length=max_length,
                                       max_prompt_length=max_prompt_length, batch_size=batch_size,
                                       show_progress=show_progress)
    result = ranking_accuracy(kept, scores, kind=kind, n_bootstrap=n_bootstrap, seed=seed)
    result.skipped = skipped
    return result


# ---------------------------------------------------------------------------- during training
def batch_ranking_metrics(scores: Any, order: Any, mask: Any) -> dict[str, Any]:
    """Means over the lists of a batch of the four ranking metrics, as 0-d tensors (trainer eval step).

    Args:
        scores: ``[B, M]`` per-response scores in storage order (the implicit reward
            ``beta * ratio``, or the mean token log-prob without a reference model).
        order: ``[B, M]`` the target order, best first (the first ``m_b`` entries of row b).
        mask: ``[B, M]`` True at real responses.
    Returns:
        ``{KENDALL, TOP1, PAIRWISE, NDCG}`` -> tensor (float32); lists with fewer than 2
        responses are left out.
    """
    import torch

    s = scores.detach().float().cpu().numpy()
    o = order.detach().cpu().numpy()
    n = mask.detach().sum(dim=1).cpu().numpy()
    rows = [list_ranking_metrics(s[b, : n[b]], o[b, : n[b]].tolist()) for b in range(s.shape[0]) if n[b] >= 2]
    return {name: torch.tensor(float(np.mean([r[name] for r in rows])) if rows else math.nan)
            for name in RANKING_METRICS}
