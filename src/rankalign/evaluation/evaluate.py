"""Score generated answers against list-wise records (docs/methods.md#metrics) and run the whole evaluation.

:func:`score_generations` takes one generated answer per record and computes

* ``PrefHit@k`` and ``PrefRecall@k`` for each requested k (similarities = cosine of
  sentence embeddings of the answer and of each candidate; gold = the record's ``ranking``,
  else the community order, see :func:`rankalign.evaluation.metrics.gold_order`),
* ``BLEU`` (sentence BLEU, mean) and ``corpus_BLEU``, ``ROUGE-L`` and ``CoSim`` against the
  gold best response,
* ``SaferHit`` (PrefHit@1 with the safer response as gold) when every record carries
  ``meta.safer_id`` (the PKU-SafeRLHF loader writes it),

each mean with a bootstrap confidence interval. :func:`evaluate_model` generates the
answers first. The embedder is a parameter (a name/path, an encoder object, or any
function ``list[str] -> [N, D]``), so tests inject a tiny fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord
from rankalign.evaluation import metrics as M

#: the paper's headline settings: PrefHit@1 and PrefRecall@3 (SeAdpra, arXiv:2502.12189, App. E.1)
DEFAULT_KS: tuple[int, ...] = (1, 3)


@dataclass
class EvalResult:
    """Metric estimates and per-example details of one evaluation.

    Attributes:
        metrics: name -> ``{"mean", "ci_low", "ci_high", "n"}`` (bootstrap CI).
        extra: scalar figures without a CI (``corpus_BLEU``).
        examples: one dict per record: id, generation, gold order, similarities, Phi, Psi,
            per-example metric values.
    """

    metrics: dict[str, dict[str, float | int]]
    extra: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, name: str) -> float:
        return float(self.metrics[name]["mean"])


def make_embed_fn(model: Any = None, *, show_progress: bool = False, use_cache: bool = True) -> M.EmbedFn:
    """An ``EmbedFn`` from a model name/path (``None`` = all-MiniLM-L6-v2), an encoder object
    with ``encode``/``model_id`` (see :mod:`rankalign.ranking.embeddings`), or a callable
    ``list[str] -> [N, D]`` (returned L2-normalised)."""
    from rankalign.ranking.embeddings import embed_texts, l2_normalise

    if callable(model) and not hasattr(model, "encode"):
        fn = model
        return lambda texts: l2_normalise(np.asarray(fn(list(texts)), dtype=np.float32))
    return lambda texts: embed_texts(list(texts), model, show_progress=show_progress, use_cache=use_cache)


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,3"`` -> ``(1, 3)``; every k must be a positive integer."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        try:
            k = int(str(item).strip())
        except ValueError:
            raise ValueError(f"--k: {item!r} is not an integer; give a comma-separated list like 1,3") from None
        if k < 1:
            raise ValueError(f"--k: {k} is not positive; every k must be >= 1")
        if k not in out:
            out.append(k)
    if not out:
        raise ValueError("--k is empty; give a comma-separated list like 1,3")
    return tuple(out)


def score_generations(
    records: Sequence[ListRecord],
    generations: Sequence[str],
    embed_fn: M.EmbedFn | Callable[[list[str]], np.ndarray],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    cosim_structure_weight: float = 0.5,
) -> EvalResult:
    """Compute every metric of docs/methods.md#metrics for one answer per record.

    Args:
        records: the test records (each with M >= 2 candidates).
        generations: one generated answer per record, same order.
        embed_fn: texts -> L2-normalised embeddings ``[N, D]``.
        ks: the k of PrefHit@k / PrefRecall@k.
        n_bootstrap, alpha, seed: bootstrap CI settings (:func:`metrics.bootstrap_ci`).
        cosim_structure_weight: weight of the code-structure part of CoSim.
    Returns:
        An :class:`EvalResult`.
    """
    if len(records) != len(generations):
        raise ValueError(f"{len(records)} records but {len(generations)} generations; give one answer per record")
    if not records:
        raise ValueError("no records to evaluate")
    ks = parse_ks(ks)
    gold = [M.gold_order(r) for r in records]
    sims = _similarities(records, generations, embed_fn)  # N rows [M_n]
    per = _per_example(records, generations, embed_fn, sims, gold, ks, cosim_structure_weight)
    estimates = {name: M.estimate(v, n=n_bootstrap, alpha=alpha, seed=seed).to_dict() for name, v in per.items()}
    refs = [r.responses[g[0]].text for r, g in zip(records, gold)]
    extra = {"corpus_BLEU": M.corpus_bleu(list(generations), refs)}
    return EvalResult(metrics=estimates, extra=extra,
                      examples=_examples(records, generations, gold, sims, per, max(ks)))


def _similarities(records: Sequence[ListRecord], generations: Sequence[str],
                  embed_fn: M.EmbedFn | Callable[[list[str]], np.ndarray]) -> list[np.ndarray]:
    """Sim(x, R_i): per record, the cosine of its generation with each candidate (one embedding call)."""
    cand_texts = [resp.text for r in records for resp in r.responses]
    all_emb = np.asarray(embed_fn(list(generations) + cand_texts), dtype=np.float64)
    n = len(records)
    gen_emb, rest = all_emb[:n], all_emb[n:]
    cand_emb: list[np.ndarray] = []
    pos = 0
    for r in records:
        cand_emb.append(rest[pos:pos + r.num_responses])
        pos += r.num_responses
    return M.similarity_rows(gen_emb, cand_emb)


def _per_example(records: Sequence[ListRecord], generations: Sequence[str],
                 embed_fn: M.EmbedFn | Callable[[list[str]], np.ndarray], sims: list[np.ndarray],
                 gold: list[list[int]], ks: Sequence[int], cosim_structure_weight: float) -> dict[str, np.ndarray]:
    """Every metric's per-example values ``[N]``: PrefHit@k, PrefRecall@k, BLEU, ROUGE-L, CoSim
    against the gold best response, and SaferHit when every record names its safer response."""
    per: dict[str, np.ndarray] = {}
    for k in ks:
        per[f"PrefHit@{k}"] = M.pref_hit_per_example(sims, gold, k)
    for k in ks:
        per[f"PrefRecall@{k}"] = M.pref_recall_per_example(sims, gold, k)
    refs = [r.responses[g[0]].text for r, g in zip(records, gold)]
    hyps = list(generations)
    per["BLEU"] = M.bleu_per_example(hyps, refs)
    per["ROUGE-L"] = M.rouge_l_per_example(hyps, refs)
    per["CoSim"] = M.cosim_per_example(hyps, refs, embed_fn, structure_weight=cosim_structure_weight)
    safer = [r.meta.get("safer_id") for r in records]
    if all(isinstance(x, int) and not isinstance(x, bool) for x in safer):  # PKU-SafeRLHF (SeAdpra App. B)
        per["SaferHit"] = M.safer_hit_per_example(sims, safer)  # type: ignore[arg-type]
    return per


def _examples(records: Sequence[ListRecord], generations: Sequence[str], gold: list[list[int]],
              sims: list[np.ndarray], per: dict[str, np.ndarray], kmax: int) -> list[dict[str, Any]]:
    """One row per record for generations.jsonl: the answer, gold order, similarities, Phi, Psi_k
    and every metric's value for this example."""
    return [{
        "id": r.id,
        "generation": generations[i],
        "gold_order": gold[i],
        "similarities": [round(float(s), 6) for s in sims[i]],
        "phi": M.top_k_by_similarity(sims[i], 1)[0],
        "psi": M.top_k_by_similarity(sims[i], min(kmax, r.num_responses)),
        **{name: float(v[i]) for name, v in per.items()},
    } for i, r in enumerate(records)]


def evaluate_model(
    model: Any,
    tokenizer: Any,
    records: Sequence[ListRecord],
    embed_fn: M.EmbedFn,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    batch_size: int = 4,
    show_progress: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> EvalResult:
    """Generate an answer for every record's prompt, then :func:`score_generations`."""
    from rankalign.evaluation.generate import generate_responses

    generations = generate_responses(
        model, tokenizer, [r.prompt for r in records], max_new_tokens=max_new_tokens,
        num_beams=num_beams, batch_size=batch_size, show_progress=show_progress,
    )
    return score_generations(records, generations, embed_fn, ks=ks, n_bootstrap=n_bootstrap, seed=seed)
