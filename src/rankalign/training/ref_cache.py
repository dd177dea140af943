"""Reference log-probs computed once before training and cached on disk.

Reference-model methods (DPO, DPO-PL, IPO, KTO, LiPO, SPO) compare the policy's log-probs
with those of a frozen reference. The reference never changes, so its log-prob of every
response of the training (and evaluation) lists is computed once, before the first step, in
batches under ``torch.no_grad`` (progress bar), and written to
``output_dir/ref_logps/<split>.safetensors`` (or, with ``ref_logps_dir``, to
``<ref_logps_dir>/<fingerprint>.safetensors``, a folder runs on the same lists and reference
share: a study's cells, LoRA seeds); each list then carries its values
(``EncodedList.reference_logps``), the collator puts them in the batch
(``reference_logps [B, M]``) and the trainer runs no reference forward at all — the frozen
reference copy is freed (KTO keeps it: its z0 pairs each response with another list's
prompt, and which list depends on the shuffled micro-batch).

The file holds ``logps`` (float32, every response of every list in dataset order) and
``offsets`` (int64, ``[n_lists + 1]``) and, in its metadata, a fingerprint: a BLAKE2b hash
of the token ids of every list (so of the data, the chat template, the tokenizer and the
truncation settings), of the reference weights (for LoRA the base weights, without the
adapter), of their dtype, of the tokenisation settings and of whether prefix sharing was on.
A file whose fingerprint differs is rebuilt; a run resumed with the same data and reference
reads it back. With several processes the main one decides whether the file is a hit, so all
agree even when another run writes the shared file meanwhile. Safetensors only: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rankalign.training.logps import EncodedList

FOLDER = "ref_logps"
FORMAT = "rankalign-ref-logps-1"


def model_fingerprint(model: Any) -> str:
    """BLAKE2b of the reference weights (names, shapes, dtypes, bytes); LoRA parameters excluded.

    With LoRA the reference is the base model with the adapter disabled, so the adapter's
    parameters (``lora_*``) are not part of it. Hashing 135M float32 weights takes ~0.5 s.
    """
    h = hashlib.blake2b(digest_size=16)
    for name, p in sorted(model.state_dict().items()):
        if "lora_" in name or not torch.is_tensor(p):
            continue
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_fingerprint(items: Sequence[EncodedList]) -> str:
    """BLAKE2b of every list's prompt and response token ids, in order."""
    h = hashlib.blake2b(digest_size=16)
    for it in items:
        h.update(json.dumps([it.prompt_ids, it.response_ids], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def fingerprint(items: Sequence[EncodedList], model_fp: str, settings: dict[str, Any]) -> str:
    """The cache key: data (token ids) + reference weights + settings (tokenisation, dtype, prefix sharing)."""
    key = {"format": FORMAT, "data": data_fingerprint(items), "model": model_fp, "settings": settings}
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()


def cache_path(output_dir: str | os.PathLike[str], split: str) -> Path:
    return Path(output_dir) / FOLDER / f"{split}.safetensors"


def shared_path(folder: str | os.PathLike[str], key: str) -> Path:
    """A cache file in a folder shared by several runs: named by its fingerprint."""
    return Path(folder) / f"{key}.safetensors"


def load(path: Path, key: str, items: Sequence[EncodedList]) -> list[list[float]] | None:
    """The cached values when ``path`` exists, its fingerprint is ``key`` and its shape fits ``items``; else None."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != key:
                return None
            logps, offsets = f.get_tensor("logps"), f.get_tensor("offsets")
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError):  # unreadable or foreign: rebuild
        return None
    sizes = [len(it.response_ids) for it in items]
    if offsets.numel() != len(items) + 1 or int(offsets[-1]) != sum(sizes) or logps.numel() != sum(sizes):
        return None
    return [logps[int(offsets[i]):int(offsets[i + 1])].tolist() for i in range(len(items))]


def save(path: Path, key: str, values: Sequence[Sequence[float]]) -> None:
    """Write the values atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    from rankalign.outputs import atomic_path

    offsets = torch.tensor([0, *torch.tensor([len(v) for v in values]).cumsum(0).tolist()], dtype=torch.int64)
    logps = torch.tensor([x for v in values for x in v], dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"logps": logps, "offsets": offsets}, str(tmp), metadata={"fingerprint": key, "format": FORMAT})


def compute(items: Sequence[EncodedList], reference: Callable[[dict[str, Tensor]], Tensor],
            collate: Callable[[list[EncodedList]], dict[str, Tensor]], batch_size: int,
            indices: Sequence[int] | None = None, desc: str = "reference log-probs") -> dict[int, list[float]]:
    """Reference log-probs of ``items[i]`` for each ``i`` in ``indices`` (default all), in batches.

    Lists are taken longest first in batches of ``batch_size`` so that a batch pads little.

    Args:
        reference: ``batch -> [B, M]`` summed reference log-probs (no grad inside).
        collate: the batch builder (a :class:`~rankalign.training.logps.ListCollator`).
    Returns:
        ``{index: [logp of each response]}``.
    """
    from tqdm.auto import tqdm

    todo = sorted(indices if indices is not None else range(len(items)),
                  key=lambda i: -sum(len(p) + len(r) for p, r in zip(items[i].prompt_ids, items[i].response_ids)))
    out: dict[int, list[float]] = {}
    with tqdm(total=len(todo), desc=desc, unit="list", disable=len(todo) < 8) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            with torch.no_grad():
                values = reference(collate([items[i] for i in chunk])).float().cpu()  # [B, M]
            for row, i in enumerate(chunk):
                out[i] = values[row, : len(items[i].response_ids)].tolist()
            bar.update(len(chunk))
    return out


def attach(items: Sequence[EncodedList], values: Sequence[Sequence[float]]) -> None:
    """Give each list its reference log-probs (the collator then puts them in the batch)."""
    for it, v in zip(items, values):
        it.reference_logps = list(v)


def detach_all(items: Sequence[EncodedList]) -> None:
    for it in items:
        it.reference_logps = None


def precompute_reference(trainer: Any, datasets: dict[str, Sequence[EncodedList]], output_dir: str,
                         settings: dict[str, Any], shared_dir: str | None = None) -> dict[str, str]:
    """Attach cached reference log-probs to every list of ``datasets`` (``{split: items}``).

    Reads ``output_dir/ref_logps/<split>.safetensors`` (with ``shared_dir``:
    ``shared_dir/<fingerprint>.safetensors``) when its fingerprint matches; else
    computes the values with the trainer's reference (the frozen copy, or the LoRA base with
    the adapter disabled: :meth:`ListwiseTrainer._reference_logps`), each process a share of
    the lists (gathered), and the main process writes the file.

    Returns:
        ``{split: "loaded" | "computed"}``.
    """
    from accelerate.utils import broadcast_object_list, gather_object

    from rankalign.training.logps import ListCollator

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    ref = trainer.ref_model if trainer.ref_model is not None else model
    model_fp = model_fingerprint(ref)
    base = trainer.data_collator
    collate = ListCollator(base.pad_token_id, prefix_sharing=getattr(base, "prefix_sharing", True))
    batch_size = max(1, int(trainer.args.per_device_eval_batch_size))
    status = {}
    for split, items in datasets.items():
        detach_all(items)  # never key or compute on values of an earlier call
        key = fingerprint(items, model_fp, settings)
        path = shared_path(shared_dir, key) if shared_dir else cache_path(output_dir, split)
        values = load(path, key, items) if acc.is_main_process else None
        if acc.num_processes > 1:  # the main process decides hit or miss for all (a shared folder may
            hit = [values is not None]  # gain the file between two processes' reads)
            broadcast_object_list(hit)
            if hit[0] and values is None:
                values = load(path, key, items)
                if values is None:
                    raise RuntimeError(f"{path}: the main process read this reference log-prob cache, this "
                                       f"process cannot; is output_dir on a file system every process sees?")
        if values is not None:
            print(f"reference log-probs of {len(items)} {split} list(s): read from {path}", flush=True)
            status[split] = "loaded"
        else:
            print(f"reference log-probs of {len(items)} {split} list(s): computing once, cached in {path}",
                  flush=True)
            mine = range(acc.process_index, len(items), acc.num_processes)
            part = compute(items, lambda batch: trainer._reference_logps(model, trainer._prepare_inputs(batch)),
                           collate, batch_size, mine, desc=f"reference log-probs ({split})")
            merged = dict(gather_object(list(part.items()))) if acc.num_processes > 1 else part
            values = [merged[i] for i in range(len(items))]
            if acc.is_main_process:
                save(path, key, values)
            acc.wait_for_everyone()
            status[split] = "computed"
        attach(items, values)
    return status
