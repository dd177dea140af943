"""Statistics of a build: questions per year by pool size (Table 7 of Yang, Zhao, Hu, Li,
arXiv:2502.12189) and the most frequent tags (Table 8), for the stages ``D_Q`` (questions
with their accepted answer found: step 1), ``D_C`` (and a code block: step 2), ``kept`` and
``output`` (after the sample); written as ``stats.csv``, ``stats.md`` and ``stats.png``; and
the build's :class:`BuildSummary` (``summary.json``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: pool-size thresholds of the statistics (Table 7: sizes 3, 5, 8, 10, 15, 20; and 2, the smallest list).
POOL_SIZES = (2, 3, 5, 8, 10, 15, 20)
ROW_REASONS = ("malformed row", "duplicate id", "answer without question")


def count_pool(years: dict[int, dict[int, int]], year: int, n_responses: int) -> None:
    """Count one question of ``year`` under every pool-size threshold it reaches."""
    row = years.get(year)
    if row is None:
        row = years[year] = dict.fromkeys(POOL_SIZES, 0)
    for k in POOL_SIZES:
        if n_responses >= k:
            row[k] += 1


def merge_years(dst: dict[int, dict[int, int]], src: dict[int, dict[int, int]]) -> None:
    for year, row in src.items():
        d = dst.setdefault(int(year), dict.fromkeys(POOL_SIZES, 0))
        for k, v in row.items():
            d[int(k)] += v


def top_tags(counter: Counter, k: int = 90) -> list[dict[str, Any]]:
    """The k most frequent tags with volume and share of all tag uses (Table 8)."""
    total = sum(counter.values())
    return [{"tag": t, "volume": n, "percentage": round(n / total, 4) if total else 0.0}
            for t, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def stats_dict(pool: dict[str, dict[int, dict[int, int]]], tags: dict[str, Counter]) -> dict[str, Any]:
    """The ``stats`` of ``summary.json`` (and of the statistics files)."""
    return {
        "pool_by_year": {st: {str(y): {str(k): v for k, v in row.items()} for y, row in sorted(d.items())}
                         for st, d in pool.items()},
        "top_tags": {st: top_tags(c) for st, c in tags.items()},
        "pool_sizes": list(POOL_SIZES),
    }


@dataclass
class BuildSummary:
    """The content of ``summary.json`` (see :func:`~rankalign.data.stackexchange.build_stacocoqa`)."""

    dump: str
    sites: list[str]
    options: dict[str, Any]
    rows: dict[str, int]
    questions: dict[str, Any]
    answers: dict[str, Any]
    output: dict[str, Any]
    parse_errors: list[dict[str, Any]]
    examples: list[str]
    stats: dict[str, Any]
    seconds: dict[str, float]
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """A short human summary: kept, and why rows were dropped."""
        lines = [f"StaCoCoQA build of {self.dump} ({len(self.sites)} site(s)): "
                 f"{self.rows.get('rows', 0)} rows read, {self.questions['total']} questions, "
                 f"kept {self.questions['kept']}; wrote {self.output['train']} train + {self.output['test']} test"]
        for label, counts in (("questions dropped", self.questions["dropped"]),
                              ("answers dropped", self.answers["dropped"]),
                              ("rows skipped", {k: self.rows.get(k, 0) for k in ROW_REASONS})):
            shown = {k: v for k, v in counts.items() if v}
            if shown:
                lines.append(f"  {label}: " + ", ".join(f"{v} {k}" for k, v in shown.items()))
        for err in self.parse_errors:
            lines.append(f"  WARNING: XML error in {err['file']} at line {err['line']}, column {err['column']}: "
                         f"{err['message']} (kept the {err['rows_before']} rows before it)")
        return "\n".join(lines)


def versions() -> dict[str, str]:
    """The versions of the libraries that decide the output (the XML and HTML parser above all)."""
    import duckdb
    import pyarrow
    from lxml import etree

    from rankalign import __version__

    return {"rankalign": __version__, "lxml": ".".join(map(str, etree.LXML_VERSION)),
            "libxml2": ".".join(map(str, etree.LIBXML_VERSION)), "duckdb": duckdb.__version__,
            "pyarrow": pyarrow.__version__}


def write_stats(stats: dict[str, Any], folder: Path) -> None:
    """``stats.csv`` (long format), ``stats.md`` (Tables 7-8 style) and ``stats.png``."""
    _write_csv(stats, folder / "stats.csv")
    (folder / "stats.md").write_text(_markdown(stats), encoding="utf-8")
    plot_stats(stats, folder / "stats.png")


def _write_csv(stats: dict[str, Any], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["table", "stage", "year", "min_pool_size", "tag", "count", "percentage"])
        for stage, years in stats["pool_by_year"].items():
            for year, row in years.items():
                for k in stats["pool_sizes"]:
                    w.writerow(["pool_by_year", stage, year, k, "", row[str(k)], ""])
        for stage, rows in stats["top_tags"].items():
            for r in rows:
                w.writerow(["top_tags", stage, "", "", r["tag"], r["volume"], r["percentage"]])


def _markdown(stats: dict[str, Any]) -> str:
    sizes = stats["pool_sizes"]
    md = io.StringIO()
    md.write("# StaCoCoQA build statistics\n\n## Questions per year with at least k answers "
             "(cf. Table 7 of arXiv:2502.12189)\n")
    for stage, years in stats["pool_by_year"].items():
        md.write(f"\n### {stage}\n\n| Year | " + " | ".join(f"Size>={k}" for k in sizes) + " |\n")
        md.write("|---" * (len(sizes) + 1) + "|\n")
        for year, row in years.items():
            md.write(f"| {year} | " + " | ".join(str(row[str(k)]) for k in sizes) + " |\n")
    md.write("\n## Top tags (cf. Table 8 of arXiv:2502.12189)\n")
    for stage, rows in stats["top_tags"].items():
        md.write(f"\n### {stage}\n\n| Tag | Volume | Percentage |\n|---|---|---|\n")
        for r in rows[:30]:
            md.write(f"| {r['tag']} | {r['volume']} | {r['percentage']:.3f} |\n")
    return md.getvalue()


def import_plotting() -> None:
    """Import matplotlib with the Agg backend (a pool worker does it while it would wait:
    the statistics plot, at the end of the build, then does not wait for the import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def plot_stats(stats: dict[str, Any], path: Path) -> None:
    import_plotting()
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    years = stats["pool_by_year"]["output"]
    sizes = stats["pool_sizes"]
    labels = list(years)
    width = 0.8 / max(1, len(sizes))
    for j, k in enumerate(sizes):
        ax1.bar([i + j * width for i in range(len(labels))], [years[y][str(k)] for y in labels], width,
                label=f">= {k}")
    ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=45)
    ax1.set_title("Output questions per year by pool size (Table 7)")
    ax1.set_ylabel("questions")
    if labels:
        ax1.legend(fontsize=7, title="answers")
    top = stats["top_tags"]["output"][:15]
    ax2.barh([r["tag"] for r in top][::-1], [r["volume"] for r in top][::-1])
    ax2.set_title("Top tags of the output (Table 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
