"""Kill a real training process (SIGKILL) at several moments, rerun it, and compare.

Each run is ``rankalign train`` on a tiny random model in a subprocess
(tests/crash_train_script.py injects the kill). After a kill, the same command with
``--resume_from_checkpoint latest`` must finish with weights equal to an uninterrupted
run's, no ``checkpoint-N`` folder may ever be incomplete, and ``train_log.jsonl`` must read
like one run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.training import checkpoints
from training_tiny import save_tiny, tiny_records

SCRIPT = Path(__file__).parent / "crash_train_script.py"


def run(kill: str, out: Path, data: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPT), kill, str(out), str(data), str(model), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from rankalign.data.io import write_jsonl

    root = tmp_path_factory.mktemp("crash")
    model = save_tiny(root / "tiny")
    data = root / "lists.jsonl"
    write_jsonl(tiny_records(6), data)
    done = run("none", root / "whole", data, model)
    assert done.returncode == 0, done.stderr
    return data, model, weights(root / "whole")


def assert_all_checkpoints_complete(out: Path) -> None:
    for folder in checkpoints.checkpoints(out):
        assert checkpoints.is_complete(folder), f"{folder} is incomplete"


@pytest.mark.parametrize("kill", ["step:3", "save:4", "rotate:6", "final"])
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, setup: tuple[Path, Path, dict], kill: str) -> None:
    import torch

    data, model, want = setup
    out = tmp_path / "run"
    killed = run(kill, out, data, model)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert_all_checkpoints_complete(out)  # even right after the kill
    if kill == "save:4":
        assert not (out / "checkpoint-4").exists() and (out / checkpoints.STAGING).is_dir()

    again = run("none", out, data, model, "--resume_from_checkpoint", "latest")
    assert again.returncode == 0, again.stderr[-3000:]
    if kill in ("save:4", "rotate:6"):
        assert "removed the leftovers of an interrupted save" in again.stdout
    assert not (out / checkpoints.STAGING).exists()
    assert not any(p.name.startswith(checkpoints.TRASH) for p in out.iterdir())
    assert_all_checkpoints_complete(out)
    got = weights(out)
    assert got.keys() == want.keys()
    diff = max((got[k] - want[k]).abs().max().item() for k in want)
    assert diff == 0.0, f"max |weight difference| {diff}"
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["type"] == "train"]
    assert steps == sorted(set(steps)) == list(range(1, 7)), steps  # reads like one run
    assert sum(r["type"] == "summary" for r in rows) == 1
    assert torch.isfinite(torch.tensor([r["loss"] for r in rows if r["type"] == "train"])).all()


def test_named_incomplete_checkpoint_names_the_newest_complete_one(tmp_path: Path) -> None:
    from rankalign.errors import UserError

    out = tmp_path / "run"
    good = out / "checkpoint-2"
    good.mkdir(parents=True)
    (good / "trainer_state.json").write_text("{}")
    (good / "model.safetensors").write_bytes(b"x")
    (out / "checkpoint-4").mkdir()  # killed while writing: no files
    with pytest.raises(UserError, match=r"checkpoint-4 is not a complete checkpoint .*resume from .*checkpoint-2"):
        checkpoints.resolve_resume(str(out / "checkpoint-4"), out)
    assert checkpoints.resolve_resume("latest", out) == str(good)
    assert checkpoints.resolve_resume(True, out) == str(good)
    assert checkpoints.clean_leftovers(out) == ["checkpoint-4"]
    assert checkpoints.resolve_resume("latest", tmp_path / "fresh") is None  # nothing yet: from scratch
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.resolve_resume(str(out / "checkpoint-9"), out)
