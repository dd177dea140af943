"""Evaluation (SeAdpra, Yang et al., arXiv:2502.12189, §3.2 and App. A-B; definitions and
decisions in docs/methods.md#metrics): PrefHit/PrefRecall, SaferHit, BLEU, ROUGE-L, CoSim,
bootstrap confidence intervals and metric consistency; generation and reports.

Import needs only numpy; sacrebleu, rouge-score, scipy and transformers are loaded by the
functions that use them.

>>> from rankalign.evaluation import pref_hit_at_k, pref_recall_at_k, bootstrap_ci
>>> pref_hit_at_k([[0.1, 0.8, 0.3]], [[1, 0, 2]], k=1)
1.0
"""

from rankalign.evaluation.evaluate import (
    DEFAULT_KS,
    EvalResult,
    evaluate_model,
    make_embed_fn,
    parse_ks,
    score_generations,
)
from rankalign.evaluation.generate import generate_responses
from rankalign.evaluation.metrics import (
    Estimate,
    bleu_per_example,
    bootstrap_ci,
    code_structure_similarity,
    corpus_bleu,
    cosim_per_example,
    estimate,
    extract_code_blocks,
    gold_order,
    metric_consistency,
    order_agreement,
    pref_hit_at_k,
    pref_hit_per_example,
    pref_recall_at_k,
    pref_recall_per_example,
    rouge_l_per_example,
    safer_hit,
    safer_hit_per_example,
    similarity_rows,
    top_k_by_similarity,
)

__all__ = [
    "DEFAULT_KS",
    "Estimate",
    "EvalResult",
    "bleu_per_example",
    "bootstrap_ci",
    "code_structure_similarity",
    "corpus_bleu",
    "cosim_per_example",
    "estimate",
    "evaluate_model",
    "extract_code_blocks",
    "generate_responses",
    "gold_order",
    "make_embed_fn",
    "metric_consistency",
    "order_agreement",
    "parse_ks",
    "pref_hit_at_k",
    "pref_hit_per_example",
    "pref_recall_at_k",
    "pref_recall_per_example",
    "rouge_l_per_example",
    "safer_hit",
    "safer_hit_per_example",
    "score_generations",
    "similarity_rows",
    "top_k_by_similarity",
]
