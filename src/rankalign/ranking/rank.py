"""Rank lists of records without labels: attributes -> APDF -> multi-APDF -> dynamic ranking.

SeAdpra (Yang et al., arXiv:2502.12189) §2.2, eq. 1-5 and Algorithm 1, with the decisions of
docs/methods.md#seadpra. :func:`rank_records` is what
``rankalign rank`` and the SeAdpra trainer call; it writes ``dynamic_ranking`` (D^R) and
``apdf`` (Delta_M, M x M) into every record.

>>> cfg = RankingConfig(attributes=("semantic", "popularity"))
>>> rank_records(records, cfg)            # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord, parse_datetime
from rankalign.errors import ConfigError
from rankalign.ranking.apdf import (
    POSITION_SOURCES,
    apdf,
    arank_from_scores,
    dynamic_ranking,
    input_order,
    multi_apdf,
)
from rankalign.ranking.attributes import SEMANTIC, check_attribute_names, record_gains
from rankalign.ranking.embeddings import TextEncoder, embed_texts
from rankalign.ranking.rules import PAPER_RULE, get_rule, sort_rule_order

#: ``meta`` key naming the rule that made a record's ``dynamic_ranking`` (no key: the paper's Algorithm 1)
RULE_META = "ranking_rule"
#: lists of one size are ranked together in chunks of this many (bounds memory at B*M*M floats).
CHUNK_LISTS = 4096


@dataclass
class RankingConfig:
    """How lists are ranked (docs/methods.md#seadpra). One dataclass for the Python API, the CLI and YAML.

    Attributes:
        attributes: gains that enter the multi-APDF, e.g. ``("semantic", "popularity")``;
            also ``"scores"`` or any numeric response attribute (``helpfulness``, ``rating``).
        half_life_days: popularity time-decay half life, days (> 0).
        reference_date: fixed "now" for popularity ages (ISO 8601); default: the newest
            response of each list.
        position_source: where l_i of T(i) = 1/ln(l_i+1) comes from: ``"gain"`` (the sort by
            that attribute's gain, docs/methods.md#apdf) or ``"input"`` (the given order).
        embedding_model: sentence-embedding model name or folder; ``None`` = all-MiniLM-L6-v2.
        batch_size: texts per embedding batch.
        rule: how D^R is made (:mod:`rankalign.ranking.rules`): ``algorithm1`` (SeAdpra's
            Algorithm 1, the default) or one of the project's rules (``popularity``, ...).
            The APDF matrices are the same under every rule.
    """

    attributes: tuple[str, ...] = ("semantic", "popularity")
    half_life_days: float = 365.0
    reference_date: str | None = None
    position_source: str = "gain"
    embedding_model: str | None = None
    batch_size: int = 64
    rule: str = PAPER_RULE
    _reference: datetime | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attributes, str):
            self.attributes = tuple(a.strip() for a in self.attributes.split(",") if a.strip())
        problems: list[str] = []
        if not isinstance(self.attributes, (tuple, list)) or not all(isinstance(a, str) and a for a in self.attributes):
            problems.append(f"attributes: must be a list of names, got {self.attributes!r}")
        else:
            self.attributes = tuple(self.attributes)
            if not self.attributes:
                problems.append("attributes: empty; give at least one, e.g. semantic,popularity")
            dup = sorted({a for a in self.attributes if self.attributes.count(a) > 1})
            if dup:
                problems.append(f"attributes: {dup} listed more than once")
        hl = self.half_life_days
        if isinstance(hl, bool) or not isinstance(hl, (int, float)) or not math.isfinite(hl) or hl <= 0:
            problems.append(f"half_life_days: must be a positive number of days, got {hl!r}")
        if self.reference_date is not None:
            try:
                self._reference = parse_datetime(self.reference_date)
            except (ValueError, TypeError):
                problems.append(f"reference_date: unparseable {self.reference_date!r}; use ISO 8601, e.g. 2024-05-01")
        if self.position_source not in POSITION_SOURCES:
            problems.append(f"position_source: must be one of {list(POSITION_SOURCES)}, got {self.position_source!r}")
        if self.embedding_model is not None and (not isinstance(self.embedding_model, str)
                                                 or not self.embedding_model.strip()):
            problems.append(f"embedding_model: must be a name or path, got {self.embedding_model!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size: must be an integer >= 1, got {self.batch_size!r}")
        try:
            self.rule = get_rule(self.rule).name
        except ValueError as exc:
            problems.append(f"rule: {exc}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankingConfig:
        """Build from a mapping (YAML section); unknown keys are an error."""
        names = [f.name for f in fields(cls) if f.init]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError([f"ranking: unknown key(s) {unknown}; valid keys are {names}"])
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_reference", None)
        d["attributes"] = list(self.attributes)
        return d

    @property
    def uses_semantic(self) -> bool:
        """Whether the similarities phi are needed: a semantic attribute, or a rule that reads them."""
        return SEMANTIC in self.attributes or "semantic" in get_rule(self.rule).needs

    @property
    def reference(self) -> datetime | None:
        return self._reference


def compute_phi(
    records: Sequence[ListRecord],
    model: str | TextEncoder | None = None,
    *,
    cache_dir: str | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """phi(i) = cos(E(prompt), E(text_i)) for every record (SeAdpra §2.2.2), one ``[M]`` array each.

    Prompts and texts are embedded as stored, in one pass through :func:`embed_texts` (cached).
    """
    texts: list[str] = []
    for rec in records:
        texts.append(rec.prompt)
        texts.extend(r.text for r in rec.responses)
    if not texts:
        return []
    emb = embed_texts(texts, model, cache_dir=cache_dir, batch_size=batch_size, show_progress=show_progress)
    out: list[np.ndarray] = []
    k = 0
    for rec in records:
        q = emb[k]
        c = emb[k + 1:k + 1 + rec.num_responses]
        out.append(np.clip(c.astype(np.float64) @ q.astype(np.float64), -1.0, 1.0))  # unit rows: dot = cos
        k += 1 + rec.num_responses
    return out


def _chunks_by_size(records: Sequence[ListRecord]) -> Iterator[list[int]]:
    """Indices of records grouped by list size, in chunks of at most CHUNK_LISTS (no padding needed)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        groups[rec.num_responses].append(i)
    for _, idx in sorted(groups.items()):
        for start in range(0, len(idx), CHUNK_LISTS):
            yield idx[start:start + CHUNK_LISTS]


def rankable(records: Sequence[ListRecord], config: RankingConfig, report: Any | None = None) -> list[ListRecord]:
    """Drop records whose non-semantic gains cannot be computed (e.g. no response has votes).

    For ``--on-error skip``: each dropped record is counted in ``report``
    (:class:`rankalign.data.io.LoadReport`) with the message naming record and field.
    """
    from rankalign.data.record import RecordError

    kept: list[ListRecord] = []
    for rec in records:
        try:
            for name in config.attributes:
                if name != SEMANTIC:
                    record_gains(rec, name, half_life_days=float(config.half_life_days),
                                 reference_date=config.reference)
        except RecordError as exc:
            if report is None:
                raise
            report.kept -= 1
            report.skip(f"no {exc.field.rsplit('.', 1)[-1]} for ranking", str(exc))
            continue
        kept.append(rec)
    return kept


def rank_records(
    records: Sequence[ListRecord],
    config: RankingConfig | None = None,
    *,
    encoder: TextEncoder | None = None,
    phi: Sequence[np.ndarray] | None = None,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> list[ListRecord]:
    """Compute D^R and Delta_M for every record, in place, and return the records.

    Per list: gains G_k for each configured attribute -> APDF Delta_k (eq. 1-2) -> Delta_M =
    prod_k Delta_k (eq. 3) -> D^R by Algorithm 1 with ARank = phi descending (input order when
    ``semantic`` is not configured). Lists of equal size are batched together.

    Args:
        records: validated records (M >= 2 each).
        config: default :class:`RankingConfig()`.
        encoder: an embedding model object (tests inject a fake); default ``config.embedding_model``.
        phi: precomputed cosine similarities, one ``[M]`` array per record (skips embedding).
        cache_dir: embedding cache folder (default ``$RANKALIGN_CACHE/embeddings``).
        show_progress: progress bars.
    Returns:
        The same record objects, with ``dynamic_ranking``, ``apdf`` (Delta_M) and
        ``apdf_row_max`` (SeAdpra's W_r per response: the product over attributes of each
        single-attribute matrix's row maximum, SeAdpra eq. 7) set.
    Raises:
        ValueError: an unknown attribute name (the message lists the known ones).
        RecordError: a record lacks what an attribute needs (names record and field).
    """
    cfg = config if config is not None else RankingConfig()
    records = list(records)
    if not records:
        return records
    check_attribute_names(cfg.attributes, records)
    if cfg.uses_semantic and phi is None:
        phi = compute_phi(records, encoder if encoder is not None else cfg.embedding_model,
                          cache_dir=cache_dir, batch_size=cfg.batch_size, show_progress=show_progress)
    if phi is not None and len(phi) != len(records):
        raise ValueError(f"phi has {len(phi)} entries for {len(records)} records")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(records), desc="ranking", unit="list", disable=not show_progress)
    for idx in _chunks_by_size(records):
        _rank_chunk([records[i] for i in idx], cfg, None if phi is None else [phi[i] for i in idx])
        bar.update(len(idx))
    bar.close()
    return records


def _rank_chunk(chunk: list[ListRecord], cfg: RankingConfig, phi: list[np.ndarray] | None) -> None:
    """D^R, Delta_M and W_r for B lists of the same size M, written into the records."""
    m = chunk[0].num_responses
    # gains [B, L, M]
    gains = np.stack([
        np.stack([record_gains(rec, name, phi=None if phi is None else phi[row],
                               half_life_days=float(cfg.half_life_days), reference_date=cfg.reference)
                  for name in cfg.attributes])
        for row, rec in enumerate(chunk)
    ])
    b, n_attr, _ = gains.shape
    single = apdf(gains.reshape(b * n_attr, m), position_source=cfg.position_source)  # [B*L, M, M]
    per_attr = single.reshape(b, n_attr, m, m)  # [B, L, M, M]
    delta = multi_apdf(per_attr)  # [B, M, M]
    row_max = per_attr.max(axis=3).prod(axis=1)  # [B, M]: W_r(i) = prod_k max_j delta_k(i, j), eq. 7
    order = _rule_orders(chunk, cfg, phi, delta)
    for row, rec in enumerate(chunk):
        rec.dynamic_ranking = [int(x) for x in order[row]]
        rec.apdf = [[float(v) for v in r] for r in delta[row]]
        rec.apdf_row_max = [float(v) for v in row_max[row]]
        rec.meta = {**rec.meta, RULE_META: cfg.rule}  # a new dict: shallow copies keep their own


def _rule_orders(chunk: list[ListRecord], cfg: RankingConfig, phi: list[np.ndarray] | None,
                 delta: np.ndarray) -> np.ndarray:
    """``[B, M]`` orders of ``cfg.rule`` (:mod:`rankalign.ranking.rules`) for B lists of one size."""
    rule = get_rule(cfg.rule)
    b, m = delta.shape[0], delta.shape[1]
    if not rule.is_algorithm1:
        return np.array([sort_rule_order(rule, rec, None if phi is None else phi[row],
                                         half_life_days=float(cfg.half_life_days), reference_date=cfg.reference)
                         for row, rec in enumerate(chunk)], dtype=np.int64).reshape(b, m)
    mask = np.ones((b, m), dtype=bool)
    if rule.anchor == "popularity":
        pop = np.stack([record_gains(rec, "popularity", half_life_days=float(cfg.half_life_days),
                                     reference_date=cfg.reference) for rec in chunk])
        tie = np.stack(phi) if phi is not None else np.zeros_like(pop)
        arank = np.stack([np.lexsort((-tie[row], -pop[row])) for row in range(b)]).astype(np.int64)
    elif phi is not None and SEMANTIC in cfg.attributes:
        arank = arank_from_scores(np.stack(phi), mask)
    else:
        arank = input_order(mask)
    return dynamic_ranking(delta, arank, mask)


def rule_orders(records: Sequence[ListRecord], config: RankingConfig,
                phi: Sequence[np.ndarray] | None = None) -> list[list[int]]:
    """The order ``config.rule`` gives every record (best first), without changing the records.

    Args:
        records: validated records.
        config: the ranking settings (``rule``, ``attributes``, ``half_life_days``, ...).
        phi: one ``[M]`` similarity array per record, needed when ``config.uses_semantic``.
    """
    import copy

    rule = get_rule(config.rule)
    if not rule.is_algorithm1:  # a sort: no APDF needed, so no attribute beyond the rule's own
        return [sort_rule_order(rule, rec, None if phi is None else phi[k], half_life_days=float(config.half_life_days),
                                reference_date=config.reference) for k, rec in enumerate(records)]
    shadow = [copy.copy(r) for r in records]  # shallow: rank_records only rebinds three fields
    rank_records(shadow, config, phi=phi, show_progress=False)
    return [list(r.dynamic_ranking or []) for r in shadow]


def order_positions(order: Sequence[int]) -> np.ndarray:
    """``pos[i]`` = the place of response i in ``order`` (0 = best)."""
    pos = np.empty(len(order), dtype=np.int64)
    pos[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return pos


def ranking_agreement(
    records: Sequence[ListRecord],
    orders: Sequence[Sequence[int] | None] | None = None,
    gold: Sequence[Sequence[int] | None] | None = None,
) -> dict[str, Any]:
    """Agreement of predicted orders with the gold ``ranking`` (lists without gold are not counted).

    Kendall tau (scipy.stats.kendalltau on the positions of each response, tau-b; mean over
    lists) and top-1 hit (share of lists whose predicted best is the gold best).

    Args:
        records: records; those with ``ranking`` are scored.
        orders: one predicted order per record (best first); default each record's ``dynamic_ranking``.
        gold: one reference order per record; default each record's ``ranking``.
    Returns:
        ``{"lists", "with_gold", "scored", "kendall_tau", "top1_hit"}``; the two means are
        ``None`` when no list could be scored.
    """
    from scipy.stats import kendalltau

    if orders is not None and len(orders) != len(records):
        raise ValueError(f"{len(orders)} orders for {len(records)} records")
    if gold is not None and len(gold) != len(records):
        raise ValueError(f"{len(gold)} gold orders for {len(records)} records")
    taus: list[float] = []
    hits: list[float] = []
    with_gold = 0
    for k, rec in enumerate(records):
        pred = orders[k] if orders is not None else rec.dynamic_ranking
        ref = gold[k] if gold is not None else rec.ranking
        if ref is None:
            continue
        with_gold += 1
        if pred is None:
            continue
        pred = [int(x) for x in pred]
        if sorted(pred) != list(range(rec.num_responses)):
            raise ValueError(f"record id={rec.id!r}: predicted order {pred} is not a permutation")
        tau = kendalltau(order_positions(pred), order_positions(ref)).statistic
        if not math.isnan(tau):
            taus.append(float(tau))
        hits.append(1.0 if pred[0] == ref[0] else 0.0)
    return {
        "lists": len(records),
        "with_gold": with_gold,
        "scored": len(hits),
        "kendall_tau": float(np.mean(taus)) if taus else None,
        "top1_hit": float(np.mean(hits)) if hits else None,
    }
