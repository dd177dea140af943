"""Paired comparison of runs (rankalign.evaluation.compare, `rankalign compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankalign.errors import UserError
from rankalign.evaluation.compare import compare_runs, load_run, paired_difference, sign_flip_p_value


def test_exact_sign_flip_p_value_by_hand():
    """d = [1, 1, 1, -1]: mean 0.5. Over the 16 sign vectors the sum is 4, 2, 0, -2, -4 with counts
    1, 4, 6, 4, 1; |mean| >= 0.5 means |sum| >= 2: 1 + 4 + 4 + 1 = 10 of 16 -> p = 0.625."""
    assert sign_flip_p_value(np.array([1.0, 1.0, 1.0, -1.0])) == pytest.approx(0.625)
    r = paired_difference([1, 1, 1, 0], [0, 0, 0, 1])
    assert (r["mean"], r["p_value"], r["n"]) == (0.5, pytest.approx(0.625), 4)
    assert paired_difference([0.3, 0.2], [0.3, 0.2])["p_value"] == 1.0  # no difference at all


def test_bootstrap_ci_matches_a_naive_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(size=30)
    r = paired_difference(a, b, n_boot=500, seed=7)
    # the same resamples, one at a time
    naive_rng = np.random.default_rng(7)
    idx = naive_rng.integers(0, 30, size=(500, 30))
    means = [float(np.mean([a[i] - b[i] for i in row])) for row in idx]
    assert r["ci_low"] == pytest.approx(np.quantile(means, 0.025))
    assert r["ci_high"] == pytest.approx(np.quantile(means, 0.975))
    assert r["mean"] == pytest.approx(float(np.mean(a - b)))


def test_known_difference_and_null_case():
    rng = np.random.default_rng(0)
    b = rng.normal(size=200)
    a = b + 0.5 + rng.normal(scale=0.1, size=200)  # A better by 0.5 on every prompt
    r = paired_difference(a, b)
    assert r["ci_low"] < 0.5 < r["ci_high"] and r["ci_low"] > 0.4
    assert r["p_value"] == pytest.approx(1 / 10001)  # no random flip reaches the observed mean
    # null: the two runs are draws from the same distribution
    hits = 0
    for seed in range(20):
        g = np.random.default_rng(100 + seed)
        x, y = g.normal(size=100), g.normal(size=100)
        n = paired_difference(x, y, n_boot=2000, seed=seed)
        hits += n["p_value"] < 0.05
        assert (n["ci_low"] < 0 < n["ci_high"]) == (n["p_value"] >= 0.05) or abs(n["p_value"] - 0.05) < 0.02
    assert hits <= 3  # about 5 % false positives expected (1 of 20)


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="no paired"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([1, float("nan")], [1, 2])


def _run(folder: Path, rows: list[dict], metrics: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps({"metrics": {m: {"mean": 0} for m in metrics}}), encoding="utf-8")
    return folder


def test_runs_paired_by_id_with_mismatches_reported(tmp_path: Path):
    a = _run(tmp_path / "seadpra", [{"id": f"q{i}", "generation": "x", "phi": 1, "PrefHit@1": 1.0, "BLEU": 0.5}
                                    for i in range(6)], ["PrefHit@1", "BLEU"])
    b = _run(tmp_path / "dpo", [{"id": f"q{i}", "generation": "y", "phi": 0, "PrefHit@1": float(i % 2), "BLEU": 0.5,
                                 "Reward": 1.0} for i in range(1, 8)], ["PrefHit@1", "BLEU", "Reward"])
    res = compare_runs(load_run(a), load_run(b), n_boot=1000)
    assert set(res.rows) == {"PrefHit@1", "BLEU"}  # phi is an index, Reward only in B
    assert res.only_a == ["q0"] and res.only_b == ["q6", "q7"]
    assert res.metrics_only_b == ["Reward"]
    hit = res.rows["PrefHit@1"]  # ids q1..q5: B has 1,0,1,0,1 -> A - B = 0,1,0,1,0
    assert hit["n"] == 5 and hit["mean"] == pytest.approx(0.4)
    assert hit["p_value"] == pytest.approx(0.5)  # exact: 2 of the 4 sign patterns of (1, 1) reach |0.4|
    assert res.rows["BLEU"]["mean"] == 0.0 and res.rows["BLEU"]["p_value"] == 1.0
    assert res.lines()[0].startswith("seadpra beats dpo on PrefHit@1 by 0.4000 [")
    assert "ties dpo on BLEU" in res.lines()[1]


def test_bad_runs_are_one_line_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no such run"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an evaluation run"):
        load_run(tmp_path / "empty")
    dup = _run(tmp_path / "dup", [{"id": "a", "BLEU": 1.0}, {"id": "a", "BLEU": 0.0}], ["BLEU"])
    with pytest.raises(UserError, match="appears twice"):
        load_run(dup)
    x = _run(tmp_path / "x", [{"id": "a", "BLEU": 1.0}], ["BLEU"])
    y = _run(tmp_path / "y", [{"id": "b", "BLEU": 1.0}], ["BLEU"])
    with pytest.raises(UserError, match="share no record id"):
        compare_runs(load_run(x), load_run(y))
    z = _run(tmp_path / "z", [{"id": "a", "ROUGE-L": 1.0}], ["ROUGE-L"])
    with pytest.raises(UserError, match="share no metric"):
        compare_runs(load_run(x), load_run(z))
    with pytest.raises(UserError, match="not in both runs"):
        compare_runs(load_run(x), load_run(x), metrics=["CoSim"])


def test_compare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from rankalign import cli

    rng = np.random.default_rng(3)
    base = rng.random(40)
    a = _run(tmp_path / "A", [{"id": str(i), "PrefHit@1": float(base[i] > 0.3)} for i in range(40)], ["PrefHit@1"])
    b = _run(tmp_path / "B", [{"id": str(i), "PrefHit@1": float(base[i] > 0.6)} for i in range(40)], ["PrefHit@1"])
    out = tmp_path / "diff.json"
    assert cli.main(["compare", str(a), str(b), "--out", str(out), "--names", "SeAdpra,DPO", "--n-boot", "2000"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if "PrefHit@1" in ln)
    assert line.startswith("SeAdpra beats DPO on PrefHit@1 by ") and "p = " in line
    saved = json.loads(out.read_text())
    want = float(np.mean((base > 0.3).astype(float) - (base > 0.6).astype(float)))
    assert saved["metrics"]["PrefHit@1"]["mean"] == pytest.approx(want) and saved["run_a"] == "SeAdpra"
    md = tmp_path / "diff.md"
    assert cli.main(["compare", str(a), str(b), "--out", str(md)]) == 0
    assert "| PrefHit@1 |" in md.read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(a), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err
    assert cli.main(["compare", str(a), str(b), "--alpha", "2"]) == 2
    assert "--alpha" in capsys.readouterr().err
