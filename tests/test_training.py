"""ListwiseTrainer end to end on a tiny random Llama (no downloads)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.data.record import ListRecord
from rankalign.errors import ConfigError, UserError
from rankalign.losses import available_losses, build_loss, get_loss_class, register_loss
from rankalign.losses.base import ListwiseLoss, LossOutput
from rankalign.training import trainer as trainer_mod
from rankalign.training.config import ListwiseConfig
from rankalign.training.logps import ListCollator
from rankalign.training.trainer import ListDataset, ListwiseTrainer, encode_records, select_list, train
from training_tiny import save_tiny, tiny_model, tiny_records, tiny_tokenizer

FAST = {"use_cpu": True, "report_to": "none", "disable_tqdm": True, "save_strategy": "no",
        "max_length": 48, "max_prompt_length": 24, "seed": 0, "logging_steps": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def records(n: int = 4) -> list[ListRecord]:
    return [ListRecord.from_dict(d) for d in tiny_records(n)]


def cfg(tmp_path: Path, method: str, **kw: Any) -> ListwiseConfig:
    return ListwiseConfig(method=method, output_dir=str(tmp_path / "out"), **{**FAST, **kw})


@pytest.mark.parametrize("method", available_losses())
def test_every_method_trains_and_its_loss_decreases_on_a_fixed_batch(tmp_path: Path, method: str) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    config = cfg(tmp_path, method, per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
                 train_sampling_strategy="sequential")
    loss = build_loss(method, **config.loss_hparams())
    ref = copy.deepcopy(model) if loss.needs_reference else None
    items = encode_records(records(4), tok, config)
    collator = ListCollator(tok.pad_token_id, mismatched=loss.needs_mismatched)
    trainer = ListwiseTrainer(model=model, args=config, data_collator=collator, train_dataset=ListDataset(items),
                              loss=loss, ref_model=ref)
    batch = collator(items)  # the one fixed batch every step trains on

    def loss_now() -> float:
        model.eval()
        with torch.no_grad():
            return trainer.compute_loss(model, batch).item()

    before = loss_now()
    result = trainer.train()
    after = loss_now()
    assert trainer.state.global_step == 3
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert after < before - 1e-4, f"{method}: loss {before:.5f} -> {after:.5f}"
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3
    assert "ranking/accuracy" in logged[0] and "rewards/margins" in logged[0]


def test_ranking_metrics_by_hand(tmp_path: Path) -> None:
    """The trainer logs the one metric definition (losses._util.list_metrics) for every method;
    without a reference model the reward is the mean token log-prob."""
    from rankalign.losses import ListLogps

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    config = cfg(tmp_path, "sft")
    trainer = ListwiseTrainer(model=model, args=config, train_dataset=ListDataset([]), loss=build_loss("sft"))
    # one list of 3, order [2, 0, 1]: rewards best-first = [3, 1, 2] -> pairs (3>1 ok, 3>2 ok, 1>2 wrong)
    lp = ListLogps(policy=torch.tensor([[1.0, 2.0, 3.0]]), lengths=torch.ones(1, 3),
                   mask=torch.ones(1, 3, dtype=torch.bool), order=torch.tensor([[2, 0, 1]]))
    trainer.build_list_logps = lambda *a, **k: lp  # type: ignore[method-assign]
    model.train()
    trainer.compute_loss(model, {})
    m = {k: v[0] for k, v in trainer._metrics["train"].items()}
    assert m["rewards/chosen"] == 3.0
    assert m["rewards/rejected"] == 1.5
    assert m["rewards/margins"] == 1.5
    assert m["rewards/accuracies"] == 1.0
    assert m["ranking/accuracy"] == pytest.approx(2 / 3)
    assert m["logps/chosen"] == 3.0 and m["logps/rejected"] == 1.5 and m["logps/mean"] == 2.0
    assert not hasattr(trainer_mod, "_pairwise_metrics")  # no second definition


def test_select_list_keeps_best_ranked_and_reindexes() -> None:
    rec = ListRecord.from_dict({"id": "x", "prompt": "p", "responses": ["a", "b", "c", "d"],
                                "ranking": [2, 0, 3, 1], "apdf": [[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6],
                                                                  [3, 5, 6, 0]]})
    keep, targets = select_list(rec, "auto", 3)
    assert keep == [0, 2, 3]  # b (ranked last) dropped
    assert targets["order"] == [1, 0, 2]  # c, a, d in the kept indexing
    assert targets["psi"] == [2.0, 3.0, 1.0]
    assert targets["scores"] is None
    assert targets["apdf"] == [[0, 2, 3], [2, 0, 6], [3, 6, 0]]
    assert targets["apdf_row_max"] is None
    rec.apdf_row_max = [3.0, 5.0, 6.0, 6.5]
    assert select_list(rec, "auto", 3)[1]["apdf_row_max"] == [3.0, 6.0, 6.5]


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.parametrize("lora,merge", [(False, False), (True, True), (True, False)])
def test_save_and_reload_gives_the_same_logits(tmp_path: Path, lora: bool, merge: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_tiny(tmp_path / "tiny")
    config = cfg(tmp_path, "dpo_pl", model=str(base), max_steps=2, per_device_train_batch_size=2,
                 use_lora=lora, merge_lora=merge, lora_r=4, learning_rate=1e-2)
    result = train(config, records(4))
    out = Path(result.output_dir)
    ids = torch.tensor([[3, 10, 11, 12, 4, 13]])
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.pad_token == "<pad>"
    if lora and not merge:
        from peft import PeftModel

        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    else:
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        reloaded = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(_logits(reloaded, ids), _logits(result.model, ids), atol=1e-5, rtol=1e-5)
    # the weights did change
    assert not torch.allclose(_logits(reloaded, ids), _logits(AutoModelForCausalLM.from_pretrained(base), ids))
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(isinstance(r["loss"], float) and r["step_time_s"] > 0 and "learning_rate" in r for r in steps)
    assert rows[0]["type"] == "truncation" and rows[0]["sequences"] > 0
    assert result.log == rows


def test_resume_after_interruption_gives_the_same_weights(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 2:
                control.should_training_stop = True

    base = save_tiny(tmp_path / "tiny")
    common = {"model": str(base), "max_steps": 4, "per_device_train_batch_size": 1, "learning_rate": 5e-3,
              "save_strategy": "steps", "save_steps": 2}
    full = train(cfg(tmp_path / "a", "dpo_pl", **common), records(4))
    cut_cfg = cfg(tmp_path / "b", "dpo_pl", **common)
    train(cut_cfg, records(4), callbacks=[Interrupt()])
    ckpt = Path(cut_cfg.output_dir) / "checkpoint-2"
    assert ckpt.is_dir()
    resumed = train(cfg(tmp_path / "b", "dpo_pl", **common), records(4), resume_from_checkpoint=str(ckpt))
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    steps = [r["step"] for r in resumed.log if r["type"] == "train"]
    assert steps == [1, 2, 3, 4]  # the log reads like one run
    losses_a = [r["loss"] for r in full.log if r["type"] == "train"]
    losses_b = [r["loss"] for r in resumed.log if r["type"] == "train"]
    assert losses_a == pytest.approx(losses_b, abs=1e-6)


# ---------------------------------------------------------------------- errors before any model load
@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr("rankalign.training.models.load_model_and_tokenizer", refuse)


def test_unknown_method_is_a_clear_error(tmp_path: Path, no_model_load: None) -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'dpo_pll' \(did you mean 'dpo_pl'\?\); registered"):
        cfg(tmp_path, "dpo_pll")


def test_reference_method_with_missing_ref_model(tmp_path: Path, no_model_load: None) -> None:
    with pytest.raises(ConfigError, match=r"ref_model: '\./missing/model' does not exist"):
        cfg(tmp_path, "dpo_pl", ref_model="./missing/model")


def test_ref_model_for_a_method_without_reference_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pro uses no reference model"):
        cfg(tmp_path, "pro", ref_model=str(tmp_path))


def test_kto_needs_two_lists_per_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kto needs >= 2 lists per micro-batch"):
        cfg(tmp_path, "kto", per_device_train_batch_size=1)


def test_data_file_without_valid_lists(tmp_path: Path, no_model_load: None) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "a", "prompt": "p", "responses": ["only one"]}\n{"id": "b", "prompt": ""}\n')
    with pytest.raises(UserError, match=r"no valid lists \(kept 0 record\(s\), skipped 2"):
        train(cfg(tmp_path, "dpo_pl", data=str(data)))


def test_method_needing_scores_on_data_without_scores(tmp_path: Path, no_model_load: None) -> None:
    from rankalign.losses import registry

    @register_loss("scores_probe")
    class ScoresProbe(ListwiseLoss):
        needs_scores = True

        def forward(self, batch: Any) -> LossOutput:  # pragma: no cover - never reached
            return LossOutput(batch.policy.sum(1))

    try:
        rows = tiny_records(3)
        for r in rows:
            r.pop("scores")
        with pytest.raises(ConfigError, match=r"needs 'scores' but 3 record\(s\) have none \(e.g. id='r0'\)"):
            train(cfg(tmp_path, "scores_probe"), [ListRecord.from_dict(r) for r in rows])
    finally:
        registry._REGISTRY.pop("scores_probe")


def test_pro_uses_scores_when_the_data_has_them(tmp_path: Path) -> None:
    assert not get_loss_class("pro").needs_scores  # no method strictly needs scores: check PRO's score path
    tok = tiny_tokenizer()
    config = cfg(tmp_path, "pro", max_steps=1)
    items = encode_records(records(2), tok, config)
    batch = ListCollator(tok.pad_token_id)(items)
    assert batch["scores"].tolist()[0][:2] == [2.0, 1.0]
    trainer = ListwiseTrainer(model=tiny_model(len(tok)), args=config, data_collator=ListCollator(tok.pad_token_id),
                              train_dataset=ListDataset(items), loss=build_loss("pro"))
    with_scores = trainer.compute_loss(trainer.model, batch).item()
    without = trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "scores"}).item()
    assert with_scores != pytest.approx(without)  # the scores change PRO's temperatures


def test_cli_trains_and_reports_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rankalign.cli import main
    from rankalign.data.io import write_jsonl

    base = save_tiny(tmp_path / "tiny")
    data = tmp_path / "lists.jsonl"
    write_jsonl(tiny_records(4), data)
    out = tmp_path / "run"
    rc = main(["train", "--method", "sft", "--data", str(data), "--output-dir", str(out), "--model", str(base),
               "--max-steps", "2", "--use-cpu", "--report_to=none", "--save-strategy", "no",
               "--disable-tqdm", "true", "--max-length", "40", "--max-prompt-length", "20", "--per-device-train-batch-size", "2"])
    text = capsys.readouterr().out
    assert rc == 0
    assert f"model written to {out}" in text and "train_log.jsonl" in text
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "rankalign_config.json").read_text())["max_length"] == 40


def test_cli_unknown_flag_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
                                      ) -> None:
    from rankalign.cli import main

    rc = main(["train", "--method", "sft", "--data", "x.jsonl", "--lerning-rate", "1e-4"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown key 'lerning_rate' (did you mean 'learning_rate'" in err


# ---------------------------------------------------------------------- review regressions
def test_kto_with_an_odd_number_of_lists_does_not_fail_on_the_last_micro_batch(tmp_path: Path) -> None:
    """3 lists, 2 per micro-batch: the epoch's last micro-batch would hold one list, which has no
    other prompt for z0; it is dropped instead of stopping the run with an error."""
    base = save_tiny(tmp_path / "tiny")
    result = train(cfg(tmp_path, "kto", model=str(base), max_steps=3, per_device_train_batch_size=2), records(3))
    assert [r["step"] for r in result.log if r["type"] == "train"] == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"kto needs at least 3 lists \(one full micro-batch\), found 2"):
        train(cfg(tmp_path, "kto", model=str(base), per_device_train_batch_size=3), records(2))


def test_resume_from_checkpoint_given_in_the_config_is_used(tmp_path: Path) -> None:
    """`--resume-from-checkpoint DIR` (a config field) resumes: only the remaining steps run."""
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            CountSteps.steps += 1

    base = save_tiny(tmp_path / "tiny")
    common = {"model": str(base), "max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 5e-3,
              "save_strategy": "steps", "save_steps": 2}
    first = cfg(tmp_path, "dpo_pl", **common)
    train(first, records(4))
    ckpt = Path(first.output_dir) / "checkpoint-2"
    assert ckpt.is_dir()
    train(cfg(tmp_path, "dpo_pl", resume_from_checkpoint=str(ckpt), **common), records(4), callbacks=[CountSteps()])
    assert CountSteps.steps == 1  # steps 1-2 come from the checkpoint
    with pytest.raises(ConfigError, match=r"resume_from_checkpoint: no such checkpoint folder"):
        cfg(tmp_path, "dpo_pl", resume_from_checkpoint=str(tmp_path / "nope"))


def test_saving_merged_over_an_adapter_run_leaves_no_stale_adapter(tmp_path: Path) -> None:
    """A merged save into a folder that held an adapter must not keep adapter_config.json: plain
    transformers would load the base model plus the OLD adapter instead of the merged weights."""
    from transformers import AutoModelForCausalLM

    base = save_tiny(tmp_path / "tiny")
    common = {"model": str(base), "max_steps": 1, "per_device_train_batch_size": 2, "use_lora": True,
              "lora_r": 4, "learning_rate": 1e-2}
    train(cfg(tmp_path, "sft", merge_lora=False, **common), records(2))
    out = tmp_path / "out"
    assert (out / "adapter_config.json").is_file()
    merged = train(cfg(tmp_path, "sft", merge_lora=True, **{**common, "max_steps": 3}), records(2))
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    ids = torch.tensor([[3, 10, 11, 12, 4, 13]])
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(out), ids), _logits(merged.model, ids))


def test_lora_reference_is_deterministic_even_with_dropout(tmp_path: Path) -> None:
    """The adapter-disabled reference runs in eval mode: with dropout 0.5 in the base model and
    the policy in train mode, two reference passes give identical log-probs and the model's
    training flag is restored."""
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    base = tiny_model(len(tok))
    base.config.attention_dropout = 0.5
    for module in base.modules():  # Llama reads the rate from its config at call time
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    config = cfg(tmp_path, "dpo_pl", use_lora=True, max_steps=1)
    items = encode_records(records(2), tok, config)
    collator = ListCollator(tok.pad_token_id)
    trainer = ListwiseTrainer(model=model, args=config, data_collator=collator, train_dataset=ListDataset(items),
                              loss=build_loss("dpo_pl"))
    batch = collator(items)
    model.train()
    first = trainer._reference_logps(model, batch)
    second = trainer._reference_logps(model, batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert model.training
    with torch.no_grad():  # the policy itself (train mode) does see dropout
        a = trainer.build_list_logps(model, batch).policy
        b = trainer.build_list_logps(model, batch).policy
    assert not torch.equal(a, b)


def test_kto_micro_batch_with_one_shared_prompt_falls_back_to_z0_zero(tmp_path: Path) -> None:
    """Two lists of one prompt have no mismatched pair: z0 = 0 with a warning, never a matched pair."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    config = cfg(tmp_path, "kto", per_device_train_batch_size=2)
    loss = build_loss("kto", **config.loss_hparams())
    same = [ListRecord.from_dict({**d, "prompt": "how to brew coffee ?"}) for d in tiny_records(2)]
    collator = ListCollator(tok.pad_token_id, mismatched=True)
    items = encode_records(same, tok, config)
    trainer = ListwiseTrainer(model=model, args=config, data_collator=collator, train_dataset=ListDataset(items),
                              loss=loss, ref_model=copy.deepcopy(model))
    batch = collator(items)
    assert "mismatched_input_ids" not in batch
    with pytest.warns(UserWarning, match="same prompt"):
        lp = trainer.build_list_logps(model, batch)
    assert lp.mismatched_policy is not None and lp.mismatched_reference is not None
    assert lp.mismatched_policy.abs().sum() == 0 and lp.mismatched_reference.abs().sum() == 0
    assert loss(lp).metrics["kl"].item() == 0.0


def test_kto_eval_needs_two_lists_per_eval_micro_batch(tmp_path: Path) -> None:
    config = cfg(tmp_path, "kto", per_device_train_batch_size=2, per_device_eval_batch_size=1)
    with pytest.raises(ConfigError, match="per_device_eval_batch_size: kto needs >= 2 lists per micro-batch"):
        trainer_mod.validate_data(records(4), config, "eval_data")


def test_one_label_rule_for_records_training_targets_and_losses() -> None:
    """psi (scores, else M - position) is the same from ListRecord.labels, the training targets
    and the loss-side tensor fallback ``list_labels``, for padded lists of every size."""
    import random

    from rankalign.data.record import order_labels
    from rankalign.losses import ListLogps
    from rankalign.losses._util import list_labels

    rng = random.Random(0)
    orders = [rng.sample(range(m), m) for m in (2, 3, 5, 4, 2)]
    width = max(len(o) for o in orders)
    order = torch.tensor([o + list(range(len(o), width)) for o in orders])
    mask = torch.tensor([[j < len(o) for j in range(width)] for o in orders])
    lp = ListLogps(policy=torch.zeros(len(orders), width), lengths=torch.ones(len(orders), width), mask=mask,
                   order=order)
    got = list_labels(lp)
    for b, o in enumerate(orders):
        assert got[b, :len(o)].tolist() == order_labels(o)
        rec = ListRecord.from_dict({"id": "x", "prompt": "p", "responses": [f"r{j}" for j in range(len(o))],
                                    "ranking": o})
        assert rec.labels() == order_labels(o)
        assert select_list(rec, "auto", None)[1]["psi"] == order_labels(o)
    assert order_labels([1, 0, 2], [0.5, 2, -1]) == [0.5, 2.0, -1.0]  # scores win
    rec = ListRecord.from_dict({"id": "x", "prompt": "p", "responses": ["a", "b", "c"], "scores": [0.5, 2, -1]})
    assert rec.labels() == select_list(rec, "auto", None)[1]["psi"] == [0.5, 2.0, -1.0]
    assert select_list(rec, "auto", 2)[1]["psi"] == [0.5, 2.0]  # the kept responses' scores
    scored = ListLogps(policy=torch.zeros(1, 3), lengths=torch.ones(1, 3), mask=torch.ones(1, 3, dtype=torch.bool),
                       order=torch.tensor([[1, 0, 2]]), scores=torch.tensor([[0.5, 2.0, -1.0]]))
    assert list_labels(scored)[0].tolist() == order_labels([1, 0, 2], [0.5, 2.0, -1.0])
    # the trainer's path: psi computed once per list, collated, read back by the loss unchanged
    tok = tiny_tokenizer()
    config = ListwiseConfig(method="lipo", output_dir="unused", **FAST)
    recs = records(4)
    batch = ListCollator(tok.pad_token_id)(encode_records(recs, tok, config))
    lp = ListLogps(policy=torch.zeros(batch["order"].shape), lengths=torch.ones(batch["order"].shape),
                   mask=batch["list_mask"], order=batch["order"], scores=batch.get("scores"), labels=batch["psi"])
    for b, rec in enumerate(recs):
        assert list_labels(lp)[b, :rec.num_responses].tolist() == rec.labels()
