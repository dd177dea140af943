"""The study's report: label quality, the method table over seeds, paired differences with a
baseline, budgets and wall times (``study.md``, ``study.html``, ``study.json``, ``figures/``),
and ``report/``, the ``rankalign report`` of every finished cell.

Aggregation over seeds: a method's value of a metric is the mean over its finished seeds of
the per-seed means (their spread is the seed standard deviation). The paired difference with
the baseline is taken per held-out list: each list's value is first averaged over the
method's seeds, then ``method - baseline`` is bootstrapped over the lists
(:func:`rankalign.evaluation.compare.paired_difference`), so the interval reflects the test
lists, and the seed average removes part of the training noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rankalign.study.config import StudyConfig


def key_metrics(k: str) -> tuple[str, ...]:
    """The method table's columns: ranking accuracy, PrefHit at the smallest and PrefRecall at the
    largest ``eval.k`` (PrefHit@1 and PrefRecall@3 by default, as SeAdpra's Table 1), reward."""
    ks = sorted(int(x) for x in str(k).split(",") if x.strip())
    return ("ranking/kendall_tau", "ranking/top1", "ranking/pairwise_accuracy", f"PrefHit@{ks[0]}",
            f"PrefRecall@{ks[-1]}", "Reward")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def collect(cfg: StudyConfig) -> dict[str, Any]:
    """Finished cells per method: ``{name: {"seeds": [...], "per_seed": [metrics], "values": [per-example]}}``."""
    from rankalign.evaluation.compare import load_run
    from rankalign.study.run import cell_dirs, cells

    out: dict[str, Any] = {}
    for spec, seed in cells(cfg):
        folder, _ = cell_dirs(cfg, spec, seed)
        entry = out.setdefault(spec.name, {"loss": spec.method, "seeds": [], "per_seed": [], "values": [],
                                           "timings": [], "pending": []})
        if not (folder / "done.json").is_file():
            entry["pending"].append(seed)
            continue
        done = _read(folder / "done.json")
        metrics = _read(folder / "eval" / "metrics.json")["metrics"]
        entry["seeds"].append(seed)
        entry["per_seed"].append({k: v["mean"] for k, v in metrics.items()})
        entry["values"].append(load_run(folder / "eval").values)
        entry["timings"].append(done.get("timings_s", {}))
    return out


def _metrics_of(collected: dict[str, Any], k: str) -> list[str]:
    present = {m for e in collected.values() for ps in e["per_seed"] for m in ps}
    return [m for m in key_metrics(k) if m in present]


def _seed_mean(values: list[dict[str, dict[str, float]]], metric: str) -> dict[str, float]:
    """Per-list value averaged over seeds (lists every seed scored)."""
    per = [v.get(metric, {}) for v in values]
    ids = set.intersection(*(set(p) for p in per)) if per else set()
    return {i: float(np.mean([p[i] for p in per])) for i in sorted(ids)}


def aggregate(cfg: StudyConfig, collected: dict[str, Any], n_boot: int) -> dict[str, Any]:
    """Method table and paired differences (``study.json``'s ``methods``, ``paired`` and ``head_to_head``)."""
    metrics = _metrics_of(collected, cfg.eval.k)
    names = [s.name for s in cfg.method_specs()]
    baseline = cfg.baseline or (names[0] if names else None)
    table: dict[str, Any] = {}
    for name, e in collected.items():
        row: dict[str, Any] = {"seeds": e["seeds"], "pending": e["pending"]}
        for m in metrics:
            vals = [ps[m] for ps in e["per_seed"] if m in ps]
            if vals:
                row[m] = {"mean": float(np.mean(vals)), "seed_sd": float(np.std(vals, ddof=1)) if len(vals) > 1
                          else None, "n_seeds": len(vals)}
        table[name] = row
    base = collected.get(baseline or "")
    paired = ({name: _differences(e, base, metrics, n_boot) for name, e in collected.items()
               if name != baseline and e["values"]} if base and base["values"] else {})
    head_to_head = {f"{a} - {b}": _differences(collected[a], collected[b], metrics, n_boot, with_needed=True)
                    for a, b in cfg.comparisons
                    if collected.get(a, {}).get("values") and collected.get(b, {}).get("values")}  # both computed
    lists = {m: max((len(v.get(m, {})) for e in collected.values() for v in e["values"]), default=0)
             for m in metrics}
    return {"metrics": metrics, "baseline": baseline, "methods": table, "paired": paired,
            "head_to_head": head_to_head, "lists": lists}


def _differences(a: dict[str, Any], b: dict[str, Any], metrics: list[str], n_boot: int, *,
                 with_needed: bool = False) -> dict[str, Any]:
    """``a - b`` per metric over the held-out lists both scored, each side averaged over its seeds:
    :func:`~rankalign.evaluation.compare.paired_difference` (+ :func:`lists_needed`)."""
    from rankalign.evaluation.compare import paired_difference

    out = {}
    for m in metrics:
        va, vb = _seed_mean(a["values"], m), _seed_mean(b["values"], m)
        ids = sorted(set(va) & set(vb))
        if ids:
            out[m] = paired_difference([va[i] for i in ids], [vb[i] for i in ids], n_boot=n_boot)
            if with_needed:
                out[m].update(lists_needed(np.array([va[i] - vb[i] for i in ids])))
    return out


def lists_needed(d: np.ndarray, z: float = 1.96, z_power: float = 0.8416) -> dict[str, Any]:
    """How many scored held-out lists give an 80% chance that a 95% interval excludes 0 if the
    true difference were the observed mean: ``((z + z_power) * sd / |mean|)^2``, at least 2, with
    ``sd`` the per-list spread of the differences (normal approximation). A rough guide: the
    observed mean is itself uncertain, and seed-to-seed spread is not in it. None when the mean
    is 0 (to rounding) or there is one list.

    >>> lists_needed(np.array([0.0, 1.0, 0.0, 1.0]))["lists_needed"]
    11
    """
    if d.size < 2:
        return {"sd": None, "lists_needed": None}
    sd, mean = float(np.std(d, ddof=1)), float(np.mean(d))
    need = None if abs(mean) < 1e-9 else max(2, int(np.ceil(((z + z_power) * sd / abs(mean)) ** 2)))
    return {"sd": sd, "lists_needed": need}


def _fmt(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _mean_sd(est: dict[str, Any] | None) -> str:
    """``mean ± seed sd`` of a method-table entry, ``—`` when the method has no finished seed."""
    if est is None:
        return "—"
    return _fmt(est["mean"]) + (f" ± {_fmt(est['seed_sd'])}" if est["seed_sd"] is not None else "")


def _method_rows(agg: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, row in agg["methods"].items():
        cells = [name, f"{len(row['seeds'])}" + (f" (+{len(row['pending'])} pending)" if row["pending"] else "")]
        rows.append(cells + [_mean_sd(row.get(m)) for m in agg["metrics"]])
    return rows


def _multiplicity(per_pair: dict[str, dict[str, Any]]) -> str:
    """A line on how many intervals the table holds and how many would exclude 0 by chance."""
    n = sum(len(per) for per in per_pair.values())
    stars = sum(1 for per in per_pair.values() for d in per.values() if d["ci_low"] > 0 or d["ci_high"] < 0)
    return (f"The table holds {n} intervals, {stars} marked *; at 95% about {n / 20:.1f} would exclude 0 by chance "
            f"alone, with no real difference, so a lone * is weak evidence (no multiple-comparison correction).")


def _needed_rows(agg: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, per in agg["head_to_head"].items():
        cells = [name]
        for m in agg["metrics"]:
            d = per.get(m)
            cells.append("—" if d is None or d.get("lists_needed") is None
                         else f"{d['lists_needed']:,} (now {d['n']})")
        rows.append(cells)
    return rows


def _seeds_label(agg: dict[str, Any], name: str) -> str:
    n = len(agg["methods"].get(name, {}).get("seeds", []))
    return f"{n} seed{'s' if n != 1 else ''}"


def _paired_rows(agg: dict[str, Any], key: str = "paired") -> list[list[str]]:
    rows = []
    for name, per in agg[key].items():
        sides = name.split(" - ") if key == "head_to_head" else [name]
        cells = [f"{name} ({', '.join(_seeds_label(agg, x) for x in sides)})"]
        for m in agg["metrics"]:
            d = per.get(m)
            if d is None:
                cells.append("—")
                continue
            mark = " *" if d["ci_low"] > 0 or d["ci_high"] < 0 else ""
            cells.append(f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] p={d['p_value']:.2f}{mark}")
        rows.append(cells)
    return rows


def _figure(agg: dict[str, Any], collected: dict[str, Any]) -> bytes | None:
    from rankalign.report.plots import _png, _pyplot

    metrics = agg["metrics"]
    names = [n for n, e in collected.items() if e["per_seed"]]
    if not metrics or not names:
        return None
    plt = _pyplot()
    # a few methods: the metrics side by side; many: fewer panels a row, each wide enough to read
    cols = len(metrics) if len(names) <= 6 else 2 if len(names) <= 12 else 1
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.2, 0.34 * len(names)) * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics):
        for k, n in enumerate(names):
            vals = [ps[m] for ps in collected[n]["per_seed"] if m in ps]
            if not vals:
                continue
            ax.bar(k, float(np.mean(vals)), color="#9ecae1", edgecolor="#3182bd")
            ax.scatter([k] * len(vals), vals, color="#08519c", s=12, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def sweep_points(cfg: StudyConfig, agg: dict[str, Any]) -> list[dict[str, Any]]:
    """Each sweep of the config: its key and, per method in order of the key's value, the value
    and the method's row of the method table (finished seeds only)."""
    from rankalign.study.run import setting_value

    specs = {m.name: m for m in cfg.method_specs()}
    out = []
    for sweep in cfg.sweeps:
        points = [{"method": n, "value": setting_value(cfg, specs[n], sweep["key"]), "row": agg["methods"].get(n)}
                  for n in sweep["methods"]]
        try:
            points.sort(key=lambda p: p["value"])
        except TypeError:  # values of mixed kinds: keep the config's order
            pass
        out.append({"key": sweep["key"], "points": points})
    return out


def _sweep_figure(sweeps: list[dict[str, Any]], collected: dict[str, Any], metrics: list[str]) -> bytes | None:
    """One row per sweep, one panel per metric: per-seed values (dots) and their mean (line)
    against the swept value (evenly spaced, labelled)."""
    from rankalign.report.plots import _png, _pyplot

    if not sweeps or not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(sweeps), len(metrics), figsize=(2.9 * len(metrics), 2.7 * len(sweeps)),
                             squeeze=False)
    for row, sweep in zip(axes, sweeps):
        for ax, m in zip(row, metrics):
            xs, means = [], []
            for k, p in enumerate(sweep["points"]):
                vals = [ps[m] for ps in collected.get(p["method"], {}).get("per_seed", []) if m in ps]
                if vals:
                    ax.scatter([k] * len(vals), vals, color="#08519c", s=12, zorder=3)
                    xs.append(k)
                    means.append(float(np.mean(vals)))
            ax.plot(xs, means, color="#3182bd", marker="_", markersize=14)
            ax.set_xticks(range(len(sweep["points"])))
            ax.set_xlim(-0.5, len(sweep["points"]) - 0.5)
            ax.set_xticklabels([str(p["value"]) if isinstance(p["value"], bool) or not isinstance(
                p["value"], (int, float)) else f"{p['value']:g}" for p in sweep["points"]], fontsize=8)
            ax.set_xlabel(sweep["key"], fontsize=8)
            ax.set_title(m, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _sweep_rows(sweeps: list[dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    rows = []
    for sweep in sweeps:
        for p in sweep["points"]:
            r = p["row"] or {"seeds": [], "pending": []}
            rows.append([f"{sweep['key']} = {p['value']}", p["method"], str(len(r["seeds"])),
                         *[_mean_sd(r.get(m)) for m in metrics]])
    return rows


def _label_sections(labels: dict[str, Any]) -> list[Any]:
    from rankalign.report.document import Para, Section, Table
    from rankalign.study.labels import label_tables

    tables = label_tables(labels)
    what = {"top1": "Top-1 agreement: the rule's best response is the accepted answer (StackExchange) or the "
                    "human rank-0 reply (OASST1).",
            "kendall_tau": "Kendall tau-b with the vote order (StackExchange) or the human ranks (OASST1)."}
    blocks: list[Any] = [Para(
        "Each cell: mean over lists [95% bootstrap CI]; * = the paired difference with the paper's Algorithm 1 on "
        "the same lists excludes 0. The column header gives the number of lists. n/a: the rule needs votes and "
        "the lists have none. The popularity and vote rules read the votes, so their Kendall tau against the "
        "vote order is circular; top-1 against the accepted answer (the asker's choice, which no rule reads) "
        "is the outside criterion.")]
    for crit, (headers, rows) in tables.items():
        blocks.append(Table(headers, rows, caption=what[crit]))
    return [Section("Label quality: ranking rules against human choices", blocks, "labels")]


def _compute_minutes(collected: dict[str, Any], labels: dict[str, Any] | None, rm: dict[str, Any] | None) -> float:
    """Minutes of compute behind the finished results (cells, reward model, label table), summed over sessions."""
    total = sum(t.get("train", 0.0) + t.get("eval", 0.0) for e in collected.values() for t in e["timings"])
    total += (rm or {}).get("seconds", 0.0) + (labels or {}).get("seconds", 0.0)
    return total / 60


def _setup_rows(cfg: StudyConfig, split: dict[str, Any] | None, rm: dict[str, Any] | None, seconds: float,
                compute_minutes: float, command: str | None = None) -> list[list[str]]:
    from rankalign.study.run import TRAIN_DEFAULTS

    train = {**TRAIN_DEFAULTS, **cfg.train}
    rows = [*([["command", f"`{command}`"]] if command else []),
            ["policy", cfg.model or "SmolLM2-135M-Instruct (offline default)"],
            ["domain", cfg.data.domain],
            ["training", ", ".join(f"{k} {v}" for k, v in train.items())],
            ["evaluation", f"{cfg.eval.metrics}; max_new_tokens {cfg.eval.max_new_tokens}, "
                           f"num_beams {cfg.eval.num_beams}, bootstrap {cfg.eval.bootstrap}"],
            ["seeds", ", ".join(str(s) for s in cfg.seeds)],
            ["wall time", f"{compute_minutes:.1f} min of compute behind the finished results (training + "
                          f"evaluation of the cells, reward model, label table); this invocation "
                          f"{seconds / 60:.1f} min"]]
    if split:
        rows.insert(2, ["lists", f"{len(split['train_ids'])} training, {len(split['test_ids'])} held out; "
                                 f"held-out by source: {split['test_sites']}"])
    if rm:
        held = rm.get("held_out", {}).get("metrics", {})
        acc = held.get("ranking/pairwise_accuracy") or {}
        rows.append(["reward model", f"trained by the study ({rm['settings'].get('rm_loss')}, "
                                     f"{rm['settings'].get('max_steps')} steps, {rm['seconds'] / 60:.1f} min); "
                                     f"held-out pairwise accuracy {_fmt(acc.get('mean'))} "
                                     f"[{_fmt(acc.get('ci_low'))}, {_fmt(acc.get('ci_high'))}]"])
    return rows


def write_summary(cfg: StudyConfig, seconds: float, command: str | None = None) -> Path:
    """Write ``study.md``, ``study.html``, ``study.json``, ``figures/`` and ``report/`` into ``output_dir``.

    ``command``: the command line that reproduces the study (shown in the setup table)."""
    from rankalign.evaluation.report import write_json, write_text
    from rankalign.outputs import atomic_path, writing
    from rankalign.report.document import Figure, Para, Section, Table, render_html, render_markdown

    out = Path(cfg.output_dir)
    if command is None and (out / "study.json").is_file():  # keep the command an earlier run recorded
        command = _read(out / "study.json").get("command")
    labels = _read(out / "label_quality.json") if (out / "label_quality.json").is_file() else None
    split = _read(out / "split.json") if (out / "split.json").is_file() else None
    rm = _read(out / "reward_model.json") if (out / "reward_model.json").is_file() else None
    collected = collect(cfg) if split else {}
    agg = aggregate(cfg, collected, cfg.eval.bootstrap) if collected else None
    sections = [Section("Setup", [Table(["item", "value"], _setup_rows(cfg, split, rm, seconds,
                                                                    _compute_minutes(collected, labels, rm), command))],
                        "setup")]
    if labels:
        sections += _label_sections(labels)
    png = sweep_png = None
    if agg and agg["metrics"]:
        methods_section = Section("Methods (mean over seeds ± seed sd)", [
            Para("Held-out lists only. ranking/*: each list ordered by the trained policy's implicit reward "
                 "(reference methods) or mean token log-prob, against the community order. PrefHit@1 / "
                 "PrefRecall@3: the generated answer's nearest human answers against the gold order. Reward: the "
                 "study's reward model on the generated answer. The ranking metrics skip lists whose community order "
                 "is tied (two answers with equal votes, neither accepted), hence fewer lists."),
            Table(["method", "seeds", *[f"{m} ({agg['lists'][m]} lists)" for m in agg["metrics"]]],
                  _method_rows(agg))], "methods")
        sections.append(methods_section)
        if agg["paired"]:
            sections.append(Section(f"Paired differences with {agg['baseline']}", [
                Para("Per held-out list, averaged over the method's finished seeds, then bootstrapped over lists: "
                     "mean [95% CI] and sign-flip p-value; * = the interval excludes 0. The interval reflects the "
                     "test lists; the seed-to-seed spread is the ± of the table above and is not in it, so with "
                     "few seeds a * is optimistic."),
                Table(["method", *agg["metrics"]], _paired_rows(agg))], "paired"))
        if agg.get("head_to_head"):
            sections.append(Section("Head-to-head paired differences", [
                Para("a - b per held-out list (each side averaged over its finished seeds), bootstrapped over the "
                     "lists both were scored on: mean [95% CI] and sign-flip p-value; * = the interval excludes 0. "
                     "The pairs are the config's comparisons (the paper's ordering, ablations against the full "
                     "method); pairs with an unfinished side are left out until it is computed. "
                     + _multiplicity(agg["head_to_head"])),
                Table(["a - b", *agg["metrics"]], _paired_rows(agg, "head_to_head")),
                Para("Scale needed: scored held-out lists for an 80% chance that a 95% interval excludes 0 if "
                     "the true difference were the one observed, ((1.96 + 0.84) sd / |mean|)^2 with sd the per-list "
                     "spread of the differences; now: the lists both sides were scored on (the ranking metrics skip "
                     "tied lists, so a study needs more held-out lists than this). A rough guide: the observed "
                     "difference is itself uncertain, and more lists do not remove the seed-to-seed spread. '—': "
                     "no difference observed, or one list."),
                Table(["a - b", *agg["metrics"]], _needed_rows(agg))], "head-to-head"))
        sweeps = sweep_points(cfg, agg)
        sweep_png = _sweep_figure(sweeps, collected, agg["metrics"])
        if sweeps:
            agg["sweeps"] = [{"key": sw["key"], "points": [{"method": p["method"], "value": p["value"]}
                                                          for p in sw["points"]]} for sw in sweeps]
            blocks: list[Any] = [
                Para("Each sweep's methods differ in one training key or hyper-parameter (its value: the one the "
                     "study gives, else the default); mean over seeds ± seed sd, held-out lists."),
                Table(["setting", "method", "seeds", *agg["metrics"]], _sweep_rows(sweeps, agg["metrics"]))]
            if sweep_png:
                blocks.append(Figure("sweeps.png", sweep_png, "Each metric against the swept setting: per-seed "
                                                              "values (dots) and their mean (line)."))
            sections.append(Section("Sweeps", blocks, "sweeps"))
        png = _figure(agg, collected)
        if png:
            methods_section.blocks.append(Figure("methods.png", png, "Each method's per-seed means (dots) and their "
                                                                  "mean (bar)."))
        times = [[n, f"{np.mean([t.get('train', 0) for t in e['timings']]):.0f}",
                  f"{np.mean([t.get('eval', 0) for t in e['timings']]):.0f}"]
                 for n, e in collected.items() if e["timings"]]
        sections.append(Section("Wall time per cell (seconds, mean over seeds)",
                                [Table(["method", "train", "eval"], times)], "times"))
    data = {"name": cfg.name, "command": command, "labels": labels, "split": split and {k: v for k, v in split.items()
                                                                     if not k.endswith("_ids")},
            "reward_model": rm, "aggregate": agg}
    with writing(out):
        for name, data_png in (("methods.png", png), ("sweeps.png", sweep_png)):
            if data_png:
                with atomic_path(out / "figures" / name) as tmp:
                    tmp.write_bytes(data_png)
        write_json(data, out / "study.json")
        write_text(render_markdown(cfg.name, sections), out / "study.md")
        write_text(render_html(cfg.name, sections), out / "study.html")
    _cell_report(cfg, collected)
    return out


def _cell_report(cfg: StudyConfig, collected: dict[str, Any]) -> None:
    """``report/``: the evidence report (``rankalign report``) of every finished cell."""
    from rankalign.report.build import build_report
    from rankalign.report.options import ReportOptions
    from rankalign.study.run import cell_dirs

    folders, names = [], []
    for spec in cfg.method_specs():
        for seed in collected.get(spec.name, {}).get("seeds", []):
            folders.append(cell_dirs(cfg, spec, seed)[0])
            names.append(f"{spec.name}/seed-{seed}")
    if len(folders) < 1:
        return
    base = cfg.baseline or cfg.method_specs()[0].name
    base_name = next((n for n in names if n.rsplit("/", 1)[0] == base), None)
    opts = ReportOptions(out=str(Path(cfg.output_dir) / "report"), title=f"{cfg.name}: every cell",
                         baseline=base_name, bootstrap=cfg.eval.bootstrap, max_examples=3)
    build_report(folders, opts, names=names)
