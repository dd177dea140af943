"""The trainer of SPA's refinement rounds: the list-wise trainer plus de-coupled noise detection.

:class:`SPATrainer` adds to :class:`~rankalign.training.trainer.ListwiseTrainer`:

- the de-coupled log-probs of SPA eq. 12 (Kim et al., arXiv:2406.04412): per token, the
  logits ``(1 + lambda) h_theta - lambda h_ref`` (:func:`decoupled_logits`) before the
  softmax, summed over the response; computed without gradient in one more forward of the
  policy and the reference over the same flat batch (the trainer's own log-prob path
  returns sums, not logits, so they cannot be reused);
- the loss's run-time state: ``progress`` (global step / max steps: the warm-up of the
  label smoothing) and the window of recent confidences that sets the K-th percentile;
  the window is saved in every checkpoint (``spa_state.json``) and read back on resume,
  so a resumed round flags the same pairs as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from rankalign.losses.spa import SPALogps, SPALoss
from rankalign.training.trainer import ListwiseTrainer

STATE_FILE = "spa_state.json"


def decoupled_logits(h_theta: Tensor, h_ref: Tensor, lam: float) -> Tensor:
    """SPA eq. 12: ``(1 + lambda) * h_theta - lambda * h_ref`` (logits ``[..., V]``; lambda = 0 gives h_theta)."""
    return (1 + lam) * h_theta - lam * h_ref


class DecoupledModel(nn.Module):
    """A causal LM whose logits are :func:`decoupled_logits` of a policy and a reference.

    ``reference`` is a model, or ``None`` for a peft policy whose base (adapter disabled)
    is the reference. Used under ``torch.no_grad`` only.
    """

    def __init__(self, policy: Any, reference: Any, lam: float) -> None:
        super().__init__()
        self.policy, self.reference, self.lam = policy, reference, float(lam)

    def forward(self, **kwargs: Any) -> Any:
        h_theta = self.policy(**kwargs).logits  # [N, T', V]
        if self.reference is not None:
            h_ref = self.reference(**kwargs).logits
        else:
            with self.policy.disable_adapter():
                h_ref = self.policy(**kwargs).logits
        return SimpleNamespace(logits=decoupled_logits(h_theta.float(), h_ref.float(), self.lam))


class SPATrainer(ListwiseTrainer):
    """:class:`ListwiseTrainer` for the ``spa`` loss (other losses: unchanged behaviour).

    Args:
        confidence_window: how many recent pairs' confidences set the K-th percentile.
    """

    def __init__(self, *args: Any, confidence_window: int = 256, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # kept for the de-coupled logits even when the trainer's reference log-probs come from a
        # cache and ``self.ref_model`` is dropped
        self.spa_reference = self.ref_model if isinstance(self.loss_fn, SPALoss) else None
        if isinstance(self.loss_fn, SPALoss):
            self.loss_fn.history = deque(maxlen=int(confidence_window))

    def build_list_logps(self, model: Any, batch: dict[str, Tensor]) -> Any:
        lp = super().build_list_logps(model, batch)
        if not isinstance(self.loss_fn, SPALoss):
            return lp
        from rankalign.training.logps import sequence_logps

        base = self.accelerator.unwrap_model(model)
        was_training = base.training
        base.eval()  # the detection is deterministic: no dropout
        try:
            with torch.no_grad():
                mixed = DecoupledModel(base, self.spa_reference, self.loss_fn.lam)
                s, _ = sequence_logps(mixed, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        finally:
            base.train(was_training)
        b, m = batch["list_mask"].shape
        decoupled = s.view(b, m).to(lp.policy.dtype) * batch["list_mask"]  # [B, M]
        return SPALogps(**{f.name: getattr(lp, f.name) for f in fields(lp)}, decoupled=decoupled)

    def compute_loss(self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False,
                     num_items_in_batch: Tensor | int | None = None) -> Any:
        if isinstance(self.loss_fn, SPALoss) and model.training:
            self.loss_fn.progress = self.state.global_step / max(1, self.state.max_steps)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # -- the confidence window travels with the checkpoints --------------------------------
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if isinstance(self.loss_fn, SPALoss) and self.args.should_save:
            with open(os.path.join(output_dir, STATE_FILE), "w", encoding="utf-8") as fh:
                json.dump({"history": list(self.loss_fn.history)}, fh)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.loss_fn, SPALoss) and isinstance(resume_from_checkpoint, str):
            path = os.path.join(resume_from_checkpoint, STATE_FILE)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    self.loss_fn.history.extend(float(v) for v in json.load(fh)["history"])
        return super().train(resume_from_checkpoint, *args, **kwargs)
