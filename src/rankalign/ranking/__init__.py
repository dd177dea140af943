"""Attributes, APDF and the self-supervised dynamic ranking of SeAdpra.

SeAdpra: Yang et al., "Self-supervised Attribute-aware Dynamic Preference Ranking
Alignment", arXiv:2502.12189, §2.2; formulas and decisions in docs/methods.md#seadpra.

Import needs only numpy; the embedding model is loaded lazily.

>>> from rankalign.ranking import RankingConfig, rank_records, ranking_agreement
"""

from rankalign.ranking.apdf import (
    POSITION_SOURCES,
    apdf,
    arank_from_scores,
    dynamic_ranking,
    input_order,
    multi_apdf,
    positions_from_gains,
)
from rankalign.ranking.attributes import (
    BUILTIN_ATTRIBUTES,
    ages_in_days,
    popularity_gain,
    record_gains,
    semantic_gain,
    time_decay,
)
from rankalign.ranking.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    embed_texts,
    load_embedder,
    resolve_embedding_model,
)
from rankalign.ranking.rank import RankingConfig, compute_phi, rank_records, rankable, ranking_agreement

__all__ = [
    "BUILTIN_ATTRIBUTES",
    "DEFAULT_EMBEDDING_MODEL",
    "POSITION_SOURCES",
    "RankingConfig",
    "ages_in_days",
    "apdf",
    "arank_from_scores",
    "compute_phi",
    "dynamic_ranking",
    "embed_texts",
    "input_order",
    "load_embedder",
    "multi_apdf",
    "popularity_gain",
    "positions_from_gains",
    "rank_records",
    "rankable",
    "ranking_agreement",
    "record_gains",
    "resolve_embedding_model",
    "semantic_gain",
    "time_decay",
]
