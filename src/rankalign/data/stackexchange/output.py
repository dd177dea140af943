"""Sample and split, and the atomic write of the outputs.

A seeded fixed-size sample (``sample``; the paper's 3K, 8K, 18K, 29K, 64K) and a seeded
train/test split (``test_fraction``; 0.1 = the paper's 9:1) are drawn over the kept records
in question-Id order. Every output is written into a staging folder inside the output folder
and renamed into place at the end (``summary.json`` last: it marks a complete build), so a
failed build leaves no half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankalign.errors import UserError
from rankalign.outputs import owned_prefix, remove_orphans

STAGING = ".staging-"
OUTPUT_FILES = ("train.jsonl", "test.jsonl", "stats.csv", "stats.md", "stats.png", "summary.json")


def assign_split(total: int, sample: int | None, test_fraction: float, seed: int) -> Any:
    """Per kept record (in order) 0 (not sampled), 1 (train) or 2 (test), as a uint8 array."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = np.arange(total) if sample is None or sample >= total else np.sort(
        rng.choice(total, size=sample, replace=False))
    n_test = round(len(chosen) * test_fraction)
    assign = np.zeros(total, dtype=np.uint8)
    assign[chosen] = 1
    if n_test:
        assign[chosen[rng.permutation(len(chosen))[:n_test]]] = 2
    return assign


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh hidden folder inside ``out`` (created), removed on exit; checks early that
    ``out`` can be written to."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder for the outputs "
                        "(it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_orphans(out, STAGING)  # a killed build's staging folder
        staging = Path(tempfile.mkdtemp(prefix=owned_prefix(STAGING), dir=out))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc}); give a folder you can "
                        "write to") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out: Path) -> None:
    """Rename every output from ``staging`` into ``out``.

    ``summary.json`` marks a finished build: an earlier build's is removed first and the new
    one is renamed last, so a folder with a ``summary.json`` holds one build's complete
    outputs, and one without it was interrupted (each file in it is still whole).
    """
    (out / "summary.json").unlink(missing_ok=True)
    for name in OUTPUT_FILES:
        os.replace(staging / name, out / name)


def write_splits(parts: list[tuple[str, bytes]], assign: Any, staging: Path) -> int:
    """Copy the lines of the records files ``parts`` (path, uint32 line lengths) to
    ``staging/train.jsonl`` and ``test.jsonl`` as ``assign`` says; returns the lines seen."""
    idx = 0
    with open(staging / "train.jsonl", "wb", buffering=0) as ftr, \
            open(staging / "test.jsonl", "wb", buffering=0) as fte:
        for path, lengths in parts:
            idx += route_lines(path, lengths, assign[idx:], (None, ftr, fte))
    return idx


def route_lines(path: str, lengths: bytes, assign: Any, files: tuple[Any, ...]) -> int:
    """Copy each line of the file ``path`` (``lengths``: their byte lengths, uint32) to
    ``files[assign[i]]`` (unbuffered binary files; ``None``: dropped), as runs of consecutive
    lines that go to the same file, copied by the kernel (``os.copy_file_range``) where it can.
    Returns the number of lines."""
    import numpy as np

    ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
    n = len(ends)
    if not n:
        return 0
    where = np.asarray(assign[:n])
    change = np.flatnonzero(where[1:] != where[:-1]) + 1  # first line of each run but the first
    starts = np.concatenate(([0], change)).tolist()
    stops = np.concatenate((change, [n])).tolist()
    with open(path, "rb", buffering=0) as src:
        for a, b in zip(starts, stops, strict=True):
            dst = files[int(where[a])]
            if dst is not None:
                _copy_range(src, dst, int(ends[a - 1]) if a else 0, int(ends[b - 1]))
    return n


def _copy_range(src: Any, dst: Any, start: int, stop: int) -> None:
    """Append bytes ``[start, stop)`` of ``src`` to ``dst`` (both unbuffered binary files)."""
    copy = getattr(os, "copy_file_range", None)
    while start < stop:
        if copy is not None:
            try:
                done = copy(src.fileno(), dst.fileno(), stop - start, start)
            except OSError:  # another file system, an old kernel: plain reads and writes
                copy = None
                continue
            if done == 0:
                raise RuntimeError(f"internal error: {src.name} ends before byte {stop}")
        else:
            src.seek(start)
            data = src.read(min(stop - start, 1 << 24))
            if not data:
                raise RuntimeError(f"internal error: {src.name} ends before byte {stop}")
            done = dst.write(data)
        start += done
