"""Bad output locations give exit code 2 and one line naming the path and the fix, never a traceback.

Every case is checked before any model is loaded or any list ranked, so these tests need no
model: a file where a folder is expected, a folder where a file is expected, a parent that is
a file, and a location that cannot be written (under /proc, which refuses new files even to
root).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankalign import cli

UNWRITABLE = Path("/proc/rankalign-no-such-dir/out")
needs_proc = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"id": f"q{i}", "prompt": "how to brew coffee ?", "responses": ["use hot water", "no"],
             "meta": {"split": "test" if i == 0 else "train"}} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return rc, out.err.strip()


def _cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (output folder, expected message) for a command that writes a folder."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    taken = tmp_path / "taken"
    (taken / "metrics.json").mkdir(parents=True)
    return {
        "file_for_folder": (a_file, "is a file, but a folder is expected: remove the file or choose another folder"),
        "parent_is_file": (a_file / "sub", "cannot be created: '" + str(a_file) + "' is a file, not a folder"),
        "folder_for_file": (taken, "metrics.json' is a folder, but a file is written there; remove it"),
    }


@pytest.mark.parametrize("case", ["file_for_folder", "parent_is_file", "folder_for_file"])
def test_eval_bad_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    out, message = _cases(tmp_path)[case]
    rc, err = _run(["eval", "--data", str(_data(tmp_path)), "--output-dir", str(out), "--quiet"], capsys)
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("rankalign eval: error: --output-dir '" + str(out) + "'")
    assert message in err


@needs_proc
def test_eval_unwritable_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(["eval", "--data", str(_data(tmp_path)), "--output-dir", str(UNWRITABLE), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"--output-dir '{UNWRITABLE}' cannot be written: no permission to create files in '/proc'" in err
    assert "choose a writable location" in err


def test_a_refused_write_is_a_one_line_user_error(tmp_path: Path) -> None:
    from rankalign.errors import UserError
    from rankalign.outputs import writing

    with pytest.raises(UserError, match=r"could not write '/x/metrics.json': No space left on device; free space"):
        with writing(tmp_path):
            raise OSError(28, "No space left on device", "/x/metrics.json")


@pytest.mark.parametrize("case", ["file_for_folder", "parent_is_file", "folder_for_file", "model_is_a_file"])
def test_demo_bad_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             case: str) -> None:
    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("the demo started working before checking its output folder")

    monkeypatch.setattr("rankalign.commands.demo.load_demo_records", no_work)
    if case == "model_is_a_file":
        out = tmp_path / "demo"
        (out / "model").parent.mkdir()
        (out / "model").write_text("x")
        message = f"--output-dir '{out / 'model'}' is a file, but a folder is expected"
    else:
        out, message = _cases(tmp_path)[case]
    rc, err = _run(["demo", "--output-dir", str(out), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 0 and err.startswith("rankalign demo: error: --output-dir '")
    assert message in err


@needs_proc
def test_demo_unwritable_output_dir(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(["demo", "--output-dir", str(UNWRITABLE), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"--output-dir '{UNWRITABLE}' cannot be written" in err


def _train_argv(tmp_path: Path, out: Path) -> list[str]:
    return ["train", "--method", "sft", "--data", str(_data(tmp_path)), "--output-dir", str(out),
            "--model", str(tmp_path / "no-model-needed")]


@pytest.mark.parametrize("case", ["file_for_folder", "parent_is_file", "log_is_a_folder"])
def test_train_bad_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    """Checked with the config, before the data is tokenised or any model loaded (the model path
    given does not exist, so reaching the model load would be a different error)."""
    if case == "log_is_a_folder":
        out = tmp_path / "run"
        (out / "train_log.jsonl").mkdir(parents=True)
        message = "train_log.jsonl' is a folder, but a file is written there; remove it"
    else:
        out, message = _cases(tmp_path)[case]
    rc, err = _run(_train_argv(tmp_path, out), capsys)
    assert rc == 2 and err.count("\n") == 0
    assert err.startswith(f"rankalign train: error: output_dir '{out}'") and message in err


@needs_proc
def test_train_unwritable_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(_train_argv(tmp_path, UNWRITABLE), capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"output_dir '{UNWRITABLE}' cannot be written: no permission to create files in '/proc'" in err


@pytest.mark.parametrize("case", ["folder_for_file", "file_for_folder", "parent_is_file", "unwritable"])
def test_rank_bad_out_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("rank read its input before checking --out")

    monkeypatch.setattr("rankalign.commands.rank._load", no_work)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "dir.jsonl").mkdir()
    out, message = {
        "folder_for_file": (tmp_path / "dir.jsonl", "is a folder, but a .jsonl output is a file: name a file"),
        "file_for_folder": (a_file, "exists and is a file, not a saved datasets folder; remove it"),
        "parent_is_file": (a_file / "o.jsonl", f"'{a_file}' is a file, not a folder"),
        "unwritable": (UNWRITABLE / "o.jsonl", "cannot be written: no permission to create files in '/proc'; "
                                                "choose a writable location"),
    }[case]
    if case == "unwritable" and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc")
    rc, err = _run(["rank", str(_data(tmp_path)), "--out", str(out), "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 0 and str(out) in err
    assert message in err
