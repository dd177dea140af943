"""Label quality: how well each ranking rule agrees with human preference, per data group.

A self-supervised method trains on the order a ranking rule gives (SeAdpra: Algorithm 1), so
before comparing methods the study asks how good those labels are. For each rule
(:mod:`rankalign.ranking.rules`) and each group of lists (a StackExchange site, the pooled
sites, OASST1):

* **top-1**: the rule's best response is the human choice — the questioner's accepted
  answer on StackExchange (lists with exactly one accepted answer), the rank-0 reply on
  OASST1 (its ``ranking``);
* **Kendall tau**: tau-b between the rule's order and the reference order — the vote
  counts on StackExchange (lists whose votes all tie are left out and counted), the human
  ranks on OASST1.

Each is a mean over lists with a percentile bootstrap CI, and each rule is paired with
Algorithm 1 on the same lists (the difference's bootstrap CI and sign-flip p-value). Rules
that need votes are ``n/a`` on groups without them.

Caveat, printed with the table: the popularity and vote rules read the votes the vote
order is made of, so their Kendall tau is circular (``votes`` scores 1 by construction);
only top-1 against the accepted answer — the asker's choice, which the rules never read —
is an outside criterion for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord
from rankalign.ranking.rank import order_positions
from rankalign.ranking.rules import PAPER_RULE, get_rule, has_votes

CRITERIA = ("top1", "kendall_tau")


@dataclass(frozen=True)
class RuleSpec:
    """A rule as the study measures it: a display name, the rule, and its ranking settings.

    ``attributes`` apply to the Algorithm 1 rules (the multi-APDF); ``None`` = semantic +
    popularity where the lists have votes, semantic alone where they have none.
    """

    name: str
    rule: str
    attributes: tuple[str, ...] | None = None
    half_life_days: float = 365.0

    def attributes_for(self, records: Sequence[ListRecord]) -> tuple[str, ...]:
        if self.attributes is not None:
            return self.attributes
        return ("semantic", "popularity") if records and all(has_votes(r) for r in records) else ("semantic",)

    def applicable(self, records: Sequence[ListRecord]) -> bool:
        needs = set(get_rule(self.rule).needs)
        if get_rule(self.rule).is_algorithm1 and "popularity" in self.attributes_for(records):
            needs.add("votes")
        return "votes" not in needs or all(has_votes(r) for r in records)


def reference(rec: ListRecord) -> tuple[int | None, np.ndarray | None]:
    """``(human best index or None, reference scores [M] higher = better, or None)`` of one list.

    A human ``ranking`` (OASST1) gives both; otherwise the single accepted answer gives the
    best and the votes the scores.
    """
    if rec.ranking is not None:
        m = rec.num_responses
        return rec.ranking[0], (m - order_positions(rec.ranking)).astype(np.float64)
    accepted = [i for i, r in enumerate(rec.responses) if r.attributes.get("accepted") is True]
    best = accepted[0] if len(accepted) == 1 else None
    votes = None
    if has_votes(rec):
        votes = np.array([float(r.attributes.get("votes") or 0) for r in rec.responses])
    return best, votes


def per_list_agreement(records: Sequence[ListRecord], orders: Sequence[Sequence[int]]) -> dict[str, list[float]]:
    """Per-list values of each criterion, aligned: NaN where a list cannot be scored."""
    from scipy.stats import kendalltau

    out: dict[str, list[float]] = {c: [] for c in CRITERIA}
    for rec, order in zip(records, orders):
        best, ref = reference(rec)
        out["top1"].append(math.nan if best is None else float(order[0] == best))
        tau = math.nan
        if ref is not None and len(set(ref.tolist())) > 1:
            tau = float(kendalltau(-order_positions(order), ref).statistic)
        out["kendall_tau"].append(tau)
    return out


def rule_orders_for(spec: RuleSpec, records: Sequence[ListRecord], phi: Sequence[np.ndarray] | None
                    ) -> list[list[int]]:
    """The orders ``spec`` gives ``records``."""
    from rankalign.ranking.rank import RankingConfig, rule_orders

    cfg = RankingConfig(attributes=spec.attributes_for(records), rule=spec.rule,
                        half_life_days=spec.half_life_days)
    return rule_orders(records, cfg, phi=phi)


def _summary(values: Sequence[float], paired_with: Sequence[float] | None, n_boot: int, seed: int
             ) -> dict[str, Any]:
    from rankalign.evaluation.compare import paired_difference
    from rankalign.evaluation.metrics import bootstrap_ci

    x = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(x)
    if not ok.any():
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    low, high = bootstrap_ci(x[ok], n=n_boot, seed=seed)
    out: dict[str, Any] = {"mean": float(x[ok].mean()), "ci_low": low, "ci_high": high, "n": int(ok.sum())}
    if paired_with is not None:
        y = np.asarray(paired_with, dtype=np.float64)
        both = ok & ~np.isnan(y)
        if both.any():
            out["vs_paper"] = paired_difference(x[both], y[both], n_boot=n_boot, seed=seed)
    return out


def label_quality(groups: Mapping[str, Sequence[ListRecord]], specs: Sequence[RuleSpec],
                  phi: Mapping[str, Sequence[np.ndarray]], *, n_boot: int = 1000, seed: int = 0
                  ) -> dict[str, Any]:
    """Agreement of every rule with the human reference, per group.

    Args:
        groups: group name -> its lists (e.g. one per site, ``"all sites"``, ``"oasst1"``).
        specs: the rules to measure; the first whose rule is ``algorithm1`` is the paired baseline.
        phi: group name -> one similarity array per list (:func:`rankalign.ranking.compute_phi`).
        n_boot: bootstrap resamples; seed: their seed.
    Returns:
        ``{"groups": {group: {"lists": n, "rules": {name: {criterion: summary | None}}}}}``;
        a summary is ``{"mean", "ci_low", "ci_high", "n"}`` (+ ``vs_paper``, the paired
        difference with Algorithm 1), ``None`` where the rule does not apply.
    """
    paper = next((s for s in specs if s.rule == PAPER_RULE), None)
    result: dict[str, Any] = {"groups": {}, "paper_rule": paper.name if paper else None}
    for group, records in groups.items():
        records = list(records)
        per_rule: dict[str, dict[str, list[float]] | None] = {}
        for spec in specs:
            if not records or not spec.applicable(records):
                per_rule[spec.name] = None
                continue
            per_rule[spec.name] = per_list_agreement(records, rule_orders_for(spec, records, phi.get(group)))
        base = per_rule.get(paper.name) if paper else None
        rules: dict[str, Any] = {}
        for spec in specs:
            vals = per_rule[spec.name]
            rules[spec.name] = None if vals is None else {
                c: _summary(vals[c], None if base is None or spec is paper else base[c], n_boot, seed)
                for c in CRITERIA}
        result["groups"][group] = {"lists": len(records), "rules": rules}
    return result


def _cell(summary: Mapping[str, Any] | None) -> str:
    if summary is None or summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"
    diff = summary.get("vs_paper")
    if diff is not None and (diff["ci_low"] > 0 or diff["ci_high"] < 0):
        text += " *"
    return text


def label_tables(result: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """One ``(headers, rows)`` table per criterion: a row per rule, a column per group."""
    groups = list(result["groups"])
    rules = list(next(iter(result["groups"].values()))["rules"]) if groups else []
    out = {}
    for crit in CRITERIA:
        headers = ["rule", *[f"{g} ({result['groups'][g]['lists']})" for g in groups]]
        rows = []
        for name in rules:
            cells = []
            for g in groups:
                s = result["groups"][g]["rules"][name]
                cells.append(_cell(None if s is None else s[crit]))
            rows.append([name, *cells])
        out[crit] = (headers, rows)
    return out


def best_rule(result: Mapping[str, Any], group: str, criterion: str = "top1") -> str | None:
    """The rule (display name) whose ``criterion`` is highest on ``group``, when its paired
    difference with Algorithm 1 excludes 0 upwards; ``None`` when no rule beats the paper's."""
    rules = result["groups"].get(group, {}).get("rules", {})
    best, best_mean = None, -math.inf
    for name, summ in rules.items():
        s = None if summ is None else summ[criterion]
        diff = None if s is None else s.get("vs_paper")
        if diff is not None and diff["ci_low"] > 0 and s["mean"] > best_mean:
            best, best_mean = name, s["mean"]
    return best
