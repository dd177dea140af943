"""Markdown reports of evaluations and of the demo run.

Every cell is escaped: generated text and record content may hold ``|``, backticks,
newlines or HTML, so ``&``, ``<``, ``>`` become entities, ``|`` becomes ``\\|`` and
newlines become spaces — a table row can never break and no HTML from a model output is
rendered by a Markdown viewer.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rankalign.data.io import atomic_path


def escape_cell(value: Any) -> str:
    """One Markdown table cell: HTML-escaped, pipes escaped, on one line.

    >>> escape_cell("a|b <i>x</i>\\nnext")
    'a\\\\|b &lt;i&gt;x&lt;/i&gt; next'
    """
    text = html.escape(str(value), quote=False)
    text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text


def fmt_number(value: Any, digits: int = 4) -> str:
    """A float with ``digits`` decimals; ``None``/NaN as ``n/a``; anything else via ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def fmt_estimate(est: Mapping[str, Any], digits: int = 4) -> str:
    """``mean [low, high]`` of an estimate dict."""
    return f"{fmt_number(float(est['mean']), digits)} [{fmt_number(float(est['ci_low']), digits)}, " \
           f"{fmt_number(float(est['ci_high']), digits)}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table with every cell escaped (:func:`escape_cell`)."""
    head = "| " + " | ".join(escape_cell(h) for h in headers) + " |"
    sep = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(escape_cell(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write text atomically (temporary file, then rename)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (NaN written as ``null``)."""
    return write_text(json.dumps(_clean(obj), indent=2, ensure_ascii=False) + "\n", path)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Table ``metric | mean | 95% CI | n`` for one evaluation."""
    rows = [
        (name, fmt_number(float(e["mean"])), f"[{fmt_number(float(e['ci_low']))}, {fmt_number(float(e['ci_high']))}]",
         e.get("n", ""))
        for name, e in metrics.items()
    ]
    return markdown_table(["metric", "mean", "95% CI (bootstrap)", "n"], rows)


def comparison_table(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> str:
    """Table ``metric | before | after | change`` (means with CIs)."""
    rows = []
    for name in before:
        if name not in after:
            continue
        delta = float(after[name]["mean"]) - float(before[name]["mean"])
        rows.append((name, fmt_estimate(before[name]), fmt_estimate(after[name]), f"{delta:+.4f}"))
    return markdown_table(["metric", "before [95% CI]", "after [95% CI]", "change"], rows)


def eval_report(
    metrics: Mapping[str, Mapping[str, Any]],
    *,
    extra: Mapping[str, Any],
    settings: Mapping[str, Any],
    examples: Sequence[Mapping[str, Any]] = (),
    max_examples: int = 5,
    timings: Mapping[str, float] | None = None,
) -> str:
    """The ``rankalign eval`` report: settings, metric table, a few generations."""
    lines = ["# rankalign evaluation", ""]
    lines.append(markdown_table(["setting", "value"], [(k, v) for k, v in settings.items()]))
    lines += ["", "## Metrics", "", metrics_table(metrics), ""]
    if extra:
        lines.append(markdown_table(["figure", "value"], [(k, fmt_number(v)) for k, v in extra.items()]))
        lines.append("")
    lines.append(
        "PrefHit@k = share of prompts whose generated answer is most similar to one of the k best "
        "gold responses; PrefRecall@k = overlap of the k most similar and the k best, divided by k "
        "(SeAdpra, arXiv:2502.12189, eq. 14-16; /k instead of /2, docs/methods.md#prefrecall). "
        "BLEU/ROUGE-L/CoSim compare with the gold best response. Intervals: "
        "percentile bootstrap over prompts."
    )
    if timings:
        lines += ["", markdown_table(["stage", "seconds"], [(k, f"{v:.1f}") for k, v in timings.items()])]
    if examples:
        lines += ["", "## Sample generations", ""]
        rows = []
        for ex in list(examples)[:max_examples]:
            text = str(ex.get("generation", ""))
            rows.append((ex.get("id", ""), text[:200] + ("..." if len(text) > 200 else ""),
                         ex.get("phi", ""), (ex.get("gold_order") or [""])[0]))
        lines.append(markdown_table(["id", "generation (first 200 chars)", "Phi", "gold best"], rows))
    return "\n".join(lines) + "\n"
