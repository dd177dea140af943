"""Paired comparison of two evaluation runs: per-prompt differences, their CI and a p-value.

Two runs evaluated on the same test lists give, for each metric, one value per prompt in
each run. The comparison pairs them by record id and reports, per metric, the mean
difference ``d = mean_i (a_i - b_i)`` with

* a **paired percentile bootstrap** interval: ``n_boot`` resamples of the prompts with
  replacement (``numpy.random.default_rng(seed)``), the ``alpha/2`` and ``1 - alpha/2``
  quantiles of the resampled mean differences (Efron & Tibshirani, *An Introduction to the
  Bootstrap*, 1993, ch. 13; Koehn, "Statistical significance tests for machine translation
  evaluation", EMNLP 2004, uses the same paired resampling);
* a two-sided **paired sign-flip permutation test** p-value: under the null hypothesis that
  the two runs are exchangeable on each prompt, each difference keeps its size and has a
  random sign; ``p = (1 + #{flips: |mean(sign * d)| >= |mean(d)|}) / (1 + n_flips)``, with
  all ``2^n`` sign vectors when ``2^n <= n_boot`` (then ``p = #{...} / 2^n``, exact) and
  ``n_boot`` random ones otherwise (Fisher's randomisation test; the ``+1`` keeps a Monte
  Carlo p-value valid).

Per-example values come from the files ``rankalign eval`` writes: ``generations.jsonl``
(generation metrics, Reward, Toxicity) and ``ranking.jsonl`` (held-out ranking accuracy);
the metric names are those of the run's ``metrics.json`` when it has one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankalign.errors import UserError

#: per-example files of a run folder, in the order they are read
PER_EXAMPLE_FILES = ("generations.jsonl", "ranking.jsonl")
#: numeric per-example fields that are not metrics (candidate indices)
NOT_METRICS = frozenset({"phi"})


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = 10000,
                      seed: int = 0, alpha: float = 0.05) -> dict[str, float | int]:
    """Mean of ``a - b`` over paired examples, its paired bootstrap CI and a sign-flip p-value.

    Args:
        a, b: ``[N]`` values of one metric, the same examples in the same order.
        n_boot: bootstrap resamples, and random sign flips when ``2^N > n_boot``.
        seed: random seed (the result is deterministic for a seed).
        alpha: 1 - confidence level.
    Returns:
        ``{"mean", "ci_low", "ci_high", "p_value", "n"}``; ``p_value`` is 1 when every
        difference is 0.
    Raises:
        ValueError: different lengths, no pairs, NaN/inf, bad ``n_boot``/``alpha``.

    >>> r = paired_difference([1, 1, 1, 1], [0, 0, 0, 0])
    >>> (r["mean"], r["ci_low"], r["ci_high"], r["p_value"])
    (1.0, 1.0, 1.0, 0.125)
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"paired values differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        raise ValueError("no paired examples to compare")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired values hold NaN/inf")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d = x - y  # [N]
    n = d.size
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)  # [n_boot] paired bootstrap
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(d.mean()), "ci_low": float(low), "ci_high": float(high),
            "p_value": sign_flip_p_value(d, n_flips=n_boot, rng=rng), "n": int(n)}


def sign_flip_p_value(d: np.ndarray, *, n_flips: int = 10000, rng: np.random.Generator | None = None) -> float:
    """Two-sided paired sign-flip (randomisation) test of ``mean(d) = 0``; exact when ``2^N <= n_flips``."""
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    observed = abs(d.mean())
    if observed == 0.0:
        return 1.0
    tol = 1e-12 * max(1.0, observed)  # equal means up to rounding count as "at least as extreme"
    n = d.size
    if n <= 20 and 2 ** n <= n_flips:  # every sign vector: [2^N, N]
        signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)
        return float((np.abs(signs @ d / n) >= observed - tol).mean())
    rng = rng or np.random.default_rng(0)
    hits = 0
    for start in range(0, n_flips, 1000):  # chunks bound the [chunk, N] sign matrix
        k = min(1000, n_flips - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        hits += int((np.abs(signs @ d / n) >= observed - tol).sum())
    return (1 + hits) / (1 + n_flips)


# ---------------------------------------------------------------------------- runs
@dataclass
class RunValues:
    """Per-example metric values of one run: ``values[metric][record id] = value``."""

    name: str
    path: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)

    def ids(self) -> set[str]:
        return {i for per in self.values.values() for i in per}


def _metric_names(folder: Path) -> list[str] | None:
    """The metric names in ``metrics.json`` of a run folder (``None`` when there is none)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable metrics.json ({exc}); rerun `rankalign eval`") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: no 'metrics' mapping; is this the output of `rankalign eval`?")
    return list(metrics)


def run_name(p: Path) -> str:
    """How a run folder is called in messages: its name, or ``train-run/eval`` for the ``eval``
    folder inside a training run (``runs/seadpra/eval`` -> ``seadpra/eval``)."""
    folder = p if p.is_dir() else p.parent
    name = folder.name or p.stem
    if name in ("eval", "evaluation") and folder.parent.name:
        return f"{folder.parent.name}/{name}"
    return name


def load_run(path: str | Path, name: str | None = None) -> RunValues:
    """Read the per-example values of a run: an eval output folder, or one per-example ``.jsonl`` file.

    Raises:
        UserError: the path does not exist, a folder holds no per-example file, a line is
            not a JSON object, a row has no ``id``, an id appears twice in one file.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such run folder or file; give a `rankalign eval --output-dir` folder "
                        "or its generations.jsonl / ranking.jsonl")
    if p.is_dir():
        files = [p / f for f in PER_EXAMPLE_FILES if (p / f).is_file()]
        if not files:
            raise UserError(f"{p}: not an evaluation run (no {' or '.join(PER_EXAMPLE_FILES)}); "
                            "give a `rankalign eval --output-dir` folder")
        names = _metric_names(p)
    else:
        files, names = [p], _metric_names(p.parent)
    run = RunValues(name=name or run_name(p), path=str(p))
    for f in files:
        _read_per_example(f, names, run)
    if not run.values:
        raise UserError(f"{p}: no per-example metric values found; rerun `rankalign eval`")
    return run


def rows_by_id(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(record id, line number, row)`` for each row of a per-example JSONL file
    (``generations.jsonl``, ``ranking.jsonl``); blank lines are passed over.

    Raises:
        UserError: a damaged line, a row without ``id``, an id twice (each naming the line).
    """
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); the file is damaged") from None
            if not isinstance(row, dict) or "id" not in row:
                raise UserError(f"{path}:{lineno}: a row without an 'id'; per-example rows are matched by record id")
            rid = str(row["id"])
            if rid in seen:
                raise UserError(f"{path}:{lineno}: record id {rid!r} appears twice; ids must be unique to pair runs")
            seen.add(rid)
            yield rid, lineno, row


def _read_per_example(path: Path, names: list[str] | None, run: RunValues) -> None:
    for rid, _, row in rows_by_id(path):
        for key, value in row.items():
            if key == "id" or key in NOT_METRICS or (names is not None and key not in names):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                run.values.setdefault(key, {})[rid] = float(value)


@dataclass
class Comparison:
    """Paired differences ``A - B`` of every metric both runs have."""

    name_a: str
    name_b: str
    rows: dict[str, dict[str, float | int]]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    metrics_only_a: list[str] = field(default_factory=list)
    metrics_only_b: list[str] = field(default_factory=list)
    method: str = "paired bootstrap CI; two-sided paired sign-flip permutation p-value"

    def to_dict(self) -> dict[str, Any]:
        return {"run_a": self.name_a, "run_b": self.name_b, "difference": "A - B", "test": self.method,
                "metrics": self.rows, "ids_only_in_a": self.only_a, "ids_only_in_b": self.only_b,
                "metrics_only_in_a": self.metrics_only_a, "metrics_only_in_b": self.metrics_only_b}

    def lines(self) -> list[str]:
        """One sentence per metric: ``"A beats B on PrefHit@1 by 0.0600 [0.0100, 0.1100], p = 0.02 (n = 100)"``."""
        out = []
        for metric, r in self.rows.items():
            d = float(r["mean"])
            verb = "beats" if d > 0 else "trails" if d < 0 else "ties"
            by = f" by {abs(d):.4f}" if d != 0 else ""
            out.append(f"{self.name_a} {verb} {self.name_b} on {metric}{by} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], "
                       f"p = {_p(float(r['p_value']))} (n = {r['n']})")
        return out

    def markdown(self) -> str:
        """A Markdown table of the differences (every cell escaped) and the mismatch notes."""
        from rankalign.evaluation.report import escape_cell, markdown_table

        table = markdown_table(["metric", "A - B", "CI", "p", "n"], [
            (m, f"{r['mean']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", _p(float(r["p_value"])), r["n"])
            for m, r in self.rows.items()])
        lines = [f"# {escape_cell(self.name_a)} (A) vs {escape_cell(self.name_b)} (B)", "",
                 f"Difference A - B per prompt, paired by record id; {self.method}.", "", table, ""]
        lines += [escape_cell(note) for note in self.notes()]
        return "\n".join(lines) + "\n"

    def notes(self) -> list[str]:
        """The mismatches between the runs, one sentence each."""
        out = []
        if self.only_a or self.only_b:
            out.append(f"ids: {len(self.only_a)} only in {self.name_a} (e.g. {self.only_a[:3]}), {len(self.only_b)} "
                       f"only in {self.name_b} (e.g. {self.only_b[:3]}); compared on the shared ids")
        if self.metrics_only_a or self.metrics_only_b:
            out.append(f"metrics not in both runs (not compared): {self.name_a} only {self.metrics_only_a}, "
                       f"{self.name_b} only {self.metrics_only_b}")
        return out


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def compare_runs(a: RunValues, b: RunValues, *, metrics: Sequence[str] | None = None, n_boot: int = 10000,
                 seed: int = 0, alpha: float = 0.05) -> Comparison:
    """:func:`paired_difference` of every metric both runs have (or of ``metrics``), paired by record id.

    Raises:
        UserError: no metric in common, a requested metric missing from a run, no shared
            record id (the runs were evaluated on different data).
    """
    common = [m for m in a.values if m in b.values]
    if metrics:
        missing = [f"{m} (missing in {', '.join(r.name for r in (a, b) if m not in r.values)})"
                   for m in metrics if m not in common]
        if missing:
            raise UserError(f"--metrics: not in both runs: {'; '.join(missing)}; metrics in both: "
                            f"{', '.join(common) or 'none'}")
        common = list(metrics)
    if not common:
        raise UserError(f"{a.path} and {b.path} share no metric ({sorted(a.values)} vs {sorted(b.values)}); "
                        "evaluate both with the same --metrics")
    ids_a, ids_b = a.ids(), b.ids()
    shared = ids_a & ids_b
    if not shared:
        raise UserError(f"{a.path} and {b.path} share no record id ({len(ids_a)} vs {len(ids_b)} ids): "
                        "they were evaluated on different data; evaluate both on the same --data")
    rows: dict[str, dict[str, float | int]] = {}
    for m in common:
        ids = sorted(set(a.values[m]) & set(b.values[m]))
        if not ids:
            continue
        rows[m] = paired_difference([a.values[m][i] for i in ids], [b.values[m][i] for i in ids],
                                    n_boot=n_boot, seed=seed, alpha=alpha)
    return Comparison(name_a=a.name, name_b=b.name, rows=rows, only_a=sorted(ids_a - ids_b),
                      only_b=sorted(ids_b - ids_a), metrics_only_a=sorted(set(a.values) - set(b.values)),
                      metrics_only_b=sorted(set(b.values) - set(a.values)))
