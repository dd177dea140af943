"""``rankalign study``: ranking rules, label quality, config errors, and a smoke study with a tiny model
that resumes without recomputing finished cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from rankalign.data.record import ListRecord
from rankalign.errors import ConfigError, UserError


def _rec(rid, votes, accepted, texts=None, created=None):
    texts = texts or [f"answer {i} " + "x" * (i + 1) for i in range(len(votes))]
    resp = []
    for i, v in enumerate(votes):
        a = {"votes": v, "accepted": i == accepted}
        if created:
            a["created"] = created[i]
        resp.append({"text": texts[i], "attributes": a})
    return ListRecord.from_dict({"id": rid, "prompt": "question " + rid, "responses": resp})


# ---------------------------------------------------------------------- rules
def test_sort_rules_by_hand():
    from rankalign.ranking.rank import RankingConfig, rule_orders

    rec = _rec("q1", [1, 5, 3], accepted=2, texts=["aaaa", "a", "aaaaaaa"])
    phi = [np.array([0.5, 0.1, 0.9])]
    assert rule_orders([rec], RankingConfig(rule="votes"), phi) == [[1, 2, 0]]
    assert rule_orders([rec], RankingConfig(rule="semantic"), phi) == [[2, 0, 1]]
    assert rule_orders([rec], RankingConfig(rule="Semantic"), phi) == [[2, 0, 1]]  # any case, - for _
    assert rule_orders([rec], RankingConfig(rule="length"), phi) == [[2, 0, 1]]
    # no dates: popularity = log10(votes + 1), the same order as votes
    assert rule_orders([rec], RankingConfig(rule="popularity"), phi) == [[1, 2, 0]]
    r1 = rule_orders([rec], RankingConfig(rule="random"), phi)
    assert sorted(r1[0]) == [0, 1, 2] and r1 == rule_orders([rec], RankingConfig(rule="random"), phi)


def test_time_decay_changes_the_popularity_order():
    from rankalign.ranking.rank import RankingConfig, rule_orders

    # 10 votes two years old (2.5 after decay) vs 4 fresh votes: the fresh answer wins
    rec = _rec("q", [10, 4], accepted=0, created=["2020-01-01", "2022-01-01"])
    cfg = RankingConfig(rule="popularity", half_life_days=365.0)
    assert rule_orders([rec], cfg, [np.zeros(2)]) == [[1, 0]]
    assert rule_orders([rec], RankingConfig(rule="votes"), [np.zeros(2)]) == [[0, 1]]


def test_algorithm1_rule_is_the_default_dynamic_ranking_and_anchor_changes_the_tie_break():
    from rankalign.ranking.apdf import dynamic_ranking
    from rankalign.ranking.rank import RankingConfig, rank_records, rule_orders

    rec = _rec("q", [0, 9, 2], accepted=1)
    phi = [np.array([0.9, 0.1, 0.5])]
    ranked = rank_records([rec], RankingConfig(), phi=phi, show_progress=False)[0]
    assert rule_orders([rec], RankingConfig(), phi) == [ranked.dynamic_ranking]
    # the popularity anchor is Algorithm 1 on the same matrix with ARank = votes order [1, 2, 0]
    expect = dynamic_ranking(np.array(ranked.apdf), np.array([1, 2, 0]))
    assert rule_orders([rec], RankingConfig(rule="algorithm1_popularity_anchor"), phi) == [expect.tolist()]
    # every rule keeps the APDF matrix; only D^R changes
    other = rank_records([_rec("q", [0, 9, 2], accepted=1)], RankingConfig(rule="votes"), phi=phi,
                         show_progress=False)[0]
    assert other.apdf == ranked.apdf and other.dynamic_ranking == [1, 2, 0]


def test_training_reranks_lists_made_by_another_rule(monkeypatch):
    import rankalign.ranking.rank as rank_mod
    from fakes import LetterEncoder
    from rankalign.ranking.rank import RULE_META, RankingConfig, rank_records
    from rankalign.training import load_config
    from rankalign.training.trainer import ensure_dynamic_ranking

    recs = [_rec("q", [0, 9, 2], accepted=1)]
    rank_records(recs, RankingConfig(), encoder=LetterEncoder(), show_progress=False)
    assert recs[0].meta[RULE_META] == "algorithm1"
    seen = []

    def spy(todo, config, **kwargs):
        seen.append(config.rule)
        return rank_records(todo, config, phi=[np.zeros(3)] * len(todo), show_progress=False)

    monkeypatch.setattr(rank_mod, "rank_records", spy)
    ensure_dynamic_ranking(recs, load_config(None, {"method": "seadpra", "ranking_rule": "votes"}))
    assert seen == ["votes"] and recs[0].dynamic_ranking == [1, 2, 0] and recs[0].meta[RULE_META] == "votes"
    ensure_dynamic_ranking(recs, load_config(None, {"method": "seadpra", "ranking_rule": "votes"}))
    assert seen == ["votes"]  # ranked by the asked rule already: not again


def test_unknown_rule_is_a_clear_error():
    from rankalign.ranking.rank import RankingConfig
    from rankalign.training import load_config

    with pytest.raises(ConfigError, match="rule: unknown ranking rule 'vots'"):
        RankingConfig(rule="vots")
    with pytest.raises(ConfigError, match="ranking_rule: 'x' is not one of algorithm1"):
        load_config(None, {"method": "seadpra", "ranking_rule": "x"})


# ---------------------------------------------------------------------- label quality
def test_label_quality_against_a_naive_loop():
    from scipy.stats import kendalltau

    from rankalign.study.labels import RuleSpec, label_quality

    rng = np.random.default_rng(0)
    recs, phis = [], []
    for k in range(30):
        m = int(rng.integers(3, 6))
        votes = [int(v) for v in rng.integers(-1, 10, size=m)]
        recs.append(_rec(f"q{k}", votes, accepted=int(rng.integers(0, m))))
        phis.append(rng.uniform(-1, 1, size=m))
    specs = [RuleSpec("algorithm1", "algorithm1"), RuleSpec("votes", "votes"), RuleSpec("length", "length")]
    res = label_quality({"g": recs}, specs, {"g": phis}, n_boot=200)
    rules = res["groups"]["g"]["rules"]
    # naive: votes rule, top-1 = accepted, tau-b against the votes
    top1, taus = [], []
    for rec in recs:
        v = [r.attributes["votes"] for r in rec.responses]
        order = sorted(range(len(v)), key=lambda i: (-v[i], i))
        top1.append(float(rec.responses[order[0]].attributes["accepted"]))
        if len(set(v)) > 1:
            pos = {i: p for p, i in enumerate(order)}
            taus.append(kendalltau([-pos[i] for i in range(len(v))], v).statistic)
    assert math.isclose(rules["votes"]["top1"]["mean"], np.mean(top1))
    assert math.isclose(rules["votes"]["kendall_tau"]["mean"], np.mean(taus))
    assert rules["votes"]["top1"]["vs_paper"]["n"] == 30 and "vs_paper" not in rules["algorithm1"]["top1"]


def test_label_quality_on_human_ranks_and_rules_without_votes():
    from rankalign.study.labels import RuleSpec, label_quality

    recs = [ListRecord.from_dict({"id": f"t{k}", "prompt": "p", "ranking": [1, 0, 2], "responses": [
        {"text": "bb"}, {"text": "bbbbbb"}, {"text": "b"}]}) for k in range(5)]
    specs = [RuleSpec("algorithm1", "algorithm1"), RuleSpec("length", "length"), RuleSpec("votes", "votes")]
    res = label_quality({"oasst1": recs}, specs, {"oasst1": [np.array([0.3, 0.2, 0.1])] * 5}, n_boot=50)
    rules = res["groups"]["oasst1"]["rules"]
    assert rules["votes"] is None  # needs votes
    assert rules["length"]["top1"]["mean"] == 1.0 and rules["length"]["kendall_tau"]["mean"] == 1.0


# ---------------------------------------------------------------------- config
def test_config_errors_are_listed_together(tmp_path, shared_data):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"stackexchange": str(shared_data / "stackexchange"), "sitez": ["coffee"]},
        "methods": ["base", "dpo_btt", {"name": "x", "method": "sft", "hparam": {}}],
        "labels": ["algorithm1", "votez"], "seedz": [0],
    }))
    from rankalign.study.config import load_study_config

    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    for part in ("unknown key 'sitez' (did you mean 'sites'", "unknown method 'dpo_btt'", "unknown key 'hparam'",
                 "unknown key 'seedz'"):
        assert part in text, text


def test_config_checks_labels_seeds_eval_and_every_cells_training_keys(tmp_path, shared_data):
    from rankalign.study.config import load_study_config

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"stackexchange": str(shared_data / "stackexchange")},
        "labels": [{"name": "x", "rule": "algorithm1", "atributes": ["semantic"]},
                   {"name": "y", "rule": "algorithm1", "attributes": "semantic"}, "votes", "votes"],
        "seeds": ["../../x", True], "eval": {"bootstrap": 0},
        "methods": ["base", {"name": "s", "method": "seadpra", "hparams": {"seadpra_alhpa": 1}}],
    }))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    for part in ("labels[0]: unknown key 'atributes'", "labels[1]: attributes must be a list",
                 "names ['votes'] appear more than once", "seeds:", "eval.bootstrap: 0"):
        assert part in text, text
    # the cells' training keys and the reward model's are checked before any work
    cfg.write_text(yaml.safe_dump({
        "data": {"stackexchange": str(shared_data / "stackexchange")},
        "methods": ["base", {"name": "s", "method": "seadpra", "hparams": {"seadpra_alhpa": 1}},
                    {"name": "d", "method": "dpo_bt", "train": {"max_stepz": 3}}],
        "reward_model": {"settings": {"rm_lsos": "pl"}},
    }))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    for part in ("methods (s):", "seadpra_alhpa", "methods (d):", "max_stepz", "reward_model.settings:", "rm_lsos"):
        assert part in text, text


def test_config_rule_and_baseline_checks(tmp_path, shared_data):
    from rankalign.study.config import load_study_config

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"stackexchange": str(shared_data / "stackexchange")},
                                   "labels": ["votez"], "baseline": "nope", "methods": ["sft", "sft"]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "unknown ranking rule 'votez'" in text and "baseline: 'nope'" in text and "more than once" in text
    cfg.write_text(yaml.safe_dump({"data": {"stackexchange": str(shared_data / "stackexchange")},
                                   "methods": ["base", "sft", "pro"],
                                   "comparisons": [["pro", "sft"], ["pro", "dpo"], ["sft"], ["pro", "pro"]]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "comparisons[1]: 'dpo' is not among the methods" in text
    assert "comparisons[2]: expected a pair of method names" in text and "comparisons[3]: compares 'pro' with itself" in text
    assert "comparisons[0]" not in text
    cfg.write_text(yaml.safe_dump({"data": {"stackexchange": str(shared_data / "stackexchange")},
                                   "methods": ["base", "sft", "seadpra"],
                                   "sweeps": [{"key": "seadpra_alpha", "methods": ["base", "seadpra"]},
                                              {"key": "max_list_size", "methods": ["sft", "nope"]},
                                              {"key": "beta"}]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "sweeps[1]: 'nope' is not among the methods" in text and "sweeps[2]: expected {key: NAME" in text
    cfg.write_text(yaml.safe_dump({"data": {"stackexchange": str(shared_data / "stackexchange")},
                                   "methods": ["base", "sft", "seadpra"],
                                   "sweeps": [{"key": "seadpra_alpha", "methods": ["base", "sft", "seadpra"]}]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "'base' trains nothing" in text and "'seadpra_alpha' is neither a training key nor a hyper-parameter of 'sft'" in text
    assert "of 'seadpra'" not in text
    # a sweep varies one setting, with distinct values; the study owns ref_logps_dir
    cfg.write_text(yaml.safe_dump({
        "data": {"stackexchange": str(shared_data / "stackexchange")}, "train": {"ref-logps-dir": "x"},
        "methods": ["seadpra", {"name": "a", "method": "seadpra", "hparams": {"seadpra-alpha": "1e-2"}},
                    {"name": "b", "method": "seadpra", "hparams": {"seadpra_alpha": 1.0}, "train": {"max_list_size": 3}}],
        "sweeps": [{"key": "seadpra_alpha", "methods": ["seadpra", "a"]},
                   {"key": "seadpra_alpha", "methods": ["seadpra", "b"]}]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "ref_logps_dir is set by the study" in text
    cfg.write_text(cfg.read_text().replace("ref-logps-dir: x", "max_steps: 2"))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "sweeps[0]: 'seadpra' and 'a' both run with seadpra_alpha = 0.01" in text
    assert "sweeps[1]: 'b' differs from 'seadpra' in max_list_size besides seadpra_alpha" in text


# ---------------------------------------------------------------------- smoke study
TINY_BUDGET = {
    "train": {"max_steps": 1, "max_length": 48, "max_prompt_length": 24, "use_cpu": True},
    "reward_model": {"settings": {"max_steps": 1, "max_length": 48, "max_prompt_length": 24, "use_cpu": True}},
}


def _tiny_study(tmp_path, monkeypatch, stem, with_seed=False, **values):
    """A study YAML on a tiny random model (the tiny budget + ``values``), its loaded config,
    and the list of cells ``run_cell`` is called for (names, or (name, seed) pairs)."""
    from rankalign.study import run as study_run
    from rankalign.study.config import load_study_config
    from training_tiny import save_tiny

    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "work_dir": str(tmp_path / "work"),
                                    "model": str(save_tiny(tmp_path / "tiny")), **TINY_BUDGET, **values}))
    calls = []
    real = study_run.run_cell
    monkeypatch.setattr(study_run, "run_cell",
                        lambda *a, **k: calls.append((a[1].name, a[2]) if with_seed else a[1].name) or real(*a, **k))
    return path, load_study_config(path), calls
@pytest.mark.usefixtures("one_torch_thread")
def test_smoke_study_runs_and_resumes_without_recomputing(tmp_path, shared_data, monkeypatch):
    from fakes import LetterEncoder
    from rankalign.study import run as study_run
    from rankalign.study.config import load_study_config

    cfg_path, cfg, calls = _tiny_study(tmp_path, monkeypatch, "smoke", name="smoke", data={
        "stackexchange": str(shared_data / "stackexchange"), "sites": ["coffee"], "train_lists": 4,
        "test_lists": 3, "oasst1": str(shared_data / "oasst1" / "en_100_tree.jsonl")},
        labels=["algorithm1", "popularity", "length", "random"],
        methods=["base", "sft", {"name": "seadpra-votes", "method": "seadpra", "train": {"ranking_rule": "votes"}}],
        seeds=[0, 1], eval={"max_new_tokens": 3, "max_length": 48, "max_prompt_length": 24, "bootstrap": 50})
    study_run.run_study(cfg, encoder=LetterEncoder(), max_cells=3)
    out = tmp_path / "out"
    assert calls == ["base", "sft", "sft"]
    assert (out / "cells" / "base" / "seed-0" / "done.json").is_file()
    labels = json.loads((out / "label_quality.json").read_text())
    assert set(labels["groups"]) == {"coffee", "all sites", "oasst1"}
    assert labels["groups"]["oasst1"]["rules"]["popularity"] is None
    md = (out / "study.md").read_text()
    assert "Label quality" in md and "pending" in md
    # a crash inside a cell: its partial folder is redone, finished cells are not touched
    partial = out / "cells" / "seadpra-votes" / "seed-0"
    partial.mkdir(parents=True)
    (partial / "junk.txt").write_text("half-written")
    before = (out / "cells" / "sft" / "seed-0" / "done.json").stat().st_mtime_ns
    calls.clear()
    study_run.run_study(cfg, encoder=LetterEncoder())
    assert calls == ["seadpra-votes", "seadpra-votes"]
    assert not (partial / "junk.txt").exists() and (partial / "done.json").is_file()
    assert (out / "cells" / "sft" / "seed-0" / "done.json").stat().st_mtime_ns == before
    gens = [json.loads(line) for line in (partial / "eval" / "generations.jsonl").read_text().splitlines()]
    assert gens and all("prompt" not in g for g in gens)  # no data set text in the results
    summary = json.loads((out / "study.json").read_text())
    agg = summary["aggregate"]
    assert agg["baseline"] == "base" and set(agg["paired"]) == {"sft", "seadpra-votes"}
    assert agg["methods"]["sft"]["seeds"] == [0, 1] and "Reward" in agg["metrics"]
    assert (out / "report" / "report.html").is_file() and (out / "study.html").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["runs"] == ["base/seed-0", "sft/seed-0", "sft/seed-1", "seadpra-votes/seed-0",
                              "seadpra-votes/seed-1"] and report["baseline"] == "base/seed-0"
    evaluated = json.loads((partial / "eval" / "metrics.json").read_text())["settings"]["model"]
    assert evaluated == str(tmp_path / "work" / "cells" / "seadpra-votes" / "seed-0" / "model")  # the trained one
    assert not (tmp_path / "work" / "cells" / "seadpra-votes" / "seed-0" / "model").exists()  # deleted once evaluated
    cfg_saved = json.loads((partial / "rankalign_config.json").read_text())
    assert cfg_saved["ranking_rule"] == "votes"
    # nothing left to do: a third run computes no cell
    calls.clear()
    study_run.run_study(cfg, encoder=LetterEncoder())
    assert calls == []
    # the same folder with another budget: refused, naming the setting, before any work
    bigger = load_study_config(cfg_path, {"train.max_steps": 5})
    with pytest.raises(UserError, match=r"computed with other settings \(.*max_steps: 1 -> 5"):
        study_run.run_study(bigger, encoder=LetterEncoder())
    assert calls == []
    # a new rule in `labels` is measured again rather than silently missing
    more = load_study_config(cfg_path, {"labels": ["algorithm1", "popularity", "length", "random", "votes"]})
    study_run.run_study(more, encoder=LetterEncoder())
    assert "votes" in json.loads((out / "label_quality.json").read_text())["groups"]["coffee"]["rules"]
    assert calls == []


def test_set_overrides_reach_into_sections(tmp_path, shared_data):
    from rankalign.study.config import load_study_config

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"stackexchange": str(shared_data / "stackexchange"), "test_lists": 5},
                                   "train": {"max_steps": 3}}))
    c = load_study_config(cfg, {"train.max_steps": 200, "data.train_lists": None, "eval.num_beams": 4})
    assert c.train == {"max_steps": 200} and c.data.train_lists is None and c.data.test_lists == 5
    assert c.eval.num_beams == 4
    with pytest.raises(ConfigError, match="unknown key 'max_step'"):
        load_study_config(cfg, {"eval.max_step": 1})


def test_study_cli_errors_are_one_line(tmp_path, capsys):
    from rankalign.cli import main

    assert main(["study", str(tmp_path / "nope.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "nope.yaml"), "--set", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_oasst1_domain_study_runs_breadth_first(tmp_path, shared_data, monkeypatch, capsys):
    """OASST1 human-ranked trees as the training domain; cells taken seed by seed; sweeps,
    head-to-head comparisons, one reference log-prob cache for every cell."""
    from fakes import LetterEncoder
    from rankalign.study import run as study_run
    from rankalign.study.summary import lists_needed

    _, cfg, calls = _tiny_study(
        tmp_path, monkeypatch, "oasst", with_seed=True,
        data={"oasst1": str(shared_data / "oasst1" / "en_100_tree.jsonl"), "domain": "oasst1",
              "train_lists": 3, "test_lists": 2},
        labels=["algorithm1", "length"],
        # OASST1 replies carry no votes or dates: SeAdpra ranks them by the semantic attribute
        methods=["base", "dpo_bt", {"name": "seadpra-semantic", "method": "seadpra",
                                    "train": {"ranking_attributes": "semantic"}},
                 {"name": "dpo_bt-beta-1", "method": "dpo_bt", "hparams": {"beta": "1e0"}}],
        seeds=[0, 1], comparisons=[["seadpra-semantic", "dpo_bt"]],
        sweeps=[{"key": "beta", "methods": ["dpo_bt-beta-1", "dpo_bt"]}],  # sorted by value in the report
        eval={"max_new_tokens": 2, "max_length": 48, "max_prompt_length": 24, "bootstrap": 20})
    study_run.run_study(cfg, encoder=LetterEncoder(), max_cells=4, breadth_first=True,
                        command="rankalign study oasst.yaml")
    assert calls == [("base", 0), ("dpo_bt", 0), ("seadpra-semantic", 0), ("dpo_bt-beta-1", 0)]
    said = capsys.readouterr().out  # both DPO-BT cells start from the same model: one cache, computed once
    assert said.count("reference log-probs of 3 train list(s): computing once") == 1
    assert said.count("reference log-probs of 3 train list(s): read from") == 1
    out = tmp_path / "out"
    labels = json.loads((out / "label_quality.json").read_text())
    assert set(labels["groups"]) == {"oasst1"}
    done = json.loads((out / "cells" / "seadpra-semantic" / "seed-0" / "done.json").read_text())
    assert done["settings"]["train"]["ranking_attributes"] == "semantic"
    assert {"PrefHit@1", "Reward", "ranking/top1"} <= set(done["metrics"])
    assert json.loads((out / "study.json").read_text())["split"]["data"]["domain"] == "oasst1"
    summary = json.loads((out / "study.json").read_text())
    assert summary["command"] == "rankalign study oasst.yaml"
    # the sweep: beta read from the default (0.1) and from the method's hparams
    from rankalign.losses.dpo import DPOBTParams

    assert summary["aggregate"]["sweeps"] == [{"key": "beta", "points": [
        {"method": "dpo_bt", "value": DPOBTParams().beta}, {"method": "dpo_bt-beta-1", "value": 1.0}]}]
    assert (out / "figures" / "sweeps.png").stat().st_size > 1000 and "## Sweeps" in (out / "study.md").read_text()
    study_run.run_study(cfg, encoder=LetterEncoder(), max_cells=1, breadth_first=True)  # dpo_bt seed 1
    summary = json.loads((out / "study.json").read_text())
    assert summary["command"] == "rankalign study oasst.yaml"  # kept from the run that recorded it
    h2h = summary["aggregate"]["head_to_head"]["seadpra-semantic - dpo_bt"]["PrefHit@1"]
    by_hand = _per_list_seed_mean(out, "seadpra-semantic", [0], "PrefHit@1")
    other = _per_list_seed_mean(out, "dpo_bt", [0, 1], "PrefHit@1")
    diffs = np.array([by_hand[i] - other[i] for i in by_hand])
    assert h2h["mean"] == pytest.approx(diffs.mean()) and h2h["n"] == len(diffs)
    assert h2h["lists_needed"] == lists_needed(diffs)["lists_needed"]  # by hand: test_lists_needed_by_hand
    md = (out / "study.md").read_text()
    assert "Head-to-head" in md and "seadpra-semantic - dpo_bt (1 seed, 2 seeds)" in md
    assert "`rankalign study oasst.yaml`" in md
    assert "read from" in capsys.readouterr().out  # seed 1 too
    assert len(list((tmp_path / "work" / "ref_logps").glob("*.safetensors"))) == 1


def _per_list_seed_mean(out, method, seeds, metric):
    """A metric per held-out list averaged over seeds, read back from the cells' eval folders."""
    from rankalign.evaluation.compare import load_run

    runs = [load_run(out / "cells" / method / f"seed-{s}" / "eval").values[metric] for s in seeds]
    return {i: float(np.mean([r[i] for r in runs])) for i in runs[0]}



def test_reproduce_command_keeps_what_changes_results_and_drops_the_slice_options():
    import argparse

    from rankalign.commands.study import register, reproduce_command

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["study", "configs/study/cpu.yaml", "--max-cells", "3", "--breadth-first",
                              "--set", "train.max_steps=200", "--work-dir", "runs/x y"])
    assert reproduce_command(args) == ("rankalign study configs/study/cpu.yaml --work-dir 'runs/x y' "
                                       "--set train.max_steps=200")


def test_lists_needed_by_hand():
    from rankalign.study.summary import lists_needed

    d = np.array([0.0, 1.0, 0.0, 1.0])  # mean 0.5, sd 0.5774: ((1.96 + 0.8416) * 0.5774 / 0.5)^2 = 10.47 -> 11
    assert lists_needed(d) == {"sd": pytest.approx(0.57735, abs=1e-5), "lists_needed": 11}
    assert lists_needed(np.array([0.2, 0.2, 0.2]))["lists_needed"] == 2  # no spread: still 2 lists
    assert lists_needed(np.array([1.0, -1.0]))["lists_needed"] is None  # no difference observed
    assert lists_needed(np.array([0.3])) == {"sd": None, "lists_needed": None}
    assert lists_needed(np.array([0.1, 0.2, -0.3]))["lists_needed"] is None  # mean 0 up to rounding


@pytest.mark.usefixtures("one_torch_thread")
def test_a_cell_another_worker_holds_is_skipped(tmp_path, shared_data, monkeypatch, capsys):
    """Two workers on one study (one per GPU): a cell locked by the other is left to it."""
    import fcntl

    from fakes import LetterEncoder
    from rankalign.study import run as study_run

    _, cfg, calls = _tiny_study(
        tmp_path, monkeypatch, "workers",
        data={"stackexchange": str(shared_data / "stackexchange"), "sites": ["coffee"], "train_lists": 3,
              "test_lists": 2},
        labels=["votes"], methods=["base", "sft"], seeds=[0],
        eval={"max_new_tokens": 2, "max_length": 48, "max_prompt_length": 24, "bootstrap": 20})
    lock = tmp_path / "work" / "locks" / "sft.seed-0.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        study_run.run_study(cfg, encoder=LetterEncoder())
        assert calls == ["base"]
        assert "sft seed 0 taken by another worker, skipped" in capsys.readouterr().err
    study_run.run_study(cfg, encoder=LetterEncoder())  # the other worker died without finishing: redone
    assert calls == ["base", "sft"]


REPO = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = {"train.max_steps": 1, "train.max_length": 48, "train.max_prompt_length": 24, "train.use_cpu": True,
                  "eval.max_new_tokens": 2, "eval.max_length": 48, "eval.max_prompt_length": 24,
                  "eval.bootstrap": 20, "reward_model.settings.max_steps": 1,
                  "reward_model.settings.max_length": 48, "reward_model.settings.max_prompt_length": 24,
                  "reward_model.settings.use_cpu": True}


def _data_overrides(shared_data):
    return {"data.stackexchange": str(shared_data / "stackexchange"),
            "data.oasst1": str(shared_data / "oasst1" / "en_100_tree.jsonl")}


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "study").glob("*.yaml")))
def test_every_shipped_study_config_loads(name, shared_data):
    from rankalign.study.config import load_study_config

    cfg = load_study_config(REPO / "configs" / "study" / name, _data_overrides(shared_data))
    assert cfg.method_specs() and cfg.seeds


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", ["smoke.yaml", "oasst1.yaml"])
def test_shipped_small_configs_run_with_a_tiny_model(name, tmp_path, shared_data, monkeypatch):
    """configs/study/smoke.yaml and oasst1.yaml as shipped, on a tiny random model and budget."""
    from fakes import LetterEncoder
    from rankalign.study import run as study_run
    from rankalign.study.config import load_study_config
    from training_tiny import save_tiny

    overrides = {**_data_overrides(shared_data), **TINY_OVERRIDES, "model": str(save_tiny(tmp_path / "tiny")),
                 "output_dir": str(tmp_path / "out"), "work_dir": str(tmp_path / "work"), "seeds": [0]}
    if name == "oasst1.yaml":
        overrides.update({"data.train_lists": 4, "data.test_lists": 3})
    cfg = load_study_config(REPO / "configs" / "study" / name, overrides)
    study_run.run_study(cfg, encoder=LetterEncoder())
    summary = json.loads((tmp_path / "out" / "study.json").read_text())
    assert set(summary["aggregate"]["methods"]) == {m.name for m in cfg.method_specs()}
    assert all(row["seeds"] == [0] for row in summary["aggregate"]["methods"].values())


@pytest.mark.usefixtures("one_torch_thread")
def test_spa_cell_runs_dpo_then_self_annotated_rounds(tmp_path, shared_data, monkeypatch):
    """An SPA cell: DPO-BT on the training lists, then a round on their prompts; the last
    round's model is the one evaluated."""
    from fakes import LetterEncoder
    from rankalign.study import run as study_run

    _, cfg, calls = _tiny_study(
        tmp_path, monkeypatch, "spa",
        data={"stackexchange": str(shared_data / "stackexchange"), "sites": ["coffee"], "train_lists": 4,
              "test_lists": 2},
        labels=["votes"], seeds=[0], comparisons=[["spa", "dpo_bt"]],
        methods=["base", "dpo_bt", {"name": "spa", "method": "spa",
                                    "spa": {"rounds": 1, "max_new_tokens": 4, "spa_lambdas": "0.5"}}],
        eval={"max_new_tokens": 2, "max_length": 48, "max_prompt_length": 24, "bootstrap": 20})
    study_run.run_study(cfg, encoder=LetterEncoder())
    assert calls == ["base", "dpo_bt", "spa"]
    out = tmp_path / "out" / "cells" / "spa" / "seed-0"
    summary = json.loads((out / "spa_summary.json").read_text())
    assert summary["round_0"]["method"] == "dpo_bt" and summary["round_0"]["steps"] == 1
    assert [r["round"] for r in summary["rounds"]] == [1] and summary["rounds"][0]["prompts"] == 4
    evaluated = json.loads((out / "eval" / "metrics.json").read_text())["settings"]["model"]
    assert evaluated == str(tmp_path / "work" / "cells" / "spa" / "seed-0" / "model" / "round-1")
    assert json.loads((out / "done.json").read_text())["settings"]["spa"]["rounds"] == 1
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert "spa - dpo_bt" in study["aggregate"]["head_to_head"]
    # the seed DPO read DPO-BT's reference log-probs; round 1 (its own data and reference) added one file
    assert len(list((tmp_path / "work" / "ref_logps").glob("*.safetensors"))) == 2


def test_spa_entries_are_checked_before_any_work(tmp_path, shared_data):
    from rankalign.study.config import load_study_config

    cfg = tmp_path / "s.yaml"
    data = {"stackexchange": str(shared_data / "stackexchange")}
    cfg.write_text(yaml.safe_dump({"data": data, "methods": [
        "base", {"name": "a", "method": "spa", "spa": {"prompts": "mine.txt"}},
        {"name": "b", "method": "pro", "spa": {"rounds": 2}}]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "(a): spa.prompts is set by the study" in text and "(b): an spa entry runs SPA; give it method: spa" in text
    cfg.write_text(yaml.safe_dump({"data": data, "methods": ["base", {"name": "a", "method": "spa",
                                                                      "spa": {"rounds": 0, "spa_lambdas": "x"}}]}))
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg)
    text = str(err.value)
    assert "methods (a): rounds: 0 must be >= 1" in text and "spa_lambdas: 'x'" in text
    assert "no such file" not in text  # the seed set and prompts are written when the study starts
