"""The list-wise trainer on ``transformers.Trainer`` and the top-level :func:`train`.

Flow of :func:`train`: validate the config and the data (every problem at once, before
any model is loaded) -> SeAdpra: compute the dynamic ranking/APDF when the data lacks it
-> load the policy (and reference) -> tokenise -> ``ListwiseTrainer.train`` -> save
weights (merged or adapter) + tokenizer -> :class:`TrainResult`.

Reduction rule: each loss returns one value per list ``[B]``; ``compute_loss`` returns
their mean over the micro-batch; the HF Trainer divides by the gradient-accumulation
steps and DDP averages gradients across ranks, so with equal per-rank batches the update
equals that of the mean over the global batch. Logged metrics are means over each
micro-batch, gathered (averaged) across ranks and averaged over the logging window.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer

from rankalign.data.record import ListRecord, order_labels
from rankalign.errors import ConfigError, UserError
from rankalign.evaluation.ranking_accuracy import batch_ranking_metrics
from rankalign.losses import ListLogps, ListwiseLoss, build_loss
from rankalign.losses._util import list_metrics
from rankalign.outputs import check_output_dir
from rankalign.training import checkpoints
from rankalign.training.batching import padding_metrics
from rankalign.training.callbacks import JsonlLogCallback
from rankalign.training.config import ListwiseConfig
from rankalign.training.logps import EncodedList, ListCollator, TruncationStats, encode_list, list_logps

TRAIN_LOG = "train_log.jsonl"


# ---------------------------------------------------------------------- data
class ListDataset(torch.utils.data.Dataset):
    """Tokenised lists (:class:`EncodedList`), one item per prompt."""

    def __init__(self, items: Sequence[EncodedList]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> EncodedList:
        return self.items[i]


def select_list(record: ListRecord, order_source: str, max_list_size: int | None
                ) -> tuple[list[int], dict[str, Any]]:
    """The responses kept for training and the targets, re-indexed to the kept ones.

    Returns:
        ``(kept original indices (ascending), targets)``; ``targets`` holds
        :class:`EncodedList`'s ``order`` (best first), ``psi``, ``scores``, ``apdf``,
        ``apdf_row_max`` and ``desirable`` (1/0 per kept response when every response of the
        record carries ``attributes["desirable"]``, else None; docs/methods.md#kto-unpaired).
        With ``max_list_size`` only the best-ranked responses (by ``order_source``) are kept;
        ``apdf_row_max`` (SeAdpra's W_r) stays the value computed on the whole pool.
    """
    order = record.preference_order(order_source)
    keep = sorted(order[:max_list_size]) if max_list_size else list(range(record.num_responses))
    pos = {orig: new for new, orig in enumerate(keep)}
    new_order = [pos[i] for i in order if i in pos]
    scores = [record.scores[i] for i in keep] if record.scores is not None else None
    psi = order_labels(new_order, scores)  # scores, else M - position among the kept responses
    apdf = [[record.apdf[i][j] for j in keep] for i in keep] if record.apdf is not None else None
    row_max = [record.apdf_row_max[i] for i in keep] if record.apdf_row_max is not None else None
    # explicit desirable/undesirable feedback (KTO on unpaired data) only when every response has it
    labels = [record.responses[i].attributes.get("desirable") for i in keep]
    desirable = [int(bool(v)) for v in labels] if all(v is not None for v in labels) else None
    return keep, {"order": new_order, "psi": psi, "scores": scores, "apdf": apdf, "apdf_row_max": row_max,
                  "desirable": desirable}


def encode_records(records: Sequence[ListRecord], tokenizer: Any, config: ListwiseConfig,
                   stats: TruncationStats | None = None, *, desc: str = "tokenising") -> list[EncodedList]:
    """Tokenise every list (progress bar); ``stats`` counts what truncation cut."""
    from tqdm.auto import tqdm

    source = config.effective_order_source()
    items = []
    for rec in tqdm(records, desc=desc, unit="list", disable=len(records) < 50):
        keep, targets = select_list(rec, source, config.max_list_size)
        prompts, responses = encode_list(
            tokenizer, rec.prompt, [rec.responses[i].text for i in keep],
            max_length=config.max_length, max_prompt_length=config.max_prompt_length, stats=stats,
        )
        items.append(EncodedList(prompt_ids=prompts, response_ids=responses, **targets))
    return items


def load_data(path: str, config: ListwiseConfig, what: str = "data") -> list[ListRecord]:
    """Read records per ``config.data_on_error``; print the load report; no valid list is an error."""
    from rankalign.data.io import LoadReport, read_records

    report = LoadReport()
    records = read_records(path, on_error=config.data_on_error, report=report)
    if report.total_skipped:
        print(f"{what} {path}: {report.summary()}", flush=True)
    if not records:
        raise UserError(f"{what} {path}: no valid lists ({report.summary()}); each record needs a prompt and "
                        "at least 2 non-empty responses (see docs/data.md)")
    return records


def validate_data(records: Sequence[ListRecord], config: ListwiseConfig, what: str = "data") -> None:
    """Data-dependent checks, before any model is loaded.

    Raises:
        ConfigError: every problem found (method needs scores / apdf the data cannot give,
            an order source the data lacks, too few lists for the batch size, ...).
    """
    cls = config.loss_class()
    problems: list[str] = []
    if not records:
        problems.append(f"{what}: no valid lists")
    missing_scores = [r.id for r in records if r.scores is None]
    if cls.needs_scores and missing_scores:
        problems.append(f"{what}: method {config.method} needs 'scores' but {len(missing_scores)} record(s) have "
                        f"none (e.g. id={missing_scores[0]!r}); use data with scores or another method")
    source = config.effective_order_source()
    if source == "gold":
        miss = [r.id for r in records if r.ranking is None]
        if miss:
            problems.append(f"{what}: order_source gold needs 'ranking' but {len(miss)} record(s) have none "
                            f"(e.g. id={miss[0]!r})")
    if source == "scores" and missing_scores:
        problems.append(f"{what}: order_source scores needs 'scores' but {len(missing_scores)} record(s) have "
                        f"none (e.g. id={missing_scores[0]!r})")
    single = [r.id for r in records if r.num_responses < 2]
    if single and not cls.accepts_single_response:
        problems.append(f"{what}: {len(single)} list(s) hold a single response (e.g. id={single[0]!r}); only kto "
                        f"trains on single responses labelled desirable/undesirable, {config.method} needs "
                        "pairs: use --method kto, or data with at least 2 responses per prompt")
    if cls.needs_mismatched:
        # the trainer drops an epoch's last incomplete micro-batch (see ListwiseTrainer), so one
        # full micro-batch per process is the least that trains
        per_device = config.per_device_eval_batch_size if what == "eval_data" else config.per_device_train_batch_size
        if what == "eval_data" and per_device < 2:
            problems.append(f"per_device_eval_batch_size: {config.method} needs >= 2 lists per micro-batch (its "
                            "z0 pairs each list's responses with another list's prompt); set it to 2 or more")
        need = max(2, per_device * max(1, config.world_size))
        if len(records) < need:
            problems.append(f"{what}: method {config.method} needs at least {need} lists (one full micro-batch), "
                            f"found {len(records)}; add lists or lower the per-device batch size (>= 2)")
    if problems:
        raise ConfigError(problems)


def ensure_dynamic_ranking(records: list[ListRecord], config: ListwiseConfig) -> list[ListRecord]:
    """Compute D^R and the APDF (``rankalign.ranking``) for records that lack them, when needed."""
    cls = config.loss_class()
    need = cls.needs_apdf or config.effective_order_source() == "dynamic"
    from rankalign.ranking.rank import RULE_META, RankingConfig, rank_records
    from rankalign.ranking.rules import PAPER_RULE

    # a list ranked by another rule than the one asked for is ranked again (meta names the rule)
    todo = [r for r in records if r.dynamic_ranking is None or (cls.needs_apdf and r.apdf is None)
            or r.meta.get(RULE_META, PAPER_RULE) != config.ranking_rule]
    if not need or not todo:
        return records

    print(f"computing the SeAdpra dynamic ranking for {len(todo)} list(s) "
          f"(attributes: {config.ranking_attributes}, rule: {config.ranking_rule})", flush=True)
    rank_records(todo, RankingConfig(attributes=config.ranking_attributes,  # type: ignore[arg-type]
                                     half_life_days=config.half_life_days, rule=config.ranking_rule,
                                     embedding_model=config.embedding_model))
    return records


# ---------------------------------------------------------------------- trainer
class CrashSafeCheckpoints:
    """``transformers.Trainer`` mixin: checkpoints written complete or not at all (:mod:`.checkpoints`).

    Put it before ``Trainer`` in the bases (``class T(CrashSafeCheckpoints, Trainer)``); shared by
    :class:`ListwiseTrainer` and the reward-model trainer (``rankalign.reward.train``).
    """

    _staging: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        """While a checkpoint is being written: the staging folder (see :meth:`_save_checkpoint`)."""
        return self._staging or super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write ``checkpoint-N`` into a staging folder, then rename it into place complete.

        The Trainer's own rotation then sees only the staging folder; old checkpoints are
        rotated here, each renamed away before it is deleted (:mod:`.checkpoints`).
        """
        run_dir = super()._get_output_dir(trial)  # type: ignore[misc]
        name = f"checkpoint-{self.state.global_step}"  # type: ignore[attr-defined]
        self._staging = os.path.join(run_dir, checkpoints.STAGING)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging = None
        final = os.path.join(run_dir, name)
        state, args = self.state, self.args  # type: ignore[attr-defined]
        if state.best_model_checkpoint:  # recorded under the staging path
            state.best_model_checkpoint = state.best_model_checkpoint.replace(
                os.path.join(run_dir, checkpoints.STAGING), run_dir)
        if args.should_save:
            checkpoints.publish(os.path.join(run_dir, checkpoints.STAGING, name), final)
            shutil.rmtree(os.path.join(run_dir, checkpoints.STAGING), ignore_errors=True)
            checkpoints.rotate(run_dir, args.save_total_limit, state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]


class ListwiseTrainer(CrashSafeCheckpoints, Trainer):
    """``transformers.Trainer`` for list-wise losses.

    The batch (from :class:`ListCollator`) holds B lists, packed one row per list (prefix
    sharing, :mod:`.packing`) and flattened to ``[B*M, T]``; one policy forward gives the
    ``[B, M]`` log-probs; the reference log-probs are the batch's cached ``reference_logps``
    (:mod:`.ref_cache`) or come from ``ref_model`` (frozen) or, for a peft model with
    ``ref_model=None``, from the same model with its adapter disabled — both under
    ``torch.no_grad``. With ``max_tokens_per_batch`` the micro-batches are filled to a token
    budget (:mod:`.batching`).

    Args:
        loss: the registered loss module.
        ref_model: frozen reference model, or ``None`` (LoRA base / no reference needed).
        Other arguments as for ``transformers.Trainer``.
    """

    #: compute_loss returns a per-micro-batch mean; the Trainer divides by the GA steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, loss: ListwiseLoss, ref_model: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss
        self.ref_model = ref_model
        if loss.needs_mismatched and not self.args.dataloader_drop_last:
            # a last micro-batch holding one list has no other prompt to pair its responses with
            # (z0); drop an epoch's incomplete last micro-batch instead of failing on it
            self.args.dataloader_drop_last = True
        if ref_model is not None:
            ref_model.eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
            self.ref_model = ref_model.to(self.args.device)
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._warned_same_prompt = False

    # -- log-probs ---------------------------------------------------------------------------
    def _reference_logps(self, model: Any, batch: dict[str, Tensor], prefix: str = "") -> Tensor | None:
        if not self.loss_fn.needs_reference:
            return None
        if not prefix and "reference_logps" in batch:  # cached before training (ref_cache)
            return batch["reference_logps"]
        with torch.no_grad():
            if self.ref_model is not None:
                return list_logps(self.ref_model, batch, prefix)[0]
            base = self.accelerator.unwrap_model(model)
            if not hasattr(base, "disable_adapter"):
                raise UserError(f"{self.loss_fn.name} needs a reference model: pass ref_model, or train "
                                "with LoRA (the base model with the adapter disabled is the reference)")
            was_training = base.training
            base.eval()  # the reference is deterministic: no dropout in the base model
            try:
                with base.disable_adapter():
                    return list_logps(base, batch, prefix)[0]
            finally:
                base.train(was_training)

    def build_list_logps(self, model: Any, batch: dict[str, Tensor]) -> ListLogps:
        """One policy forward (with grad) + reference/mismatched passes (no grad) -> :class:`ListLogps`."""
        policy, lengths = list_logps(model, batch)  # [B, M] each
        lp = ListLogps(policy=policy, lengths=lengths, mask=batch["list_mask"], order=batch["order"],
                       reference=self._reference_logps(model, batch), scores=batch.get("scores"),
                       labels=batch["psi"], apdf=batch.get("apdf"), apdf_row_max=batch.get("apdf_row_max"),
                       desirable=batch.get("desirable"))
        if self.loss_fn.needs_mismatched:
            self._mismatched_logps(model, batch, lp)
        return lp

    def _mismatched_logps(self, model: Any, batch: dict[str, Tensor], lp: ListLogps) -> None:
        """Fill ``lp.mismatched_policy/reference``: each response under another list's prompt (no grad).

        When every list of the micro-batch has the same prompt there is no mismatched pair
        (the collator builds none); the KL estimate is then taken as 0 (z0 = 0, the value the
        clamp ``max(0, .)`` falls back to), with a warning, instead of a matched pair.
        """
        if "mismatched_input_ids" not in batch:
            if lp.policy.shape[0] < 2:
                raise UserError(f"{self.loss_fn.name} needs >= 2 lists per micro-batch")
            if not self._warned_same_prompt:
                warnings.warn(f"{self.loss_fn.name}: every list of a micro-batch has the same prompt, so no "
                              "response can be paired with another prompt; z0 = 0 for such micro-batches "
                              "(merge lists that share a prompt to avoid this)", stacklevel=2)
                self._warned_same_prompt = True
            zeros = torch.zeros_like(lp.policy).detach()
            lp.mismatched_policy, lp.mismatched_reference = zeros, zeros.clone()
            return
        with torch.no_grad():
            lp.mismatched_policy = list_logps(self.accelerator.unwrap_model(model), batch, "mismatched_")[0]
        lp.mismatched_reference = self._reference_logps(model, batch, "mismatched_")

    # -- loss --------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False,
                     num_items_in_batch: Tensor | int | None = None) -> Tensor | tuple[Tensor, Any]:
        lp = self.build_list_logps(model, inputs)
        out = self.loss_fn(lp)
        loss = out.loss.mean()  # mean over the B lists of this micro-batch
        with torch.no_grad():
            # the same metrics for every method (list_metrics: implicit reward beta * ratio, or the mean
            # token log-prob without a reference model); the loss's own metrics, when it logs any, win
            beta = getattr(self.args, "beta", 1.0)
            rewards = lp.sorted(beta * lp.ratio if lp.reference is not None else lp.avg).detach()  # [B, M]
            metrics = list_metrics(lp, rewards, rewards)
            metrics["logps/mean"] = (lp.policy.detach() * lp.mask).sum() / lp.mask.sum().clamp(min=1)
            for key, value in out.metrics.items():
                metrics[key] = value.detach().float().mean() if torch.is_tensor(value) else torch.tensor(value)
            if model.training:  # the forward's real vs padded tokens (batching.py)
                metrics.update(padding_metrics(inputs))
            self._store(metrics, "train" if model.training else "eval")
        return (loss, {"list_logps": lp}) if return_outputs else loss

    def get_train_dataloader(self) -> Any:
        """With ``max_tokens_per_batch``: micro-batches filled to that many tokens (:mod:`.batching`)."""
        budget = getattr(self.args, "max_tokens_per_batch", None)
        if not budget:
            return super().get_train_dataloader()
        from rankalign.training.batching import TokenBudgetBatchSampler

        sampler = TokenBudgetBatchSampler(
            self.train_dataset.items, budget, prefix_sharing=getattr(self.data_collator, "prefix_sharing", False),
            min_lists=2 if self.loss_fn.needs_mismatched else 1,
            shuffle=self.args.train_sampling_strategy != "sequential", seed=self.args.seed)
        loader = torch.utils.data.DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                                             num_workers=self.args.dataloader_num_workers,
                                             pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def _store(self, metrics: dict[str, Tensor], mode: str) -> None:
        keys = sorted(metrics)
        values = torch.stack([metrics[k].to(self.args.device).float().reshape(()) for k in keys])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.gather(values).view(-1, len(keys)).mean(0)
        for k, v in zip(keys, values.tolist()):
            self._metrics[mode][k].append(v)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        window = self._metrics[mode]
        prefix = "eval_" if mode == "eval" else ""
        for key, vals in window.items():
            if vals:
                logs[prefix + key] = sum(vals) / len(vals)
        self._metrics[mode] = defaultdict(list)
        super().log(logs, start_time)

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Tensor, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        # held-out ranking accuracy (Kendall tau, top-1, pairwise, NDCG) of the score the loss optimises:
        # beta * (logp - logp_ref) with a reference, else the mean token log-prob (evaluation/ranking_accuracy.py)
        lp = outputs["list_logps"]
        beta = float(getattr(self.loss_fn.hparams, "beta", 1.0))
        score = beta * lp.ratio if lp.reference is not None else lp.avg  # [B, M]
        self._store(batch_ranking_metrics(score, lp.order, lp.mask), "eval")
        return loss.detach(), None, None


# ---------------------------------------------------------------------- top level
@dataclass
class TrainResult:
    """What :func:`train` produced."""

    output_dir: str
    model: Any
    tokenizer: Any
    log: list[dict[str, Any]] = field(default_factory=list)
    train_runtime_s: float = 0.0
    truncation: dict[str, int] = field(default_factory=dict)


def _apply_lora(model: Any, config: Any, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None
                ) -> Any:
    """``config``'s LoRA (r, alpha, dropout, target modules) on ``model``; ``task_type`` and
    ``modules_to_save`` as peft takes them (a reward model: ``SEQ_CLS`` and its score head)."""
    from peft import LoraConfig, get_peft_model

    targets: Any = config.lora_target_modules.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type=task_type, modules_to_save=modules_to_save)
    return get_peft_model(model, lora)


#: weight files of a final save; those of an earlier save that this one does not write are removed
#: (a stale adapter_config.json would make from_pretrained load the base + the OLD adapter)
_WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                 "model.safetensors.index.json", "model-*-of-*.safetensors", "pytorch_model*.bin")


def save_final(trainer: ListwiseTrainer, config: ListwiseConfig, tokenizer: Any) -> Any:
    """Save weights (merged, full or adapter) + tokenizer into ``output_dir``; return the saved model.

    Files are written into a temporary folder and moved into place only when complete.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    merged = bool(config.use_lora and config.merge_lora and hasattr(model, "merge_and_unload"))
    out = Path(config.output_dir or ".")
    tmp = out / ".final.tmp"
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    trainer.accelerator.wait_for_everyone()
    try:
        if merged:
            model = model.merge_and_unload()
            if main:
                model.save_pretrained(str(tmp), safe_serialization=True)
        else:
            trainer.save_model(str(tmp))  # every rank: FSDP / ZeRO-3 gather the weights; rank 0 writes
        trainer.accelerator.wait_for_everyone()
        if main:
            tokenizer.save_pretrained(str(tmp))
            (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the JSON config replaces it
            (tmp / "rankalign_config.json").write_text(config.to_json_string(), encoding="utf-8")
            new = {f.name for f in tmp.iterdir()}
            for pattern in _WEIGHT_FILES:  # an earlier run's weights of the other kind (adapter vs full)
                for stale in out.glob(pattern):
                    if stale.name not in new and stale.is_file():
                        stale.unlink()
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
    return model


def train(config: ListwiseConfig, records: list[ListRecord] | None = None, *,
          model: Any = None, tokenizer: Any = None, ref_model: Any = None,
          eval_records: list[ListRecord] | None = None, resume_from_checkpoint: str | bool | None = None,
          callbacks: list[Any] | None = None, trainer_class: type[ListwiseTrainer] | None = None,
          trainer_kwargs: dict[str, Any] | None = None) -> TrainResult:
    """Train a policy with a list-wise method.

    Args:
        config: the run's config (its ``data`` is read when ``records`` is None).
        records: training lists (else read from ``config.data``).
        model, tokenizer: an already loaded policy (tests, notebooks); default: load
            ``config.model``.
        ref_model: an already loaded reference model; default per ``config.ref_model``.
        eval_records: evaluation lists (else ``config.eval_data`` when set).
        resume_from_checkpoint: a checkpoint folder, or True / "latest" for the newest complete one in
            output_dir (none yet: from scratch); default: the config's.
        callbacks: extra ``TrainerCallback`` objects.
        trainer_class, trainer_kwargs: a :class:`ListwiseTrainer` subclass and its extra
            arguments (rankalign.iterative's SPA trainer); default ``ListwiseTrainer``.
    Returns:
        :class:`TrainResult` with the trained (merged) model, its tokenizer and the per-step log.
    Raises:
        ConfigError / UserError: invalid config, output folder or data (raised before any model is loaded).
    """
    # 1. config + data, before any model
    records, eval_records = _checked_data(config, records, eval_records)
    resume = _resume_target(config, resume_from_checkpoint)
    loss = build_loss(config.method or "", **config.loss_hparams())
    # 2. models
    model, tokenizer, ref_model = _load_models(config, loss, model, tokenizer, ref_model)
    # 3. data -> tokens -> trainer
    stats = TruncationStats()
    train_ds = ListDataset(encode_records(records, tokenizer, config, stats))
    eval_ds = ListDataset(encode_records(eval_records, tokenizer, config, desc="tokenising eval")) \
        if eval_records else None
    print(stats.summary(), flush=True)
    log_path = Path(config.output_dir or ".") / TRAIN_LOG
    header = {"type": "truncation", "method": config.method, "lists": len(train_ds), **stats.as_dict()}
    trainer = (trainer_class or ListwiseTrainer)(
        model=model, args=config, data_collator=ListCollator(tokenizer.pad_token_id,
                                                             mismatched=loss.needs_mismatched,
                                                             prefix_sharing=config.prefix_sharing),
        train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer, loss=loss, ref_model=ref_model,
        callbacks=[JsonlLogCallback(log_path, header), *(callbacks or [])], **(trainer_kwargs or {}),
    )
    if loss.needs_reference and config.precompute_ref_logps:
        _precompute_reference(trainer, config, train_ds, eval_ds)
        ref_model = None  # freed unless KTO keeps it for its mismatched pairs
    # 4. train, save
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    runtime = time.perf_counter() - t0
    saved = save_final(trainer, config, tokenizer)
    return TrainResult(output_dir=str(config.output_dir), model=saved, tokenizer=tokenizer, log=_read_log(log_path),
                       train_runtime_s=runtime, truncation=stats.as_dict())


def _precompute_reference(trainer: ListwiseTrainer, config: ListwiseConfig, train_ds: ListDataset,
                          eval_ds: ListDataset | None) -> None:
    """Reference log-probs of every list, cached (:mod:`.ref_cache`); the frozen reference copy
    is then freed, except for KTO, whose mismatched pairs still need it."""
    import gc

    from rankalign.training.ref_cache import precompute_reference

    splits = {"train": train_ds.items, **({"eval": eval_ds.items} if eval_ds is not None else {})}
    settings = {"max_length": config.max_length, "max_prompt_length": config.max_prompt_length,
                "max_list_size": config.max_list_size, "dtype": config.dtype,
                "prefix_sharing": config.prefix_sharing, "ref_model": config.ref_model}
    precompute_reference(trainer, splits, config.output_dir or ".", settings, shared_dir=config.ref_logps_dir)
    if not trainer.loss_fn.needs_mismatched and trainer.ref_model is not None:
        trainer.ref_model = None
        gc.collect()


def _checked_data(config: ListwiseConfig, records: list[ListRecord] | None,
                  eval_records: list[ListRecord] | None) -> tuple[list[ListRecord], list[ListRecord] | None]:
    """Check the config and the output folder, read and check the data, add SeAdpra's dynamic
    ranking where the method needs it; no model is loaded yet.

    Raises:
        ConfigError: every config problem at once; ``data`` missing; data problems
            (:func:`validate_data`).
        UserError: an output folder that cannot be written (:func:`~rankalign.outputs.check_output_dir`).
    """
    problems = config.problems()
    if problems:
        raise ConfigError(problems)
    if config.output_dir:
        check_output_dir(config.output_dir, "output_dir", (TRAIN_LOG, "rankalign_config.json"))
    if records is None:
        if not config.data:
            raise ConfigError(["data: missing; pass --data FILE (or records to train())"])
        records = load_data(config.data, config)
    if eval_records is None and config.eval_data:
        eval_records = load_data(config.eval_data, config, "eval_data")
    validate_data(records, config)
    if eval_records:
        validate_data(eval_records, config, "eval_data")
    records = ensure_dynamic_ranking(list(records), config)
    if eval_records:
        eval_records = ensure_dynamic_ranking(list(eval_records), config)
    return records, eval_records


def _load_models(config: ListwiseConfig, loss: ListwiseLoss, model: Any, tokenizer: Any, ref_model: Any
                 ) -> tuple[Any, Any, Any]:
    """``(policy, tokenizer, reference)``: the given ones or loaded per the config; the frozen
    reference is a copy of the initial policy unless ``ref_model`` is set or LoRA's base serves;
    LoRA applied and the KV cache off under gradient checkpointing."""
    from rankalign.training.models import load_model_and_tokenizer

    if model is None:
        model, loaded_tok = load_model_and_tokenizer(config.model, trust_remote_code=config.trust_remote_code,
                                                     dtype=config.dtype)
        tokenizer = tokenizer or loaded_tok
    if tokenizer is None:
        raise UserError("train(): a model was given without its tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if loss.needs_reference and ref_model is None:
        if config.ref_model:
            ref_model, _ = load_model_and_tokenizer(config.ref_model, trust_remote_code=config.trust_remote_code,
                                                    dtype=config.dtype)
        elif not config.use_lora:
            ref_model = copy.deepcopy(model)  # the initial policy, frozen
    if config.use_lora:
        model = _apply_lora(model, config)
    if config.gradient_checkpointing:
        model.config.use_cache = False
    return model, tokenizer, ref_model


def _resume_target(config: ListwiseConfig, resume_from_checkpoint: str | bool | None) -> str | None:
    """The checkpoint to resume from: the argument, else the config's (Trainer.train ignores the
    args field); ``latest``/``true`` mean the newest complete checkpoint of the output folder
    (none yet: from scratch), and the leftovers of an interrupted save are removed first."""
    value = resume_from_checkpoint if resume_from_checkpoint is not None else config.resume_from_checkpoint
    out = config.output_dir or "."
    if int(os.environ.get("RANK", "0")) == 0:
        checkpoints.clean_leftovers(out)
    return checkpoints.resolve_resume(value, out)


def _read_log(log_path: Path) -> list[dict[str, Any]]:
    """The rows of ``train_log.jsonl`` (empty when no process wrote it)."""
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
