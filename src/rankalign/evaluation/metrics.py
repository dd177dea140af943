"""Evaluation metrics (SeAdpra, Yang et al., arXiv:2502.12189, §3.2 and App. A.3-A.4, B.2;
definitions and decisions in docs/methods.md#metrics).

Preference metrics compare a generated answer ``x`` with the candidate list ``R`` of its
prompt through the similarities ``Sim(x, R_i)`` (cosine of sentence embeddings):

* ``Phi(x, R) = argmax_i Sim(x, R_i)`` (SeAdpra eq. 15),
* ``Psi(x, R, k)`` = the indices of the k most similar candidates (eq. 17),
* ``G(k)`` = the first k indices of the gold order (best first),
* ``PrefHit@k = mean_i 1[Phi in G_i(k)]`` (eq. 14),
* ``PrefRecall@k = mean_i |Psi_i(k) ∩ G_i(k)| / k`` (eq. 16; **Decision**,
  docs/methods.md#prefrecall: the paper divides by 2, dividing by k keeps the value in [0, 1].
  A list with M < k responses can reach at most M / k),
* ``SaferHit`` = PrefHit@1 with the safer response as the only gold item.

Ties in ``Sim`` are broken stably (the lower index wins), so every metric is deterministic.

Every mean is reported with a percentile bootstrap confidence interval
(:func:`bootstrap_ci`). Classic metrics: BLEU (sacrebleu) and ROUGE-L (rouge-score)
against the gold best response, and CoSim, a CodeBERTScore-like code similarity (see
:func:`cosim`). Consistency between metrics across runs (App. A.4): Pearson and Spearman
correlations (:func:`metric_consistency`).

Only numpy is imported at module level; scipy, sacrebleu and rouge-score are imported
inside the functions that use them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rankalign.data.record import ListRecord

#: a function that maps texts to L2-normalised embeddings, shape [len(texts), D].
EmbedFn = Callable[[list[str]], np.ndarray]


# ---------------------------------------------------------------------------- helpers
def _as_row(sims: Sequence[float] | np.ndarray, where: str) -> np.ndarray:
    row = np.asarray(sims, dtype=np.float64).reshape(-1)
    if row.size == 0:
        raise ValueError(f"{where}: empty similarity row; every prompt needs at least one candidate")
    if not np.all(np.isfinite(row)):
        raise ValueError(f"{where}: similarity row has NaN/inf values: {row.tolist()}")
    return row


def _check_order(order: Sequence[int], m: int, where: str) -> list[int]:
    out = [int(i) for i in order]
    if sorted(out) != list(range(m)):
        raise ValueError(f"{where}: gold order {out} is not a permutation of 0..{m - 1} "
                         f"(the similarity row has {m} entries)")
    return out


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def top_k_by_similarity(sims: Sequence[float] | np.ndarray, k: int) -> list[int]:
    """``Psi(x, R, k)`` (SeAdpra eq. 17): indices of the k largest similarities, best first.

    The sort is stable on ``-Sim``, so equal similarities keep the lower index first.

    >>> top_k_by_similarity([0.2, 0.9, 0.9, 0.1], 2)
    [1, 2]
    """
    row = _as_row(sims, "similarities")
    order = np.argsort(-row, kind="stable")
    return [int(i) for i in order[: _check_k(k)]]


def _pairs(sims: Sequence[Sequence[float]], gold_orders: Sequence[Sequence[int]]):
    if len(sims) != len(gold_orders):
        raise ValueError(f"got {len(sims)} similarity rows but {len(gold_orders)} gold orders; "
                         "give one gold order per test prompt")
    for i, (s, g) in enumerate(zip(sims, gold_orders)):
        row = _as_row(s, f"example {i}")
        yield row, _check_order(g, row.size, f"example {i}")


# ---------------------------------------------------------------------------- preference metrics
def pref_hit_per_example(
    sims: Sequence[Sequence[float]], gold_orders: Sequence[Sequence[int]], k: int = 1
) -> np.ndarray:
    """Per-example ``1[Phi(x, R) in G(k)]`` (SeAdpra eq. 14-15), shape [N].

    Args:
        sims: one row per test prompt, ``Sim(x, R_i)`` for its M candidates (M may vary).
        gold_orders: one gold order per prompt, best first (a permutation of 0..M-1).
        k: how many gold items count as a hit.
    """
    k = _check_k(k)
    out = [float(top_k_by_similarity(row, 1)[0] in set(g[:k])) for row, g in _pairs(sims, gold_orders)]
    return np.asarray(out, dtype=np.float64)


def pref_recall_per_example(
    sims: Sequence[Sequence[float]], gold_orders: Sequence[Sequence[int]], k: int = 3
) -> np.ndarray:
    """Per-example ``|Psi(x, R, k) ∩ G(k)| / k`` (SeAdpra eq. 16, divided by k: docs/methods.md#prefrecall), shape [N]."""
    k = _check_k(k)
    out = [len(set(top_k_by_similarity(row, k)) & set(g[:k])) / k for row, g in _pairs(sims, gold_orders)]
    return np.asarray(out, dtype=np.float64)


def pref_hit_at_k(sims: Sequence[Sequence[float]], gold_orders: Sequence[Sequence[int]], k: int = 1) -> float:
    """PrefHit@k = mean over prompts of ``1[argmax_i Sim(x, R_i) in G(k)]`` (SeAdpra eq. 14).

    Worked example (two prompts): row 0 ``Sim = [0.1, 0.8, 0.3]`` with gold ``[1, 0, 2]``
    gives ``Phi = 1 in G(1) = {1}`` -> 1; row 1 ``Sim = [0.9, 0.2, 0.4]`` with gold
    ``[2, 0, 1]`` gives ``Phi = 0``, not in ``{2}`` -> 0. PrefHit@1 = 0.5; with k = 2,
    ``G(2) = {2, 0}`` contains 0, so PrefHit@2 = 1.0.

    >>> pref_hit_at_k([[0.1, 0.8, 0.3], [0.9, 0.2, 0.4]], [[1, 0, 2], [2, 0, 1]], k=1)
    0.5
    """
    return float(pref_hit_per_example(sims, gold_orders, k).mean())


def pref_recall_at_k(
    sims: Sequence[Sequence[float]], gold_orders: Sequence[Sequence[int]], k: int = 3
) -> float:
    """PrefRecall@k = mean over prompts of ``|Psi(k) ∩ G(k)| / k`` (SeAdpra eq. 16, /k: docs/methods.md#prefrecall).

    Worked example: ``Sim = [0.1, 0.8, 0.3, 0.5]``, gold ``[0, 1, 2, 3]``, k = 2:
    ``Psi(2) = {1, 3}``, ``G(2) = {0, 1}``, intersection ``{1}`` -> 1/2.

    >>> pref_recall_at_k([[0.1, 0.8, 0.3, 0.5]], [[0, 1, 2, 3]], k=2)
    0.5
    """
    return float(pref_recall_per_example(sims, gold_orders, k).mean())


def safer_hit_per_example(sims: Sequence[Sequence[float]], safer_ids: Sequence[int]) -> np.ndarray:
    """Per-example ``1[argmax_i Sim(x, R_i) == safer]`` (SeAdpra App. B.2, eq. 18), shape [N]."""
    if len(sims) != len(safer_ids):
        raise ValueError(f"got {len(sims)} similarity rows but {len(safer_ids)} safer ids")
    out = []
    for i, (s, safer) in enumerate(zip(sims, safer_ids)):
        row = _as_row(s, f"example {i}")
        if not 0 <= int(safer) < row.size:
            raise ValueError(f"example {i}: safer response id {safer} is out of range 0..{row.size - 1}")
        out.append(float(top_k_by_similarity(row, 1)[0] == int(safer)))
    return np.asarray(out, dtype=np.float64)


def safer_hit(sims: Sequence[Sequence[float]], safer_ids: Sequence[int]) -> float:
    """SaferHit = PrefHit@1 with the safer response as gold (SeAdpra App. B.2, eq. 18; Table 4).

    >>> safer_hit([[0.2, 0.7], [0.6, 0.5]], [1, 1])
    0.5
    """
    return float(safer_hit_per_example(sims, safer_ids).mean())


def similarity_rows(generation_emb: np.ndarray, response_embs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``Sim(x_n, R^n_i)`` for every prompt n: dot products of L2-normalised embeddings.

    Args:
        generation_emb: [N, D] embeddings of the N generated answers.
        response_embs: N arrays [M_n, D], the candidates of each prompt.
    Returns:
        N arrays [M_n] of cosine similarities.
    """
    gen = np.asarray(generation_emb, dtype=np.float64)
    if gen.ndim != 2 or gen.shape[0] != len(response_embs):
        raise ValueError(f"generation embeddings must be [N, D] with N = {len(response_embs)}, got {gen.shape}")
    rows = []
    for n, cand in enumerate(response_embs):
        cand = np.asarray(cand, dtype=np.float64)
        rows.append(_cosine(cand, gen[n]))
    return rows


def _cosine(matrix: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``matrix`` [M, D] with ``vec`` [D] (safe for zero vectors)."""
    num = matrix @ vec  # [M]
    den = np.linalg.norm(matrix, axis=-1) * np.linalg.norm(vec)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


# ---------------------------------------------------------------------------- confidence intervals
@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Draws ``n`` resamples of ``values`` with replacement (numpy ``default_rng(seed)``),
    takes each resample's mean and returns the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    One value (or all equal) gives a zero-width interval at that value.

    Args:
        values: per-example metric values, shape [N], N >= 1.
        n: number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 -> 95 % interval).
        seed: random seed (the interval is deterministic for a given seed).
    Returns:
        ``(low, high)``.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 1:
        raise ValueError(f"n (number of resamples) must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n, x.size))  # [n, N]
    means = x[idx].mean(axis=1)  # [n]
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def estimate(values: Sequence[float] | np.ndarray, *, n: int = 1000, alpha: float = 0.05,
             seed: int = 0) -> Estimate:
    """Mean of ``values`` with its :func:`bootstrap_ci`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    low, high = bootstrap_ci(x, n=n, alpha=alpha, seed=seed)
    return Estimate(mean=float(x.mean()), ci_low=low, ci_high=high, n=int(x.size))


# ---------------------------------------------------------------------------- classic metrics
def bleu_per_example(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Sentence BLEU (sacrebleu defaults, exp smoothing) of each hypothesis, scaled to [0, 1]."""
    import sacrebleu

    _same_length(hypotheses, references)
    return np.asarray([sacrebleu.sentence_bleu(h, [r]).score / 100.0 for h, r in zip(hypotheses, references)],
                      dtype=np.float64)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, one reference each), scaled to [0, 1]."""
    import sacrebleu

    _same_length(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score / 100.0)


def rouge_l_per_example(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (rouge-score, Porter stemming) of each hypothesis against its reference."""
    from rouge_score import rouge_scorer

    _same_length(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.asarray([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)],
                      dtype=np.float64)


def _same_length(a: Sequence[str], b: Sequence[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} hypotheses but {len(b)} references")


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d+)?|\S")


def extract_code_blocks(text: str) -> list[str]:
    """The contents of the fenced (```) code blocks of a Markdown text, in order.

    An unclosed final fence runs to the end of the text (a generation cut at
    ``max_new_tokens`` often ends inside a block).

    >>> extract_code_blocks("Use:\\n```python\\nx = 1\\n```\\nand\\n```\\ny()")
    ['x = 1\\n', 'y()']
    """
    return [m.group(1) for m in _FENCE.finditer(text)]


def code_tokens(code: str) -> list[str]:
    """Split code into identifier, number and single-symbol tokens (whitespace dropped).

    >>> code_tokens("x=foo(1.5)")
    ['x', '=', 'foo', '(', '1.5', ')']
    """
    return _CODE_TOKEN.findall(code)


def code_structure_similarity(hypothesis: str, reference: str) -> float | None:
    """Structural match of code: ``difflib`` ratio ``2 * matches / (|a| + |b|)`` over code tokens.

    The code of a text is the concatenation of its fenced blocks. When the reference has no
    code block the structure is undefined and ``None`` is returned; when only the
    hypothesis lacks fences its whole text is tokenised (small models often forget the
    fences but still write code).

    >>> code_structure_similarity("```\\nx = 1\\n```", "```\\nx = 2\\n```")
    0.6666666666666666
    """
    ref_blocks = extract_code_blocks(reference)
    if not ref_blocks:
        return None
    hyp_blocks = extract_code_blocks(hypothesis)
    hyp_code = "\n".join(hyp_blocks) if hyp_blocks else hypothesis
    a, b = code_tokens(hyp_code), code_tokens("\n".join(ref_blocks))
    if not a and not b:
        return 1.0
    return float(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


def cosim_per_example(
    hypotheses: Sequence[str], references: Sequence[str], embed_fn: EmbedFn, *, structure_weight: float = 0.5
) -> np.ndarray:
    """CoSim, a CodeBERTScore-like code similarity (SeAdpra §3.2; docs/methods.md#cosim), per example in [-1, 1].

    ``CoSim = (1 - w) * cos(E(hyp), E(ref)) + w * struct(hyp, ref)`` with ``w =
    structure_weight`` and ``struct`` = :func:`code_structure_similarity`; when the
    reference holds no code block, ``CoSim = cos(E(hyp), E(ref))``.
    """
    _same_length(hypotheses, references)
    if not 0.0 <= structure_weight <= 1.0:
        raise ValueError(f"structure_weight must be in [0, 1], got {structure_weight}")
    if not hypotheses:
        return np.zeros(0)
    emb_h = np.asarray(embed_fn(list(hypotheses)), dtype=np.float64)
    emb_r = np.asarray(embed_fn(list(references)), dtype=np.float64)
    out = []
    for i, (h, r) in enumerate(zip(hypotheses, references)):
        sem = float(_cosine(emb_r[i][None, :], emb_h[i])[0])
        struct = code_structure_similarity(h, r)
        out.append(sem if struct is None else (1 - structure_weight) * sem + structure_weight * struct)
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------------------- consistency (App. A.4)
def metric_consistency(columns: Mapping[str, Sequence[float]]) -> dict[str, dict[str, dict[str, float]]]:
    """Pearson and Spearman correlation between every pair of metric columns (SeAdpra App. A.4).

    Args:
        columns: metric name -> its value in each run (all columns the same length >= 3),
            e.g. ``{"PrefHit@1": [...], "BLEU": [...]}`` over runs or hyper-parameters.
    Returns:
        ``{"pearson": {a: {b: r}}, "spearman": {a: {b: rho}}}`` — full symmetric matrices;
        ``nan`` where a column is constant (correlation undefined).
    """
    from scipy import stats

    names = list(columns)
    data = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in columns.items()}
    lengths = {k: v.size for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"metric columns differ in length: {lengths}; give one value per run for every metric")
    if names and next(iter(lengths.values())) < 3:
        raise ValueError("correlations need at least 3 runs per metric")
    out: dict[str, dict[str, dict[str, float]]] = {"pearson": {}, "spearman": {}}
    for a in names:
        out["pearson"][a], out["spearman"][a] = {}, {}
        for b in names:
            x, y = data[a], data[b]
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                r = rho = math.nan
            else:
                r = float(stats.pearsonr(x, y)[0])
                rho = float(stats.spearmanr(x, y)[0])
            out["pearson"][a][b], out["spearman"][a][b] = r, rho
    return out


def gold_order(record: ListRecord) -> list[int]:
    """G for a record (docs/methods.md#gold-order): its ``ranking`` when present, else the community order.

    Uses ``record.preference_order("auto")``: ``ranking``, else descending ``scores``,
    else accepted first then votes.
    """
    return list(record.preference_order("auto"))


def order_agreement(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> dict[str, float | int]:
    """Agreement of predicted orders with gold orders (both best first), averaged over lists.

    Kendall tau-b between the positions each order gives to the responses
    (``scipy.stats.kendalltau``), and top-1 agreement (same best response).

    >>> order_agreement([[0, 1, 2], [2, 1, 0]], [[0, 1, 2], [0, 1, 2]])
    {'lists': 2, 'kendall_tau': 0.0, 'top1': 0.5}
    """
    from scipy.stats import kendalltau

    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted orders but {len(gold)} gold orders")
    taus, hits = [], []
    for i, (p, g) in enumerate(zip(predicted, gold)):
        m = len(g)
        p = _check_order(p, m, f"list {i} (predicted)")
        g = _check_order(g, m, f"list {i} (gold)")
        pos_p, pos_g = np.empty(m), np.empty(m)
        pos_p[p], pos_g[g] = np.arange(m), np.arange(m)
        tau = kendalltau(pos_p, pos_g).statistic
        if not math.isnan(tau):
            taus.append(float(tau))
        hits.append(float(p[0] == g[0]))
    return {
        "lists": len(gold),
        "kendall_tau": float(np.mean(taus)) if taus else math.nan,
        "top1": float(np.mean(hits)) if hits else math.nan,
    }


def gold_problem(record: ListRecord) -> str | None:
    """Why ``record`` has no unambiguous gold order (docs/methods.md#gold-order), or ``None``.

    :func:`gold_order` always returns an order: without ``ranking``, ``scores`` and
    community attributes it falls back to the input order, and tied scores or tied votes
    are broken by position. Metrics that rank against the gold order use this check to
    count such records as skipped instead of scoring them against an arbitrary order.

    Returns:
        ``None`` when the gold order is defined and strict; else a short reason:
        ``"no gold order"`` (no ranking, scores, votes or accepted flag), ``"tied scores"``
        or ``"tied community order"`` (equal votes, neither accepted).

    >>> from rankalign.data.record import ListRecord, Response
    >>> gold_problem(ListRecord("q", "p", [Response("a", {"votes": 2}), Response("b", {"votes": 2})]))
    'tied community order'
    """
    m = record.num_responses
    if record.ranking is not None:
        return None
    if record.scores is not None:
        return "tied scores" if len(set(record.scores)) < m else None
    if not any("votes" in r.attributes or "accepted" in r.attributes for r in record.responses):
        return "no gold order"
    keys = []
    for r in record.responses:
        votes = r.attributes.get("votes")
        keys.append((bool(r.attributes.get("accepted")), None if votes is None else float(votes)))
    return "tied community order" if len(set(keys)) < m else None
