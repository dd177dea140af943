"""``rankalign report``: one Markdown file and one self-contained HTML page over many runs.

Sections (each only when the runs hold what it needs):

1. runs — what was read;
2. methods — a Table-1-style comparison (every metric's mean and bootstrap CI per run) and the
   paired differences of every run to the baseline
   (:func:`rankalign.evaluation.compare.paired_difference` over the prompts both runs answered);
3. ablations — a Table-3-style block for runs named ``BASE-no_PART`` / ``BASE-only_PART``
   (:data:`ABLATION_RE`), each against the run named ``BASE``;
4. training curves from ``train_log.jsonl``;
5. sweeps — every numeric setting that varies across evaluated runs, one line per group of runs
   that agree on every other varying setting, the CI as a band (SeAdpra Fig. 5-6);
6. metric consistency — Pearson and Spearman across runs (SeAdpra App. A.4), table and heatmap;
7. APDF heatmaps of chosen lists (SeAdpra Fig. 7 and 13);
8. sample generations.

SeAdpra: Yang et al., arXiv:2502.12189.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankalign.errors import UserError
from rankalign.evaluation.report import fmt_estimate, fmt_number
from rankalign.report import plots
from rankalign.report.document import Figure, Para, Section, Table, render_html, render_markdown
from rankalign.report.options import ReportOptions
from rankalign.report.runs import Run, common_metrics, find_run, flat_settings, load_runs

#: the files written into ``--out`` (figures go to ``figures/``)
OUTPUT_FILES = ("report.md", "report.html", "report.json")

#: ablation naming rule: ``BASE-no_PART`` (BASE without PART) or ``BASE-only_PART`` (BASE with PART
#: alone); ``-`` or ``_`` after ``no``/``only``. ``seadpra-no_apdf_po`` is SeAdpra without the
#: popularity APDF, compared with the run named ``seadpra``.
ABLATION_RE = re.compile(r"^(?P<base>.+?)-(?P<kind>no|only)[_-](?P<part>.+)$")

#: numeric settings never treated as a sweep: bookkeeping, not science (a seed gives replicates)
NOT_SWEEPS = frozenset({
    "seed", "data_seed", "logging_steps", "save_steps", "eval_steps", "save_total_limit", "local_rank",
    "dataloader_num_workers", "dataloader_prefetch_factor", "logging_first_step", "eval_delay",
    "past_index", "ddp_timeout", "torch_compile", "hub_private_repo", "log_level", "world_size",
})


def ablation_parts(name: str) -> tuple[str, str, str] | None:
    """``(base, "no" | "only", part)`` when ``name`` follows :data:`ABLATION_RE`, else ``None``.

    >>> ablation_parts("seadpra-no_apdf_po")
    ('seadpra', 'no', 'apdf_po')
    """
    m = ABLATION_RE.match(name)
    return (m["base"], m["kind"], m["part"]) if m else None


def _paired(a: Run, b: Run, metric: str, opts: ReportOptions) -> dict[str, Any] | None:
    """``paired_difference`` of ``a - b`` over the prompts both answered, or ``None`` when either
    lacks per-prompt values (no ``generations.jsonl``) or they share no prompt."""
    from rankalign.evaluation.compare import paired_difference

    va, vb = a.per_example.get(metric), b.per_example.get(metric)
    if not va or not vb:
        return None
    ids = [i for i in vb if i in va]  # the reference run's prompt order (its generations.jsonl)
    if not ids:
        return None
    return paired_difference([va[i] for i in ids], [vb[i] for i in ids], n_boot=opts.bootstrap, seed=opts.seed,
                             alpha=opts.alpha)


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "n/a"
    return (f"{float(d['mean']):+.4f} [{float(d['ci_low']):+.4f}, {float(d['ci_high']):+.4f}] "
            f"p={fmt_number(float(d['p_value']), 3)} n={d['n']}")


def _runs_section(runs: Sequence[Run]) -> Section:
    rows = []
    for r in runs:
        train = r.train_rows()
        rows.append((r.name, r.method, str(r.path), len(train) and train[-1].get("step", ""),
                     len(r.metrics), len(r.generations)))
    return Section("Runs", [Table(["run", "method", "folder", "last logged step", "metrics", "generations"], rows)],
                   "runs")


def _methods_section(runs: Sequence[Run], metrics: Sequence[str], baseline: Run | None,
                     opts: ReportOptions, data: dict[str, Any]) -> Section:
    sec = Section("Comparison of methods", anchor="methods")
    evaluated = [r for r in runs if r.metrics]
    if not evaluated:
        sec.blocks.append(Para("No run holds a metrics.json (`rankalign eval` output): nothing to compare."))
        return sec
    conf = round(100 * (1 - opts.alpha))
    rows = [[r.name, r.method] + [fmt_estimate(r.metrics[m]) if m in r.metrics else "n/a" for m in metrics]
            for r in evaluated]
    best = ["best", ""]
    for m in metrics:
        have = [r for r in evaluated if m in r.metrics]
        top = max((float(r.metrics[m]["mean"]) for r in have), default=math.nan)
        best.append(", ".join(r.name for r in have if float(r.metrics[m]["mean"]) == top))
    rows.append(best)
    sec.blocks.append(Table(["run", "method", *metrics], rows,
                            f"Mean and {conf}% bootstrap CI over test prompts, as written by `rankalign eval`"))
    data["table1"] = {r.name: {m: r.metrics.get(m) for m in metrics} for r in evaluated}
    if baseline is None or not baseline.metrics:
        sec.blocks.append(Para("No evaluated baseline run: paired differences left out."))
        return sec
    diffs: dict[str, dict[str, Any]] = {}
    rows = []
    for r in evaluated:
        if r is baseline:
            continue
        diffs[r.name] = {m: _paired(r, baseline, m, opts) for m in metrics}
        rows.append([f"{r.name} - {baseline.name}", *(_fmt_diff(diffs[r.name][m]) for m in metrics)])
    data["paired_vs_baseline"] = {"baseline": baseline.name, "differences": diffs}
    if rows:
        sec.blocks.append(Table(["difference", *metrics], rows,
                                f"Paired differences to the baseline {baseline.name}: mean over the prompts "
                                f"both runs answered, {conf}% paired bootstrap CI ({opts.bootstrap} resamples), "
                                "p-value"))
    return sec


def _ablation_section(runs: Sequence[Run], metrics: Sequence[str], opts: ReportOptions,
                      data: dict[str, Any]) -> Section | None:
    by_name = {r.name: r for r in runs}
    groups: dict[str, list[tuple[Run, str, str]]] = {}
    for r in runs:
        parts = ablation_parts(r.name)
        if parts and r.metrics:
            groups.setdefault(parts[0], []).append((r, parts[1], parts[2]))
    if not groups:
        return None
    sec = Section("Ablations", [Para(
        "Runs named BASE-no_PART (BASE without PART) or BASE-only_PART (BASE with PART alone) against the "
        "run named BASE, as in SeAdpra's Table 3 (arXiv:2502.12189). Each cell: the ablation's mean, then its "
        "paired difference to BASE with CI.")], "ablations")
    data["ablations"] = {}
    for base_name, members in groups.items():
        base = by_name.get(base_name)
        rows = []
        if base is not None and base.metrics:
            rows.append([base_name, "full", *(fmt_estimate(base.metrics[m]) if m in base.metrics else "n/a"
                                              for m in metrics)])
        out: dict[str, Any] = {}
        for r, kind, part in members:
            label = f"w/o {part}" if kind == "no" else f"only {part}"
            cells = []
            out[r.name] = {}
            for m in metrics:
                mean = fmt_number(float(r.metrics[m]["mean"])) if m in r.metrics else "n/a"
                d = _paired(r, base, m, opts) if base is not None else None
                out[r.name][m] = d
                cells.append(mean if d is None else f"{mean} ({_fmt_diff(d)})")
            rows.append([r.name, label, *cells])
        data["ablations"][base_name] = out
        note = "" if base is not None else f" (no run named {base_name!r}: differences left out)"
        sec.blocks.append(Table(["run", "variant", *metrics], rows, f"Ablations of {base_name}{note}"))
    return sec


def _curves_section(runs: Sequence[Run], data: dict[str, Any]) -> Section | None:
    logged = [r for r in runs if r.train_rows()]
    if not logged:
        return None
    curves, evals = {}, {}
    rows = []
    for r in logged:
        train = r.train_rows()
        panels: dict[str, list[tuple[float, float]]] = {}
        for key, _ in plots.CURVE_PANELS:
            pts = []
            for row in train:
                v = row.get(key) if key == "loss" else (row.get("metrics") or {}).get(key)
                if isinstance(v, (int, float)) and math.isfinite(v) and isinstance(row.get("step"), (int, float)):
                    pts.append((float(row["step"]), float(v)))
            panels[key] = pts
        curves[r.name] = panels
        evals[r.name] = [(float(row["step"]), float(row["metrics"]["eval_loss"])) for row in r.train_rows("eval")
                         if isinstance((row.get("metrics") or {}).get("eval_loss"), (int, float))]
        losses = [v for _, v in panels["loss"]]
        tail = losses[-5:]
        summary = (r.train_rows("summary") or [{}])[-1]
        acc = panels["rewards/accuracies"]
        rows.append((r.name, r.method, int(train[-1].get("step", 0)), fmt_number(losses[0] if losses else None),
                     fmt_number(sum(tail) / len(tail) if tail else None),
                     fmt_number(acc[-1][1] if acc else None),
                     fmt_number(summary.get("train_runtime"), 1)))
    data["training"] = {name: {k: v[-1][1] if v else None for k, v in p.items()} for name, p in curves.items()}
    return Section("Training curves", [
        Table(["run", "method", "steps", "first loss", "mean loss, last 5 logs", "last reward accuracy",
               "runtime (s)"], rows, "From each run's train_log.jsonl"),
        Figure("training_curves.png", plots.training_curves(curves, evals),
               "Training loss, reward accuracy, reward margin and pairwise ranking accuracy per logged step "
               "(rewards: beta * (log pi - log pi_ref), or the token-mean log-prob for reference-free methods); "
               f"more than {plots.MAX_RUN_LINES} runs named <name>/seed-<n> are drawn one line per name, the mean "
               "over its seeds",
               "training curves"),
    ], "curves")


def detect_sweeps(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Settings that vary across the evaluated runs: setting -> the runs that have it.

    A setting is any numeric (not boolean) scalar of ``rankalign_config.json`` (hyper-parameters
    included, with the method's defaults filled in) or ``data_size``, outside :data:`NOT_SWEEPS`,
    taking >= 2 distinct values among runs with metrics.
    """
    evaluated = [r for r in runs if r.metrics]
    settings = {r.name: flat_settings(r) for r in evaluated}
    keys = sorted({k for s in settings.values() for k in s})
    out = {}
    for key in keys:
        if key in NOT_SWEEPS:
            continue
        have = [r for r in evaluated if _numeric(settings[r.name].get(key))]
        if len({float(settings[r.name][key]) for r in have}) >= 2:
            out[key] = have
    return out


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def sweep_lines(field: str, runs: Sequence[Run], swept: Sequence[str], metrics: Sequence[str]
                ) -> dict[str, dict[str, list[tuple[float, float, float, float]]]]:
    """Lines of one sweep: runs grouped by method (an ablation, :data:`ABLATION_RE`, apart) and every
    other swept setting; a group with
    fewer than 2 distinct values of ``field`` is no line. Runs at the same x (replicates)
    are pooled: the mean of their means, the band from the lowest CI bound to the highest.

    Returns:
        label -> metric -> ``[(x, mean, ci_low, ci_high), ...]`` sorted by x.
    """
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for r in runs:
        s = flat_settings(r)
        others = tuple((k, s.get(k)) for k in swept if k != field)
        parts = ablation_parts(r.name)  # an ablation is its own line, never pooled with the full method
        variant = "" if parts is None else f" {'w/o' if parts[1] == 'no' else 'only'} {parts[2]}"
        groups.setdefault((r.method + variant, others), []).append(r)
    lines: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    spread = {k: {dict(o).get(k) for _, o in groups} for k in swept if k != field}  # values across groups
    for (method, others), members in groups.items():
        by_x: dict[float, list[Run]] = {}
        for r in members:
            by_x.setdefault(float(flat_settings(r)[field]), []).append(r)
        if len(by_x) < 2:
            continue
        varying = [f"{k}={v}" for k, v in others if v is not None and len(spread[k]) > 1]
        label = method + (f" ({', '.join(varying)})" if varying else "")
        per: dict[str, list[tuple[float, float, float, float]]] = {}
        for m in metrics:
            pts = []
            for x in sorted(by_x):
                ests = [r.metrics[m] for r in by_x[x] if m in r.metrics]
                if ests:
                    pts.append((x, sum(float(e["mean"]) for e in ests) / len(ests),
                                min(float(e["ci_low"]) for e in ests), max(float(e["ci_high"]) for e in ests)))
            per[m] = pts
        lines[label] = per
    return lines


def _sweeps_section(runs: Sequence[Run], metrics: Sequence[str], data: dict[str, Any]) -> Section | None:
    sweeps = detect_sweeps(runs)
    if not sweeps or not metrics:
        return None
    sec = Section("Sweeps", [Para(
        "Every numeric setting (config field, method hyper-parameter, or data_size = lists trained on) that "
        "varies across the evaluated runs. One line per method and combination of the other varying settings; "
        "the band is the bootstrap CI, as in SeAdpra's Figures 5-6 (arXiv:2502.12189).")], "sweeps")
    data["sweeps"] = {}
    swept = list(sweeps)
    for field, have in sweeps.items():
        lines = sweep_lines(field, have, swept, metrics)
        values = sorted({float(flat_settings(r)[field]) for r in have})
        data["sweeps"][field] = {"values": values, "lines": lines}
        rows = [(field, flat_settings(r)[field], r.name, r.method, *(fmt_estimate(r.metrics[m]) if m in r.metrics
                                                                     else "n/a" for m in metrics))
                for r in sorted(have, key=lambda r: (r.method, float(flat_settings(r)[field])))]
        sec.blocks.append(Table(["setting", "value", "run", "method", *metrics], rows, f"Sweep over {field}"))
        if lines:
            sec.blocks.append(Figure(f"sweep_{_safe(field)}.png", plots.sweep_figure(field, metrics, lines),
                                     f"Metrics against {field}, mean and bootstrap CI band", f"sweep over {field}"))
        else:
            sec.blocks.append(Para(f"{field} varies, but never while every other varying setting is fixed: "
                                   "no line can be drawn (the runs confound it with another setting)."))
    return sec


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _consistency_section(runs: Sequence[Run], metrics: Sequence[str], data: dict[str, Any]) -> Section | None:
    from rankalign.evaluation.metrics import metric_consistency

    evaluated = [r for r in runs if all(m in r.metrics for m in metrics)]
    if not metrics or len(metrics) < 2:
        return None
    sec = Section("Metric consistency", anchor="consistency")
    if len(evaluated) < 3:
        sec.blocks.append(Para(f"Correlations between metrics need at least 3 evaluated runs; "
                               f"{len(evaluated)} given."))
        return sec
    cons = metric_consistency({m: [float(r.metrics[m]["mean"]) for r in evaluated] for m in metrics})
    data["consistency"] = cons
    sec.blocks.append(Para(f"Pearson and Spearman correlation of the metric means across {len(evaluated)} runs "
                           "(scipy.stats), as in SeAdpra App. A.4 (arXiv:2502.12189); n/a: a metric is constant "
                           "across the runs."))
    for kind in ("pearson", "spearman"):
        rows = [[a, *(fmt_number(cons[kind][a][b], 3) for b in metrics)] for a in metrics]
        sec.blocks.append(Table([kind.capitalize(), *metrics], rows))
    sec.blocks.append(Figure("metric_consistency.png", plots.correlation_heatmaps(
        metrics, {k.capitalize(): [[cons[k][a][b] for b in metrics] for a in metrics] for k in ("pearson", "spearman")}),
        "Correlation between metrics across runs", "metric consistency heatmap"))
    return sec


def _apdf_section(opts: ReportOptions, data: dict[str, Any], encoder: Any = None) -> Section | None:
    ids = ReportOptions.split(opts.apdf_lists)
    if not ids:
        return None
    from rankalign.data.io import read_records
    from rankalign.ranking import RankingConfig
    from rankalign.report.apdf_view import apdf_views

    path = Path(str(opts.ranked_data))
    if not path.exists():
        raise UserError(f"--ranked-data {str(path)!r}: no such file or folder")
    config = RankingConfig(attributes=opts.apdf_attributes, half_life_days=opts.half_life_days,
                           embedding_model=opts.embedding_model)
    views = apdf_views(read_records(path), ids, config, encoder=encoder, source=f"--ranked-data {path}")
    sec = Section("APDF matrices", [Para(
        "Each single-attribute APDF matrix and the multi-APDF Delta_M (their product) of the chosen lists, "
        "SeAdpra eq. 1-4 and Figures 7 and 13 (arXiv:2502.12189). Blue: the response each matrix's own "
        "dynamic ranking (Algorithm 1) picks first, with the largest entry boxed; green: its second pick.")],
        "apdf")
    data["apdf"] = {}
    for v in views:
        labels = [f"R{i + 1}" for i in range(v.panels[0][1].shape[0])]
        note = {None: "no apdf stored", True: "equals the stored apdf",
                False: "DIFFERS from the stored apdf: give the --apdf-attributes/--half-life-days the data was "
                       "ranked with"}[v.matches_stored]
        rows = [(title, " > ".join(labels[i] for i in order)) for title, _, order in v.panels]
        if v.stored_order is not None:
            rows.append(("stored dynamic_ranking", " > ".join(labels[i] for i in v.stored_order)))
        if v.gold is not None:
            rows.append(("gold order", " > ".join(labels[i] for i in v.gold)))
        sec.blocks.append(Table(["matrix", "order (best first)"], rows,
                                f"List {v.record_id}: {v.prompt[:200]} (recomputed Delta_M {note})"))
        sec.blocks.append(Figure(f"apdf_{_safe(v.record_id)}.png", plots.apdf_heatmaps(v.panels, labels),
                                 f"APDF matrices of list {v.record_id}", f"APDF heatmaps of list {v.record_id}"))
        data["apdf"][v.record_id] = {"orders": {t: o for t, o, in ((t, o) for t, _, o in v.panels)},
                                     "stored_order": v.stored_order, "matches_stored": v.matches_stored}
    return sec


def _examples_section(runs: Sequence[Run], n: int) -> Section | None:
    with_gen = [r for r in runs if r.generations]
    if not with_gen or n <= 0:
        return None
    ids = [str(g.get("id")) for g in with_gen[0].generations]
    for r in with_gen[1:]:
        have = {str(g.get("id")) for g in r.generations}
        ids = [i for i in ids if i in have]
    ids = ids[:n]
    rows = []
    for i in ids:
        for r in with_gen:
            row = next(g for g in r.generations if str(g.get("id")) == i)
            text = str(row.get("generation", ""))
            prompt = str(row.get("prompt", ""))
            rows.append((i, prompt[:300] + ("..." if len(prompt) > 300 else ""), r.name,
                         text[:500] + ("..." if len(text) > 500 else "")))
    return Section("Sample generations", [Table(["id", "prompt (first 300 chars)", "run",
                                                 "generation (first 500 chars)"], rows)], "examples")


def build_sections(runs: Sequence[Run], opts: ReportOptions, *, encoder: Any = None
                   ) -> tuple[list[Section], dict[str, Any]]:
    """The report's sections and its machine-readable numbers (``report.json``)."""
    metrics = common_metrics(runs, ReportOptions.split(opts.metrics))
    baseline = find_run(runs, opts.baseline) if opts.baseline else next((r for r in runs if r.metrics), None)
    data: dict[str, Any] = {"runs": [r.name for r in runs], "metrics": list(metrics),
                            "baseline": baseline.name if baseline else None}
    sections = [_runs_section(runs), _methods_section(runs, metrics, baseline, opts, data)]
    for make in (lambda: _ablation_section(runs, metrics, opts, data), lambda: _curves_section(runs, data),
                 lambda: _sweeps_section(runs, metrics, data), lambda: _consistency_section(runs, metrics, data),
                 lambda: _apdf_section(opts, data, encoder), lambda: _examples_section(runs, opts.max_examples)):
        sec = make()
        if sec is not None:
            sections.append(sec)
    return sections, data


def build_report(run_dirs: Sequence[str | Path], opts: ReportOptions, *, encoder: Any = None,
                 names: Sequence[str] | None = None) -> Path:
    """Read the runs, write ``report.md`` (+ ``figures/*.png``), ``report.html`` and ``report.json``
    into ``opts.out``, each file atomically. Returns the output folder.

    Raises:
        UserError: a folder that is not a run, an unknown baseline or metric, an output folder
            that cannot be written.
    """
    from rankalign.evaluation.report import write_json, write_text
    from rankalign.outputs import atomic_path, check_output_dir, writing

    out = check_output_dir(opts.out, "--out", OUTPUT_FILES)
    runs = load_runs(run_dirs, names)
    sections, data = build_sections(runs, opts, encoder=encoder)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for sec in sections:
            for b in sec.blocks:
                if isinstance(b, Figure):
                    with atomic_path(out / "figures" / b.name) as tmp:
                        tmp.write_bytes(b.png)
        write_json(data, out / "report.json")
        write_text(render_markdown(opts.title, sections), out / "report.md")
        write_text(render_html(opts.title, sections), out / "report.html")
    return out
