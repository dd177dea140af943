"""Generation in the loop: N sampled responses per prompt from the current policy, on disk.

Every iterative method (SPA, PRO self-bootstrapping) samples from the policy it is
training. :func:`sample_responses` does that batch by batch and appends each finished
batch to a :class:`SampleStore` (one JSONL file per round, flushed and fsynced per batch),
so a crash loses at most the batch in progress, and a restart samples only what is missing.

Determinism: prompts are cut into batches in a fixed order (sorted by token length, then
by id) and each batch is sampled under its own seed, derived from (seed, round, the ids of
its prompts). A resumed round therefore regenerates an unfinished batch exactly as an
uninterrupted run would, and its samples equal the uninterrupted round's. The store's
header records the settings; resuming with other settings is refused.

Back-ends: transformers ``generate`` (the left-padded batching of
:mod:`rankalign.evaluation.generate`); vLLM when it is importable, a GPU is present and the
policy is a folder (``use_vllm: auto``). The vLLM branch is a few lines, is not exercised by
the CPU test suite, and samples with vLLM's own per-request seeds (its samples differ from
transformers' for the same seed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rankalign.errors import UserError


def _f(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text, "group": "generation"})


@dataclass
class SamplingOptions:
    """How responses are sampled from the policy (shared by the iterative methods)."""

    temperature: float = _f(0.7, "Sampling temperature (SPA, arXiv:2406.04412, §5.1: 0.7).")
    top_p: float = _f(1.0, "Nucleus sampling: keep the smallest token set with this much probability (1 = off).")
    max_new_tokens: int = _f(128, "Maximum new tokens per sampled response.")
    generation_batch_size: int = _f(8, "Prompts per generate call (each yields N samples); a finished batch is "
                                       "appended to the round's store, so a crash loses at most one batch.")
    use_vllm: str = _f("auto", "Sample with vLLM: auto (when importable, a GPU is present and the policy is a "
                               "folder), true or false.")

    def problems(self) -> list[str]:
        out = []
        if not self.temperature > 0:
            out.append(f"temperature: {self.temperature} must be > 0")
        if not 0 < self.top_p <= 1:
            out.append(f"top_p: {self.top_p} must be in (0, 1]")
        if self.max_new_tokens < 1:
            out.append(f"max_new_tokens: {self.max_new_tokens} must be >= 1")
        if self.generation_batch_size < 1:
            out.append(f"generation_batch_size: {self.generation_batch_size} must be >= 1")
        if str(self.use_vllm).lower() not in ("auto", "true", "false"):
            out.append(f"use_vllm: {self.use_vllm!r} must be auto, true or false")
        return out


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class SampleStore:
    """A round's samples: ``{"type": "header", ...}`` then one ``{"id", "prompt", "samples"}`` line per prompt.

    Lines are appended per batch and flushed + fsynced. On opening, a torn last line (a
    crash in the middle of a write) is cut off; every complete line is kept.

    Raises:
        UserError: the file holds another round's settings (the key that differs and how to
            proceed), or a line that is not a sample record.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = {"type": "header", **header}
        self.done: dict[str, list[str]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.header, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a last line without its newline is torn
        if len(complete) < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        if not lines:  # killed before the header was complete
            self.path.unlink()
            self._load()
            return
        found = json.loads(lines[0])
        for key, value in self.header.items():
            if found.get(key) != value:
                raise UserError(f"{self.path}: was written with {key}={found.get(key)!r}, this run has "
                                f"{key}={value!r}; rerun with the same settings to resume, or delete the file "
                                "to sample the round again")
        for n, line in enumerate(lines[1:], start=2):
            try:
                row = json.loads(line)
                self.done[str(row["id"])] = [str(s) for s in row["samples"]]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{self.path} line {n}: not a sample record; delete the file to sample the "
                                "round again") from None

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append finished prompts (one write, flushed and fsynced)."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        for r in rows:
            self.done[str(r["id"])] = list(r["samples"])


def _use_vllm(option: str, model_path: str | None) -> bool:
    option = str(option).lower()
    if option == "false" or not model_path or not Path(model_path).is_dir():
        return False
    import importlib.util

    import torch

    available = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    if option == "true" and not available:
        raise UserError("use_vllm: true, but vLLM is not installed or no GPU is visible; use auto or false")
    return available


def sample_responses(model: Any, tokenizer: Any, prompts: Sequence[tuple[str, str]], *, n: int, seed: int,
                     round_index: int, options: SamplingOptions, store_path: str | os.PathLike[str],
                     max_prompt_length: int | None = 256, model_path: str | None = None,
                     show_progress: bool = True) -> dict[str, list[str]]:
    """Sample ``n`` responses for each ``(id, prompt)`` and keep them in the round's store.

    Args:
        model, tokenizer: the current policy (``model_path``: its folder, for vLLM).
        prompts: ``(id, prompt text)`` pairs; ids must be unique.
        n: samples per prompt.
        seed, round_index: with each batch's prompt ids, the seed of that batch.
        store_path: the round's JSONL store (created, or resumed when it exists).
    Returns:
        id -> its ``n`` samples, for every prompt (finished ones read back from the store).
    Raises:
        UserError: no prompts, duplicate ids, or a store written with other settings.
    """
    from tqdm.auto import tqdm

    from rankalign.evaluation.generate import _encode_prompts, _generate_batch

    prompts = list(prompts)
    if not prompts:
        raise UserError(f"{store_path}: no prompts to sample from; give a non-empty prompt set")
    ids = [str(i) for i, _ in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"prompt id {dup!r} appears more than once; prompt ids must be unique")
    sampling = {f.name: getattr(options, f.name) for f in fields(SamplingOptions) if f.name != "use_vllm"}
    header = {"round": round_index, "seed": seed, "n": n, **sampling, "max_prompt_length": max_prompt_length}
    store = SampleStore(store_path, header)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = _encode_prompts(tokenizer, [p for _, p in prompts], max_prompt_length, None)
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), ids[i]))
    batches = [order[s:s + options.generation_batch_size] for s in range(0, len(order), options.generation_batch_size)]
    todo = [b for b in batches if any(ids[i] not in store.done for i in b)]
    bar = tqdm(total=len(prompts), initial=len(prompts) - sum(len(b) for b in todo), desc=f"sampling round {round_index}",
               unit="prompt", disable=not show_progress)
    vllm = _use_vllm(options.use_vllm, model_path) and todo
    was_training = model.training
    model.eval()
    try:
        for batch in todo:
            batch_seed = derive_seed(seed, round_index, *[ids[i] for i in batch])
            if vllm:
                texts = _sample_vllm(model_path, [encoded[i] for i in batch], n, batch_seed, options)
            else:
                import torch

                torch.manual_seed(batch_seed)
                texts = _generate_batch(model, tokenizer, [encoded[i] for i in batch],
                                        max_new_tokens=options.max_new_tokens, num_beams=1,
                                        sampling={"temperature": options.temperature, "top_p": options.top_p,
                                                  "num_return_sequences": n})
            rows = [{"id": ids[i], "prompt": prompts[i][1], "samples": texts[k * n:(k + 1) * n]}
                    for k, i in enumerate(batch) if ids[i] not in store.done]
            store.append(rows)
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return {i: store.done[i] for i in ids}


_VLLM: dict[str, Any] = {}


def _sample_vllm(model_path: str, encoded: list[list[int]], n: int, seed: int, options: SamplingOptions
                 ) -> list[str]:  # pragma: no cover - needs vLLM and a GPU
    from vllm import LLM, SamplingParams

    if model_path not in _VLLM:
        _VLLM.clear()
        _VLLM[model_path] = LLM(model=model_path, seed=seed)
    params = SamplingParams(n=n, temperature=options.temperature, top_p=options.top_p,
                            max_tokens=options.max_new_tokens, seed=seed)
    outs = _VLLM[model_path].generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
    return [c.text.strip() for o in outs for c in o.outputs]
