"""The shipped CoQA demo sample and a smoke run of ``rankalign demo`` with a tiny model."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from rankalign.commands.demo import demo_data_path, load_demo_records, run_demo, split_records
from rankalign.data.record import ListRecord, parse_datetime


def test_shipped_sample_validates_and_has_the_promised_shape():
    with demo_data_path() as path:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 48
    records = [ListRecord.from_dict(r, where=f"coqa_demo.jsonl line {i + 1}") for i, r in enumerate(rows)]
    assert len({r.id for r in records}) == 48
    for rec in records:
        assert 3 <= rec.num_responses <= 6, rec.id
        attrs = [resp.attributes for resp in rec.responses]
        assert all(set(a) == {"votes", "created", "accepted"} for a in attrs), rec.id
        assert sum(bool(a["accepted"]) for a in attrs) == 1, rec.id  # exactly one accepted answer
        assert min(a["votes"] for a in attrs) <= 0 or rec.num_responses == 3  # a poor answer in most lists
        assert rec.meta["source"] == "rankalign-demo" and rec.meta["title"] and rec.meta["tags"]
        assert rec.prompt.startswith(rec.meta["title"])
        created = [parse_datetime(a["created"]) for a in attrs]
        assert min(created) >= parse_datetime(rec.meta["created"])  # answers after the question
    # answers spread over time: some lists span months or years
    spans = [(max(parse_datetime(r.attributes["created"]) for r in rec.responses)
              - min(parse_datetime(r.attributes["created"]) for r in rec.responses)).days for rec in records]
    assert sum(s > 60 for s in spans) >= 15
    assert any(min(r.attributes["votes"] for r in rec.responses) < 0 for rec in records)
    tags = Counter(t for rec in records for t in rec.meta["tags"])
    for topic in ("python", "git", "sql", "javascript", "bash", "regex"):
        assert tags[topic] >= 4, topic
    assert Counter(r.num_responses for r in records).keys() >= {3, 4, 5, 6}
    train, test = split_records(records)
    assert (len(train), len(test)) == (40, 8)
    assert {r.id for r in train}.isdisjoint({r.id for r in test})


class HashEncoder:
    """A fake sentence encoder: hashed bag of words, 32 dims (deterministic, no model)."""

    model_id = "test-hash-encoder"

    def encode(self, texts):
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 32] += 1.0
        return out


def test_demo_smoke_with_tiny_model(tmp_path, monkeypatch):
    from training_tiny import tiny_model, tiny_tokenizer

    monkeypatch.setenv("RANKALIGN_CACHE", str(tmp_path / "cache"))
    records = load_demo_records()
    train, test = split_records(records)
    subset = train[:4] + test[:2]
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    out = tmp_path / "demo"
    summary = run_demo(out, steps=2, max_new_tokens=4, model=model, tokenizer=tok, encoder=HashEncoder(),
                       records=subset, max_length=64, show_progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test_questions"] == 2
    assert set(metrics["before"]) == set(metrics["after"]) >= {"PrefHit@1", "PrefRecall@3", "BLEU", "ROUGE-L"}
    for side in ("before", "after"):
        for est in metrics[side].values():
            assert est["ci_low"] <= est["mean"] <= est["ci_high"]
            assert est["n"] == 2
    assert len(metrics["train"]["loss_curve"]) == 2
    agr = metrics["ranking_agreement"]["dynamic_vs_community"]
    assert agr["lists"] == 6 and -1 <= agr["kendall_tau"] <= 1
    assert summary["timings_s"]["total"] > 0
    report = (out / "report.md").read_text()
    assert "| PrefHit@1 |" in report and "smoke-scale" in report and "Kendall tau" in report
    assert (out / "model" / "config.json").is_file()
    gens = (out / "generations_after.jsonl").read_text().splitlines()
    assert len(gens) == 2


def test_demo_rejects_bad_arguments(tmp_path):
    from rankalign.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--steps must be >= 1.*\n.*--method 'nope'"):
        run_demo(tmp_path / "x", steps=0, method="nope")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_eval_real_models_on_two_demo_questions(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct + all-MiniLM-L6-v2 (offline packages) on 2 held-out questions."""
    from rankalign import cli

    monkeypatch.setenv("RANKALIGN_CACHE", str(tmp_path / "cache"))
    with demo_data_path() as path:
        rc = cli.main(["eval", "--data", str(path), "--split", "test", "--limit", "2", "--max-new-tokens", "24",
                       "--output-dir", str(tmp_path / "ev"), "--quiet"])
    assert rc == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_examples"] == 2
    gens = [json.loads(line) for line in (tmp_path / "ev" / "generations.jsonl").read_text().splitlines()]
    assert all(len(g["generation"].split()) >= 3 for g in gens)  # a real model writes real text
    # a real embedder puts an on-topic answer closer to its own question's answers than to random text
    assert all(max(g["similarities"]) > 0.3 for g in gens)


def test_demo_checks_the_training_config_before_any_work(tmp_path, monkeypatch):
    """KTO needs two lists per micro-batch and the demo trains on one: a clear error at once,
    not after the ranking and the 'before' generations have run."""
    from rankalign.errors import ConfigError

    def no_work(*a, **k):
        raise AssertionError("ranking ran before the training config was checked")

    monkeypatch.setattr("rankalign.ranking.rank.rank_records", no_work)
    with pytest.raises(ConfigError, match="kto needs >= 2 lists per micro-batch"):
        run_demo(tmp_path / "x", method="kto", encoder=HashEncoder(), records=load_demo_records()[:3])
