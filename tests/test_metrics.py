"""Evaluation metrics (docs/methods.md#metrics): hand-worked examples, naive loops, CI behaviour, eval CLI."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from rankalign.data.record import ListRecord
from rankalign.evaluation import metrics as M
from rankalign.evaluation.evaluate import parse_ks, score_generations
from rankalign.evaluation.report import escape_cell, markdown_table


# ----------------------------------------------------------------------------- PrefHit / PrefRecall
def test_pref_hit_hand_worked():
    """Row 0: Sim=[0.1, 0.8, 0.3], gold [1, 0, 2] -> Phi=1 in G(1)={1}: hit.
    Row 1: Sim=[0.9, 0.2, 0.4], gold [2, 0, 1] -> Phi=0, G(1)={2}: miss; G(2)={2,0}: hit.
    Row 2: Sim=[0.5, 0.5, 0.1], gold [1, 2, 0] -> tie, the lower index wins: Phi=0; miss at k=1, 2
    (G(2)={1,2}); hit at k=3.
    """
    sims = [[0.1, 0.8, 0.3], [0.9, 0.2, 0.4], [0.5, 0.5, 0.1]]
    gold = [[1, 0, 2], [2, 0, 1], [1, 2, 0]]
    assert M.pref_hit_per_example(sims, gold, 1).tolist() == [1.0, 0.0, 0.0]
    assert M.pref_hit_at_k(sims, gold, 1) == pytest.approx(1 / 3)
    assert M.pref_hit_at_k(sims, gold, 2) == pytest.approx(2 / 3)
    assert M.pref_hit_at_k(sims, gold, 3) == pytest.approx(1.0)


def test_pref_recall_hand_worked():
    """Sim=[0.1, 0.8, 0.3, 0.5], gold [0, 1, 2, 3].
    k=1: Psi={1}, G={0} -> 0.  k=2: Psi={1,3}, G={0,1} -> 1/2.  k=3: Psi={1,3,2}, G={0,1,2} -> 2/3.
    k=4: everything -> 1. With the paper's /2 the k=4 value would be 2 (docs/methods.md#prefrecall: /k).
    """
    sims = [[0.1, 0.8, 0.3, 0.5]]
    gold = [[0, 1, 2, 3]]
    got = [M.pref_recall_at_k(sims, gold, k) for k in (1, 2, 3, 4)]
    assert got == pytest.approx([0.0, 0.5, 2 / 3, 1.0])


def _naive_recall(sims, gold, k):
    total = 0.0
    for s, g in zip(sims, gold):
        idx = list(range(len(s)))
        # selection by repeated max, lower index first on ties
        chosen = []
        for _ in range(min(k, len(s))):
            best = None
            for i in idx:
                if i in chosen:
                    continue
                if best is None or s[i] > s[best]:
                    best = i
            chosen.append(best)
        total += len(set(chosen) & set(g[:k])) / k
    return total / len(sims)


def test_pref_metrics_match_naive_loops_and_stay_in_unit_interval():
    rng = np.random.default_rng(3)
    sims, gold = [], []
    for _ in range(40):
        m = int(rng.integers(2, 7))
        sims.append(np.round(rng.random(m), 1).tolist())  # rounding creates ties
        gold.append(rng.permutation(m).tolist())
    for k in (1, 2, 3, 5):
        rec = M.pref_recall_per_example(sims, gold, k)
        assert np.all((rec >= 0) & (rec <= 1))
        assert M.pref_recall_at_k(sims, gold, k) == pytest.approx(_naive_recall(sims, gold, k))
        naive_hit = np.mean([float(int(np.argmax(s)) in g[:k]) for s, g in zip(sims, gold)])
        assert M.pref_hit_at_k(sims, gold, k) == pytest.approx(naive_hit)


def test_pref_metrics_invariant_to_candidate_shuffle():
    """Permuting the candidates together with the gold order leaves every metric unchanged."""
    rng = np.random.default_rng(0)
    sims = [rng.random(5) for _ in range(10)]
    gold = [rng.permutation(5).tolist() for _ in range(10)]
    perm = rng.permutation(5)  # new position p holds old candidate perm[p]
    inv = np.argsort(perm)
    sims2 = [s[perm] for s in sims]
    gold2 = [[int(inv[i]) for i in g] for g in gold]
    for k in (1, 3):
        assert M.pref_hit_at_k(sims, gold, k) == M.pref_hit_at_k(sims2, gold2, k)
        assert M.pref_recall_at_k(sims, gold, k) == M.pref_recall_at_k(sims2, gold2, k)


def test_safer_hit():
    assert M.safer_hit([[0.2, 0.7], [0.6, 0.5], [0.1, 0.3]], [1, 1, 0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="out of range"):
        M.safer_hit([[0.2, 0.7]], [2])


def test_bad_inputs_have_clear_messages():
    with pytest.raises(ValueError, match="not a permutation"):
        M.pref_hit_at_k([[0.1, 0.2, 0.3]], [[0, 1]], 1)
    with pytest.raises(ValueError, match="one gold order per test prompt"):
        M.pref_hit_at_k([[0.1, 0.2]], [[0, 1], [1, 0]], 1)
    with pytest.raises(ValueError, match="positive integer"):
        M.pref_recall_at_k([[0.1, 0.2]], [[0, 1]], 0)
    with pytest.raises(ValueError, match="NaN"):
        M.pref_hit_at_k([[0.1, float("nan")]], [[0, 1]], 1)
    with pytest.raises(ValueError, match="not an integer"):
        parse_ks("1,x")


def test_similarity_rows_are_cosines():
    gen = np.array([[1.0, 0.0], [0.0, 2.0]])
    cands = [np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([[0.0, 3.0], [1.0, 0.0]])]
    rows = M.similarity_rows(gen, cands)
    assert rows[0] == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])
    assert rows[1] == pytest.approx([1.0, 0.0])


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, size=20).astype(float)
    large = rng.integers(0, 2, size=2000).astype(float)
    lo_s, hi_s = M.bootstrap_ci(small, n=1000, seed=0)
    lo_l, hi_l = M.bootstrap_ci(large, n=1000, seed=0)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # width ~ 1/sqrt(N): 10x fewer -> ~3.2x wider
    # close to the normal approximation 1.96 * sd / sqrt(N)
    approx = 2 * 1.96 * large.std() / math.sqrt(large.size)
    assert (hi_l - lo_l) == pytest.approx(approx, rel=0.15)
    assert M.bootstrap_ci(small, n=500, seed=7) == M.bootstrap_ci(small, n=500, seed=7)
    assert M.bootstrap_ci([0.4], n=100) == (pytest.approx(0.4), pytest.approx(0.4))
    with pytest.raises(ValueError, match="at least one value"):
        M.bootstrap_ci([])


# ----------------------------------------------------------------------------- classic metrics
def test_bleu_rouge_against_known_values():
    hyp = ["the cat sat on the mat", "completely different words here"]
    ref = ["the cat sat on the mat", "the cat sat on the mat"]
    bleu = M.bleu_per_example(hyp, ref)
    assert bleu[0] == pytest.approx(1.0)
    assert bleu[1] < 0.05
    rouge = M.rouge_l_per_example(hyp, ref)
    assert rouge[0] == pytest.approx(1.0)
    assert rouge[1] == pytest.approx(0.0)
    # "the cat sat" vs "the cat sat on the mat": LCS 3, P=1, R=1/2 -> F=2/3
    assert M.rouge_l_per_example(["the cat sat"], ["the cat sat on the mat"])[0] == pytest.approx(2 / 3)
    assert M.corpus_bleu(hyp[:1], ref[:1]) == pytest.approx(1.0)


def test_code_structure_similarity():
    ref = "Use:\n```python\nx = sorted(a, key=len)\n```"
    same = "```python\nx = sorted(a, key=len)\n```"
    # tokens ref: x = sorted ( a , key = len ) -> 10; hyp: y = sorted ( a ) -> 6; matches: = sorted ( a -> 4... + ')'
    hyp = "```\ny = sorted(a)\n```"
    assert M.code_structure_similarity(same, ref) == pytest.approx(1.0)
    a, b = M.code_tokens("y = sorted(a)"), M.code_tokens("x = sorted(a, key=len)")
    assert len(a) == 6 and len(b) == 10
    # matching blocks: "= sorted ( a" (4) and ")" (1) -> 2*5/16
    assert M.code_structure_similarity(hyp, ref) == pytest.approx(10 / 16)
    assert M.code_structure_similarity("anything", "no code here") is None
    # unfenced hypothesis: its whole text is compared
    assert M.code_structure_similarity("x = sorted(a, key=len)", ref) == pytest.approx(1.0)


def test_cosim_mixes_embedding_and_structure():
    def embed(texts):
        return np.array([[1.0, 0.0] if "sorted" in t else [0.0, 1.0] for t in texts])

    ref = ["```\nx = sorted(a)\n```", "plain text answer"]
    hyp = ["```\nx = sorted(a)\n```", "other words"]
    got = M.cosim_per_example(hyp, ref, embed, structure_weight=0.5)
    assert got[0] == pytest.approx(1.0)   # 0.5 * cos 1 + 0.5 * struct 1
    assert got[1] == pytest.approx(1.0)   # no code in reference -> embedding cosine only (both [0, 1])
    got2 = M.cosim_per_example(["no match"], ["```\nx = sorted(a)\n```"], embed, structure_weight=0.5)
    assert got2[0] == pytest.approx(0.5 * 0.0 + 0.5 * 0.0)


def test_metric_consistency_pearson_spearman():
    cols = {"PrefHit": [0.1, 0.2, 0.3, 0.4], "BLEU": [1.0, 2.0, 3.0, 5.0], "flat": [1, 1, 1, 1]}
    out = M.metric_consistency(cols)
    assert out["spearman"]["PrefHit"]["BLEU"] == pytest.approx(1.0)
    # Pearson by hand: x centred [-1.5,-.5,.5,1.5]/10, y centred [-1.75,-.75,.25,2.25]
    x = np.array([-1.5, -0.5, 0.5, 1.5])
    y = np.array([-1.75, -0.75, 0.25, 2.25])
    assert out["pearson"]["PrefHit"]["BLEU"] == pytest.approx((x @ y) / math.sqrt((x @ x) * (y @ y)))
    assert math.isnan(out["pearson"]["flat"]["BLEU"])
    with pytest.raises(ValueError, match="differ in length"):
        M.metric_consistency({"a": [1, 2, 3], "b": [1, 2]})


def test_order_agreement():
    got = M.order_agreement([[0, 1, 2], [2, 1, 0], [1, 0, 2]], [[0, 1, 2]] * 3)
    # taus: 1, -1, 1/3 ; top1: 1, 0, 0
    assert got["kendall_tau"] == pytest.approx((1 - 1 + 1 / 3) / 3)
    assert got["top1"] == pytest.approx(1 / 3)


def test_markdown_cells_are_escaped():
    table = markdown_table(["a", "b"], [["x|y", "<script>alert(1)</script>\nline"]])
    assert "<script>" not in table
    assert "&lt;script&gt;" in table
    assert table.splitlines()[2].count(" | ") == 1  # the pipe inside the cell is escaped
    assert escape_cell("a & b") == "a &amp; b"


# ----------------------------------------------------------------------------- scoring records
def _records():
    rows = [
        {"id": "q1", "prompt": "How to sort?", "responses": [
            {"text": "use sorted", "attributes": {"votes": 1}},
            {"text": "use list.sort", "attributes": {"votes": 9, "accepted": True}},
            {"text": "off topic", "attributes": {"votes": 0}}]},
        {"id": "q2", "prompt": "Undo commit?", "ranking": [2, 0, 1], "responses": [
            {"text": "git revert"}, {"text": "delete repo"}, {"text": "git reset --soft"}]},
        {"id": "q3", "prompt": "Merge dicts?", "responses": [
            {"text": "x | y", "attributes": {"votes": 5}},
            {"text": "x + y", "attributes": {"votes": -2}}]},
    ]
    return [ListRecord.from_dict(r) for r in rows]


class WordEmbedder:
    """A fake embedder: bag of words over a fixed vocabulary (deterministic, no model)."""

    def __call__(self, texts):
        vocab = ["sorted", "sort", "git", "reset", "revert", "delete", "x", "y", "topic", "use"]
        out = np.zeros((len(texts), len(vocab) + 1))
        for i, t in enumerate(texts):
            words = t.replace(".", " ").replace("|", " ").split()
            for w in words:
                out[i, vocab.index(w) if w in vocab else len(vocab)] += 1
        return out


def test_score_generations_end_to_end_values():
    """q1 gold (community) [1, 0, 2]; generation "use sorted" equals response 0 -> Phi=0, miss@1, hit@2.
    q2 gold [2, 0, 1]; "git reset --soft" equals response 2 -> hit@1.
    q3 gold [0, 1]; "x | y" equals response 0 -> hit@1.
    """
    recs = _records()
    gens = ["use sorted", "git reset --soft", "x | y"]
    res = score_generations(recs, gens, WordEmbedder(), ks=(1, 2), n_bootstrap=200)
    assert [ex["phi"] for ex in res.examples] == [0, 2, 0]
    assert res.mean("PrefHit@1") == pytest.approx(2 / 3)
    assert res.mean("PrefHit@2") == pytest.approx(1.0)
    # PrefRecall@2: q1 Psi={0,1} (use sorted ~ use list.sort) vs G={1,0} -> 1; q2 Psi={2,0} vs {2,0} -> 1;
    # q3 Psi={0,1} vs {0,1} -> 1
    assert res.mean("PrefRecall@2") == pytest.approx(1.0)
    assert res.examples[1]["BLEU"] == pytest.approx(1.0)  # identical to the gold best
    assert res.examples[0]["BLEU"] < 0.5  # "use sorted" vs gold best "use list.sort"
    assert res.examples[2]["ROUGE-L"] == pytest.approx(1.0)
    est = res.metrics["PrefHit@1"]
    assert est["ci_low"] <= est["mean"] <= est["ci_high"]
    with pytest.raises(ValueError, match="one answer per record"):
        score_generations(recs, gens[:2], WordEmbedder())


def test_score_generations_adds_saferhit_when_every_record_has_a_safer_id():
    """Safer ids q1 -> 0, q2 -> 1, q3 -> 0; Phi = [0, 2, 0] (as above) -> hits 1, 0, 1 = 2/3."""
    recs = _records()
    gens = ["use sorted", "git reset --soft", "x | y"]
    assert "SaferHit" not in score_generations(recs, gens, WordEmbedder(), n_bootstrap=50).metrics
    for rec, safer in zip(recs, (0, 1, 0)):
        rec.meta["safer_id"] = safer
    res = score_generations(recs, gens, WordEmbedder(), n_bootstrap=50)
    assert res.mean("SaferHit") == pytest.approx(2 / 3)
    assert [ex["SaferHit"] for ex in res.examples] == [1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- eval CLI on a tiny model
def _tiny_model_and_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = "how to sort undo commit merge dicts use sorted list git reset revert x y | + ? ."
    words = ["<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>", *vocab.split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    hf.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    import torch

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return LlamaForCausalLM(cfg), hf


def test_generate_is_deterministic_and_left_padded():
    from rankalign.evaluation.generate import generate_responses

    model, tok = _tiny_model_and_tokenizer()
    prompts = ["how to sort ?", "undo", "merge dicts x y ? how to"]
    a = generate_responses(model, tok, prompts, max_new_tokens=4, batch_size=2, show_progress=False)
    b = generate_responses(model, tok, prompts, max_new_tokens=4, batch_size=1, show_progress=False)
    assert len(a) == 3 and all(isinstance(t, str) for t in a)
    assert len(set(a)) > 1  # the model reacts to its input, so a wrong pad side would change answers
    assert a == b  # batching with left padding gives the same greedy answers as one by one


def test_eval_cli_writes_outputs(tmp_path, monkeypatch, capsys):
    from rankalign import cli

    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(json.dumps(r.to_dict()) for r in _records()) + "\n", encoding="utf-8")
    model, tok = _tiny_model_and_tokenizer()
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    monkeypatch.setattr("rankalign.evaluation.evaluate.make_embed_fn", lambda *a, **k: WordEmbedder())
    out = tmp_path / "ev"
    rc = cli.main(["eval", "--model", str(model_dir), "--data", str(data), "--output-dir", str(out),
                   "--max-new-tokens", "4", "--k", "1,2", "--quiet", "--bootstrap", "100"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 3
    for name in ("PrefHit@1", "PrefHit@2", "PrefRecall@1", "PrefRecall@2", "BLEU", "ROUGE-L", "CoSim"):
        e = metrics["metrics"][name]
        assert e["ci_low"] <= e["mean"] <= e["ci_high"]
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gens] == ["q1", "q2", "q3"]
    assert all(len(g["similarities"]) == n for g, n in zip(gens, (3, 3, 2)))
    # the per-example PrefHit@1 in generations.jsonl averages to the reported mean
    assert np.mean([g["PrefHit@1"] for g in gens]) == pytest.approx(metrics["metrics"]["PrefHit@1"]["mean"])
    report = (out / "report.md").read_text()
    assert "| PrefHit@1 |" in report and "PrefRecall@2" in report

    # bad arguments: one clear message, exit 2, no output folder
    bad = tmp_path / "bad"
    rc = cli.main(["eval", "--data", str(tmp_path / "missing.jsonl"), "--output-dir", str(bad), "--k", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file" in err and "--k" in err
    assert not bad.exists()

    # a file whose only record is invalid: counted skip, then a clear error
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "z", "prompt": "p", "responses": [{"text": "only one"}]}) + "\n")
    rc = cli.main(["eval", "--model", str(model_dir), "--data", str(broken), "--output-dir", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "skipped 1" in err and "no records to evaluate" in err
    assert not bad.exists()


def test_args_namespace_defaults_match_parser():
    from rankalign.cli import build_parser
    from rankalign.commands.eval import options_from_args

    args = build_parser().parse_args(["eval", "--data", "x.jsonl", "--output-dir", "o"])
    assert isinstance(args, argparse.Namespace)
    opts = options_from_args(args)  # defaults come from the EvalOptions dataclass
    assert (opts.max_new_tokens, opts.num_beams, opts.k) == (128, 4, "1,3")  # the paper's setting: beam search, 128 new tokens
    assert (opts.data, opts.output_dir, opts.metrics) == ("x.jsonl", "o", "auto")
