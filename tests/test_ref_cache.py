"""Reference log-probs cached before training: same losses, no reference forward while training, rebuilt on change."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.data.record import ListRecord
from rankalign.training import ref_cache
from rankalign.training.config import ListwiseConfig
from rankalign.training.logps import EncodedList, ListCollator, list_logps
from rankalign.training.trainer import train
from training_tiny import tiny_model, tiny_records, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(out: Path, **kw: Any) -> ListwiseConfig:
    base = dict(method="dpo_pl", output_dir=str(out), max_steps=3, per_device_train_batch_size=2,
                per_device_eval_batch_size=2, learning_rate=1e-3, save_strategy="no", report_to="none",
                disable_tqdm=True, use_cpu=True, max_length=48, max_prompt_length=24, seed=0)
    base.update(kw)
    return ListwiseConfig(**base)


def _records(n: int = 4) -> list[ListRecord]:
    return [ListRecord.from_dict(r) for r in tiny_records(n)]


def _losses(result: Any) -> list[float]:
    return [row["loss"] for row in result.log if row.get("type") == "train" and "loss" in row]


class _Watch:
    """Counts the reference model's forwards, and fails one made while a training step runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls, self.in_step = 0, False
        model.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        assert not self.in_step, "the reference ran during a training step"
        self.calls += 1

    def callback(self) -> Any:
        from transformers import TrainerCallback

        watch = self

        class Steps(TrainerCallback):
            def on_step_begin(self, *a: Any, **k: Any) -> None:
                watch.in_step = True

            def on_step_end(self, *a: Any, **k: Any) -> None:
                watch.in_step = False

        return Steps()


@pytest.mark.parametrize("method", ["dpo_pl", "dpo_bt"])
def test_cached_reference_gives_the_same_losses_and_is_never_run_while_training(tmp_path: Path, method: str) -> None:
    tok = tiny_tokenizer()
    records = _records(4)
    runs = {}
    for cached in (True, False):
        policy = tiny_model(len(tok), seed=5)
        ref = copy.deepcopy(policy)
        watch = _Watch(ref)
        cfg = _config(tmp_path / f"{method}-{cached}", method=method, precompute_ref_logps=cached)
        res = train(cfg, records, model=policy, tokenizer=tok, ref_model=ref,
                    callbacks=[watch.callback()] if cached else [])
        runs[cached] = (_losses(res), watch.calls)
    assert len(runs[True][0]) == 3
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    assert runs[True][1] > 0  # the cache was computed with the reference (outside the steps)
    assert (tmp_path / f"{method}-True" / "ref_logps" / "train.safetensors").is_file()
    assert not (tmp_path / f"{method}-False" / "ref_logps").exists()


def test_lora_reference_cached_equals_adapter_off(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    records = _records(4)
    losses = []
    for cached in (True, False):
        cfg = _config(tmp_path / f"lora-{cached}", use_lora=True, lora_dropout=0.0, lora_target_modules="q_proj,v_proj",
                      precompute_ref_logps=cached)
        losses.append(_losses(train(cfg, records, model=tiny_model(len(tok), seed=6), tokenizer=tok)))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_cache_file_holds_the_reference_log_probs_of_every_list(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    records = _records(5)
    ref = tiny_model(len(tok), seed=7).eval()
    cfg = _config(tmp_path / "run", max_steps=1)
    train(cfg, records, model=tiny_model(len(tok), seed=8), tokenizer=tok, ref_model=copy.deepcopy(ref))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "ref_logps" / "train.safetensors"), framework="pt") as f:
        logps, offsets = f.get_tensor("logps"), f.get_tensor("offsets")
        assert len(f.metadata()["fingerprint"]) == 32
    from rankalign.training.trainer import encode_records

    items = encode_records(records, tok, cfg)
    assert offsets.tolist() == [0, *torch.tensor([len(it.response_ids) for it in items]).cumsum(0).tolist()]
    for i, it in enumerate(items):  # each list scored on its own, as separate sequences
        with torch.no_grad():
            want = list_logps(ref, ListCollator(tok.pad_token_id, prefix_sharing=False)([it]))[0][0]
        torch.testing.assert_close(logps[int(offsets[i]):int(offsets[i + 1])], want, rtol=0, atol=1e-5)


def test_cache_is_reused_and_rebuilt_when_data_model_or_tokenisation_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = tiny_tokenizer()
    out = tmp_path / "run"
    path = out / "ref_logps" / "train.safetensors"

    def run(records: list[ListRecord], ref_seed: int = 1, **kw: Any) -> str:
        cfg = _config(out, max_steps=1, **kw)
        train(cfg, records, model=tiny_model(len(tok), seed=9), tokenizer=tok, ref_model=tiny_model(len(tok), ref_seed))
        text = capsys.readouterr().out
        assert path.is_file()
        return "read" if "read from" in text else "computed" if "computing once" in text else "?"

    def content() -> tuple[dict, dict]:
        """Metadata and tensors (the safetensors header's key order is not deterministic)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata()), {k: f.get_tensor(k).tolist() for k in f.keys()}

    records = _records(4)
    assert run(records) == "computed"
    first = content()
    assert run(records) == "read"  # same data, reference and settings
    changed = _records(4)
    changed[1].responses[0].text += " hot"
    assert run(changed) == "computed"  # data
    assert run(changed, ref_seed=2) == "computed"  # reference weights
    assert run(changed, ref_seed=2, max_prompt_length=5) == "computed"  # tokenisation
    assert run(changed, ref_seed=2, max_prompt_length=5, prefix_sharing=False) == "computed"
    assert run(changed, ref_seed=2, max_prompt_length=5, prefix_sharing=False) == "read"
    assert run(records) == "computed" and content() == first  # back to the first: the same cache


def test_load_rejects_foreign_or_mismatched_files(tmp_path: Path) -> None:
    items = [EncodedList(prompt_ids=[[1], [1]], response_ids=[[2], [3, 4]], order=[0, 1], psi=[1.0, 0.0])]
    path = tmp_path / "x.safetensors"
    ref_cache.save(path, "key", [[-1.5, -2.5]])
    assert ref_cache.load(path, "key", items) == [[-1.5, -2.5]]
    assert ref_cache.load(path, "other", items) is None
    assert ref_cache.load(path, "key", items * 2) is None  # another list count
    path.write_bytes(b"not a safetensors file")
    assert ref_cache.load(path, "key", items) is None
    assert ref_cache.load(tmp_path / "missing.safetensors", "key", items) is None


def test_model_fingerprint_ignores_the_lora_adapter_only() -> None:
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=3)
    fp = ref_cache.model_fingerprint(base)
    assert ref_cache.model_fingerprint(tiny_model(len(tok), seed=3)) == fp
    assert ref_cache.model_fingerprint(tiny_model(len(tok), seed=4)) != fp
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    lora_fp = ref_cache.model_fingerprint(peft_model)
    with torch.no_grad():
        next(p for n, p in peft_model.named_parameters() if "lora_B" in n).add_(1.0)
    assert ref_cache.model_fingerprint(peft_model) == lora_fp  # the adapter is not the reference
    with torch.no_grad():
        next(p for n, p in peft_model.named_parameters() if "q_proj.base_layer" in n).add_(1.0)
    assert ref_cache.model_fingerprint(peft_model) != lora_fp


def test_shared_cache_folder_serves_every_run_on_the_same_data_and_reference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = tiny_tokenizer()
    shared = tmp_path / "shared"
    losses, said = [], []
    for name, n in (("a", 4), ("b", 4), ("c", 3)):  # c: other data, its own file
        cfg = _config(tmp_path / name, max_steps=2, ref_logps_dir=str(shared))
        res = train(cfg, _records(n), model=tiny_model(len(tok), seed=3), tokenizer=tok,
                    ref_model=tiny_model(len(tok), seed=3))
        losses.append(_losses(res))
        said.append(capsys.readouterr().out)
        assert not (tmp_path / name / "ref_logps").exists()
    assert "computing once" in said[0] and "read from" in said[1] and "computing once" in said[2]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert len(list(shared.glob("*.safetensors"))) == 2
