"""Train a scalar reward model on list-wise records, then measure it on held-out lists.

Flow of :func:`train_reward_model`: check the config, the output folder and the data (before
any model is loaded) -> split off the held-out lists (``eval_data``, or a seeded
``eval_fraction`` of ``data``) -> a one-label ``AutoModelForSequenceClassification`` built
from the causal LM ``model`` (head initialised at random, seeded) -> LoRA (the head trained
in full: ``modules_to_save``) -> :class:`RewardTrainer` -> save_pretrained -> score every
held-out response (:func:`rankalign.reward.model.score_responses`, the path ``rankalign
score`` uses) and compare the reward order with the gold order
(:func:`rankalign.evaluation.ranking_accuracy.ranking_accuracy`: pairwise accuracy, Kendall
tau-b, top-1, NDCG, each with a bootstrap CI over lists) -> ``eval_metrics.json``.

The trainer is :class:`rankalign.training.trainer.ListwiseTrainer` with one change: the
per-response score of a list is the reward model's output instead of a log-prob
(:meth:`RewardTrainer.build_list_logps`), so batching (:class:`~rankalign.training.logps.ListCollator`),
the reduction (mean over the lists of a micro-batch), the logged metrics, the eval step's
ranking metrics and the crash-safe checkpoints are the policy trainer's.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rankalign.data.record import ListRecord
from rankalign.errors import ConfigError, UserError
from rankalign.losses import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses._util import clean
from rankalign.reward.config import RewardConfig
from rankalign.reward.losses import reward_metrics, reward_model_loss
from rankalign.reward.model import sequence_rewards
from rankalign.training.trainer import ListwiseTrainer

EVAL_METRICS = "eval_metrics.json"


@dataclass
class RewardLossParams:
    """The reward-model loss's settings; their defaults and help live in :class:`RewardConfig`."""

    rm_loss: str
    pair_mode: str


class RewardListLoss(ListwiseLoss):
    """Bradley-Terry or Plackett-Luce on the rewards of each list (:mod:`rankalign.reward.losses`).

    Not registered: it trains reward models (``rankalign train-rm``), not policies. Reads
    ``batch.policy`` ``[B, M]`` as the rewards and ``batch.labels`` as the labels whose ties
    Bradley-Terry skips.
    """

    name = "reward_model"
    hyperparams = RewardLossParams

    def forward(self, batch: ListLogps) -> LossOutput:
        smask = batch.sorted_mask  # [B, M]
        s = clean(batch.sorted(batch.policy), smask)  # [B, M] rewards, best first
        labels = batch.sorted(batch.labels) if batch.labels is not None else None
        loss = reward_model_loss(self.hparams.rm_loss, s, smask, pair_mode=self.hparams.pair_mode, labels=labels)
        return LossOutput(loss, reward_metrics(s, smask, labels))


class RewardTrainer(ListwiseTrainer):
    """:class:`ListwiseTrainer` whose per-response score is a reward model's output."""

    def build_list_logps(self, model: Any, batch: dict[str, Tensor]) -> ListLogps:
        """ONE forward of the ``[B*M, T]`` rows -> ``ListLogps`` with ``policy`` = rewards ``[B, M]``
        (``lengths`` = 1, so the trainer's length-normalised score is the reward itself)."""
        b, m = batch["list_mask"].shape
        rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"]).view(b, m)  # [B, M]
        rewards = torch.where(batch["list_mask"], rewards, torch.zeros_like(rewards))
        return ListLogps(policy=rewards, lengths=torch.ones_like(rewards), mask=batch["list_mask"],
                         order=batch["order"], labels=batch["psi"])

    def _store(self, metrics: dict[str, Tensor], mode: str) -> None:
        # the policy trainer's logps/* metrics would be rewards under a wrong name here
        super()._store({k: v for k, v in metrics.items() if not k.startswith("logps/")}, mode)


@dataclass
class RewardResult:
    """What :func:`train_reward_model` produced."""

    output_dir: str
    model: Any
    tokenizer: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    train_runtime_s: float = 0.0


def split_held_out(records: list[ListRecord], fraction: float, seed: int) -> tuple[list[ListRecord], list[ListRecord]]:
    """``(train, held out)``: ``round(fraction * n)`` lists (at least 1 when ``fraction`` > 0)
    drawn with ``random.Random(seed)``; both keep the input order.

    Raises:
        UserError: too few lists to keep one for training.
    """
    if fraction <= 0:
        return list(records), []
    n_eval = max(1, round(fraction * len(records)))
    if n_eval >= len(records):
        raise UserError(f"data: {len(records)} list(s) are too few to hold out {fraction:g} of them and train on "
                        "the rest; add lists, lower --eval_fraction, or pass --eval_data")
    held = set(random.Random(seed).sample(range(len(records)), n_eval))
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def _check_orders(records: list[ListRecord], config: RewardConfig, what: str) -> list[str]:
    source = config.effective_order_source()
    need = {"gold": "ranking", "scores": "scores"}.get(source)
    if need is None:
        return []
    missing = [r.id for r in records if getattr(r, need) is None]
    if not missing:
        return []
    return [f"{what}: order_source {source} needs {need!r} but {len(missing)} record(s) have none "
            f"(e.g. id={missing[0]!r}); use order_source auto or data with {need}"]


def _checked_data(config: RewardConfig, records: list[ListRecord] | None, eval_records: list[ListRecord] | None
                  ) -> tuple[list[ListRecord], list[ListRecord], str]:
    """Config, output folder and data checked before any model is loaded; ``(train, held out, where from)``."""
    from rankalign.outputs import check_output_dir
    from rankalign.training.trainer import TRAIN_LOG, load_data

    problems = config.problems()
    if problems:
        raise ConfigError(problems)
    if config.output_dir:
        check_output_dir(config.output_dir, "output_dir", (TRAIN_LOG, "rankalign_config.json", EVAL_METRICS))
    if records is None:
        if not config.data:
            raise ConfigError(["data: missing; pass --data FILE (or records to train_reward_model())"])
        records = load_data(config.data, config)
    if not records:
        raise UserError("data: no lists to train on")
    if eval_records is None and config.eval_data:
        eval_records = load_data(config.eval_data, config, "eval_data")
    if eval_records is not None:
        held_from = f"eval_data {config.eval_data}" if config.eval_data else "eval_records"
    else:
        records, eval_records = split_held_out(list(records), config.eval_fraction, config.seed)
        held_from = f"eval_fraction {config.eval_fraction:g} of data (seed {config.seed})"
    problems = _check_orders(list(records), config, "data") + _check_orders(list(eval_records), config, "eval_data")
    if problems:
        raise ConfigError(problems)
    return list(records), list(eval_records), held_from


def build_reward_model(config: RewardConfig) -> tuple[Any, Any]:
    """A one-label classifier from ``config.model`` (head seeded by ``config.seed``), LoRA applied."""
    from transformers import set_seed

    from rankalign.reward.model import classifier_from_causal_lm
    from rankalign.training.trainer import _apply_lora

    set_seed(config.seed)
    model, tokenizer = classifier_from_causal_lm(config.model, trust_remote_code=config.trust_remote_code,
                                                 dtype=config.dtype)
    if config.use_lora:
        heads = [name for name in ("score", "classifier") if hasattr(model, name)]
        model = _apply_lora(model, config, task_type="SEQ_CLS", modules_to_save=heads or None)
    if config.gradient_checkpointing:
        model.config.use_cache = False
    return model, tokenizer


def train_reward_model(config: RewardConfig, records: list[ListRecord] | None = None, *,
                       eval_records: list[ListRecord] | None = None, model: Any = None, tokenizer: Any = None,
                       callbacks: list[Any] | None = None) -> RewardResult:
    """Train a reward model with ``config.rm_loss`` and evaluate it on held-out lists.

    Args:
        config: the run's config (``data`` is read when ``records`` is None).
        records: training lists; ``eval_records``: held-out lists (else ``eval_data``, else a
            seeded ``eval_fraction`` split of the training lists).
        model, tokenizer: an already built one-label classifier (tests); default
            :func:`build_reward_model`.
        callbacks: extra ``TrainerCallback`` objects.
    Returns:
        :class:`RewardResult`; ``metrics`` is what ``eval_metrics.json`` holds (empty
        ``metrics["metrics"]`` without held-out lists).
    Raises:
        ConfigError / UserError: bad config, output folder or data, before any model is loaded.
    """
    from rankalign.training.callbacks import JsonlLogCallback
    from rankalign.training.logps import ListCollator, TruncationStats
    from rankalign.training.trainer import (
        TRAIN_LOG,
        ListDataset,
        _read_log,
        _resume_target,
        encode_records,
        save_final,
    )

    records, held_out, held_from = _checked_data(config, records, eval_records)
    resume = _resume_target(config, None)
    if model is None:
        model, tokenizer = build_reward_model(config)
    if tokenizer is None:
        raise UserError("train_reward_model(): a model was given without its tokenizer")
    stats = TruncationStats()
    train_ds = ListDataset(encode_records(records, tokenizer, config, stats))  # type: ignore[arg-type]
    print(stats.summary(), flush=True)
    log_path = Path(config.output_dir or ".") / TRAIN_LOG
    header = {"type": "truncation", "method": f"reward_model/{config.rm_loss}", "lists": len(train_ds),
              **stats.as_dict()}
    loss = RewardListLoss(rm_loss=config.rm_loss, pair_mode=config.pair_mode)
    # the reward head reads each (prompt, response) row on its own: no packed lists (prefix_sharing)
    eval_ds = None
    if config.eval_strategy != "no" and held_out:
        eval_ds = ListDataset(encode_records(held_out, tokenizer, config, desc="tokenising eval"))  # type: ignore[arg-type]
    trainer = RewardTrainer(model=model, args=config, data_collator=ListCollator(tokenizer.pad_token_id, prefix_sharing=False),
                            train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer, loss=loss,
                            callbacks=[JsonlLogCallback(log_path, header), *(callbacks or [])])
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    runtime = time.perf_counter() - t0
    saved = save_final(trainer, config, tokenizer)  # type: ignore[arg-type]
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        metrics = evaluate_reward_model(saved, tokenizer, held_out, config, held_from)
        write_eval_metrics(Path(config.output_dir or "."), metrics)
    return RewardResult(output_dir=str(config.output_dir), model=saved, tokenizer=tokenizer, metrics=metrics,
                        log=_read_log(log_path), train_runtime_s=runtime)


def evaluate_reward_model(model: Any, tokenizer: Any, records: list[ListRecord], config: RewardConfig,
                          held_from: str = "") -> dict[str, Any]:
    """Held-out ranking metrics of the reward model's scores, with bootstrap CIs over lists.

    Lists without a strict gold order (no ranking, tied scores or votes) are not scored
    and are counted in ``skipped``. Returns the ``eval_metrics.json`` mapping.
    """
    from rankalign.evaluation.ranking_accuracy import gold_split, ranking_accuracy
    from rankalign.reward.model import score_responses

    keep, skipped = gold_split(records)
    kept = [records[i] for i in keep]
    prompts = [r.prompt for r in kept for _ in r.responses]
    texts = [resp.text for r in kept for resp in r.responses]
    flat = score_responses(model, tokenizer, prompts, texts, batch_size=config.score_batch_size,
                           max_length=config.max_length, max_prompt_length=config.max_prompt_length,
                           show_progress=len(texts) > 50) if texts else []
    scores, start = [], 0
    for r in kept:
        scores.append(flat[start:start + r.num_responses])
        start += r.num_responses
    result = ranking_accuracy(kept, scores, kind="reward", seed=config.seed)
    result.skipped = skipped
    return {"rm_loss": config.rm_loss, "pair_mode": config.pair_mode if config.rm_loss == "bt" else None,
            "order_source": config.order_source, "held_out": held_from, "lists": len(kept),
            "pairs": sum(r.num_responses * (r.num_responses - 1) // 2 for r in kept),
            "skipped": skipped, "metrics": result.metrics}


def write_eval_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """``folder/eval_metrics.json``, written atomically."""
    from rankalign.outputs import atomic_path, writing

    path = folder / EVAL_METRICS
    with writing(path), atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


def format_eval_metrics(metrics: dict[str, Any]) -> str:
    """Printable lines: ``pairwise accuracy 0.620 [0.550, 0.690] over 60 lists`` ..."""
    if not metrics.get("metrics"):
        why = "no held-out lists" if not metrics.get("skipped") else f"every held-out list skipped {metrics['skipped']}"
        return f"held-out evaluation: none ({why})"
    lines = [f"held-out evaluation ({metrics['held_out']}): {metrics['lists']} lists, {metrics['pairs']} pairs"]
    for key, name in (("ranking/pairwise_accuracy", "pairwise accuracy"), ("ranking/kendall_tau", "Kendall tau"),
                      ("ranking/top1", "top-1"), ("ranking/ndcg", "NDCG")):
        e = metrics["metrics"][key]
        lines.append(f"  {name:<18} {e['mean']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]")
    if metrics.get("skipped"):
        lines.append(f"  skipped: {', '.join(f'{n} {why}' for why, n in sorted(metrics['skipped'].items()))}")
    return "\n".join(lines)
