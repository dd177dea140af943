"""Held-out ranking accuracy (rankalign.evaluation.ranking_accuracy): hand-worked values, the
policy's scores against a naive per-sequence loop, the trainer's eval step and `rankalign eval
--metrics ranking` on a tiny model."""

from __future__ import annotations

import copy
import json
import math
import sys
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.data.record import ListRecord, Response
from rankalign.evaluation import metrics as M
from rankalign.evaluation import ranking_accuracy as RA
from rankalign.evaluation.ranking_accuracy import KENDALL, NDCG, PAIRWISE, TOP1
from training_tiny import save_tiny, tiny_model, tiny_records, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(n: int = 4) -> list[ListRecord]:
    return [ListRecord.from_dict(d) for d in tiny_records(n)]


# ---------------------------------------------------------------------------- per-list values by hand
#: three lists: (scores, gold order) and the values worked out by hand
TOY = [
    ([0.3, 0.1, 0.2], [0, 2, 1]),        # A: the scores order the list exactly like the gold
    ([0.1, 0.2, 0.3], [0, 1, 2]),        # B: exactly reversed
    ([0.4, 0.4, 0.1, 0.0], [1, 0, 3, 2]),  # C: a tie at the top, one discordant pair
]


def test_three_list_toy_by_hand():
    """A: tau 1, top-1 1, pairwise 1, NDCG 1.

    B: rel = [2, 1, 0], gains 2^rel - 1 = [3, 1, 0]; predicted order [2, 1, 0]:
    DCG = 0/log2(2) + 1/log2(3) + 3/log2(4) = 1/log2(3) + 1.5; IDCG = 3 + 1/log2(3).
    tau -1, top-1 0, pairwise 0.

    C: rel = [2, 3, 0, 1]. Pairs (0,1) tied in s; (0,2) (0,3) (1,2) (1,3) concordant;
    (2,3) discordant (s2 > s3 but rel2 < rel3): C - D = 3, P = 6, T_s = 1 ->
    tau_b = 3 / sqrt(6 * 5); pairwise = (4 + 0.5) / 6 = 0.75; the stable order [0, 1, 2, 3]
    puts 0 first but the gold best is 1 -> top-1 0; gains [3, 7, 0, 1]:
    DCG = 3 + 7/log2(3) + 0/2 + 1/log2(5), IDCG = 7 + 3/log2(3) + 1/2 + 0.
    """
    l3 = math.log2(3)
    want = [
        {KENDALL: 1.0, TOP1: 1.0, PAIRWISE: 1.0, NDCG: 1.0},
        {KENDALL: -1.0, TOP1: 0.0, PAIRWISE: 0.0, NDCG: (1 / l3 + 1.5) / (3 + 1 / l3)},
        {KENDALL: 3 / math.sqrt(30), TOP1: 0.0, PAIRWISE: 0.75,
         NDCG: (3 + 7 / l3 + 1 / math.log2(5)) / (7 + 3 / l3 + 0.5)},
    ]
    for (s, g), w in zip(TOY, want):
        got = RA.list_ranking_metrics(s, g)
        assert got == pytest.approx(w, abs=1e-12)
    # as records: the gold is the record's ranking; means over the three lists with CIs
    recs = [ListRecord(f"t{i}", "p", [Response(f"r{j}") for j in range(len(s))], ranking=g)
            for i, (s, g) in enumerate(TOY)]
    res = RA.ranking_accuracy(recs, [s for s, _ in TOY], n_bootstrap=200)
    for name in RA.RANKING_METRICS:
        mean = float(np.mean([w[name] for w in want]))
        assert res.metrics[name]["mean"] == pytest.approx(mean)
        assert res.metrics[name]["ci_low"] <= mean <= res.metrics[name]["ci_high"]
        assert res.metrics[name]["n"] == 3
    assert [e["predicted_order"] for e in res.examples] == [[0, 2, 1], [2, 1, 0], [0, 1, 2, 3]]


def _naive(s, g):
    """Independent definitions: scipy's tau-b, pairs enumerated, NDCG by an explicit loop."""
    from scipy.stats import kendalltau

    m = len(g)
    rel = [0.0] * m
    for pos, i in enumerate(g):
        rel[i] = m - 1 - pos
    tau = kendalltau(s, rel).statistic
    pairs = [(g[a], g[b]) for a in range(m) for b in range(a + 1, m)]
    pw = sum(1 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0 for i, j in pairs) / len(pairs)
    order = sorted(range(m), key=lambda i: (-s[i], i))
    dcg = sum((2 ** rel[i] - 1) / math.log2(r + 2) for r, i in enumerate(order))
    idcg = sum((2 ** rel[i] - 1) / math.log2(r + 2) for r, i in enumerate(g))
    return {KENDALL: 0.0 if math.isnan(tau) else tau, TOP1: float(order[0] == g[0]), PAIRWISE: pw, NDCG: dcg / idcg}


def test_random_lists_match_naive_definitions_and_invariance():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(2, 7))
        s = rng.integers(0, 4, size=m).astype(float).tolist()  # small integers: many ties
        g = rng.permutation(m).tolist()
        got = RA.list_ranking_metrics(s, g)
        assert got == pytest.approx(_naive(s, g), abs=1e-12)
        perm = rng.permutation(m)  # storing the candidates in another order changes nothing but top-1 ties
        inv = np.argsort(perm)
        s2 = [s[p] for p in perm]
        g2 = [int(inv[i]) for i in g]
        got2 = RA.list_ranking_metrics(s2, g2)
        for name in (KENDALL, PAIRWISE):
            assert got2[name] == pytest.approx(got[name])
        if len(set(s)) == m:  # without ties the pairwise accuracy is (1 + tau) / 2
            assert got[PAIRWISE] == pytest.approx((1 + got[KENDALL]) / 2)
    # all orders of three: perfect only for the gold itself
    g = [2, 0, 1]
    for p in permutations(range(3)):
        s = [0.0] * 3
        for rank, i in enumerate(p):
            s[i] = 3 - rank
        assert (RA.list_ranking_metrics(s, g)[NDCG] == pytest.approx(1.0)) == (list(p) == g)


def test_bad_lists_are_clear_errors():
    with pytest.raises(ValueError, match="permutation"):
        RA.list_ranking_metrics([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        RA.list_ranking_metrics([0.1], [0])
    with pytest.raises(ValueError, match="NaN"):
        RA.list_ranking_metrics([0.1, float("nan")], [0, 1])


def test_missing_or_tied_gold_is_a_counted_skip():
    ok = ListRecord("a", "p", [Response("x", {"votes": 3}), Response("y", {"votes": 1})])
    tied_votes = ListRecord("b", "p", [Response("x", {"votes": 2}), Response("y", {"votes": 2})])
    accepted_breaks_tie = ListRecord("c", "p", [Response("x", {"votes": 2}), Response("y", {"votes": 2, "accepted": True})])
    tied_scores = ListRecord("d", "p", [Response("x"), Response("y")], scores=[1.0, 1.0])
    no_gold = ListRecord("e", "p", [Response("x"), Response("y")])
    recs = [ok, tied_votes, accepted_breaks_tie, tied_scores, no_gold]
    assert [M.gold_problem(r) for r in recs] == [None, "tied community order", None, "tied scores", "no gold order"]
    res = RA.ranking_accuracy(recs, [[0.0, 1.0]] * 5, n_bootstrap=50)
    assert res.skipped == {"tied community order": 1, "tied scores": 1, "no gold order": 1}
    assert [e["id"] for e in res.examples] == ["a", "c"]
    assert res.metrics[TOP1]["mean"] == pytest.approx(0.5)  # a: best 0 predicted 1 -> 0; c: best 1 -> 1
    assert "skipped 3 list(s)" in res.skipped_summary()
    empty = RA.ranking_accuracy([no_gold], [[0.0, 1.0]])
    assert empty.metrics == {} and empty.skipped == {"no gold order": 1}


# ---------------------------------------------------------------------------- scores from a tiny policy
def _naive_logps(model, tok, prompt: str, response: str) -> tuple[float, int]:
    """Sum of log p(response token | prefix) from one full forward of one sequence."""
    from rankalign.training.logps import split_texts

    head, tail = split_texts(tok, prompt, response)
    p = tok(head, add_special_tokens=False)["input_ids"]
    r = tok(tail, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # [T, V]
    lp = torch.log_softmax(logits.double(), -1)
    rows = torch.arange(len(p) - 1, len(p) + len(r) - 1)  # position t-1 predicts token t
    total = float(lp[rows, torch.tensor(r)].sum())
    return total, len(r)


def test_policy_scores_match_a_naive_per_sequence_loop():
    tok = tiny_tokenizer()
    policy, ref = tiny_model(len(tok), seed=1), tiny_model(len(tok), seed=2)
    recs = _records(5)
    beta = 0.3
    implicit, kind = RA.response_scores(policy, tok, recs, ref_model=ref, beta=beta, batch_size=2)
    avg, kind2 = RA.response_scores(policy, tok, recs, batch_size=3)
    assert (kind, kind2) == (RA.IMPLICIT_REWARD, RA.AVG_LOGP)
    for rec, s_imp, s_avg in zip(recs, implicit, avg):
        naive_imp, naive_avg = [], []
        for resp in rec.responses:
            lp_pi, n = _naive_logps(policy, tok, rec.prompt, resp.text)
            lp_ref, _ = _naive_logps(ref, tok, rec.prompt, resp.text)
            naive_imp.append(beta * (lp_pi - lp_ref))
            naive_avg.append(lp_pi / n)
        np.testing.assert_allclose(s_imp, naive_imp, atol=1e-4)
        np.testing.assert_allclose(s_avg, naive_avg, atol=1e-5)
    # the whole evaluation orders each list by those scores
    res = RA.evaluate_ranking(policy, tok, recs, ref_model=ref, beta=beta, n_bootstrap=50)
    assert res.kind == RA.IMPLICIT_REWARD
    for ex, s in zip(res.examples, implicit):
        assert ex["predicted_order"] == RA.predicted_order(s)
    # the policy itself as its own reference: every implicit reward is 0, tau 0, pairwise 1/2
    same = RA.evaluate_ranking(policy, tok, recs, ref_model=policy, n_bootstrap=50)
    assert same.metrics[KENDALL]["mean"] == 0.0 and same.metrics[PAIRWISE]["mean"] == 0.5


def test_lora_adapter_disabled_is_the_reference():
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=3)
    base_copy = copy.deepcopy(base)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    recs = _records(3)
    via_adapter, kind = RA.response_scores(model, tok, recs, adapter_reference=True, beta=1.0)
    via_copy, _ = RA.response_scores(model, tok, recs, ref_model=base_copy, beta=1.0)
    assert kind == RA.IMPLICIT_REWARD
    for a, b in zip(via_adapter, via_copy):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert any(np.abs(a).max() > 1e-4 for a in via_adapter)  # the adapter does change the log-probs


# ---------------------------------------------------------------------------- during training
def test_trainer_eval_step_logs_the_same_ranking_metrics(tmp_path: Path):
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=4)
    initial = copy.deepcopy(model)
    recs = _records(4)
    config = ListwiseConfig(method="dpo_pl", output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                            disable_tqdm=True, save_strategy="no", max_length=48, max_prompt_length=24, seed=0,
                            logging_steps=1, max_steps=2, eval_strategy="steps", eval_steps=2,
                            per_device_eval_batch_size=2, learning_rate=1e-2, hparams={"beta": 0.5})
    result = train(config, recs, model=model, tokenizer=tok, eval_records=recs)
    evals = [row for row in result.log if row.get("type") == "eval"]
    assert evals, result.log
    logged = evals[-1]["metrics"] if "metrics" in evals[-1] else evals[-1]
    # the final model against its initial copy, outside the trainer: the same four numbers
    direct = RA.evaluate_ranking(result.model, tok, recs, ref_model=initial, beta=0.5, max_length=48,
                                 max_prompt_length=24, n_bootstrap=10)
    for name in RA.RANKING_METRICS:
        key = next(k for k in logged if k.endswith(name))
        assert logged[key] == pytest.approx(direct.metrics[name]["mean"], abs=1e-5), name


# ---------------------------------------------------------------------------- `rankalign eval`
@pytest.fixture
def letter_embeddings(monkeypatch):
    """A deterministic letter-count embedder instead of MiniLM (no model download, no cache)."""
    from fakes import LetterEncoder
    from rankalign.evaluation import evaluate

    real = evaluate.make_embed_fn
    enc = LetterEncoder()
    monkeypatch.setattr(evaluate, "make_embed_fn", lambda *a, **k: real(lambda texts: enc.encode(texts)))


def _data(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_ranking_cli_matches_the_library_and_uses_the_runs_reference(tmp_path: Path, capsys):
    from rankalign import cli
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.models import load_model_and_tokenizer
    from rankalign.training.trainer import train

    base = save_tiny(tmp_path / "base", seed=5)
    data = _data(tmp_path, tiny_records(5))
    recs = _records(5)
    # 1. a plain model folder, no reference: the mean token log-prob is ranked
    out = tmp_path / "ev_base"
    assert cli.main(["eval", "--model", str(base), "--data", str(data), "--output-dir", str(out), "--metrics",
                     "ranking", "--quiet", "--bootstrap", "100"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    model, tok = load_model_and_tokenizer(str(base))
    direct = RA.evaluate_ranking(model, tok, recs, n_bootstrap=100)
    for name in RA.RANKING_METRICS:
        assert saved["metrics"][name] == pytest.approx(direct.metrics[name])
    assert "mean token log-prob" in saved["settings"]["ranking_scores"]
    rows = [json.loads(x) for x in (out / "ranking.jsonl").read_text().splitlines()]
    assert [r["predicted_order"] for r in rows] == [e["predicted_order"] for e in direct.examples]
    assert not (out / "generations.jsonl").exists()  # ranking needs no generation
    # 2. a training output of a reference method: implicit reward against the model the run started from
    config = ListwiseConfig(method="dpo_pl", model=str(base), data=str(data), output_dir=str(tmp_path / "run"),
                            use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", max_length=48,
                            max_prompt_length=24, max_steps=2, learning_rate=1e-2, hparams={"beta": 0.4})
    result = train(config)
    out2 = tmp_path / "ev_run"
    assert cli.main(["eval", "--model", result.output_dir, "--data", str(data), "--output-dir", str(out2),
                     "--metrics", "ranking", "--quiet", "--bootstrap", "100", "--max-length", "48",
                     "--max-prompt-length", "24"]) == 0
    saved2 = json.loads((out2 / "metrics.json").read_text())
    assert "implicit reward of dpo_pl" in saved2["settings"]["ranking_scores"]
    trained, _ = load_model_and_tokenizer(result.output_dir)
    direct2 = RA.evaluate_ranking(trained, tok, recs, ref_model=model, beta=0.4, max_length=48, max_prompt_length=24,
                                  n_bootstrap=100)
    for name in RA.RANKING_METRICS:
        assert saved2["metrics"][name]["mean"] == pytest.approx(direct2.metrics[name]["mean"], abs=1e-6)
    rows2 = [json.loads(x) for x in (out2 / "ranking.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(rows2[0]["scores"], direct2.examples[0]["scores"], atol=1e-5)
    # 3. the two runs compared, paired by record id
    capsys.readouterr()
    assert cli.main(["compare", str(out2), str(out), "--metrics", "ranking/kendall_tau,ranking/top1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "ranking/" in ln]
    assert len(lines) == 2 and all("(n = 5)" in ln for ln in lines)


def test_from_generations_equals_a_fresh_run(tmp_path: Path, letter_embeddings):
    from rankalign import cli

    base = save_tiny(tmp_path / "base", seed=6)
    data = _data(tmp_path, tiny_records(4))
    fresh = tmp_path / "fresh"
    common = ["--data", str(data), "--quiet", "--bootstrap", "100", "--k", "1,2"]
    assert cli.main(["eval", "--model", str(base), "--output-dir", str(fresh), "--max-new-tokens", "5",
                     "--num-beams", "1", *common]) == 0
    again = tmp_path / "again"
    assert cli.main(["eval", "--from-generations", str(fresh), "--output-dir", str(again), *common]) == 0
    a = json.loads((fresh / "metrics.json").read_text())
    b = json.loads((again / "metrics.json").read_text())
    gen_metrics = {k: v for k, v in a["metrics"].items() if not k.startswith("ranking/")}
    assert set(gen_metrics) >= {"PrefHit@1", "PrefHit@2", "PrefRecall@2", "BLEU", "ROUGE-L", "CoSim"}
    assert b["metrics"] == gen_metrics and b["corpus_BLEU"] == a["corpus_BLEU"]
    assert set(a["metrics"]) - set(gen_metrics) == set(RA.RANKING_METRICS)  # auto = generation + ranking
    rows_a = [json.loads(x) for x in (fresh / "generations.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (again / "generations.jsonl").read_text().splitlines()]
    assert rows_a == rows_b
    assert not (again / "ranking.jsonl").exists()


def test_toxicity_column_from_a_classifier_folder(tmp_path: Path, letter_embeddings):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rankalign import cli
    from rankalign.errors import UserError
    from rankalign.evaluation.toxicity import toxic_label

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, num_labels=2,
                      id2label={0: "non-toxic", 1: "toxic"}, label2id={"non-toxic": 0, "toxic": 1})
    clf = LlamaForSequenceClassification(cfg).eval()
    clf.save_pretrained(tmp_path / "tox")
    tok.save_pretrained(tmp_path / "tox")
    assert toxic_label(cfg) == (1, False)
    assert toxic_label(cfg, "NON-TOXIC") == (0, False)
    with pytest.raises(UserError, match="labels: 0='non-toxic', 1='toxic'"):
        toxic_label(cfg, "hate")
    base = save_tiny(tmp_path / "base", seed=7)
    data = _data(tmp_path, tiny_records(3))
    out = tmp_path / "ev"
    assert cli.main(["eval", "--model", str(base), "--data", str(data), "--output-dir", str(out), "--metrics",
                     "toxicity", "--toxicity-model", str(tmp_path / "tox"), "--max-new-tokens", "4",
                     "--num-beams", "1", "--batch-size", "2", "--quiet", "--bootstrap", "50"]) == 0
    rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    for row in rows:  # one text at a time, softmax of the two logits
        enc = tok(row["generation"], return_tensors="pt")
        with torch.no_grad():
            want = float(torch.softmax(clf(**enc).logits[0], -1)[1])
        assert row["Toxicity"] == pytest.approx(want, abs=1e-5)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["Toxicity"]["mean"] == pytest.approx(np.mean([r["Toxicity"] for r in rows]))
    assert set(saved["metrics"]) == {"Toxicity"}


def test_eval_bad_input_is_one_line(tmp_path: Path, capsys):
    from rankalign import cli

    base = save_tiny(tmp_path / "base", seed=8)
    data = _data(tmp_path, tiny_records(3))

    def run(*argv: str) -> str:
        rc = cli.main(["eval", "--data", str(data), "--output-dir", str(tmp_path / "o"), "--quiet", *argv])
        err = capsys.readouterr().err
        assert rc == 2, err
        return err

    err = run("--model", str(tmp_path / "no_such_model"))
    assert "--model" in err and "no such model folder" in err
    err = run("--model", str(base), "--metrics", "generation", "--k", "9")
    assert "--k 9: larger than every list (the longest has 4 responses)" in err
    err = run("--metrics", "reward,bogus")
    assert "--metrics reward needs --reward-model" in err and "unknown group 'bogus'" in err
    err = run("--from-generations", str(tmp_path / "nothing"))
    assert "--from-generations" in err and "no such run" in err
    no_gold = _data(tmp_path, [{"id": "x", "prompt": "p", "responses": [{"text": "a"}, {"text": "b"}]}])
    rc = cli.main(["eval", "--model", str(base), "--data", str(no_gold), "--output-dir", str(tmp_path / "o"),
                   "--metrics", "generation,ranking", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "has a gold order" in err and "reward and toxicity still run" in err
    assert not (tmp_path / "o").exists()


def test_reward_column_from_a_one_label_classifier(tmp_path: Path, letter_embeddings):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rankalign import cli
    from rankalign.training.logps import split_texts

    tok = tiny_tokenizer()
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, num_labels=1)
    rm = LlamaForSequenceClassification(cfg).eval()
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    base = save_tiny(tmp_path / "base", seed=9)
    data = _data(tmp_path, tiny_records(3))
    out = tmp_path / "ev"
    assert cli.main(["eval", "--model", str(base), "--data", str(data), "--output-dir", str(out), "--reward-model",
                     str(tmp_path / "rm"), "--max-new-tokens", "4", "--num-beams", "1", "--quiet",
                     "--bootstrap", "50"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert {"Reward", "PrefHit@1", "ranking/top1"} <= set(saved["metrics"])  # auto adds reward when a model is given
    for row in (json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()):
        head, tail = split_texts(tok, row["prompt"], row["generation"])  # the pair as training formats it
        ids = tok(head, add_special_tokens=False)["input_ids"] + tok(tail, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = float(rm(input_ids=torch.tensor([ids])).logits[0, 0])
        assert row["Reward"] == pytest.approx(want, abs=1e-5)


def test_eval_ranking_of_an_unmerged_lora_run_uses_the_base_as_reference(tmp_path: Path):
    from peft import PeftModel

    from rankalign import cli
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.models import load_model_and_tokenizer
    from rankalign.training.trainer import train

    base = save_tiny(tmp_path / "base", seed=5)
    data = _data(tmp_path, tiny_records(4))
    config = ListwiseConfig(method="dpo_pl", model=str(base), data=str(data), output_dir=str(tmp_path / "run"),
                            use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", max_length=48,
                            max_prompt_length=24, max_steps=2, learning_rate=5e-2, use_lora=True, merge_lora=False,
                            hparams={"beta": 0.4})
    train(config)
    out = tmp_path / "ev"
    assert cli.main(["eval", "--model", str(tmp_path / "run"), "--data", str(data), "--output-dir", str(out),
                     "--metrics", "ranking", "--quiet", "--bootstrap", "20", "--max-length", "48",
                     "--max-prompt-length", "24"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert "the LoRA base (adapter disabled)" in saved["settings"]["ranking_scores"]
    got = [json.loads(x)["scores"] for x in (out / "ranking.jsonl").read_text().splitlines()]
    policy, tok = load_model_and_tokenizer(str(base))
    ref = copy.deepcopy(policy)
    merged = PeftModel.from_pretrained(policy, str(tmp_path / "run")).merge_and_unload()
    want = RA.evaluate_ranking(merged, tok, _records(4), ref_model=ref, beta=0.4, max_length=48, max_prompt_length=24)
    for g, w in zip(got, want.examples):
        np.testing.assert_allclose(g, w["scores"], atol=1e-5)
    assert any(abs(x) > 1e-3 for row in got for x in row)  # the adapter moved the log-probs
