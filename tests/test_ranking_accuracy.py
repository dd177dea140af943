"""Held-out ranking accuracy (rankalign.evaluation.ranking_accuracy): hand-worked values, the
policy's scores against a naive per-sequence loop, the trainer's eval step and `rankalign eval
--metrics ranking` on a tiny model."""

from __future__ import annotations

import copy
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
from training_tiny import tiny_model, tiny_records, tiny_tokenizer

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
    total = sum(float(lp[len(p) + t - 1, tok_id]) for t, tok_id in enumerate(r))
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
