"""APDF matrices of chosen lists, recomputed for the report (SeAdpra, arXiv:2502.12189, Fig. 7 and 13).

``rankalign rank`` stores per record the multi-APDF ``apdf`` (Delta_M) and its dynamic ranking
``dynamic_ranking``, not the single-attribute matrices; they are recomputed here from the
record with the same functions the ranking uses (:func:`rankalign.ranking.record_gains`,
:func:`~rankalign.ranking.apdf`, :func:`~rankalign.ranking.multi_apdf`), and their product is
checked against the stored ``apdf`` so a report drawn with other settings than the ranking says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankalign.errors import UserError
from rankalign.ranking import (
    RankingConfig,
    apdf,
    arank_from_scores,
    compute_phi,
    dynamic_ranking,
    input_order,
    multi_apdf,
    record_gains,
)

#: matrix titles, as in SeAdpra's figures
_SYMBOL = {"semantic": "Delta_Se (semantic)", "popularity": "Delta_Po (popularity)"}


@dataclass
class ApdfView:
    """One list's matrices.

    Attributes:
        record_id: the record's id.
        prompt: its prompt (for the caption; escaped where rendered).
        panels: ``(title, [M, M], order)`` per attribute, then the multi-APDF; ``order`` is
            the dynamic ranking computed from that matrix alone (same ARank).
        stored_order: the record's ``dynamic_ranking`` (``None`` when absent).
        gold: the record's gold order (``ranking`` or the community order).
        matches_stored: the recomputed Delta_M equals the stored ``apdf`` (``None``: none stored).
    """

    record_id: str
    prompt: str
    panels: list[tuple[str, np.ndarray, list[int]]] = field(default_factory=list)
    stored_order: list[int] | None = None
    gold: list[int] | None = None
    matches_stored: bool | None = None


def apdf_views(records: Sequence[Any], ids: Sequence[str], config: RankingConfig, *,
               encoder: Any = None, source: str = "--ranked-data") -> list[ApdfView]:
    """Recompute each chosen list's single-attribute and multi-APDF matrices.

    Args:
        records: the ranked records (:class:`rankalign.data.record.ListRecord`).
        ids: the record ids to draw.
        config: the ranking settings (attributes, half life, embedding model).
        encoder: an embedding model object (tests inject one); default ``config.embedding_model``.
    Raises:
        UserError: an id not in the records (the message lists a few that are).
    """
    by_id = {str(r.id): r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing:
        some = ", ".join(list(by_id)[:5])
        raise UserError(f"--apdf-lists: id(s) {missing} not in {source} (its first ids: {some})")
    chosen = [by_id[i] for i in ids]
    phi = None
    if config.uses_semantic:
        phi = compute_phi(chosen, encoder if encoder is not None else config.embedding_model,
                          batch_size=config.batch_size, show_progress=False)
    views = []
    for k, rec in enumerate(chosen):
        m = rec.num_responses
        mask = np.ones(m, dtype=bool)
        arank = arank_from_scores(phi[k], mask) if phi is not None else input_order(mask)
        singles = []
        for name in config.attributes:
            gains = record_gains(rec, name, phi=None if phi is None else phi[k],
                                 half_life_days=float(config.half_life_days), reference_date=config.reference)
            singles.append((name, apdf(gains, position_source=config.position_source)))
        delta = multi_apdf([mat for _, mat in singles])
        view = ApdfView(record_id=str(rec.id), prompt=rec.prompt, stored_order=rec.dynamic_ranking,
                        gold=list(rec.preference_order("auto")))
        for name, mat in singles:
            view.panels.append((_SYMBOL.get(name, f"Delta_{name}"), mat, _order(mat, arank)))
        view.panels.append(("Delta_M (multi-APDF)", delta, _order(delta, arank)))
        if rec.apdf is not None:
            view.matches_stored = bool(np.allclose(np.asarray(rec.apdf, dtype=float), delta, rtol=1e-6, atol=1e-12))
        views.append(view)
    return views


def _order(mat: np.ndarray, arank: np.ndarray) -> list[int]:
    return [int(x) for x in dynamic_ranking(mat, arank)]
