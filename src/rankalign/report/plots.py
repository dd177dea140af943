"""The report's figures, drawn with matplotlib's Agg backend (no display) into PNG bytes.

Each function takes plain numbers (no run objects), so it can be called on anything.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: training-log panels: (metric key in a ``train`` row, title); ``loss`` sits at the row's top level
CURVE_PANELS = (("loss", "training loss"), ("rewards/accuracies", "reward accuracy (best above each other)"),
                ("rewards/margins", "reward margin (best - others)"), ("ranking/accuracy", "pairwise ranking accuracy"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


#: above this many runs the curves are drawn per seed group (runs named ``<group>/seed-<n>``, as a
#: study names its cells): the group's mean per step, with the min-max over its seeds as a band
#: when there are at most 8 groups (more bands blur into one)
MAX_RUN_LINES = 12


def seed_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Run names grouped by what precedes a trailing ``/seed-<n>`` (a name without one is its own group)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(re.sub(r"/seed-\d+$", "", name), []).append(name)
    return groups


def _pooled(series: Sequence[Sequence[tuple[float, float]]]) -> tuple[np.ndarray, ...]:
    """Steps, mean, min and max over several ``[(step, value), ...]`` series, per step logged by any."""
    at: dict[float, list[float]] = {}
    for pts in series:
        for x, y in pts:
            at.setdefault(x, []).append(y)
    xs = sorted(at)
    return (np.asarray(xs), np.asarray([np.mean(at[x]) for x in xs]), np.asarray([min(at[x]) for x in xs]),
            np.asarray([max(at[x]) for x in xs]))


def _symlog_if_spread(ax: Any) -> None:
    """A symmetric-log y axis when the lines' scales differ by orders of magnitude (e.g. PRO's summed
    loss against DPO's), so that the small ones are not flattened onto zero."""
    ys = np.abs(np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()] or [[]]))
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if ys.size and ys.max() > 50 * np.median(ys):
        ax.set_yscale("symlog", linthresh=float(max(np.median(ys), 1e-3)))
        ax.set_title(f"{ax.get_title()} (symlog)", fontsize=10)


def training_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
                    eval_loss: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> bytes:
    """One panel per :data:`CURVE_PANELS` key; one line per run, or per seed group when there are
    more than :data:`MAX_RUN_LINES` runs and grouping makes fewer lines (then eval losses are left
    out and one legend sits under the panels).

    Args:
        curves: run name -> panel key -> ``[(step, value), ...]``.
        eval_loss: run name -> ``[(step, eval_loss), ...]``, drawn dashed on the loss panel.
    """
    plt = _pyplot()
    groups = seed_groups(list(curves))
    grouped = len(curves) > MAX_RUN_LINES and len(groups) < len(curves)
    if not grouped:
        groups = {run: [run] for run in curves}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")

    def look(i: int) -> dict[str, Any]:
        return {"color": colours[i % len(colours)], "ls": styles[(i // len(colours)) % len(styles)]}

    for ax, (key, title) in zip(axes.ravel(), CURVE_PANELS):
        drawn = False
        for i, (label, runs) in enumerate(groups.items()):
            series = [curves[run].get(key) or [] for run in runs]
            series = [pts for pts in series if pts]
            if series:
                xs, mean, lo, hi = _pooled(series)
                if len(series) > 1 and len(groups) <= 8:  # more bands than that blur into one
                    ax.fill_between(xs, lo, hi, color=look(i)["color"], alpha=0.12, lw=0)
                n = f" (mean of {len(series)})" if grouped and len(series) > 1 else ""
                ax.plot(xs, mean, label=f"{label}{n}", lw=1.4, **look(i))
                drawn = True
            if not grouped and key == "loss" and eval_loss and eval_loss.get(label):
                xs, ys = zip(*eval_loss[label])
                ax.plot(xs, ys, ls="--", marker="o", ms=3, color=look(i)["color"], label=f"{label} (eval)")
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        _symlog_if_spread(ax)
        if drawn and not grouped:
            ax.legend(fontsize=7)
        elif not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    if grouped:  # one legend for all panels, below them (a figure of many groups stays readable)
        handles: dict[str, Any] = {}
        for ax in axes.ravel():
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        labels = list(handles)
        fig.legend([handles[lab] for lab in labels], labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(4, len(labels)), fontsize=7, frameon=False)
    return _png(fig)


def sweep_figure(field: str, metrics: Sequence[str],
                 lines: Mapping[str, Mapping[str, Sequence[tuple[float, float, float, float]]]]) -> bytes:
    """A metric against a swept setting, one line per group, with the CI as a band (SeAdpra Fig. 5-6).

    Args:
        field: the swept setting (x axis).
        metrics: one panel each.
        lines: group label -> metric -> ``[(x, mean, ci_low, ci_high), ...]`` sorted by x.
    """
    plt = _pyplot()
    n = len(metrics)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs_all = sorted({p[0] for per in lines.values() for pts in per.values() for p in pts})
    log_x = len(xs_all) >= 3 and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 50
    for ax, metric in zip(axes.ravel(), metrics):
        for i, (label, per) in enumerate(lines.items()):
            pts = per.get(metric) or []
            if not pts:
                continue
            x, mean, lo, hi = (np.asarray(v, dtype=float) for v in zip(*pts))
            c = colours[i % len(colours)]
            ax.fill_between(x, lo, hi, color=c, alpha=0.18, lw=0)
            ax.plot(x, mean, marker="o", ms=4, color=c, label=label)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(field)
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def correlation_heatmaps(names: Sequence[str], matrices: Mapping[str, Sequence[Sequence[float]]]) -> bytes:
    """Side-by-side heatmaps of correlation matrices (e.g. Pearson and Spearman), values written in
    the cells; NaN (undefined) cells are grey and marked ``n/a``."""
    plt = _pyplot()
    k = len(matrices)
    size = max(3.5, 0.6 * len(names) + 1.5)
    fig, axes = plt.subplots(1, k, figsize=(size * k + 0.8, size), squeeze=False)
    im = None
    for ax, (title, mat) in zip(axes.ravel(), matrices.items()):
        arr = np.asarray(mat, dtype=float)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#cccccc")
        im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=-1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        # the panels share their rows: labelled once, on the left, so they never overlap the next panel
        ax.set_yticks(range(len(names)), names if ax is axes.ravel()[0] else [], fontsize=8)
        for i in range(len(names)):
            for j in range(len(names)):
                v = arr[i, j]
                ax.text(j, i, "n/a" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if not math.isnan(v) and abs(v) > 0.6 else "black")
        ax.set_title(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    return _png(fig)


def apdf_heatmaps(panels: Sequence[tuple[str, np.ndarray, Sequence[int]]], labels: Sequence[str]) -> bytes:
    """One heatmap per APDF matrix (SeAdpra Fig. 7 and 13): values in the cells, the matrix's own
    dynamic-ranking picks marked — the first pick's row/column label and the cell of the largest
    entry in blue, the second pick in green.

    Args:
        panels: ``(title, [M, M] matrix, order)`` per panel; ``order`` is that matrix's dynamic
            ranking (best first).
        labels: response labels (``R1`` ..), one per row.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    m = len(labels)
    k = len(panels)
    size = max(3.2, 0.55 * m + 1.6)
    fig, axes = plt.subplots(1, k, figsize=(size * k, size), squeeze=False)
    for ax, (title, mat, order) in zip(axes.ravel(), panels):
        arr = np.asarray(mat, dtype=float)
        ax.imshow(arr, cmap="Oranges")
        ax.set_xticks(range(m), labels, fontsize=8)
        ax.set_yticks(range(m), labels, fontsize=8)
        top = float(np.nanmax(np.abs(arr))) if arr.size else 0.0
        for i in range(m):
            for j in range(m):
                ax.text(j, i, _short(arr[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if top and abs(arr[i, j]) > 0.6 * top else "black")
        if top > 0:  # the largest off-diagonal entry (the first round of Algorithm 1)
            upper = np.where(np.triu(np.ones((m, m), dtype=bool), 1), arr, -np.inf)
            r, c = divmod(int(np.argmax(upper)), m)
            for (y, x) in ((r, c), (c, r)):
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec="#1f4fff", lw=2.2))
        for pick, colour in zip(order[:2], ("#1f4fff", "#1a9e3a")):
            for tick in (ax.get_xticklabels()[pick], ax.get_yticklabels()[pick]):
                tick.set_color(colour)
                tick.set_fontweight("bold")
        picks = ", ".join(labels[i] for i in order)
        ax.set_title(f"{title}\norder: {picks}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _short(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.2g}" if abs(v) < 0.01 or abs(v) >= 100 else f"{v:.3f}"
