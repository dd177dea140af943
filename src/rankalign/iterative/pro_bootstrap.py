"""PRO self-bootstrapping: grow each list with the policy's own samples, ranked by a reward model.

PRO (Song et al., "Preference Ranking Optimization for Human Alignment", arXiv:2306.17492,
§3 and the experiments on expanding the ranking sequence): besides the responses a list
already has, sample candidates from the policy being trained, score every response with
a reward model, re-rank the list by those scores, and continue PRO training on it.

Rounds t = 1..T (``bootstrap_rounds``): from pi_{t-1} (pi_0 = ``model``) sample
``added_candidates`` responses per prompt of ``data`` (the generation store of
:mod:`rankalign.iterative.generation`, resumable), score the original and the new
responses with the reward model (``rankalign.reward.model.score_responses``), write the
grown lists with the reward scores as ``scores`` and their order as ``ranking``
(``round-t/data.jsonl``), and train PRO from pi_{t-1} on them (``round-t/``; PRO's
temperatures come from the same scores, eq. 7-8). A finished round is marked by
``round-t/done.json``; a killed round resumes from its store and newest checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import UserError
from rankalign.iterative.generation import SamplingOptions
from rankalign.iterative.spa import _finished, _mark_done, _steps, check_keys, run_settings

SUMMARY = "bootstrap_summary.json"


def _f(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text, "group": "bootstrap"})


@dataclass
class BootstrapOptions(SamplingOptions):
    """What ``rankalign pro-bootstrap`` adds to the training config (``method`` is always ``pro``)."""

    reward_model: str | None = _f(None, "Reward model that ranks the grown lists: a folder written by rankalign "
                                        "train-rm, or any HF sequence classifier with one label.")
    bootstrap_rounds: int = _f(1, "Rounds of sample -> score -> re-rank -> PRO training.")
    added_candidates: int = _f(2, "Responses sampled from the policy and added to each list per round.")
    reward_batch_size: int = _f(8, "Pairs per reward-model forward.")

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.reward_model:
            out.append("reward_model: missing; pass --reward_model PATH (rankalign train-rm writes one)")
        elif self.reward_model.startswith((".", "/", "~")) and not Path(self.reward_model).expanduser().exists():
            out.append(f"reward_model: no such folder: {self.reward_model}")
        if self.bootstrap_rounds < 1:
            out.append(f"bootstrap_rounds: {self.bootstrap_rounds} must be >= 1")
        if self.added_candidates < 1:
            out.append(f"added_candidates: {self.added_candidates} must be >= 1")
        if self.reward_batch_size < 1:
            out.append(f"reward_batch_size: {self.reward_batch_size} must be >= 1")
        return out


@dataclass
class BootstrapRun:
    options: BootstrapOptions
    train_values: dict[str, Any]
    base: Any  # ListwiseConfig (method pro)


def build_bootstrap(values: dict[str, Any]) -> BootstrapRun:
    """The checked run of flat keys (every problem at once, before any data or model is read)."""
    options, train_values, base = check_keys(values, BootstrapOptions, "pro",
                                             reserved={"method": "pro-bootstrap always trains PRO"})
    return BootstrapRun(options, train_values, base)


def run_bootstrap(run: BootstrapRun, *, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the rounds; returns the summary written to ``bootstrap_summary.json``."""
    from rankalign.outputs import atomic_path, check_output_dir
    from rankalign.reward.model import load_reward_model
    from rankalign.training.trainer import load_data

    opts, base = run.options, run.base
    out = Path(base.output_dir)
    check_output_dir(out, "output_dir", (SUMMARY,))
    records = load_data(base.data, base)
    reward = load_reward_model(opts.reward_model or "", trust_remote_code=base.trust_remote_code, dtype=base.dtype)
    summary: dict[str, Any] = {"reward_model": opts.reward_model, "rounds": []}
    prev = base.model
    for t in range(1, opts.bootstrap_rounds + 1):
        folder = out / f"round-{t}"
        info = _finished(folder, run_settings(run)) or _bootstrap_round(run, t, records, reward, prev, folder, show_progress)
        summary["rounds"].append(info)
        prev = str(folder)
    with atomic_path(out / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _bootstrap_round(run: BootstrapRun, t: int, records: list[Any], reward: tuple[Any, Any], prev: str,
                     folder: Path, show_progress: bool) -> dict[str, Any]:
    from rankalign.data.io import write_jsonl
    from rankalign.iterative.generation import sample_responses
    from rankalign.reward.model import score_responses
    from rankalign.training.models import load_model_and_tokenizer
    from rankalign.training.trainer import train

    opts, base = run.options, run.base
    policy, tokenizer = load_model_and_tokenizer(prev, trust_remote_code=base.trust_remote_code, dtype=base.dtype)
    prompts = [(str(r.id), r.prompt) for r in records]
    samples = sample_responses(policy, tokenizer, prompts, n=opts.added_candidates, seed=base.seed, round_index=t,
                               options=opts, store_path=folder / "samples.jsonl",
                               max_prompt_length=base.max_prompt_length, model_path=prev, show_progress=show_progress)
    del policy
    lists = []
    for rec in records:
        texts = [x.text for x in rec.responses]
        new = [s for s in dict.fromkeys(samples[str(rec.id)]) if s.strip() and s not in texts]
        lists.append((rec, texts + new, len(new)))
    flat_p = [rec.prompt for rec, texts, _ in lists for _ in texts]
    flat_r = [x for _, texts, _ in lists for x in texts]
    scores = score_responses(reward[0], reward[1], flat_p, flat_r, batch_size=opts.reward_batch_size,
                             max_length=base.max_length, max_prompt_length=base.max_prompt_length,
                             show_progress=show_progress)
    rows, k, added, top_new = [], 0, 0, 0
    for rec, texts, n_new in lists:
        sc = scores[k:k + len(texts)]
        k += len(texts)
        ranking = sorted(range(len(texts)), key=lambda j: -sc[j])
        added += n_new
        top_new += int(ranking[0] >= len(texts) - n_new)
        rows.append({"id": rec.id, "prompt": rec.prompt, "responses": [{"text": x} for x in texts],
                     "scores": sc, "ranking": ranking,
                     "meta": {"ranked_by": str(run.options.reward_model), "sampled": list(range(len(texts) - n_new,
                                                                                                len(texts)))}})
    if not rows:
        raise UserError("no lists to train on")
    write_jsonl(rows, folder / "data.jsonl")
    config = run.train_values | {"method": "pro", "data": str(folder / "data.jsonl"), "model": prev,
                                 "output_dir": str(folder), "order_source": "scores",
                                 "resume_from_checkpoint": "latest"}
    from rankalign.training.config import load_config

    result = train(load_config(None, config))
    info = {"round": t, "lists": len(rows), "added": added, "sampled_best": top_new / len(rows),
            "steps": _steps(result.log)}
    _mark_done(folder, info, run_settings(run))
    return info
