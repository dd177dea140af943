"""Ranking rules: how a list's self-supervised order (the training label D^R) is made.

``algorithm1`` is SeAdpra's (Yang et al., arXiv:2502.12189, Algorithm 1, eq. 5): the largest
remaining multi-APDF distance picks a pair, the one ranked first by ARank (the semantic
order) is appended. It is the default everywhere and the only rule of the paper.

The other rules are references for measuring label quality (``rankalign study``,
docs/study.md) and the project's own extensions, selectable with ``--ranking-rule``; they
never replace the paper's rule silently:

=============================  =========================================================
``algorithm1``                 the paper: Algorithm 1, ARank = semantic similarity (the input
                               order when ``semantic`` is not among the attributes)
``algorithm1_popularity_anchor``  the project's extension: Algorithm 1 on the same multi-APDF,
                               ARank = time-decayed popularity (ties: semantic)
``semantic``                   cos(E(prompt), E(response)) descending
``popularity``                 time-decayed votes log10(votes * 0.5**(age/half_life) + 1) descending
``votes``                      raw votes descending
``length``                     longer response first (characters)
``random``                     a uniform random order, seeded per list id
=============================  =========================================================

Every sort is stable (equal keys keep the input order). The rules that need ``votes`` fail
on data without them (``RankingRule.needs``), with a message naming the record.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord

PAPER_RULE = "algorithm1"


@dataclass(frozen=True)
class RankingRule:
    """One rule: its name, what it reads, and whether it runs Algorithm 1 (and with which anchor).

    Attributes:
        name: the ``--ranking-rule`` value.
        description: one line for tables and ``--help``.
        needs: ``"semantic"`` (prompt/response embeddings) and/or ``"votes"``.
        anchor: for Algorithm 1 rules, the ARank source (``"semantic"`` or ``"popularity"``);
            ``None`` for the sort rules.
        key: for sort rules, ``key(record, phi, gains) -> [M]`` scores, higher first.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    anchor: str | None = None
    key: Callable[[ListRecord, np.ndarray | None, dict[str, np.ndarray]], np.ndarray] | None = None

    @property
    def is_algorithm1(self) -> bool:
        return self.anchor is not None


def _random_key(rec: ListRecord, phi: np.ndarray | None, gains: dict[str, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(str(rec.id).encode("utf-8")))
    return rng.permutation(rec.num_responses).astype(np.float64)


RULES: dict[str, RankingRule] = {r.name: r for r in (
    RankingRule(PAPER_RULE, "SeAdpra Algorithm 1 on the multi-APDF, ARank = semantic similarity (the paper)",
                (), anchor="semantic"),
    RankingRule("algorithm1_popularity_anchor", "Algorithm 1 on the same multi-APDF, ARank = time-decayed "
                "popularity (the project's extension)", ("semantic", "votes"), anchor="popularity"),
    RankingRule("semantic", "semantic similarity of prompt and response, descending", ("semantic",),
                key=lambda rec, phi, g: np.asarray(phi, dtype=np.float64)),
    RankingRule("popularity", "time-decayed votes, descending", ("votes",),
                key=lambda rec, phi, g: g["popularity"]),
    RankingRule("votes", "raw votes, descending", ("votes",), key=lambda rec, phi, g: g["votes"]),
    RankingRule("length", "longer response first (characters)", (),
                key=lambda rec, phi, g: np.array([len(r.text) for r in rec.responses], dtype=np.float64)),
    RankingRule("random", "a uniform random order, seeded per list id", (), key=_random_key),
)}


def rule_key(name: Any) -> str:
    """A rule name as registered: ``Algorithm1-Popularity-Anchor`` -> ``algorithm1_popularity_anchor``."""
    return str(name).strip().lower().replace("-", "_")


def get_rule(name: str) -> RankingRule:
    """The rule called ``name`` (any case, ``-`` for ``_``); raises ``ValueError`` listing the rules."""
    key = rule_key(name)
    if key not in RULES:
        raise ValueError(f"unknown ranking rule {name!r}; choose one of {', '.join(RULES)}")
    return RULES[key]


def has_votes(rec: ListRecord) -> bool:
    """Whether any response of the list carries a ``votes`` value."""
    return any(r.attributes.get("votes") is not None for r in rec.responses)


def sort_order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices by descending score; equal scores keep the lower index first."""
    s = np.asarray(scores, dtype=np.float64)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def sort_rule_order(rule: RankingRule, rec: ListRecord, phi: np.ndarray | None, *, half_life_days: float,
                    reference_date: Any = None) -> list[int]:
    """The order a sort rule gives one list (best first)."""
    from rankalign.ranking.attributes import attribute_values, record_gains

    if rule.key is None:
        raise ValueError(f"{rule.name} is an Algorithm 1 rule, not a sort rule")
    gains: dict[str, np.ndarray] = {}
    if "votes" in rule.needs:
        gains["votes"] = attribute_values(rec, "votes")
        gains["popularity"] = record_gains(rec, "popularity", half_life_days=half_life_days,
                                           reference_date=reference_date)
    if "semantic" in rule.needs and phi is None:
        raise ValueError(f"ranking rule {rule.name} needs the semantic similarities (phi)")
    return sort_order(rule.key(rec, phi, gains))
