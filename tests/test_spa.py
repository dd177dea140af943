"""SPA (Kim, Lee, Shin, Kim, "Spread Preference Annotation", arXiv:2406.04412; docs/iterative.md).

The self-refinement loss (eq. 9-10) against hand-worked values and plain DPO; the
de-coupled logits (eq. 12); bad input refused before any model loads; one SPA round end
to end on a tiny random model (sample -> judge -> refine-train) with its data written; and
a round SIGKILLed while sampling and again while training, resumed, equal to an
uninterrupted run. Run as a script, this file is the killable ``rankalign spa`` process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.errors import ConfigError, UserError
from rankalign.losses import ListLogps, build_loss
from rankalign.losses.spa import SPALogps
from training_tiny import save_tiny, tiny_records

F64 = torch.float64
PROMPTS = ["how to brew coffee ?", "what fund is best ?", "why is my code error ?", "how to save money ?"]


def pairs_batch(ratios: list[tuple[float, float]]) -> ListLogps:
    """Lists of two, chosen first: policy = ratio, reference = 0, one token each."""
    b = len(ratios)
    return ListLogps(policy=torch.tensor(ratios, dtype=F64), lengths=torch.ones(b, 2, dtype=torch.long),
                     mask=torch.ones(b, 2, dtype=torch.bool), order=torch.tensor([[0, 1]] * b),
                     reference=torch.zeros(b, 2, dtype=F64))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# --------------------------------------------------------------------------- the loss
def test_no_flagged_pair_is_plain_dpo() -> None:
    batch = pairs_batch([(1.0, -1.0), (0.2, 0.5), (-3.0, 2.0), (0.0, 0.1)])
    dpo = build_loss("dpo_bt", beta=0.5)(batch).loss
    for hp in ({"spa_k": 0.0}, {"spa_alpha": 0.0}):
        out = build_loss("spa", beta=0.5, **hp)(batch)
        torch.testing.assert_close(out.loss, dpo, rtol=0, atol=0)
        assert out.metrics["spa/flagged"].item() == 0
    during_warmup = build_loss("spa", beta=0.5, spa_warmup=0.5)
    during_warmup.progress = 0.4
    torch.testing.assert_close(during_warmup(batch).loss, dpo, rtol=0, atol=0)
    # past the warm-up the defaults (K 10, alpha 0.1) flag the least confident pair: not DPO any more
    during_warmup.progress = 0.5
    got = during_warmup(batch).loss
    assert not torch.equal(got, dpo) and torch.equal(got != dpo, torch.tensor([False, False, True, False]))


def test_self_refinement_by_hand() -> None:
    """beta 1, lambda 0 (confidence = the policy's own), K 50, alpha 0.2, two pairs with margins 2 and -1.

    Confidences sigmoid(2) = 0.8808 and sigmoid(-1) = 0.2689; their 50th percentile (linear)
    is the midpoint 0.5749, so only the second pair is flagged (0.2689 < 0.5749).
    Pair 1: -log sigmoid(2) = 0.126928. Pair 2: -(0.8 log sigmoid(-1) + 0.2 log sigmoid(1))
    = 0.8 * 1.313262 + 0.2 * 0.313262 = 1.113262.
    """
    loss = build_loss("spa", beta=1.0, spa_lambda=0.0, spa_k=50.0, spa_alpha=0.2)
    out = loss(pairs_batch([(2.0, 0.0), (0.0, 1.0)]))
    torch.testing.assert_close(out.loss, torch.tensor([0.126928, 1.113262], dtype=F64), atol=1e-6, rtol=0)
    assert out.metrics["spa/flagged"].item() == 0.5
    assert out.metrics["spa/threshold"].item() == pytest.approx((1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(1))) / 2)


def test_decoupled_logprobs_decide_the_flags() -> None:
    """The batch's de-coupled log-probs, not the policy's, set the confidence (eq. 11)."""
    batch = pairs_batch([(2.0, 0.0), (0.0, 1.0)])
    loss = build_loss("spa", beta=1.0, spa_k=50.0, spa_alpha=0.2)
    flipped = SPALogps(**{k: getattr(batch, k) for k in batch.__dataclass_fields__},
                       decoupled=torch.tensor([[0.0, 3.0], [2.0, 0.0]], dtype=F64))  # pair 1 now the unsure one
    out = loss(flipped).loss
    want = [-(0.8 * log_sigmoid(2.0) + 0.2 * log_sigmoid(-2.0)), -log_sigmoid(-1.0)]
    torch.testing.assert_close(out, torch.tensor(want, dtype=F64), atol=1e-9, rtol=0)


def test_confidence_window_sets_the_threshold() -> None:
    from collections import deque

    loss = build_loss("spa", beta=1.0, spa_lambda=0.0, spa_k=10.0)
    loss.history = deque([0.99] * 9, maxlen=20)  # nine confident pairs seen before
    out = loss(pairs_batch([(3.0, 0.0)]))  # alone, its pair would be flagged (the batch's own 10th percentile)
    assert out.metrics["spa/flagged"].item() == 1.0
    assert len(loss.history) == 10
    loss.history = deque([0.1] * 9, maxlen=20)  # now it is the most confident: not flagged
    assert loss(pairs_batch([(3.0, 0.0)])).metrics["spa/flagged"].item() == 0.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"spa_k": 101.0}, r"spa_k must be in \[0, 100\] \(got 101.0\)"),
    ({"spa_k": -1.0}, r"spa_k must be in \[0, 100\]"),
    ({"spa_alpha": 1.5}, r"spa_alpha must be in \[0, 1\]"),
    ({"spa_warmup": 2.0}, r"spa_warmup must be in \[0, 1\]"),
    ({"spa_lambda": -0.5}, "spa_lambda must be >= 0"),
])
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss("spa", **kwargs)


def test_decoupled_logits_at_lambda_zero_are_the_policys() -> None:
    from rankalign.iterative.spa_trainer import DecoupledModel, decoupled_logits
    from rankalign.training.logps import sequence_logps
    from training_tiny import tiny_model, tiny_tokenizer

    g = torch.Generator().manual_seed(0)
    h, r = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    assert torch.equal(decoupled_logits(h, r, 0.0), h)
    torch.testing.assert_close(decoupled_logits(h, r, 0.5), 1.5 * h - 0.5 * r)
    # through the model: summed response log-probs of the mixture, against a naive per-token loop
    tok = tiny_tokenizer()
    pol, ref = tiny_model(len(tok), seed=1), tiny_model(len(tok), seed=2)
    ids = torch.randint(7, len(tok), (2, 6), generator=g)
    attn = torch.ones_like(ids)
    resp = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        at0 = sequence_logps(DecoupledModel(pol, ref, 0.0), ids, attn, resp)[0]
        own = sequence_logps(pol, ids, attn, resp)[0]
        torch.testing.assert_close(at0, own, rtol=1e-6, atol=1e-5)
        mixed = sequence_logps(DecoupledModel(pol, ref, 0.25), ids, attn, resp)[0]
        hp, hr = pol(input_ids=ids).logits, ref(input_ids=ids).logits
        naive = []
        for row in range(2):
            total = 0.0
            for t in range(1, 6):
                if resp[row, t]:
                    logits = 1.25 * hp[row, t - 1] - 0.25 * hr[row, t - 1]
                    total += torch.log_softmax(logits, -1)[ids[row, t]].item()
            naive.append(total)
        torch.testing.assert_close(mixed, torch.tensor(naive), rtol=1e-5, atol=1e-4)
        assert not torch.allclose(mixed, own, atol=1e-3)


# --------------------------------------------------------------------------- bad input, before any model
@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    from rankalign.data.io import write_jsonl

    write_jsonl(tiny_records(4), tmp_path / "seed.jsonl")
    write_jsonl([{"id": f"q{i}", "prompt": p} for i, p in enumerate(PROMPTS)], tmp_path / "prompts.jsonl")
    return {"seed": tmp_path / "seed.jsonl", "prompts": tmp_path / "prompts.jsonl", "root": tmp_path}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import rankalign.training.models as models

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(models, "load_model_and_tokenizer", refuse)


def spa_values(files: dict[str, Path], **extra: str) -> dict[str, str]:
    return {"model": str(files["root"] / "tiny"), "data": str(files["seed"]), "prompts": str(files["prompts"]),
            "output_dir": str(files["root"] / "run"), "use_cpu": "true", **extra}


def test_bad_input_is_refused_before_any_model_loads(files: dict[str, Path], no_model: None) -> None:
    from rankalign.iterative.spa import build_run, run_spa

    (files["root"] / "tiny").mkdir()
    empty = files["root"] / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=r"empty\.jsonl: empty prompt set; give at least one prompt"):
        run_spa(build_run(spa_values(files, prompts=str(empty))), show_progress=False)
    no_pairs = files["root"] / "no_pairs.jsonl"
    no_pairs.write_text(json.dumps({"id": "a", "prompt": "p", "responses": [{"text": "only one"}]}) + "\n")
    with pytest.raises(UserError, match=r"data \(seed set\) .*no_pairs.jsonl: no valid lists"):
        run_spa(build_run(spa_values(files, data=str(no_pairs))), show_progress=False)
    with pytest.raises(ConfigError, match=r"spa_k must be in \[0, 100\] \(got 150.0\)"):
        build_run(spa_values(files, spa_k="150"))
    with pytest.raises(UserError, match="4 prompt\\(s\\) cannot give 5 round\\(s\\)"):
        run_spa(build_run(spa_values(files, rounds="5")), show_progress=False)
    with pytest.raises(ConfigError) as info:
        build_run(spa_values(files, spa_list_size="1", spa_list_method="listnet", spa_lambdas="a,b",
                             spa_lambda="0.3", temperature="0"))
    text = str(info.value)
    for part in ("spa_list_size: 1 must be >= 2", "spa_list_method: 'listnet' must be one of pro, dpo_pl, seadpra",
                 "spa_lambdas: 'a,b' is not a comma-separated list", "spa_lambda: set by the command itself; use spa_lambdas",
                 "temperature: 0.0 must be > 0"):
        assert part in text, part
    with pytest.raises(ConfigError, match="spa_k: a hyper-parameter of spa; this run trains with pro and dpo_bt"):
        build_run(spa_values(files, spa_list_size="3", spa_k="20"))
    with pytest.raises(ConfigError, match="unknown key 'spa_alhpa'"):
        build_run(spa_values(files, spa_alhpa="0.1"))


def test_prompt_file_errors_name_the_line(tmp_path: Path) -> None:
    from rankalign.iterative.spa import read_prompts

    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    with pytest.raises(UserError, match=r"p\.jsonl line 2: field 'prompt' missing or empty"):
        read_prompts(bad)
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert read_prompts(txt) == [("p1", "first"), ("p3", "second")]


# --------------------------------------------------------------------------- a round, end to end
ROUND_FLAGS = ["--rounds", "1", "--max_new_tokens", "5", "--generation_batch_size", "2", "--seed_epochs", "1",
               "--per_device_train_batch_size", "2", "--save_steps", "1", "--spa_warmup", "0", "--spa_k", "50",
               "--use_cpu", "--confidence_window", "8"]


def cli_args(files: dict[str, Path], out: Path) -> list[str]:
    return ["--model", str(files["model"]), "--data", str(files["seed"]), "--prompts", str(files["prompts"]),
            "--output-dir", str(out), "--judge_data", str(files["seed"]), *ROUND_FLAGS]


def run_cli(kill: str, files: dict[str, Path], out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, __file__, kill, *cli_args(files, out)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    from rankalign.data.io import write_jsonl

    root = tmp_path_factory.mktemp("spa")
    files = {"model": save_tiny(root / "tiny"), "seed": root / "seed.jsonl", "prompts": root / "prompts.jsonl"}
    write_jsonl(tiny_records(4), files["seed"])
    write_jsonl([{"id": f"q{i}", "prompt": p} for i, p in enumerate(PROMPTS)], files["prompts"])
    # in this process (one thread, as the killable runs): saves a process start
    from rankalign.commands.spa import parse_spa_args
    from rankalign.iterative.spa import build_run, run_spa

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_spa(build_run(parse_spa_args(cli_args(files, root / "whole"))), show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return files, root / "whole"


def test_one_round_end_to_end(uninterrupted: tuple[dict[str, Path], Path]) -> None:
    from rankalign.iterative.judge import implicit_rewards
    from rankalign.training.models import load_model_and_tokenizer

    files, run = uninterrupted
    r1 = run / "round-1"
    for name in ("samples.jsonl", "data.jsonl", "done.json", "model.safetensors", "train_log.jsonl"):
        assert (r1 / name).is_file(), name
    assert (run / "round-0" / "done.json").is_file() and (run / "spa_summary.json").is_file()
    rows = [json.loads(x) for x in (r1 / "data.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(4)] and all(len(r["responses"]) == 2 for r in rows)
    # the labels: beta * (logp_{pi_0} - logp_{pi_init}), recomputed here; the ranking follows them
    pi0, tok = load_model_and_tokenizer(str(run / "round-0"))
    init, _ = load_model_and_tokenizer(str(files["model"]))
    want = implicit_rewards(pi0, init, tok, [r["prompt"] for r in rows],
                            [[x["text"] for x in r["responses"]] for r in rows], beta=0.1)
    for row, w in zip(rows, want):
        assert row["scores"] == pytest.approx(w, rel=1e-5, abs=1e-9)
        assert row["ranking"] == sorted(range(2), key=lambda j: -w[j])
        gap = w[row["ranking"][0]] - w[row["ranking"][1]]
        assert row["meta"]["confidence"] == pytest.approx(1 / (1 + math.exp(-gap)))
    info = json.loads((r1 / "done.json").read_text())
    assert info["method"] == "spa" and info["lambda"] == 0.5 and info["steps"] == 2 and info["lists"] == 4
    assert info["judge"]["n"] == 4 and 0 <= info["judge"]["agreement"] <= 1
    log = [json.loads(x) for x in (r1 / "train_log.jsonl").read_text().splitlines()]
    assert any("spa/flagged" in r.get("metrics", {}) for r in log)
    # pi_1 was trained from pi_0: its weights moved
    from safetensors.torch import load_file

    w0, w1 = load_file(str(run / "round-0" / "model.safetensors")), load_file(str(r1 / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.parametrize("kills", [("sample:1", "step:1")])
def test_killed_round_resumes_to_the_uninterrupted_result(uninterrupted: tuple[dict[str, Path], Path],
                                                          tmp_path: Path, kills: tuple[str, ...]) -> None:
    """SIGKILL after the first sampled batch was stored, then inside round 1's second training
    step (after checkpoint-1); each time the same command resumes. The samples, the round's data
    and the final weights equal the uninterrupted run's."""
    from safetensors.torch import load_file

    files, whole = uninterrupted
    out = tmp_path / "run"
    for kill in kills:
        res = run_cli(kill, files, out)
        assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert (out / "round-1" / "samples.jsonl").is_file() and not (out / "round-1" / "done.json").exists()
    assert (out / "round-1" / "checkpoint-1").is_dir()
    res = run_cli("none", files, out)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("samples.jsonl", "data.jsonl"):
        assert (out / "round-1" / name).read_text() == (whole / "round-1" / name).read_text(), name
    a, b = load_file(str(out / "round-1" / "model.safetensors")), load_file(str(whole / "round-1" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- the killable process
def _install(kill: str) -> None:
    what, _, arg = kill.partition(":")
    at = int(arg or -1)

    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if what == "sample":
        from rankalign.iterative import generation

        real = generation.SampleStore.append
        count = [0]

        def append(self, rows):  # type: ignore[no-untyped-def]
            real(self, rows)
            count[0] += 1
            if count[0] == at:
                die()

        generation.SampleStore.append = append  # type: ignore[method-assign]
    elif what == "step":
        from rankalign.iterative import spa_trainer

        inner = spa_trainer.SPATrainer.compute_loss

        def compute_loss(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            out = inner(self, *args, **kwargs)
            if self.model.training and self.state.global_step == at:
                die()
            return out

        spa_trainer.SPATrainer.compute_loss = compute_loss  # type: ignore[method-assign]
    elif what != "none":
        raise SystemExit(f"unknown kill point {kill!r}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    _install(sys.argv[1])
    from rankalign.cli import main

    sys.exit(main(["spa", *sys.argv[2:]]))


def test_a_finished_round_refuses_other_settings(uninterrupted: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    """Re-running a finished folder with a changed setting is an error naming the key; more rounds
    or another save interval are not a change."""
    import shutil

    from rankalign.commands.spa import parse_spa_args
    from rankalign.errors import UserError
    from rankalign.iterative.spa import build_run, run_settings, run_spa

    files, whole = uninterrupted
    out = tmp_path / "copy"
    shutil.copytree(whole, out)
    (out / "spa_summary.json").unlink()
    args = cli_args(files, out)
    saved = json.loads((out / "round-1" / "done.json").read_text())["settings"]
    assert {k: v for k, v in saved.items() if k != "round_prompts"} == run_settings(build_run(parse_spa_args(args)))
    changed = [*args, "--seed_epochs", "7"]
    with pytest.raises(UserError, match=r"finished with other settings \(seed_epochs: 1.0 -> 7.0\)"):
        run_spa(build_run(parse_spa_args(changed)), show_progress=False)
    before = (out / "round-1" / "done.json").stat().st_mtime_ns
    summary = run_spa(build_run(parse_spa_args([*args, "--save_steps", "99"])), show_progress=False)
    assert summary["rounds"][0]["round"] == 1
    assert (out / "round-1" / "done.json").stat().st_mtime_ns == before  # reused, nothing trained
    # more rounds over the same prompts file: round 1 would get other prompts -> refused
    with pytest.raises(UserError, match="round_prompts"):
        run_spa(build_run(parse_spa_args([*args, "--rounds", "2"])), show_progress=False)
