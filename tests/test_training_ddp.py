"""Two CPU processes (torchrun, gloo) give the same losses as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from training_tiny import save_tiny

SCRIPT = Path(__file__).parent / "training_ddp_script.py"
#: float32 sums in a different order (2 ranks' gradients averaged by all-reduce vs one batch)
TOLERANCE = 1e-4


def _losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path) -> None:
    base = save_tiny(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one = tmp_path / "one"
    subprocess.run([sys.executable, str(SCRIPT), str(base), str(one), "2"], check=True, env=env, timeout=600)
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    "29517", str(SCRIPT), str(base), str(two), "1"], check=True, env=env, timeout=600)
    a, b = _losses(one), _losses(two)
    print(f"1 process (batch 2): {a}\n2 processes (batch 1 each): {b}")
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, abs=TOLERANCE)
    assert a[0] != pytest.approx(a[-1], abs=1e-3)  # training moved the loss


@pytest.mark.slow
def test_two_processes_share_a_reference_cache_folder(tmp_path: Path) -> None:
    """The second 2-process run reads the cache the first wrote (the main process decides the
    hit for both) and trains the same."""
    base = save_tiny(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    shared = tmp_path / "ref_logps"
    said, losses = [], []
    for name in ("first", "second"):
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", "29518", str(SCRIPT), str(base), str(tmp_path / name), "1",
                              str(shared)], check=True, env=env, timeout=600, capture_output=True, text=True)
        said.append(run.stdout)
        losses.append(_losses(tmp_path / name))
    assert said[0].count("computing once") == 2 and "read from" not in said[0]
    assert said[1].count("read from") == 2 and "computing once" not in said[1]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert len(list(shared.glob("*.safetensors"))) == 1
