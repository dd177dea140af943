"""The report's figures, drawn with matplotlib's Agg backend (no display) into PNG bytes.

Each function takes plain numbers (no run objects), so it can be called on anything.
"""

from __future__ import annotations

import io
import math
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


def training_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
                    eval_loss: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> bytes:
    """One panel per :data:`CURVE_PANELS` key; one line per run.

    Args:
        curves: run name -> panel key -> ``[(step, value), ...]``.
        eval_loss: run name -> ``[(step, eval_loss), ...]``, drawn dashed on the loss panel.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes.ravel(), CURVE_PANELS):
        drawn = False
        for i, (run, panels) in enumerate(curves.items()):
            pts = panels.get(key) or []
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=run, color=colours[i % len(colours)], lw=1.4)
                drawn = True
            if key == "loss" and eval_loss and eval_loss.get(run):
                xs, ys = zip(*eval_loss[run])
                ax.plot(xs, ys, ls="--", marker="o", ms=3, color=colours[i % len(colours)], label=f"{run} (eval)")
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
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
        ax.set_yticks(range(len(names)), names, fontsize=8)
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
