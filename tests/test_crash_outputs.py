"""Kill a real ``rankalign`` process (SIGKILL) just before it renames an output into place,
then rerun it: no output may be half-written under its final name, and the rerun's outputs
equal an uninterrupted run's (tests/crash_cli_script.py injects the kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from training_tiny import save_tiny, tiny_records

SCRIPT = Path(__file__).parent / "crash_cli_script.py"


def run(kill_at: int | str, *argv: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANKALIGN_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPT), str(kill_at), *argv], capture_output=True, text=True,
                          env=env, timeout=600)


def files(folder: Path) -> dict[str, bytes]:
    """Every visible file under ``folder`` (temporary names start with '.')."""
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def comparable(name: str, data: bytes) -> object:
    """A file's content without what legitimately differs between two runs (times)."""
    if name.endswith(".json"):
        obj = json.loads(data)
        if isinstance(obj, dict):
            obj.pop("timings_s", None)  # eval
            obj.pop("seconds", None)  # data stackexchange
        return obj
    if name.endswith(".md"):  # the report's "| stage | seconds |" table
        lines, out, in_timings = data.decode().splitlines(), [], False
        for line in lines:
            in_timings = line.startswith("| stage | seconds |") or (in_timings and line.startswith("|"))
            if not in_timings:
                out.append(line)
        return out
    return data


def check_kill_then_rerun(tmp_path: Path, out: Path, argv: list[str], kill_at: int | str) -> str:
    cache = tmp_path / "cache"
    whole = tmp_path / "whole"
    ref = run(0, *[a.replace(str(out), str(whole)) for a in argv], cache=cache)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = {k: comparable(k, v) for k, v in files(whole).items()}
    killed = run(kill_at, *argv, cache=cache)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    partial = files(out) if out.exists() else {}
    assert set(partial) < set(want), "the kill came after the last output"
    assert "summary.json" not in partial  # where it exists, it marks a finished run
    for name, data in partial.items():  # whatever is visible is whole
        assert comparable(name, data) == want[name], name
    again = run(0, *argv, cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {k: comparable(k, v) for k, v in files(out).items()} == want
    return again.stdout


@pytest.mark.parametrize("kill_at", [1, 2])
def test_killed_eval_leaves_whole_files_and_reruns_equal(tmp_path: Path, kill_at: int) -> None:
    from rankalign.data.io import write_jsonl

    model = save_tiny(tmp_path / "tiny")
    data = tmp_path / "test.jsonl"
    write_jsonl(tiny_records(4), data)
    out = tmp_path / "ev"
    check_kill_then_rerun(tmp_path, out, ["eval", "--model", str(model), "--data", str(data), "--output-dir",
                                          str(out), "--max-new-tokens", "4", "--quiet", "--bootstrap", "50"],
                          kill_at)


def test_killed_convert_writes_nothing_and_reruns_equal(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "out" / "oasst1.jsonl"
    check_kill_then_rerun(tmp_path, out.parent, ["data", "convert", "--format", "oasst1",
                                                 str(shared_data / "oasst1" / "en_100_tree.jsonl"), "--out", str(out)],
                          1)


def test_killed_rank_writes_nothing_and_reruns_equal(tmp_path: Path) -> None:
    from rankalign.data.io import write_jsonl

    data = tmp_path / "lists.jsonl"
    write_jsonl(tiny_records(6), data)
    out = tmp_path / "ranked" / "lists.ranked.jsonl"
    check_kill_then_rerun(tmp_path, out.parent, ["rank", str(data), "--out", str(out), "--attributes", "popularity",
                                                 "--no-progress"], 1)


def test_killed_stackexchange_build_publishes_nothing_half_made(tmp_path: Path, shared_data: Path) -> None:
    """Killed while moving its outputs into place: the earlier files are whole, the build is
    marked unfinished (no summary.json), and the rerun removes the dead build's staging and
    work folders and writes the same outputs."""
    out, work = tmp_path / "coffee", tmp_path / "work"
    argv = ["data", "stackexchange", str(shared_data / "stackexchange" / "coffee"), "--out", str(out),
            "--no-code-filter", "--workers", "1", "--work-dir", str(work), "--quiet"]
    stdout = check_kill_then_rerun(tmp_path, out, argv, "to:test.jsonl")
    assert "removed the leftovers of an interrupted run" in stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    assert not list(work.iterdir())


def test_summary_marks_a_finished_build(tmp_path: Path) -> None:
    from rankalign.data.stackexchange.output import OUTPUT_FILES, publish

    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    staging.mkdir()
    (out / "summary.json").write_text("{}")  # an earlier build
    for name in OUTPUT_FILES:
        (staging / name).write_text(name)
    real = os.replace
    seen = []

    def spy(src, dst):  # type: ignore[no-untyped-def]
        seen.append((Path(dst).name, (out / "summary.json").exists()))
        real(src, dst)

    os.replace = spy
    try:
        publish(staging, out)
    finally:
        os.replace = real
    assert [name for name, _ in seen][-1] == "summary.json"
    assert not any(had for name, had in seen)  # the old marker is gone before the first move
