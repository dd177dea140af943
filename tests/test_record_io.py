"""The list-wise record (rankalign.data.record) and its I/O (rankalign.data.io)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rankalign.data.io import LoadReport, atomic_path, read_records, write_jsonl, write_records
from rankalign.data.record import ListRecord, RecordError, pairwise_to_list, parse_datetime
from rankalign.errors import UserError


def _rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "q1",
        "prompt": "How do I sort?",
        "responses": [
            {"text": "use sorted()", "attributes": {"votes": 10, "created": "2014-11-02T00:52:10", "accepted": False}},
            {"text": "list.sort()", "attributes": {"votes": 3, "created": "2015-01-01", "accepted": True}},
            {"text": "bubble sort", "attributes": {"votes": 10, "created": "2016-05-05T10:00:00Z"}},
        ],
    }
    base.update(kw)
    return base


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("patch", "field", "pattern"),
    [
        ({"extra": 1}, "extra", r"unknown key\(s\) \['extra'\].*put extra information under 'meta'"),
        ({"id": ""}, "id", r"field 'id': missing or empty"),
        ({"id": 1.5}, "id", r"must be a string or integer"),
        ({"prompt": "  "}, "prompt", r"field 'prompt': missing or empty"),
        ({"responses": "a"}, "responses", r"missing or not a list"),
        ({"responses": ["only one"]}, "responses", r"has 1 response\(s\); a list needs at least 2"),
        ({"responses": ["a", ""]}, "responses[1].text", r"'responses\[1\]\.text': missing or empty"),
        ({"responses": ["a", 7]}, "responses[1]", r"expected an object, got int"),
        ({"responses": ["a", {"text": "b", "votes": 3}]}, "responses[1]", r"unknown key\(s\) \['votes'\]"),
        ({"responses": ["a", {"text": "b", "attributes": {"votes": "many"}}]},
         "responses[1].attributes.votes", r"must be a finite number, got 'many'"),
        ({"responses": ["a", {"text": "b", "attributes": {"votes": float("nan")}}]},
         "responses[1].attributes.votes", r"must be a finite number"),
        ({"responses": ["a", {"text": "b", "attributes": {"created": "last tuesday"}}]},
         "responses[1].attributes.created", r"unparseable date 'last tuesday'.*ISO 8601"),
        ({"ranking": [0, 0, 1]}, "ranking", r"\[0, 0, 1\] is not a permutation of 0\.\.2"),
        ({"ranking": [0, 1]}, "ranking", r"not a permutation"),
        ({"ranking": [0, 1, True]}, "ranking", r"not a permutation"),
        ({"scores": [1.0, 2.0]}, "scores", r"needs one score per response \(3\)"),
        ({"scores": [1.0, "x", 2.0]}, "scores[1]", r"must be a finite number, got 'x'"),
        ({"apdf": [[0, 1], [1, 0]]}, "apdf", r"must be an 3x3 matrix"),
        ({"apdf": [[0, 1, 2], [1, 0, float("nan")], [2, float("nan"), 0]]}, "apdf", r"3x3 matrix of finite"),
        ({"apdf": [[0, 1, 2], [1, 0, float("inf")], [2, 1, 0]]}, "apdf", r"3x3 matrix of finite"),
        ({"responses": ["a", {"text": "b", "attributes": {"accepted": "false"}}]},
         "responses[1].attributes.accepted", r"must be true or false, got 'false'"),
        ({"meta": "tags"}, "meta", r"must be an object"),
    ],
)
def test_from_dict_rejects_with_record_and_field(patch: dict[str, Any], field: str, pattern: str) -> None:
    with pytest.raises(RecordError, match=pattern) as info:
        ListRecord.from_dict(_rec(**patch), where="train.jsonl line 7")
    assert info.value.field == field
    assert str(info.value).startswith("train.jsonl line 7")


def test_from_dict_names_the_id_and_accepts_valid() -> None:
    with pytest.raises(RecordError, match=r"^record id='q9': field 'prompt'"):
        ListRecord.from_dict(_rec(id="q9", prompt=""))
    rec = ListRecord.from_dict(_rec(ranking=[2, 0, 1], scores=[1, 2, 3], id=42))
    assert rec.id == "42" and rec.scores == [1.0, 2.0, 3.0] and isinstance(rec.scores[0], float)
    assert ListRecord.from_dict(rec.to_dict()) == rec
    with pytest.raises(RecordError, match="expected a JSON object, got list"):
        ListRecord.from_dict([1, 2])


def test_parse_datetime_forms() -> None:
    assert parse_datetime("2014-11-02T00:52:10").isoformat() == "2014-11-02T00:52:10+00:00"
    assert parse_datetime("2014-11-02T00:52:10Z") == parse_datetime("2014-11-02T00:52:10+00:00")
    assert parse_datetime("2014-11-02T02:52:10+02:00") == parse_datetime("2014-11-02T00:52:10")
    assert parse_datetime("2015-01-01").year == 2015
    with pytest.raises(ValueError):
        parse_datetime("")


# ------------------------------------------------------------------------------ orders
def test_preference_order_sources() -> None:
    rec = ListRecord.from_dict(_rec())
    # community: accepted first (index 1), then votes descending, ties (0 and 2 at 10) in input order
    assert rec.community_order() == [1, 0, 2]
    assert rec.preference_order() == [1, 0, 2]
    assert rec.labels() == [2.0, 3.0, 1.0]  # M - position
    with_scores = ListRecord.from_dict(_rec(scores=[0.5, -1.0, 2.0]))
    assert with_scores.preference_order() == [2, 0, 1]
    assert with_scores.labels() == [0.5, -1.0, 2.0]
    gold = ListRecord.from_dict(_rec(scores=[0.5, -1.0, 2.0], ranking=[0, 2, 1]))
    assert gold.preference_order() == [0, 2, 1] and gold.preference_order("scores") == [2, 0, 1]
    plain = ListRecord.from_dict({"id": "p", "prompt": "q", "responses": ["a", "b", "c"]})
    assert plain.preference_order() == [0, 1, 2]
    with pytest.raises(RecordError, match=r"dynamic_ranking.*run `rankalign rank`"):
        plain.preference_order("dynamic")
    with pytest.raises(RecordError, match="'ranking': missing"):
        plain.preference_order("gold")
    with pytest.raises(ValueError, match="unknown order source 'best'"):
        plain.preference_order("best")


def test_community_order_negative_and_missing_votes() -> None:
    rec = ListRecord.from_dict({"id": "x", "prompt": "q", "responses": [
        {"text": "a", "attributes": {"votes": -2}},
        {"text": "b", "attributes": {}},
        {"text": "c", "attributes": {"votes": 0}},
    ]})
    assert rec.community_order() == [2, 0, 1]  # a response without votes ranks last


def test_pairwise_to_list() -> None:
    rec = pairwise_to_list({"prompt": "q", "chosen": "good", "rejected": "bad", "id": "p7", "source": "x"})
    assert rec.id == "p7" and [r.text for r in rec.responses] == ["good", "bad"]
    assert rec.ranking == [0, 1] and rec.meta == {"source": "x"}
    assert pairwise_to_list({"prompt": "q", "chosen": "a", "rejected": "b"}, index=4).id == "pair-4"
    with pytest.raises(RecordError, match=r"row 3: field 'rejected': missing"):
        pairwise_to_list({"prompt": "q", "chosen": "a"}, where="row 3")
    with pytest.raises(RecordError, match=r"responses\[1\]\.text"):
        pairwise_to_list({"prompt": "q", "chosen": "a", "rejected": ""})


# ------------------------------------------------------------------------------ round trips
def _records() -> list[ListRecord]:
    return [
        ListRecord.from_dict(_rec(id="a", ranking=[1, 0, 2], meta={"tags": ["python"], "n": 2},
                                  apdf=[[0, 1, 2], [1, 0, 3.5], [2, 3.5, 0]])),
        ListRecord.from_dict({"id": "b", "prompt": "q2", "responses": [
            {"text": "x", "attributes": {"rank": 0, "safe": True}}, {"text": "y é ✓"}],
            "scores": [1, 0], "dynamic_ranking": [1, 0]}),
    ]


@pytest.mark.parametrize("name", ["data.jsonl", "data.parquet", "data_folder"])
def test_write_read_round_trip(tmp_path: Path, name: str) -> None:
    recs = _records()
    assert write_records(recs, tmp_path / name) == 2
    back = read_records(tmp_path / name)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]
    assert back == recs
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_json_array_and_jsonl_lines(tmp_path: Path) -> None:
    recs = _records()
    (tmp_path / "a.json").write_text(json.dumps([r.to_dict() for r in recs]), encoding="utf-8")
    assert read_records(tmp_path / "a.json") == recs
    write_records(recs, tmp_path / "b.jsonl")
    lines = (tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["responses"][1]["text"] == "y é ✓"


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported data file 'x\.csv'"):
        read_records(tmp_path / "x.csv")
    with pytest.raises(UserError, match=r"unsupported output 'x\.txt'"):
        write_records(_records(), tmp_path / "x.txt")


def test_skip_counting_and_raise(tmp_path: Path) -> None:
    good = [r.to_dict() for r in _records()]
    lines = [
        json.dumps(good[0]),
        "{broken",
        json.dumps({**good[1], "prompt": ""}),
        json.dumps(good[0]),  # duplicate id
        "",
        json.dumps({**good[1], "ranking": [0, 0]}),
        json.dumps(good[1]),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = LoadReport()
    recs = read_records(path, on_error="skip", report=report)
    assert [r.id for r in recs] == ["a", "b"] and report.kept == 2
    assert report.skipped == Counter({"invalid JSON": 1, "invalid prompt": 1, "invalid id": 1, "invalid ranking": 1})
    assert report.total_skipped == 4
    summary = report.summary()
    assert summary.startswith("kept 2 record(s), skipped 4") and "mixed.jsonl line 2" in summary
    with pytest.raises(RecordError, match=r"mixed\.jsonl line 2: field '<json>': invalid JSON"):
        read_records(path)
    path.write_text("\n".join([lines[0], lines[3]]) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"line 2.*duplicate id 'a'"):
        read_records(path)
    with pytest.raises(ValueError, match="on_error must be"):
        read_records(path, on_error="ignore")


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_path_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_jsonl_failing_midway_leaves_nothing(tmp_path: Path) -> None:
    def rows() -> Any:
        yield {"a": 1}
        yield {"a": 2}
        raise RuntimeError("source broke")

    target = tmp_path / "sub" / "out.jsonl"
    with pytest.raises(RuntimeError, match="source broke"):
        write_jsonl(rows(), target)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert write_jsonl(iter([{"a": 1}, {"b": [1, 2]}]), target) == 2
    assert [json.loads(x) for x in target.read_text(encoding="utf-8").splitlines()] == [{"a": 1}, {"b": [1, 2]}]


def test_write_records_unserialisable_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write_records(_records(), target)
    before = target.read_bytes()
    bad = ListRecord.from_dict({"id": "z", "prompt": "q", "responses": ["a", "b"], "meta": {"when": object()}})
    with pytest.raises(TypeError):
        write_records([*_records(), bad], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; outputs must be readable like any file open() creates."""
    import os
    import stat

    mask = os.umask(0o022)
    try:
        for name in ("a.jsonl", "a.parquet"):
            write_records(_records(), tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        (tmp_path / "a.jsonl").chmod(0o640)  # replacing a file keeps its mode
        write_records(_records(), tmp_path / "a.jsonl")
        assert stat.S_IMODE((tmp_path / "a.jsonl").stat().st_mode) == 0o640
    finally:
        os.umask(mask)


def test_undecodable_input_names_file_and_line(tmp_path: Path) -> None:
    good = json.dumps(_records()[0].to_dict())
    (tmp_path / "bad.json").write_text("[" + good + ",", encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.json: field '<json>': invalid JSON array"):
        read_records(tmp_path / "bad.json")
    path = tmp_path / "latin.jsonl"
    path.write_bytes(good.encode() + b"\n" + '{"id": "c", "prompt": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(RecordError, match=r"latin\.jsonl line 2: field '<json>'.*utf-8"):
        read_records(path)
    report = LoadReport()
    assert [r.id for r in read_records(path, on_error="skip", report=report)] == ["a"]
    assert report.skipped == Counter({"invalid JSON": 1})
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n")
    assert [r.id for r in read_records(tmp_path / "bom.jsonl")] == ["a"]


def test_arrow_rows_with_undecodable_attributes_are_record_errors(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "prompt": "q", "responses": [{"text": "x", "attributes": "{bad"},
                                                     {"text": "y", "attributes": "{}"}], "meta": "{}"},
            {"id": "b", "prompt": "q", "responses": [{"text": "x", "attributes": "{}"},
                                                     {"text": "y", "attributes": "{}"}], "meta": "{"}]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError, match=r"bad\.parquet row 0: field 'responses\[0\]\.attributes': not valid JSON"):
        read_records(path)
    report = LoadReport()
    assert read_records(path, on_error="skip", report=report) == []
    assert report.skipped == Counter({"invalid responses": 1, "invalid meta": 1})


def test_datasets_folder_output_replaces_only_a_saved_dataset(tmp_path: Path) -> None:
    recs = _records()
    out = tmp_path / "ds"
    write_records(recs[:1], out)
    write_records(recs, out)  # an earlier output is replaced
    assert read_records(out) == recs
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    (tmp_path / "plain").write_text("keep me too", encoding="utf-8")
    for target in (foreign, tmp_path / "plain"):
        with pytest.raises(UserError, match=r"exists and is a (folder|file), not a saved datasets folder"):
            write_records(recs, target)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert (tmp_path / "plain").read_text(encoding="utf-8") == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "plain", "project"]


def test_files_are_flushed_to_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash right after the rename must not leave an empty file under the output's name."""
    import os

    import rankalign.data.io as rio

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(rio.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(rio.os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"),
                                                         real_replace(a, b))[1])
    for name in ("a.jsonl", "a.parquet"):
        events.clear()
        write_records(_records(), tmp_path / name)
        assert events == ["fsync", f"replace {name}"]


def test_datasets_folder_failed_save_keeps_the_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    recs = _records()
    out = tmp_path / "ds"
    write_records(recs, out)
    (tmp_path / ".ds.tmp").mkdir()  # a fixed-name leftover of an older version is not touched

    def killed(self: Any, path: str, **kw: Any) -> None:
        Path(path, "data-00000-of-00001.arrow").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", killed)
    with pytest.raises(KeyboardInterrupt):
        write_records(recs[:1], out)
    monkeypatch.undo()
    assert read_records(out) == recs
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp", "ds"]
    write_records(recs[:1], out)  # and a later write replaces it
    assert read_records(out) == recs[:1] and sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp", "ds"]


def test_compressed_record_files_are_read(tmp_path: Path) -> None:
    import gzip
    import lzma

    recs = _records()
    write_records(recs, tmp_path / "r.jsonl")
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress((tmp_path / "r.jsonl").read_bytes()))
    (tmp_path / "r.json.xz").write_bytes(lzma.compress(json.dumps([r.to_dict() for r in recs]).encode()))
    assert read_records(tmp_path / "r.jsonl.gz") == recs
    assert read_records(tmp_path / "r.json.xz") == recs
    (tmp_path / "cut.jsonl.gz").write_bytes((tmp_path / "r.jsonl.gz").read_bytes()[:-12])
    with pytest.raises(UserError, match=r"^cut\.jsonl\.gz: truncated or corrupt gzip data after line \d+: "):
        read_records(tmp_path / "cut.jsonl.gz", on_error="skip")
