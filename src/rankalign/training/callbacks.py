"""Trainer callbacks: a JSON Lines per-step log in the output folder."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rankalign.outputs import atomic_path

_STEP_KEYS = ("loss", "learning_rate", "grad_norm", "epoch")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLogCallback(TrainerCallback):
    """Append one JSON object per log event to ``<output_dir>/train_log.jsonl``.

    Lines: ``{"type": "train", "step", "loss", "learning_rate", "grad_norm", "epoch",
    "step_time_s", "metrics": {...}}`` per logged step, ``{"type": "eval", "step",
    "metrics"}`` per evaluation, ``{"type": "summary", ...}`` at the end, and
    ``{"type": "truncation", ...}`` at the start (what truncation cut). Only the main
    process writes. On resume, lines after the checkpoint's step are dropped first, so the
    file reads like one uninterrupted run.
    """

    def __init__(self, path: str | Path, header: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.header = header or {}
        self._t0: float | None = None
        self._step_times: list[float] = []

    def _write(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if state.global_step == 0 or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
            if self.header:
                self._write(self.header)
        else:  # resuming: keep what the checkpoint covers
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("type") in ("train", "eval") and row.get("step", 0) > state.global_step:
                    continue
                if row.get("type") == "summary":
                    continue
                kept.append(line)
            with atomic_path(self.path) as tmp:  # a kill now keeps the old log whole
                tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._t0 is not None:
            self._step_times.append(time.perf_counter() - self._t0)
            self._t0 = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        logs = dict(logs)
        if "train_runtime" in logs:
            self._write({"type": "summary", "step": state.global_step, **logs})
        elif any(k.startswith("eval_") for k in logs):
            self._write({"type": "eval", "step": state.global_step, "metrics": logs})
        else:
            row: dict[str, Any] = {"type": "train", "step": state.global_step}
            for key in _STEP_KEYS:
                if key in logs:
                    row[key] = logs.pop(key)
            times = self._step_times
            row["step_time_s"] = round(sum(times) / len(times), 4) if times else None
            self._step_times = []
            row["metrics"] = logs
            self._write(row)
