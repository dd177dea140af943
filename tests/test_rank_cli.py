"""``rankalign rank`` end to end through ``rankalign.cli.main`` (fake embedder unless stated)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fakes import LetterEncoder
from rankalign.cli import main
from rankalign.data.io import read_records
from rankalign.ranking import embeddings as emb_mod


class FakeEncoder(LetterEncoder):
    """Letter-count embedding; stands in for MiniLM so the CLI tests stay fast."""

    def __init__(self) -> None:
        super().__init__("fake-cli")


@pytest.fixture
def fake_embedder(monkeypatch, tmp_path) -> FakeEncoder:
    enc = FakeEncoder()
    monkeypatch.setattr(emb_mod, "load_embedder", lambda name=None, device="cpu": enc)
    monkeypatch.setenv("RANKALIGN_CACHE", str(tmp_path / "cache"))
    return enc


def record(rid: str, **over) -> dict:
    rec = {
        "id": rid,
        "prompt": "How do I descale an espresso machine?",
        "responses": [
            {"text": "Run a citric acid solution through the machine, then rinse twice.",
             "attributes": {"votes": 12, "created": "2015-01-10T10:00:00", "accepted": True}},
            {"text": "Buy a new one.", "attributes": {"votes": -1, "created": "2015-01-11T10:00:00"}},
            {"text": "Use vinegar to descale the espresso machine boiler and flush it.",
             "attributes": {"votes": 30, "created": "2014-01-10T10:00:00"}},
        ],
        "ranking": [2, 0, 1],
    }
    rec.update(over)
    return rec


def write_jsonl(path: Path, rows: list, raw_lines: list[str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows] + (raw_lines or [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rank_compares_with_the_community_order_without_gold(tmp_path, capsys, fake_embedder) -> None:
    """No gold ranking, but votes/accepted: the summary scores against the community order.

    Community order of ``record``: accepted answer 0 first, then by votes 2 (30), 1 (-1).
    """
    from rankalign.ranking.rank import ranking_agreement

    src = write_jsonl(tmp_path / "in.jsonl", [record("a", ranking=None), record("b", ranking=None)])
    out = tmp_path / "out.jsonl"
    assert main(["rank", str(src), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "community order (accepted first, then votes) in 2 list(s)" in text
    recs = read_records(out)
    assert recs[0].community_order() == [0, 2, 1]
    exact = ranking_agreement(recs, orders=[[0, 2, 1]] * 2, gold=[r.community_order() for r in recs])
    assert exact["kendall_tau"] == pytest.approx(1.0) and exact["top1_hit"] == 1.0
    reverse = ranking_agreement(recs, orders=[[1, 2, 0]] * 2, gold=[r.community_order() for r in recs])
    assert reverse["kendall_tau"] == pytest.approx(-1.0) and reverse["top1_hit"] == 0.0


def test_rank_writes_rankings_and_prints_agreement(tmp_path, capsys, fake_embedder) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [record("a"), record("b", ranking=[0, 2, 1]), record("c", ranking=None)])
    out = tmp_path / "out.jsonl"
    assert main(["rank", str(src), "--out", str(out), "--no-progress"]) == 0
    recs = read_records(out)
    assert [r.id for r in recs] == ["a", "b", "c"]
    for r in recs:
        assert sorted(r.dynamic_ranking) == [0, 1, 2]
        assert np.array(r.apdf).shape == (3, 3)
    text = capsys.readouterr().out
    assert "ranked 3 list(s)" in text and "semantic+popularity" in text
    assert "gold rankings in 2 list(s)" in text
    assert "dynamic ranking: Kendall tau" in text and "semantic only" in text
    # a second run reads every embedding from the cache
    calls = fake_embedder.calls
    assert main(["rank", str(src), "--out", str(tmp_path / "again.parquet"), "--no-progress"]) == 0
    assert fake_embedder.calls == calls
    assert [r.dynamic_ranking for r in read_records(tmp_path / "again.parquet")] == [r.dynamic_ranking for r in recs]


def test_rank_popularity_only_options(tmp_path, capsys, fake_embedder) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [record("a", ranking=None)])
    out = tmp_path / "out.jsonl"
    code = main(["rank", str(src), "--out", str(out), "--attributes", "popularity", "--half-life-days", "30",
                 "--position-source", "input", "--no-progress"])
    assert code == 0
    assert fake_embedder.calls == 0  # no semantic attribute, no gold -> no embedding at all
    (rec,) = read_records(out)
    # half life 30 d, newest = 2015-01-11: G0 = log10(12 * 0.5**(1/30) + 1) = 1.104689, G1 = 0 (votes -1),
    # G2 = log10(30 * 0.5**(366/30) + 1) = 0.002760. Input positions: T = 1/ln 2, 1/ln 3, 1/ln 4
    # = 1.442695, 0.910239, 0.721348.
    assert rec.apdf[0][2] == pytest.approx(1.101929 * 0.721347, abs=1e-5)  # 0.794873
    assert rec.apdf[0][1] == pytest.approx(1.104689 * 0.532456, abs=1e-5)  # 0.588198
    # G1 < G2 but 1 comes first in the input: a negative factor, impossible with gain positions
    assert rec.apdf[1][2] == pytest.approx(-0.002760 * 0.188891, abs=1e-6)  # -0.000521
    assert sorted(rec.dynamic_ranking) == [0, 1, 2]


@pytest.mark.parametrize(
    ("rows", "raw", "pattern"),
    [
        ([record("ok")], ['{"id": "nanvote", "prompt": "p", "responses": [{"text": "a", "attributes": {"votes": NaN}},'
                          ' {"text": "b"}]}'],
         r"in\.jsonl line 2 \(id='nanvote'\): field 'responses\[0\]\.attributes\.votes': must be a finite number"),
        ([record("perm", ranking=[0, 0, 1])], None, r"id='perm'\): field 'ranking': \[0, 0, 1\] is not a permutation"),
        ([record("one", responses=[{"text": "only"}], ranking=None)], None,
         r"id='one'\): field 'responses': has 1 response\(s\); a list needs at least 2"),
        ([record("empty", responses=[{"text": "a"}, {"text": "  "}], ranking=None)], None,
         r"id='empty'\): field 'responses\[1\]\.text': missing or empty"),
    ],
    ids=["nan-vote", "not-permutation", "one-response", "empty-text"],
)
def test_bad_records_exit_2_naming_record_and_field(tmp_path, capsys, fake_embedder, rows, raw, pattern) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows, raw)
    out = tmp_path / "out.jsonl"
    assert main(["rank", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankalign rank: error: ")
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    import re

    assert re.search(pattern, err), err
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".out.jsonl*"))


def test_non_utf8_input_exit_2_naming_the_line(tmp_path, capsys, fake_embedder) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes('{"id": "a", "prompt": "caf\xe9", "responses": ["x", "y"]}\n'.encode("latin-1"))
    assert main(["rank", str(src), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl line 1: field '<json>'" in err and "utf-8" in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_unknown_attribute_exit_2_lists_known(tmp_path, capsys, fake_embedder) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [record("a")])
    assert main(["rank", str(src), "--out", str(tmp_path / "o.jsonl"), "--attributes", "semantic,popularty"]) == 2
    err = capsys.readouterr().err
    assert "unknown attribute(s) ['popularty']" in err and "'popularity'" in err and "'votes'" in err


def test_bad_option_values_exit_2(tmp_path, capsys, fake_embedder) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [record("a")])
    assert main(["rank", str(src), "--out", str(tmp_path / "o.jsonl"), "--half-life-days", "0"]) == 2
    assert "half_life_days" in capsys.readouterr().err
    assert main(["rank", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_on_error_skip_counts_and_continues(tmp_path, capsys, fake_embedder) -> None:
    novotes = record("novotes", ranking=None, responses=[{"text": "a"}, {"text": "b"}])
    src = write_jsonl(tmp_path / "in.jsonl", [record("a"), novotes, record("perm", ranking=[1, 1, 0])])
    out = tmp_path / "out.jsonl"
    # raise mode stops on the list without votes, naming it
    assert main(["rank", str(src), "--out", str(out), "--on-error", "raise", "--no-progress"]) == 2
    assert "id='perm'" in capsys.readouterr().err  # validation of the file comes first
    assert main(["rank", str(src), "--out", str(out), "--on-error", "skip", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert [r.id for r in read_records(out)] == ["a"]
    assert "kept 1 record(s), skipped 2" in text and "id='novotes'" in text


def test_rank_real_oasst1_trees(tmp_path, capsys, fake_embedder, shared_data) -> None:
    """The raw OASST1 tree file is detected and converted by rankalign.data.loaders.load_oasst1."""
    loaders = pytest.importorskip("rankalign.data.loaders", reason="the OASST1 loader is not written yet")
    if not hasattr(loaders, "load_oasst1"):
        pytest.skip("rankalign.data.loaders.load_oasst1 not there yet")
    out = tmp_path / "oasst.jsonl"
    src = shared_data / "oasst1" / "en_100_tree.jsonl"
    assert main(["rank", str(src), "--out", str(out), "--attributes", "semantic", "--no-progress"]) == 0
    recs = read_records(out)
    assert len(recs) > 100
    assert all(sorted(r.dynamic_ranking) == list(range(r.num_responses)) for r in recs)
    assert "gold rankings in" in capsys.readouterr().out


def test_missing_optional_package_names_the_extra(tmp_path, capsys, monkeypatch) -> None:
    # a command whose optional dependency is missing: one line naming the package and the extra
    import builtins

    real_import = builtins.__import__

    def no_duckdb(name, *args, **kwargs):
        if name == "duckdb" or name.startswith("duckdb."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    posts = tmp_path / "Posts.xml"
    posts.write_text('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n  <row Id="1" PostTypeId="1" '
                     'CreationDate="2020-01-01T00:00:00" Score="1" Body="x" Title="t" />\n</posts>\n')
    monkeypatch.setattr(builtins, "__import__", no_duckdb)
    rc = main(["data", "stackexchange", str(posts), "--out", str(tmp_path / "o"), "-q", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "'duckdb'" in err and "pip install 'rankalign[data]'" in err
    assert "Traceback" not in err and not (tmp_path / "o" / "summary.json").exists()
