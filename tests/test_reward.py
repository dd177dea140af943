"""Reward models: the Bradley-Terry / Plackett-Luce losses against hand-worked values and naive
loops, scoring (batch invariance, the policy side's formatting), `rankalign train-rm` and
`rankalign score` end to end on a tiny random model, and the bad-input errors."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from rankalign.cli import main
from rankalign.errors import ConfigError, UserError
from rankalign.losses import ListLogps
from rankalign.reward.losses import bradley_terry_loss, plackett_luce_loss, reward_metrics
from rankalign.reward.model import encode_pairs, load_reward_model, score_responses

sys.path.insert(0, str(Path(__file__).parent))
from training_tiny import save_tiny, tiny_model, tiny_records, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _naive_bt(s: list[float], mode: str, labels: list[float] | None = None) -> float:
    n = len(s)
    pairs = [(p, q) for p in range(n) for q in range(p + 1, n) if mode == "pw" or p == 0]
    if labels is not None:
        pairs = [(p, q) for p, q in pairs if labels[p] != labels[q]]
    return sum(-math.log(1 / (1 + math.exp(-(s[p] - s[q])))) for p, q in pairs) / max(1, len(pairs))


def _naive_pl(s: list[float]) -> float:
    n = len(s)
    return sum(math.log(sum(math.exp(x) for x in s[k:])) - s[k] for k in range(n - 1)) / (n - 1)


def _batch(lists: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    m = max(len(x) for x in lists)
    s = torch.zeros(len(lists), m, dtype=torch.float64)
    mask = torch.zeros(len(lists), m, dtype=torch.bool)
    for b, x in enumerate(lists):
        s[b, : len(x)] = torch.tensor(x, dtype=torch.float64)
        s[b, len(x):] = float("nan")  # padding must never reach the loss
        mask[b, : len(x)] = True
    return s, mask


def test_hand_worked_values() -> None:
    """s = [1, 0]: BT = PL = -log sigmoid(1) = log(1 + e^-1) = 0.313262.
    s = [2, 1, 0], PL: stage 0 log(e^2 + e + 1) - 2 = 0.407606, stage 1 log(e + 1) - 1 = 0.313262,
    mean 0.360434; BT 1vso: (-log s(1) - log s(2)) / 2 = (0.313262 + 0.126928) / 2 = 0.220095;
    BT pw adds -log s(1) for (1, 2): (0.313262 + 0.126928 + 0.313262) / 3 = 0.251151."""
    s, mask = _batch([[1.0, 0.0], [2.0, 1.0, 0.0]])
    pl = plackett_luce_loss(torch.nan_to_num(s), mask)
    assert pl.tolist() == pytest.approx([0.313262, 0.360434], abs=1e-6)
    assert bradley_terry_loss(torch.nan_to_num(s), mask, "1vso").tolist() == pytest.approx([0.313262, 0.220095], abs=1e-6)
    assert bradley_terry_loss(torch.nan_to_num(s), mask, "pw").tolist() == pytest.approx([0.313262, 0.251151], abs=1e-6)


@pytest.mark.parametrize("mode", ["1vso", "pw"])
def test_losses_match_naive_loops_with_padding(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    lists = [torch.randn(n, generator=g, dtype=torch.float64).mul(2).tolist() for n in (5, 2, 3, 4)]
    s, mask = _batch(lists)
    s = torch.where(mask, s, torch.zeros_like(s))
    bt = bradley_terry_loss(s, mask, mode)
    pl = plackett_luce_loss(s, mask)
    assert bt.tolist() == pytest.approx([_naive_bt(x, mode) for x in lists], abs=1e-10)
    assert pl.tolist() == pytest.approx([_naive_pl(x) for x in lists], abs=1e-10)


def test_plackett_luce_equals_bradley_terry_at_two() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(16, 2, generator=g, dtype=torch.float64) * 3
    mask = torch.ones(16, 2, dtype=torch.bool)
    pl = plackett_luce_loss(s, mask)
    for mode in ("1vso", "pw"):
        assert torch.allclose(pl, bradley_terry_loss(s, mask, mode), atol=1e-12)
    assert torch.allclose(pl, -torch.nn.functional.logsigmoid(s[:, 0] - s[:, 1]), atol=1e-12)


def test_tied_labels_are_left_out_of_bradley_terry() -> None:
    s, mask = _batch([[0.5, 2.0, -1.0, 0.0]])
    labels = torch.tensor([[5.0, 5.0, 3.0, 1.0]], dtype=torch.float64)  # positions 0 and 1 tie
    for mode in ("1vso", "pw"):
        got = bradley_terry_loss(s, mask, mode, labels).item()
        assert got == pytest.approx(_naive_bt([0.5, 2.0, -1.0, 0.0], mode, [5, 5, 3, 1]), abs=1e-12)
    metrics = reward_metrics(s, mask, labels)
    # untied pairs: (0,2) (0,3) (1,2) (1,3) (2,3); right: 0.5>-1, 0.5>0, 2>-1, 2>0, -1>0 false -> 4/5
    assert metrics["ranking/accuracy"].item() == pytest.approx(0.8)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1.0)  # best vs 2 and 3 (1 is tied)


def test_reward_list_loss_is_invariant_to_storage_order() -> None:
    from rankalign.reward.train import RewardListLoss

    rewards = torch.tensor([[0.3, -1.2, 2.0, 0.7]])
    order = torch.tensor([[2, 0, 3, 1]])  # best first
    ones, mask = torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool)
    for name in ("bt", "pl"):
        loss = RewardListLoss(rm_loss=name, pair_mode="pw")
        base = loss(ListLogps(policy=rewards, lengths=ones, mask=mask, order=order)).loss
        perm = torch.tensor([3, 1, 0, 2])  # stored order shuffled; order rewritten to match
        inv = torch.argsort(perm)
        shuffled = ListLogps(policy=rewards[:, perm], lengths=ones, mask=mask, order=inv[order])
        assert torch.allclose(loss(shuffled).loss, base)
        assert base.item() == pytest.approx((_naive_bt if name == "bt" else lambda s, *_: _naive_pl(s))(
            [2.0, 0.3, 0.7, -1.2], "pw"), abs=1e-6)


# ---------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-label classifier saved like `rankalign train-rm` saves one."""
    from transformers import LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("rm")
    tok = tiny_tokenizer()
    cfg = tiny_model(len(tok)).config
    cfg.num_labels = 1
    torch.manual_seed(3)
    LlamaForSequenceClassification(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_score_responses_batch_invariant_and_formatted_like_training(tiny_rm: Path) -> None:
    model, tok = load_reward_model(str(tiny_rm))
    prompts = ["how to brew coffee ?", "what fund is best ?", "how to brew coffee ?", "can you help ?"]
    responses = ["use a good grind and hot water", "try low fee fund", "no", "yes you can run the python code"]
    batched = score_responses(model, tok, prompts, responses, batch_size=3)
    single = [score_responses(model, tok, [p], [r], batch_size=1)[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert score_responses(model, tok, prompts, responses, batch_size=3) == batched  # deterministic
    assert len(set(round(x, 6) for x in batched)) == 4
    # the row scored is the policy side's (prompt tokens + response tokens, chat template); the head
    # reads its last token
    ids = encode_pairs(tok, prompts[:1], responses[:1], max_length=512, max_prompt_length=256)[0]
    text = tok.decode(ids)
    assert text.startswith("<|user|>") and "<|assistant|>" in text and text.rstrip().endswith("<|end|>")
    with torch.no_grad():
        direct = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert batched[0] == pytest.approx(direct, abs=1e-6)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses(model, tok, prompts[:2], responses[:1])


def test_load_reward_model_errors(tmp_path: Path, tiny_rm: Path) -> None:
    from transformers import LlamaForSequenceClassification

    with pytest.raises(UserError, match=r"reward model '.*nowhere' does not exist; pass the output folder"):
        load_reward_model(str(tmp_path / "nowhere"))
    causal = save_tiny(tmp_path / "causal")
    with pytest.raises(UserError, match=r"is a LlamaForCausalLM without a classification head; train a reward model"):
        load_reward_model(str(causal))
    cfg = tiny_model(len(tiny_tokenizer())).config
    cfg.num_labels = 2
    LlamaForSequenceClassification(cfg).save_pretrained(str(tmp_path / "two"))
    tiny_tokenizer().save_pretrained(str(tmp_path / "two"))
    with pytest.raises(UserError, match=r"'.*two' has a head with 2 labels; a reward model has exactly one"):
        load_reward_model(str(tmp_path / "two"))


# ---------------------------------------------------------------------- train-rm and score, end to end
def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_train_rm_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rankalign.data.io import read_records
    from rankalign.evaluation.ranking_accuracy import ranking_accuracy
    from rankalign.reward.train import split_held_out

    base = save_tiny(tmp_path / "base")
    data = _write(tmp_path / "d.jsonl", tiny_records(6))
    out = tmp_path / "rm"
    rc = main(["train-rm", "--data", str(data), "--model", str(base), "--output-dir", str(out), "--max-steps", "3",
               "--rm_loss", "pl", "--use-lora", "--eval_fraction", "0.34", "--use_cpu", "--save_steps", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out evaluation (eval_fraction 0.34 of data (seed 42)): 2 lists" in printed
    assert "pairwise accuracy" in printed and "Kendall tau" in printed
    assert {"model.safetensors", "config.json", "train_log.jsonl", "eval_metrics.json", "checkpoint-2"} <= {
        p.name for p in out.iterdir()}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train_rows = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert "rewards/margins" in train_rows[0]["metrics"] and not any(k.startswith("logps/") for k in train_rows[0]["metrics"])
    saved = json.loads((out / "eval_metrics.json").read_text())
    # the same numbers again from the saved model: reload, score the held-out lists, compare with the gold order
    model, tok = load_reward_model(str(out))
    assert model.config.num_labels == 1
    _, held = split_held_out(read_records(data), 0.34, 42)
    scores = [score_responses(model, tok, [r.prompt] * r.num_responses, [x.text for x in r.responses]) for r in held]
    again = ranking_accuracy(held, scores, seed=42).metrics
    for key, value in saved["metrics"].items():
        assert value["mean"] == pytest.approx(again[key]["mean"], abs=1e-6), key
        assert value["ci_low"] <= value["mean"] <= value["ci_high"]
    assert saved["lists"] == 2 and saved["rm_loss"] == "pl"


def test_training_lowers_the_loss_and_orders_training_lists(tmp_path: Path) -> None:
    from rankalign.data.record import ListRecord
    from rankalign.reward.config import RewardConfig
    from rankalign.reward.train import train_reward_model

    base = save_tiny(tmp_path / "base")
    records = [ListRecord.from_dict(r) for r in tiny_records(4)]
    config = RewardConfig(model=str(base), output_dir=str(tmp_path / "rm"), max_steps=30, learning_rate=3e-3,
                          eval_fraction=0.0, use_cpu=True, save_strategy="no", rm_loss="bt", pair_mode="pw",
                          per_device_train_batch_size=4)
    result = train_reward_model(config, records)
    losses = [r["loss"] for r in result.log if r.get("type") == "train"]
    assert losses[-1] < 0.5 * losses[0]
    acc = [r["metrics"]["ranking/accuracy"] for r in result.log if r.get("type") == "train"]
    assert acc[-1] >= 0.9 > acc[0]  # the training lists' pairs ordered by the rewards
    assert result.metrics["metrics"] == {}  # no held-out lists


def test_score_round_trip_feeds_the_scores_order(tmp_path: Path, tiny_rm: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from rankalign.data.io import read_records
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import validate_data

    rows = tiny_records(4)
    for r in rows:
        del r["scores"]
    data = _write(tmp_path / "in.jsonl", rows)
    config = ListwiseConfig(method="pro", order_source="scores", output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="order_source scores needs 'scores'"):
        validate_data(read_records(data), config)
    for out in (tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        assert main(["score", "--reward-model", str(tiny_rm), "--data", str(data), "--out", str(out),
                     "--batch-size", "3"]) == 0
        scored = read_records(out)
        model, tok = load_reward_model(str(tiny_rm))
        for rec in scored:
            expected = score_responses(model, tok, [rec.prompt] * rec.num_responses, [x.text for x in rec.responses])
            assert rec.scores == pytest.approx(expected, abs=1e-5)
            assert rec.meta["scores_source"] == {"reward_model": str(tiny_rm)}
            assert rec.preference_order("scores") == sorted(range(rec.num_responses), key=lambda i: -expected[i])
        validate_data(scored, config)  # PRO on the scores order now has what it needs
    assert "scored 4 record(s); wrote 4 to" in capsys.readouterr().out
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_one_line(tmp_path: Path, tiny_rm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "q", "responses": ["only one"]}, {"prompt": "", "responses": []}])
    base = save_tiny(tmp_path / "base")
    assert main(["train-rm", "--data", str(bad), "--model", str(base), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no valid lists" in err and "skipped 2" in err and "Traceback" not in err
    assert main(["score", "--reward-model", str(tiny_rm), "--data", str(bad), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["score", "--reward-model", str(tmp_path / "missing"), "--data", str(_write(
        tmp_path / "ok.jsonl", tiny_records(2))), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "missing' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_unknown_and_invalid_config_keys(tmp_path: Path) -> None:
    from rankalign.reward.config import load_reward_config

    with pytest.raises(ConfigError, match=r"unknown key 'rm_los' \(did you mean 'rm_loss'\?\)"):
        load_reward_config(None, {"rm_los": "pl"})
    y = tmp_path / "rm.yaml"
    y.write_text("rm_loss: pl\nbeta: 0.1\n", encoding="utf-8")  # beta is a policy hyper-parameter
    with pytest.raises(ConfigError, match=rf"{y}: unknown key 'beta'"):
        load_reward_config(str(y))
    with pytest.raises(ConfigError) as info:
        load_reward_config(None, {"rm_loss": "listnet", "pair_mode": "all", "eval_fraction": "1.5"})
    assert len(info.value.problems) == 3 and "rm_loss: 'listnet' is not one of bt, pl" in info.value.problems
    c = load_reward_config(None, {"rm_loss": "pl", "use_lora": "true"})
    assert (c.rm_loss, c.learning_rate) == ("pl", 1e-4)  # the LoRA default learning rate, shared with train


def test_train_rm_help_is_generated_and_grouped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train-rm", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for piece in ("run: what to train", "model: base model and LoRA", "data: records, orders",
                  "--rm_loss STR", "(default: bt)", "--pair_mode", "--eval_fraction FLOAT", "--use_lora",
                  "training: transformers.TrainingArguments", "--learning_rate FLOAT"):
        assert piece in text, piece
    assert "--seadpra_alpha" not in text  # policy hyper-parameters belong to `train`


def test_split_held_out_is_seeded_and_disjoint() -> None:
    from rankalign.data.record import ListRecord
    from rankalign.reward.train import split_held_out

    recs = [ListRecord.from_dict({**r, "id": f"x{i}"}) for i, r in enumerate(tiny_records(10))]
    a_train, a_held = split_held_out(recs, 0.3, 7)
    _, b_held = split_held_out(recs, 0.3, 7)
    assert [r.id for r in a_held] == [r.id for r in b_held] and len(a_held) == 3
    assert {r.id for r in a_train} | {r.id for r in a_held} == {r.id for r in recs}
    assert not {r.id for r in a_train} & {r.id for r in a_held}
    with pytest.raises(UserError, match="too few to hold out"):
        split_held_out(recs[:1], 0.5, 0)


def test_real_hh_rlhf_pairs_train_and_score(tmp_path: Path, shared_data: Path) -> None:
    """Real HH-RLHF pairs through `data convert`, `train-rm` (2 steps, tiny model) and `score`."""
    from rankalign.data.io import read_records

    lists = tmp_path / "hh.jsonl"
    assert main(["data", "convert", "--format", "hh_rlhf", str(shared_data / "hh_rlhf/helpful_base_test.head300.jsonl"),
                 "--out", str(lists), "--limit", "12"]) == 0
    base = save_tiny(tmp_path / "base")
    assert main(["train-rm", "--data", str(lists), "--model", str(base), "--output-dir", str(tmp_path / "rm"),
                 "--max-steps", "2", "--max_length", "64", "--max_prompt_length", "32", "--use_cpu",
                 "--save_strategy", "no", "--eval_fraction", "0.25"]) == 0
    metrics = json.loads((tmp_path / "rm" / "eval_metrics.json").read_text())
    assert metrics["lists"] == 3 and metrics["pairs"] == 3
    assert main(["score", "--reward-model", str(tmp_path / "rm"), "--data", str(lists), "--out",
                 str(tmp_path / "scored.jsonl"), "--max-length", "64"]) == 0
    assert all(r.scores is not None and len(r.scores) == 2 for r in read_records(tmp_path / "scored.jsonl"))


def test_itertools_pairs_agree_with_pair_modes() -> None:
    """The pairs BT trains on: 1vso = (0, q), pw = itertools.combinations."""
    from rankalign.reward.losses import bt_pairs

    mask = torch.tensor([[True, True, True, True, False]])
    pw = {tuple(x) for x in bt_pairs(mask, "pw")[0].nonzero().tolist()}
    assert pw == set(itertools.combinations(range(4), 2))
    assert {tuple(x) for x in bt_pairs(mask, "1vso")[0].nonzero().tolist()} == {(0, 1), (0, 2), (0, 3)}
