"""`rankalign report`: hand-made run folders (tiny JSON files) -> tables, sweeps, consistency,
APDF views, escaping, a self-contained HTML page, and a real headless browser opening it."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from rankalign.errors import UserError
from rankalign.report import ReportOptions, ablation_parts, build_report, detect_sweeps, load_runs, plots
from rankalign.report.build import build_sections, sweep_lines

EVIL = "<script>alert('x')</script> & | done"
IDS = ["q1", "q2", "q3", "q4"]


def make_run(root: Path, name: str, *, method: str = "seadpra", hparams: dict | None = None,
             per_example: dict[str, list[float]] | None = None, config: dict | None = None,
             log: bool = True, lists: int = 40, generation: str = "an answer") -> Path:
    """A run folder as `rankalign train` + `rankalign eval` write it (tiny)."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"method": method, "hparams": hparams or {}, "learning_rate": 1e-4, "per_device_train_batch_size": 2,
           "output_dir": str(d), "seed": 42, "use_lora": True, **(config or {})}
    (d / "rankalign_config.json").write_text(json.dumps(cfg))
    if log:
        rows = [{"type": "truncation", "method": method, "lists": lists}]
        for step in range(1, 4):
            rows.append({"type": "train", "step": step, "loss": 2.0 / step, "learning_rate": 1e-4,
                         "metrics": {"rewards/accuracies": 0.2 * step, "rewards/margins": 0.1 * step,
                                     "ranking/accuracy": 0.3 * step}})
        rows.append({"type": "summary", "step": 3, "train_runtime": 1.5})
        (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if per_example is not None:
        metrics = {}
        for m, vals in per_example.items():
            metrics[m] = {"mean": float(np.mean(vals)), "ci_low": float(np.min(vals)),
                          "ci_high": float(np.max(vals)), "n": len(vals)}
        (d / "metrics.json").write_text(json.dumps({"num_examples": len(IDS), "metrics": metrics,
                                                    "settings": {"model": str(d)}}))
        # rows in reverse order: the report must align prompts by id, not by position
        gens = [{"id": i, "prompt": f"question {i} <b>bold</b>", "generation": generation,
                 **{m: v[k] for m, v in per_example.items()}} for k, i in enumerate(IDS)][::-1]
        (d / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    return d


def metrics_of(a: float, b: float) -> dict[str, list[float]]:
    return {"PrefHit@1": [1.0, 0.0, 1.0 if a > 0.5 else 0.0, 1.0],
            "BLEU": [a, a + 0.1, a / 2, b], "ROUGE-L": [b, b, a, a]}


def test_ablation_naming_rule():
    assert ablation_parts("seadpra-no_apdf_po") == ("seadpra", "no", "apdf_po")
    assert ablation_parts("seadpra-only-semantic") == ("seadpra", "only", "semantic")
    assert ablation_parts("my-run-no_perco") == ("my-run", "no", "perco")
    assert ablation_parts("seadpra") is None
    assert ablation_parts("dpo-nothing") is None


def test_not_a_run_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    good = make_run(tmp_path, "good", per_example=metrics_of(0.2, 0.3))
    with pytest.raises(UserError, match=r"'.*empty' is not a run: it holds none of train_log.jsonl"):
        load_runs([good, tmp_path / "empty"])
    with pytest.raises(UserError, match="is not a folder"):
        load_runs([tmp_path / "missing"])
    from rankalign.cli import main

    rc = main(["report", str(good), str(tmp_path / "empty"), "--out", str(tmp_path / "rep")])
    assert rc == 2
    assert not (tmp_path / "rep").exists()


def test_eval_folder_finds_the_trained_model_config(tmp_path):
    train = make_run(tmp_path, "train", hparams={"seadpra_alpha": 0.05})
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"metrics": {"BLEU": {"mean": 0.1, "ci_low": 0, "ci_high": 0.2}},
                                                 "settings": {"model": str(train)}}))
    (run,) = load_runs([ev])
    assert run.method == "seadpra" and run.config["hparams"] == {"seadpra_alpha": 0.05}
    assert len(run.train_rows()) == 3 and run.data_size == 40


def test_sweeps_detected_from_configs(tmp_path):
    runs = [make_run(tmp_path, f"sa{a}", hparams={"seadpra_alpha": a}, per_example=metrics_of(a, 0.5))
            for a in (0.1, 0.01, 0.05)]
    runs += [make_run(tmp_path, f"pro-lr{lr}", method="pro", config={"learning_rate": lr},
                      per_example=metrics_of(0.3, lr * 1000)) for lr in (1e-4, 3e-4)]
    runs.append(make_run(tmp_path, "train-only", hparams={"seadpra_alpha": 0.5}))  # no metrics: not in sweeps
    loaded = load_runs(runs)
    sweeps = detect_sweeps(loaded)
    # seadpra_alpha (SeAdpra runs only; PRO has no alpha), learning_rate; seed/output_dir are not sweeps
    assert sorted(sweeps) == ["learning_rate", "seadpra_alpha"]
    assert sorted(r.name for r in sweeps["seadpra_alpha"]) == ["sa0.01", "sa0.05", "sa0.1"]
    lines = sweep_lines("seadpra_alpha", sweeps["seadpra_alpha"], list(sweeps), ["BLEU"])
    assert list(lines) == ["seadpra"]
    pts = lines["seadpra"]["BLEU"]
    assert [p[0] for p in pts] == [0.01, 0.05, 0.1]  # sorted by x
    for x, mean, lo, hi in pts:  # BLEU values [a, a+.1, a/2, .5]: hand-worked mean, min, max
        vals = [x, x + 0.1, x / 2, 0.5]
        assert mean == pytest.approx(sum(vals) / 4) and lo == pytest.approx(min(vals)) and hi == pytest.approx(max(vals))
    lr_lines = sweep_lines("learning_rate", sweeps["learning_rate"], list(sweeps), ["ROUGE-L"])
    assert list(lr_lines) == ["pro"]  # the SeAdpra runs all share lr 1e-4: no line
    assert [p[0] for p in lr_lines["pro"]["ROUGE-L"]] == [1e-4, 3e-4]


def test_data_size_sweep_from_the_log(tmp_path):
    runs = [make_run(tmp_path, f"n{n}", lists=n, per_example=metrics_of(0.1 * k, 0.2)) for k, n in
            enumerate((100, 300, 900), 1)]
    assert list(detect_sweeps(load_runs(runs))) == ["data_size"]


def _paired_naive(a, b, n_boot, seed, alpha):
    from rankalign.evaluation.compare import paired_difference

    return paired_difference(a, b, n_boot=n_boot, seed=seed, alpha=alpha)


def test_tables_paired_differences_and_consistency(tmp_path):
    pytest.importorskip("rankalign.evaluation.compare")
    base = make_run(tmp_path, "dpo", method="dpo_pl", per_example=metrics_of(0.2, 0.3))
    full = make_run(tmp_path, "seadpra", per_example=metrics_of(0.6, 0.1))
    abl = make_run(tmp_path, "seadpra-no_apdf_po", per_example=metrics_of(0.4, 0.9))
    opts = ReportOptions(out=str(tmp_path / "rep"), baseline="dpo", bootstrap=200)
    runs = load_runs([base, full, abl])
    sections, data = build_sections(runs, opts)
    titles = [s.title for s in sections]
    assert titles == ["Runs", "Comparison of methods", "Ablations", "Training curves", "Metric consistency",
                      "Sample generations"]
    assert data["metrics"] == ["PrefHit@1", "BLEU", "ROUGE-L"]
    # Table 1: the eval CI numbers as written
    assert data["table1"]["seadpra"]["BLEU"]["mean"] == pytest.approx((0.6 + 0.7 + 0.3 + 0.1) / 4)
    # paired difference = paired_difference on values aligned by prompt id; the mean is hand-worked
    d = data["paired_vs_baseline"]["differences"]["seadpra"]["BLEU"]
    a, b = metrics_of(0.6, 0.1)["BLEU"], metrics_of(0.2, 0.3)["BLEU"]
    assert d["mean"] == pytest.approx(np.mean(np.subtract(a, b)))  # (0.4 + 0.4 + 0.2 - 0.2) / 4 = 0.2
    assert d["mean"] == pytest.approx(0.2) and d["n"] == 4
    assert d == _paired_naive(a[::-1], b[::-1], 200, 0, 0.05)  # in the baseline's file order (reversed)
    # ablation block: against the run named "seadpra"
    abl_d = data["ablations"]["seadpra"]["seadpra-no_apdf_po"]["ROUGE-L"]
    assert abl_d["mean"] == pytest.approx(np.mean(np.subtract([0.9, 0.9, 0.4, 0.4], [0.1, 0.1, 0.6, 0.6])))
    # consistency: Pearson of the means across the 3 runs, against numpy
    means = {m: [np.mean(metrics_of(*ab)[m]) for ab in ((0.2, 0.3), (0.6, 0.1), (0.4, 0.9))]
             for m in ("BLEU", "ROUGE-L")}
    r = data["consistency"]["pearson"]["BLEU"]["ROUGE-L"]
    assert r == pytest.approx(np.corrcoef(means["BLEU"], means["ROUGE-L"])[0, 1])


def _build(tmp_path, **kw):
    pytest.importorskip("rankalign.evaluation.compare")
    runs = [make_run(tmp_path, f"alpha{a}", hparams={"seadpra_alpha": a}, per_example=metrics_of(a * 5, 0.3),
                     generation=EVIL) for a in (0.01, 0.05, 0.1)]
    runs.append(make_run(tmp_path, "alpha0.01-no_perco", per_example=metrics_of(0.1, 0.2), generation=EVIL))
    opts = ReportOptions(out=str(tmp_path / "rep"), bootstrap=100, **kw)
    return build_report(runs, opts)


def test_training_curves_group_a_study_by_seed(monkeypatch):
    """A study's many cells are drawn as one line per method (mean of its seeds), legend outside."""
    assert plots.seed_groups(["a/seed-0", "a/seed-1", "b/seed-0", "c"]) == {
        "a": ["a/seed-0", "a/seed-1"], "b": ["b/seed-0"], "c": ["c"]}
    curves = {f"m{g}/seed-{s}": {"loss": [(1.0, g + s), (2.0, g + 2 * s)]} for g in range(6) for s in range(3)}
    drawn: list[tuple[str, list[float]]] = []
    import matplotlib.axes

    real_plot = matplotlib.axes.Axes.plot

    def spy(ax, xs, ys, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(ys)))
        return real_plot(ax, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. tight_layout giving up under an oversized legend
        png = plots.training_curves(curves)
    assert png.startswith(b"\x89PNG")
    assert [label for label, _ in drawn] == [f"m{g} (mean of 3)" for g in range(6)]
    assert drawn[2][1] == pytest.approx([2 + 1, 2 + 2])  # mean over seeds 0-2 of (2 + s, 2 + 2s)
    drawn.clear()
    plots.training_curves({k: curves[k] for k in list(curves)[:4]})  # few runs: one line each
    assert [label for label, _ in drawn] == list(curves)[:4]


def test_report_files_escaped_and_self_contained(tmp_path):
    out = _build(tmp_path)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.json", "report.md"]
    assert not [p for p in out.rglob(".*")]  # no temporary left behind
    # the generation and the prompt's HTML are text, never markup
    assert "<script" not in page.lower() and "<b>" not in page and "<script" not in md.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; \\| done" in md
    # no external fetch: every src/href is a data: URI or an in-page anchor
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert "http://" not in page and "https://" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # training curves, alpha sweep, consistency heatmap
    assert len(images) == 3
    for img in images:
        assert base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n")
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["metric_consistency.png", "sweep_seadpra_alpha.png", "training_curves.png"]
    for f in figs:
        assert f"](figures/{f})" in md
    assert "| alpha0.01-no_perco | w/o perco |" in md
    assert "Sweep over seadpra_alpha" in md
    data = json.loads((out / "report.json").read_text())
    # the ablation at alpha 0.01 is not pooled with the full run at alpha 0.01
    assert list(data["sweeps"]["seadpra_alpha"]["lines"]) == ["seadpra"]
    bleu = data["sweeps"]["seadpra_alpha"]["lines"]["seadpra"]["BLEU"]
    assert bleu[0][:2] == [0.01, pytest.approx(np.mean(metrics_of(0.05, 0.3)["BLEU"]))]


def test_apdf_views_match_rank_records(tmp_path):
    from rankalign.data.io import write_records
    from rankalign.data.record import ListRecord
    from rankalign.ranking import RankingConfig, rank_records
    from rankalign.report.apdf_view import apdf_views

    recs = []
    for k in range(3):
        m = 4 + k % 2
        recs.append(ListRecord.from_dict({
            "id": f"L{k}", "prompt": f"prompt {k} <i>x</i>",
            "responses": [{"text": f"r{j}", "attributes": {"votes": (j * 5 + k) % 7, "helpfulness": (j + 2 * k) % 3,
                                                           "created": f"2020-0{j + 1}-01"}} for j in range(m)]}))
    cfg = RankingConfig(attributes=("popularity", "helpfulness"))
    rank_records(recs, cfg, show_progress=False)
    data = tmp_path / "ranked.jsonl"
    write_records(recs, data)
    views = apdf_views(recs, ["L1"], cfg)
    (v,) = views
    assert v.matches_stored is True
    titles = [t for t, _, _ in v.panels]
    assert titles == ["Delta_Po (popularity)", "Delta_helpfulness", "Delta_M (multi-APDF)"]
    # the product of the single-attribute matrices is the stored multi-APDF, and the multi panel's
    # order is the stored dynamic ranking
    np.testing.assert_allclose(v.panels[0][1] * v.panels[1][1], np.asarray(recs[1].apdf))
    assert v.panels[2][2] == recs[1].dynamic_ranking
    # other settings than the ranking's: flagged
    (w,) = apdf_views(recs, ["L1"], RankingConfig(attributes=("popularity",)))
    assert w.matches_stored is False
    with pytest.raises(UserError, match=r"--apdf-lists: id\(s\) \['nope'\] not in"):
        apdf_views(recs, ["nope"], cfg)
    # through the command line
    pytest.importorskip("rankalign.evaluation.compare")
    run = make_run(tmp_path, "r", per_example=metrics_of(0.2, 0.3))
    from rankalign.cli import main

    rc = main(["report", str(run), "--out", str(tmp_path / "rep"), "--ranked-data", str(data),
               "--apdf-lists", "L0,L1", "--apdf-attributes", "popularity,helpfulness", "--bootstrap", "50"])
    assert rc == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "equals the stored apdf" in md and "prompt 1 &lt;i&gt;x&lt;/i&gt;" in md
    assert (tmp_path / "rep" / "figures" / "apdf_L1.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--disable-background-networking", "--proxy-server=127.0.0.1:9",
                           *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_in_headless_chromium(tmp_path):
    out = _build(tmp_path)
    page = out / "report.html"
    # a copy of the page with a probe that writes, after load, what the browser made of it
    probe = ("<script>window.addEventListener('load',function(){var im=[].slice.call(document.images);"
             "var t=document.createElement('pre');t.id='probe';t.textContent=JSON.stringify({"
             "images:im.length,loaded:im.filter(function(i){return i.complete&&i.naturalWidth>0}).length,"
             "widths:im.map(function(i){return i.naturalWidth}),tables:document.querySelectorAll('table').length,"
             "scripts:document.scripts.length,text:document.body.innerText.indexOf(\"<script>alert('x')<\\/script>\")"
             "});document.body.appendChild(t);});</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))
    assert seen["images"] == 3 and seen["loaded"] == 3 and min(seen["widths"]) > 100
    assert seen["tables"] >= 5
    assert seen["scripts"] == 1  # only the probe: the generation's <script> is text
    assert seen["text"] >= 0  # ... and it is visible as text
    # and a screenshot of the page as shipped is not blank
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[0] >= 2000 and img.std() > 10 and math.isfinite(img.mean())
