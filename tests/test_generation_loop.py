"""Generation in the loop (rankalign.iterative.generation): the resumable per-round sample store.

Tiny random model (tests/training_tiny.py). A round's samples are a function of (seed,
round, prompt ids, settings): resuming from a store cut anywhere (a torn last line, a batch
half-written) gives exactly the samples of an uninterrupted round. The SIGKILL test of a
whole SPA round is in tests/test_spa.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.errors import UserError
from rankalign.iterative.generation import SampleStore, SamplingOptions, derive_seed, sample_responses
from training_tiny import tiny_model, tiny_tokenizer

PROMPTS = [(f"q{i}", p) for i, p in enumerate(
    ["how to brew coffee ?", "what fund is best ?", "why is my code error ?", "how to save money ?",
     "which cup is good ?", "can you help ?", "is hot water good ?"])]
OPTS = SamplingOptions(temperature=1.0, max_new_tokens=5, generation_batch_size=3, use_vllm="false")


@pytest.fixture(scope="module")
def policy() -> tuple:
    import torch

    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    return tiny_model(len(tok), seed=1), tok


def sample(policy: tuple, path: Path, *, seed: int = 0, round_index: int = 1, opts: SamplingOptions = OPTS,
           prompts: list = PROMPTS) -> dict[str, list[str]]:
    model, tok = policy
    return sample_responses(model, tok, prompts, n=2, seed=seed, round_index=round_index, options=opts,
                            store_path=path, show_progress=False)


def test_samples_are_seeded_and_stored(policy: tuple, tmp_path: Path) -> None:
    a = sample(policy, tmp_path / "a.jsonl")
    b = sample(policy, tmp_path / "b.jsonl")
    assert a == b and set(a) == {i for i, _ in PROMPTS} and all(len(v) == 2 for v in a.values())
    # another seed or another round samples something else (so the equality above can fail)
    assert sample(policy, tmp_path / "c.jsonl", seed=1) != a
    assert sample(policy, tmp_path / "d.jsonl", round_index=2) != a
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["type"] == "header" and header["seed"] == 0 and header["round"] == 1 and header["n"] == 2
    assert {json.loads(x)["id"]: json.loads(x)["samples"] for x in lines[1:]} == a
    assert len(lines) == 1 + len(PROMPTS)  # one line per prompt, written once


def test_resume_from_a_cut_store_equals_an_uninterrupted_round(policy: tuple, tmp_path: Path) -> None:
    whole = sample(policy, tmp_path / "whole.jsonl")
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    # a crash after the first batch (3 prompts) and the first line of the second, the third line torn
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:5]) + lines[5][:17])
    model, _ = policy
    calls = []
    real = model.generate

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    model.generate = counting
    try:
        resumed = sample(policy, cut)
    finally:
        del model.generate
    assert resumed == whole
    assert len(calls) == 2  # the half-written batch again (whole, same seed) and the last one; not the first
    rows = [json.loads(x) for x in cut.read_text().splitlines()[1:]]
    assert sorted(r["id"] for r in rows) == sorted(i for i, _ in PROMPTS)  # no prompt twice, none missing


def test_torn_line_is_cut_and_complete_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    store = SampleStore(path, {"round": 1})
    store.append([{"id": "a", "prompt": "p", "samples": ["x", "y"]}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"id": "b", "prompt": "p", "sam')
    again = SampleStore(path, {"round": 1})
    assert again.done == {"a": ["x", "y"]}
    assert path.read_text().endswith('"y"]}\n')  # the torn tail is gone, appends continue cleanly


def test_store_refuses_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    SampleStore(path, {"round": 1, "temperature": 0.7})
    with pytest.raises(UserError, match=r"temperature=0.7, this run has temperature=1.0; rerun with the same "
                                        r"settings to resume, or delete the file"):
        SampleStore(path, {"round": 1, "temperature": 1.0})
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(UserError, match="line 2: not a sample record"):
        SampleStore(path, {"round": 1, "temperature": 0.7})


def test_bad_input(policy: tuple, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no prompts to sample from"):
        sample(policy, tmp_path / "e.jsonl", prompts=[])
    with pytest.raises(UserError, match="prompt id 'q0' appears more than once"):
        sample(policy, tmp_path / "f.jsonl", prompts=[PROMPTS[0], PROMPTS[0]])
    bad = SamplingOptions(temperature=0, top_p=1.5, max_new_tokens=0, generation_batch_size=0, use_vllm="maybe")
    assert len(bad.problems()) == 5


def test_derive_seed_is_stable() -> None:
    assert derive_seed(0, 1, "a") == derive_seed(0, 1, "a") != derive_seed(0, 1, "b")
    assert 0 <= derive_seed("x") < 2 ** 31


# --------------------------------------------------------------------------- PRO self-bootstrapping
def tiny_reward_model(folder: Path) -> Path:
    """A one-label sequence classifier on the tiny tokenizer (random head, saved: a 'trained' RM)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tiny_tokenizer()
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    LlamaForSequenceClassification(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_pro_bootstrap_round(tmp_path: Path) -> None:
    """One round: each list grows by the sampled candidates, is ranked by the reward model's
    scores (recomputed here), and PRO trains on it from the initial policy."""
    import torch

    from rankalign.data.io import write_jsonl
    from rankalign.iterative.pro_bootstrap import build_bootstrap, run_bootstrap
    from rankalign.reward.model import load_reward_model, score_responses
    from training_tiny import save_tiny, tiny_records

    torch.set_num_threads(1)
    model = save_tiny(tmp_path / "tiny")
    rm = tiny_reward_model(tmp_path / "rm")
    write_jsonl(tiny_records(4), tmp_path / "lists.jsonl")
    values = {"model": str(model), "data": str(tmp_path / "lists.jsonl"), "reward_model": str(rm),
              "output_dir": str(tmp_path / "run"), "added_candidates": "2", "max_new_tokens": "5",
              "temperature": "1.0", "max_steps": "2", "use_cpu": "true"}
    summary = run_bootstrap(build_bootstrap(values), show_progress=False)
    info = summary["rounds"][0]
    rows = [json.loads(x) for x in (tmp_path / "run" / "round-1" / "data.jsonl").read_text().splitlines()]
    originals = [len(r["responses"]) for r in tiny_records(4)]
    assert [len(r["responses"]) for r in rows] == [m + len(r["meta"]["sampled"]) for m, r in zip(originals, rows)]
    assert info["added"] == sum(len(r["meta"]["sampled"]) for r in rows) > 0 and info["steps"] == 2
    rmodel, rtok = load_reward_model(str(rm))
    for r in rows:
        texts = [x["text"] for x in r["responses"]]
        want = score_responses(rmodel, rtok, [r["prompt"]] * len(texts), texts, max_length=512,
                               max_prompt_length=256)
        assert r["scores"] == pytest.approx(want, abs=1e-6)
        assert r["ranking"] == sorted(range(len(texts)), key=lambda j: -want[j])
    assert (tmp_path / "run" / "round-1" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "round-1" / "done.json").is_file()


def test_pro_bootstrap_bad_reward_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing reward model is a config error; a causal LM (no classification head) is refused
    when loaded, before any policy is loaded."""
    import rankalign.training.models as models
    from rankalign.data.io import write_jsonl
    from rankalign.errors import ConfigError
    from rankalign.iterative.pro_bootstrap import build_bootstrap, run_bootstrap
    from training_tiny import save_tiny, tiny_records

    model = save_tiny(tmp_path / "tiny")
    write_jsonl(tiny_records(4), tmp_path / "lists.jsonl")
    values = {"model": str(model), "data": str(tmp_path / "lists.jsonl"), "output_dir": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match="reward_model: no such folder"):
        build_bootstrap({**values, "reward_model": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="reward_model: missing"):
        build_bootstrap(values)
    with pytest.raises(ConfigError, match=r"added_candidates: 0 must be >= 1"):
        build_bootstrap({**values, "reward_model": str(model), "added_candidates": "0"})

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the policy was loaded before the reward model was checked")

    monkeypatch.setattr(models, "load_model_and_tokenizer", refuse)
    with pytest.raises(UserError, match="without a classification head"):
        run_bootstrap(build_bootstrap({**values, "reward_model": str(model)}), show_progress=False)
