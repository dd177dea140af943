"""Data sources (rankalign.data.sources, re-exported by rankalign.data.loaders) and `rankalign data`.

Real samples come from ../shared/data (skipped where absent); the expected counts are
derived in each test from the raw JSON with a few lines of plain Python, independently of
the loader's code.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from rankalign.cli import main
from rankalign.data.io import LoadReport, read_records, write_records
from rankalign.data.loaders import (
    LOADERS,
    available_formats,
    load_dataset_file,
    load_generic,
    load_hh_rlhf,
    load_oasst1,
    load_pku_saferlhf,
    load_pro,
    load_stack_exchange_preferences,
    load_ultrafeedback,
)
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources import DataSource, convert_rows, get_source, register_source, unregister_source
from rankalign.errors import ConfigError, UserError


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ OASST1
def _oasst_expected(trees: list[dict[str, Any]]) -> tuple[Counter, int]:
    """Plain walk: list sizes of prompter messages with >= 2 ranked replies; unranked replies."""
    sizes: Counter = Counter()
    unranked = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal unranked
        replies = [r for r in node["replies"] if not r["deleted"]]
        if node["role"] == "prompter":
            ranked = [r for r in replies if r.get("rank") is not None]
            unranked += len(replies) - len(ranked)
            if len(ranked) >= 2:
                sizes[len(ranked)] += 1
        for r in replies:
            walk(r)

    for tree in trees:
        walk(tree["prompt"])
    return sizes, unranked


def test_oasst1_real_sample_counts_and_rankings(shared_data: Path) -> None:
    path = shared_data / "oasst1" / "en_100_tree.jsonl"
    trees = _read_jsonl(path)
    sizes, unranked = _oasst_expected(trees)
    report = LoadReport()
    recs = load_oasst1(path, report=report)
    assert Counter(r.num_responses for r in recs) == sizes
    # the data README's figures, which count every level of the trees
    assert sizes[2] == 57 and sizes[3] == 117 and sizes[4] == 27
    assert sum(n for m, n in sizes.items() if 5 <= m <= 9) == 11
    assert report.kept == len(recs) == 212
    assert report.skipped["reply without rank"] == unranked == 46
    assert len({r.id for r in recs}) == len(recs)
    for rec in recs:  # gold order = replies by rank ascending
        ranks = [rec.responses[i].attributes["rank"] for i in rec.ranking]
        assert ranks == sorted(ranks)

    first = recs[0]
    root = trees[0]["prompt"]
    assert first.id == root["message_id"] == "054e1df3-35e0-4bb8-a585-607dbdcd24e0"
    assert first.prompt == "How can I find the best 401k plan for my needs?"
    assert [r.text for r in first.responses] == [r["text"] for r in root["replies"]]
    assert first.ranking == [0, 1, 2]
    assert first.meta["depth"] == 0 and first.meta["history"] == []


def test_oasst1_deeper_prompt_renders_the_conversation(shared_data: Path) -> None:
    path = shared_data / "oasst1" / "en_100_tree.jsonl"
    recs = load_oasst1(path, limit=40)
    deep = next(r for r in recs if r.meta["depth"] == 2)
    h = deep.meta["history"]
    assert [t["role"] for t in h] == ["prompter", "assistant"]
    assert deep.prompt.startswith("User: " + h[0]["text"] + "\n\nAssistant: " + h[1]["text"] + "\n\nUser: ")
    last = {r.id: r for r in load_oasst1(path, limit=40, context="last")}[deep.id]
    assert deep.prompt.endswith("\n\nUser: " + last.prompt)
    assert "Assistant:" not in last.prompt[:12]


def _flatten(tree: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def walk(node: dict[str, Any], parent: str | None) -> None:
        row = {k: v for k, v in node.items() if k != "replies"}
        row["parent_id"] = parent
        row["message_tree_id"] = tree["message_tree_id"]
        out.append(row)
        for r in node["replies"]:
            walk(r, node["message_id"])

    walk(tree["prompt"], None)
    return out


def test_oasst1_flat_message_table_gives_the_same_records(shared_data: Path) -> None:
    trees = _read_jsonl(shared_data / "oasst1" / "en_100_tree.jsonl")[:12]
    flat = [row for t in trees for row in _flatten(t)]
    flat.reverse()  # parents after children: the rebuild must not depend on row order
    from_trees = {r.id: r.to_dict() for r in load_oasst1(trees)}
    from_flat = {r.id: r.to_dict() for r in load_oasst1(flat)}
    assert from_flat.keys() == from_trees.keys() and len(from_trees) > 10
    for rid, d in from_trees.items():
        f = from_flat[rid]
        assert f["prompt"] == d["prompt"]
        # sibling order is reversed in the flat input, so compare the texts in gold order
        assert [f["responses"][i]["text"] for i in f["ranking"]] == [d["responses"][i]["text"] for i in d["ranking"]]


def _msg(mid: str, role: str, text: str, **kw: Any) -> dict[str, Any]:
    return {"message_id": mid, "role": role, "text": text, "deleted": False, "replies": [], **kw}


def test_oasst1_deleted_unranked_and_ties() -> None:
    root = _msg("p", "prompter", "Q?", lang="en")
    root["replies"] = [
        _msg("a", "assistant", "A", rank=1, emojis={"+1": 2, "-1": 1}, labels={"quality": {"value": 0.5, "count": 2}}),
        _msg("b", "assistant", "B", rank=0),
        _msg("c", "assistant", "C", rank=1),
        _msg("d", "assistant", "D", rank=None),
        {**_msg("e", "assistant", "E", rank=2), "deleted": True},
    ]
    root["replies"][1]["replies"] = [_msg("q2", "prompter", "follow-up")]
    report = LoadReport()
    recs = load_oasst1([{"message_tree_id": "t", "prompt": root}], report=report)
    assert len(recs) == 1
    rec = recs[0]
    assert [r.text for r in rec.responses] == ["A", "B", "C"]
    assert rec.ranking == [1, 0, 2]  # B (rank 0), then A and C tied at rank 1 in input order
    assert rec.responses[0].attributes["thumbs_up"] == 2 and rec.responses[0].attributes["thumbs_down"] == 1
    assert rec.responses[0].attributes["label_quality"] == 0.5
    assert report.skipped == Counter({"reply without rank": 1, "reply deleted": 1})


# ------------------------------------------------------------------------------------ HH-RLHF
@pytest.mark.parametrize("name", ["helpful_base_test.head300.jsonl", "harmless_base_test.head300.jsonl"])
def test_hh_rlhf_real_samples(shared_data: Path, name: str) -> None:
    path = shared_data / "hh_rlhf" / name
    rows = _read_jsonl(path)
    marker = "\n\nAssistant:"
    same_prompt = [r["chosen"][: r["chosen"].rfind(marker)] == r["rejected"][: r["rejected"].rfind(marker)]
                   for r in rows]
    empty = [ok and (not r["chosen"][r["chosen"].rfind(marker) + len(marker):].strip()
                     or not r["rejected"][r["rejected"].rfind(marker) + len(marker):].strip())
             for ok, r in zip(same_prompt, rows)]
    report = LoadReport()
    recs = load_hh_rlhf(path, report=report)
    assert len(recs) == sum(same_prompt) - sum(empty)
    assert report.skipped["prompts differ"] == len(rows) - sum(same_prompt)
    assert report.skipped["empty response text"] == sum(empty)
    by_id = {r.id: r for r in recs}
    for lineno, row in enumerate(rows, 1):
        rec = by_id.get(f"{name.split('.')[0]}-{lineno}")
        if rec is None:
            continue
        assert rec.prompt.endswith(marker) and rec.ranking == [0, 1]
        for text, original in zip((r.text for r in rec.responses), (row["chosen"], row["rejected"])):
            assert original.startswith(rec.prompt) and original.rstrip().endswith(text)
            assert original[len(rec.prompt):].strip() == text


def test_hh_rlhf_helpful_first_record(shared_data: Path) -> None:
    rec = load_hh_rlhf(shared_data / "hh_rlhf" / "helpful_base_test.head300.jsonl", limit=1)[0]
    assert rec.id == "helpful_base_test-1"
    assert rec.prompt == ("\n\nHuman: Do you know why turkeys became the official food of thanksgiving?"
                          "\n\nAssistant:")
    assert rec.responses[0].text.startswith("To be honest, I don’t know anything about that.")


# ------------------------------------------------------------------------------------ PKU-SafeRLHF
def test_pku_saferlhf_real_sample(shared_data: Path) -> None:
    path = shared_data / "pku_saferlhf" / "test.head16.jsonl"
    rows = _read_jsonl(path)
    recs = load_pku_saferlhf(path)
    assert len(recs) == len(rows) == 16
    for rec, row in zip(recs, rows):
        b, s = row["better_response_id"], row["safer_response_id"]
        assert rec.ranking == [b, 1 - b]
        assert rec.responses[b].text == row[f"response_{b}"]
        assert [r.attributes["helpfulness"] for r in rec.responses] == [float(i == b) for i in (0, 1)]
        assert [r.attributes["harmlessness"] for r in rec.responses] == [float(i == s) for i in (0, 1)]
        assert [r.attributes["safe"] for r in rec.responses] == [row["is_response_0_safe"], row["is_response_1_safe"]]
        assert rec.meta["safer_id"] == s
    # the one row whose better and safer responses differ
    split = [r for r in recs if r.meta["better_id"] != r.meta["safer_id"]]
    assert len(split) == sum(r["better_response_id"] != r["safer_response_id"] for r in rows) == 1
    first = recs[0]
    assert "Cybercrime" in first.responses[0].attributes["harm_categories"]
    assert first.responses[0].attributes["severity"] == 3.0


# ------------------------------------------------------------------------------------ UltraFeedback
def test_ultrafeedback_binarized_real_sample(shared_data: Path) -> None:
    path = shared_data / "ultrafeedback" / "ultrafeedback_sample_1k.head300.jsonl"
    rows = _read_jsonl(path)
    identical = sum(r["chosen"].strip() == r["rejected"].strip() for r in rows)
    report = LoadReport()
    recs = load_ultrafeedback(path, report=report)
    assert len(recs) == len(rows) - identical == 299
    assert report.skipped == Counter({"identical responses": identical})
    rec, row = recs[0], rows[0]
    assert rec.scores == [row["metadata"]["rating_chosen"], row["metadata"]["rating_rejected"]] == [5.0, 4.5]
    assert rec.responses[0].attributes["model"] == "gpt-4" and rec.ranking == [0, 1]
    assert all(r.scores[0] > r.scores[1] for r in recs)  # binarized: chosen rated higher in this sample


def test_ultrafeedback_message_lists_and_raw_completions(tmp_path: Path) -> None:
    binarized = {
        "prompt_id": "p1", "prompt": "Hi?", "score_chosen": 8.0, "score_rejected": 3,
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
    }
    raw = {
        "source": "evol_instruct", "instruction": "Name a prime.",
        "completions": [
            {"model": "m1", "response": "4", "overall_score": 2, "fine-grained_score": 1.5,
             "annotations": {"helpfulness": {"Rating": "1"}, "honesty": {"Rating": "N/A"}}},
            {"model": "m2", "response": "7", "overall_score": 9.5, "fine-grained_score": 4.75,
             "annotations": {"helpfulness": {"Rating": "5"}}},
            {"model": "m3", "response": "2", "overall_score": 8, "fine-grained_score": 5.0},
            {"model": "m4", "response": "9", "overall_score": "3.5"},
        ],
    }
    path = _jsonl(tmp_path / "uf.jsonl", [binarized, raw])
    report = LoadReport()
    a, b = load_ultrafeedback(path, report=report)
    assert report.kept == 2 and not report.skipped
    assert a.id == "p1" and [r.text for r in a.responses] == ["Hello!", "Go away."] and a.scores == [8.0, 3.0]
    assert b.id == "uf-2" and b.num_responses == 4 and b.ranking is None
    assert b.scores == [2.0, 9.5, 8.0, 3.5]
    assert b.preference_order() == [1, 2, 3, 0]
    assert b.responses[0].attributes == {"model": "m1", "overall_score": 2.0, "fine_grained_score": 1.5,
                                         "rating_helpfulness": 1.0}
    fine = load_ultrafeedback([raw], score_key="fine-grained_score", report=(r2 := LoadReport()))
    assert fine == [] and r2.skipped == Counter({"missing completions": 1})  # m4 has no fine-grained score


def test_ultrafeedback_non_finite_ratings_are_left_out() -> None:
    """float() parses "nan"/"inf"; such a rating must not become a NaN attribute."""
    raw = {"instruction": "Name a prime.", "completions": [
        {"response": "7", "overall_score": 9, "annotations": {"honesty": {"Rating": "nan"},
                                                              "helpfulness": {"Rating": "4"}}},
        {"response": "4", "overall_score": 2, "annotations": {"honesty": {"Rating": "inf"}}},
    ]}
    (rec,) = load_ultrafeedback([raw])
    assert rec.responses[0].attributes == {"overall_score": 9.0, "rating_helpfulness": 4.0}
    assert rec.responses[1].attributes == {"overall_score": 2.0}


# ------------------------------------------------------------------------------------ H4 stack exchange
SE_ROWS = [
    {"qid": 101, "question": "<p>How do I reverse a list &amp; keep it?</p><pre><code>xs = [1, 2]\n</code></pre>",
     "date": "2008/09/13", "metadata": ["https://stackoverflow.com/questions/101"],
     "answers": [
         {"answer_id": 1, "author": "ann", "pm_score": 2, "selected": False, "text": "<p>Use <code>reversed</code>.</p>"},
         {"answer_id": 2, "author": "bob", "pm_score": 5, "selected": True, "text": "<p>Slice it: <code>xs[::-1]</code></p>"},
         {"answer_id": 3, "author": "cy", "pm_score": 7, "selected": False, "text": "xs.reverse() in place"},
     ]},
    {"qid": 102, "question": "Lonely?", "date": "2009/01/02", "metadata": [],
     "answers": [{"answer_id": 9, "author": "d", "pm_score": 1, "selected": True, "text": "yes"}]},
    {"qid": 103, "question": "Votes?", "date": "2009/01/02",
     "answers": [{"answer_id": 1, "pm_score": "many", "text": "a"}, {"answer_id": 2, "pm_score": 1, "text": "b"}]},
]


def test_stack_exchange_preferences_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "se.jsonl", SE_ROWS)
    report = LoadReport()
    recs = load_stack_exchange_preferences(path, report=report)
    assert report.skipped == Counter({"fewer than 2 answers": 1, "invalid answers": 1})
    (rec,) = recs
    assert rec.id == "101"
    assert rec.prompt == "How do I reverse a list & keep it?\n\n```\nxs = [1, 2]\n```"
    assert [r.attributes["votes"] for r in rec.responses] == [2.0, 5.0, 7.0]
    assert [r.attributes["accepted"] for r in rec.responses] == [False, True, False]
    assert rec.responses[1].text == "Slice it: `xs[::-1]`"
    assert rec.preference_order() == [1, 2, 0]  # accepted first, then votes (ListRecord.preference_order)
    assert rec.meta["created"] == "2008-09-13T00:00:00+00:00"
    assert rec.meta["urls"] == ["https://stackoverflow.com/questions/101"]
    kept = load_stack_exchange_preferences(SE_ROWS[:1], html="keep")[0]
    assert kept.responses[0].text == SE_ROWS[0]["answers"][0]["text"]


# ------------------------------------------------------------------------------------ PRO
def test_pro_prefix_suffix_reward(tmp_path: Path) -> None:
    turns = ["<|prompter|>What is 2+2?", "<|assistant|>"]
    good = {"meta": "hh", "prefix": [turns, turns, turns], "suffix": ["4", "5", "fish"],
            "reward": [2.5, -0.5, -3.0], "sft_index": 0}
    summarize = {"prefix": ["Post: long text\nTL;DR:"] * 2, "suffix": [" short", " shorter"], "reward": [1.0, 1.0]}
    differ = {"prefix": [["<|prompter|>a"], ["<|prompter|>b"]], "suffix": ["x", "y"], "reward": [1, 0]}
    bad_reward = {"prefix": [turns, turns], "suffix": ["x", "y"], "reward": [1.0]}
    path = _jsonl(tmp_path / "train.json", [good, summarize, differ, bad_reward])
    report = LoadReport()
    recs = load_pro(path, report=report)
    assert report.skipped == Counter({"prefixes differ": 1, "invalid reward": 1})
    a, b = recs
    assert a.prompt == "\n\nHuman: What is 2+2?\n\nAssistant:"
    assert [r.text for r in a.responses] == ["4", "5", "fish"]
    assert a.ranking == [0, 1, 2] and a.scores == [2.5, -0.5, -3.0] and a.meta["sft_index"] == 0
    assert a.id == "train-1" and b.id == "train-2"
    assert b.prompt == "Post: long text\nTL;DR:" and b.scores == [1.0, 1.0]


# ------------------------------------------------------------------------------------ bad input
def test_bad_rows_are_counted_by_reason_and_raise_names_line(tmp_path: Path) -> None:
    good = {"prompt": "Q", "response_0": "a", "response_1": "b", "better_response_id": 0, "safer_response_id": 1}
    rows = [
        good,
        "{not json",
        {k: v for k, v in good.items() if k != "response_1"},
        {**good, "better_response_id": "zero"},
        {**good, "better_response_id": 2},
        {**good, "prompt": ""},
        [1, 2],
        {**good, "is_response_0_safe": "yes"},
    ]
    path = _jsonl(tmp_path / "pku.jsonl", rows)
    report = LoadReport()
    recs = load_pku_saferlhf(path, report=report)
    assert len(recs) == 1 and report.kept == 1
    assert report.skipped == Counter({
        "invalid JSON": 1, "missing response_1": 1, "invalid better_response_id": 2,
        "missing prompt": 1, "invalid row": 1, "invalid is_response_0_safe": 1,
    })
    summary = report.summary()
    assert "kept 1 record(s), skipped 7" in summary and "pku.jsonl line 2" in summary
    with pytest.raises(RecordError, match=r"pku\.jsonl line 2: field '<json>': invalid JSON"):
        load_pku_saferlhf(path, on_error="raise")
    with pytest.raises(RecordError, match=r"b\.jsonl line 2: field 'response_1': missing"):
        load_pku_saferlhf(_jsonl(tmp_path / "b.jsonl", [rows[0], rows[2]]), on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        load_pku_saferlhf(path, on_error="ignore")


def test_duplicate_ids_are_counted(tmp_path: Path) -> None:
    row = {"prompt_id": "same", "prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": 2, "score_rejected": 1}
    report = LoadReport()
    recs = load_ultrafeedback([row, row], report=report)
    assert len(recs) == 1 and report.skipped == Counter({"duplicate id": 1})


# ------------------------------------------------------------------------------------ generic / registry
def test_generic_and_limit(tmp_path: Path) -> None:
    recs = [ListRecord.from_dict({"id": f"r{i}", "prompt": "p", "responses": ["a", "b"], "ranking": [1, 0]})
            for i in range(5)]
    write_records(recs, tmp_path / "g.parquet")
    back = load_generic(tmp_path / "g.parquet")
    assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]
    assert [r.id for r in load_dataset_file("generic", tmp_path / "g.parquet", limit=2)] == ["r0", "r1"]
    assert [r.id for r in load_generic([r.to_dict() for r in recs], limit=3)] == ["r0", "r1", "r2"]


def test_registry_and_errors(tmp_path: Path) -> None:
    assert set(LOADERS) == {"oasst1", "hh_rlhf", "pku_saferlhf", "ultrafeedback",
                            "stack_exchange_preferences", "pro", "generic", "kto_unpaired"}
    assert set(available_formats()) == set(LOADERS)
    with pytest.raises(UserError, match=r"unknown data format 'nope'.*oasst1"):
        load_dataset_file("nope", "x.jsonl")
    with pytest.raises(UserError, match=r"format 'oasst1': unknown key 'contxt' \(did you mean 'context'\?\); "
                                        r"valid keys: context$"):
        load_dataset_file("oasst1", "x.jsonl", contxt="last")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset_file("oasst1", "/nonexistent/x.jsonl")
    with pytest.raises(ValueError, match=r"unsupported input 'x\.csv'"):
        load_dataset_file("hh_rlhf", _jsonl(tmp_path / "x.csv", ["a,b"]))


def test_hf_name_offline_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(name: str, split: str | None = None) -> None:
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load Hugging Face data set 'Anthropic/hh-rlhf' \(split 'test'\)"
                                        r".*network access"):
        load_dataset_file("hh_rlhf", "hf:Anthropic/hh-rlhf:test")


def test_hf_name_reads_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    seen = {}

    def fake(name: str, split: str | None = None) -> Any:
        seen["args"] = (name, split)
        return datasets.Dataset.from_list([{"chosen": "\n\nHuman: q\n\nAssistant: yes",
                                            "rejected": "\n\nHuman: q\n\nAssistant: no"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    (rec,) = load_dataset_file("hh_rlhf", "hf:Anthropic/hh-rlhf")
    assert seen["args"] == ("Anthropic/hh-rlhf", "train")
    assert [r.text for r in rec.responses] == ["yes", "no"] and rec.id == "row-0"


# ------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("out_name", ["out.jsonl", "out.parquet", "outdir"])
def test_cli_convert_round_trip(shared_data: Path, tmp_path: Path, out_name: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "pku_saferlhf" / "test.head16.jsonl"
    out = tmp_path / out_name
    rc = main(["data", "convert", "--format", "pku_saferlhf", str(src), "--out", str(out), "--limit", "10"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "kept 10 record(s)" in captured.err and "wrote 10 record(s)" in captured.out
    back = read_records(out)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in load_pku_saferlhf(src, limit=10)]


def test_cli_convert_reports_skips_and_options(shared_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.jsonl"
    rc = main(["data", "convert", "-f", "oasst1", str(shared_data / "oasst1" / "en_100_tree.jsonl"),
               "--out", str(out), "-O", "context=last"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "kept 212 record(s), skipped 88 (46 reply without rank, 42 prompt with < 2 ranked replies)" in err
    assert all(not r.prompt.startswith("User: ") for r in read_records(out))


def test_cli_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _jsonl(tmp_path / "bad.jsonl", [{"foo": 1}, "{oops"])
    out = tmp_path / "o.jsonl"
    assert main(["data", "convert", "-f", "hh_rlhf", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 missing chosen" in err and "1 invalid JSON" in err and "nothing written" in err
    assert main(["data", "convert", "-f", "hh_rlhf", str(bad), "--out", str(out), "--on-error", "raise"]) == 2
    assert "bad.jsonl line 1: field 'chosen': missing" in capsys.readouterr().err
    assert main(["data", "convert", "-f", "hh_rlhf", str(bad), "--out", str(out), "-O", "oops"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_cli_formats(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no wrapped help lines
    assert main(["data", "formats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines if not ln.startswith(" ")] == sorted(LOADERS)
    text = "\n".join(lines)
    assert "--context TURNS|LAST" in text and "(default: turns)" in text
    assert "--html TEXT|KEEP" in text and "--score_key STR, --score-key STR" in text


def test_cli_convert_help_has_a_group_per_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "convert", "--help"])
    out = capsys.readouterr().out
    for fmt, flag in (("oasst1", "--context"), ("stack_exchange_preferences", "--html"),
                      ("ultrafeedback", "--score-key")):
        group = out.split(f"options of --format {fmt}:", 1)[1]
        assert flag in group.split("options of --format", 1)[0]
    assert "options of --format hh_rlhf" not in out  # no options, no group


def test_cli_format_option_flags_and_alias(shared_data: Path, tmp_path: Path) -> None:
    src = str(shared_data / "oasst1" / "en_100_tree.jsonl")
    outs = {}
    for name, flags in (("flag", ["--context", "last"]), ("eq", ["--context=last"]),
                        ("alias", ["--option", "context=last"]), ("default", [])):
        outs[name] = tmp_path / f"{name}.jsonl"
        assert main(["data", "convert", "-f", "oasst1", src, "--out", str(outs[name]), "--limit", "40", *flags]) == 0
    last = [r.to_dict() for r in load_oasst1(src, limit=40, context="last")]
    for name in ("flag", "eq", "alias"):
        assert [r.to_dict() for r in read_records(outs[name])] == last
    assert [r.to_dict() for r in read_records(outs["default"])] == [r.to_dict() for r in load_oasst1(src, limit=40)]


@pytest.mark.parametrize(("flags", "message"), [
    (["--contxt", "last"], "rankalign data: error: --format oasst1: unknown key 'contxt' (did you mean 'context'?); "
                           "valid keys: context\n"),
    (["--context", "lst"], "--format oasst1: context: expected one of 'turns', 'last', got 'lst'\n"),
    (["-O", "contxt=last"], "unknown key 'contxt' (did you mean 'context'?)"),
    (["--html", "keep"], "--format oasst1: unknown key 'html'; valid keys: context\n"),
    (["--context", "last", "-O", "context=turns"], "option 'context' is given twice"),
    (["--limt", "3"], "unknown argument --limt (did you mean --limit?)\n"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_cli_option_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        flags: list[str], message: str) -> None:
    src = _jsonl(tmp_path / "in.jsonl", [{"x": 1}])
    out = tmp_path / "o.jsonl"
    assert main(["data", "convert", "-f", "oasst1", str(src), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_options_of_a_format_without_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _jsonl(tmp_path / "in.jsonl", [{"x": 1}])
    assert main(["data", "convert", "-f", "hh_rlhf", str(src), "--out", str(tmp_path / "o.jsonl"),
                 "--context", "last"]) == 2
    assert "--format hh_rlhf: unknown option 'context'; format 'hh_rlhf' takes no options" in capsys.readouterr().err
    assert main(["data", "convert", "-f", "hh-rlfh", str(src), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "unknown data format 'hh-rlfh' (did you mean 'hh_rlhf'?)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ a plug-in source
@dataclass(frozen=True)
class EchoOptions:
    times: int = field(default=1, metadata={"help": "repeat each response this many times"})
    case: Literal["keep", "upper"] = field(default="keep", metadata={"help": "upper-case the responses"})


@pytest.fixture
def echo_source() -> Iterator[DataSource]:
    """A throw-away source defined by one decorated function; unregistered afterwards."""

    @register_source("echo_test", options=EchoOptions)
    def load_echo(source: Any, options: EchoOptions, *, report: LoadReport, on_error: str,
                  limit: int | None) -> list[ListRecord]:
        """Test rows {q, a, b} -> lists of 2, each response repeated `times` times."""

        def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
            texts = [row[k] * options.times for k in ("a", "b")]
            texts = [t.upper() for t in texts] if options.case == "upper" else texts
            return [ListRecord.from_dict({"id": row["q"], "prompt": row["q"], "responses": texts}, where=where)]

        return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)

    try:
        yield load_echo
    finally:
        unregister_source("echo_test")
    assert "echo_test" not in LOADERS


def test_plugin_source_end_to_end(echo_source: DataSource, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no wrapped help lines
    assert get_source("echo-test") is echo_source and LOADERS["echo_test"] is echo_source
    assert main(["data", "formats"]) == 0
    out = capsys.readouterr().out
    assert "echo_test" in out and "Test rows {q, a, b} -> lists of 2" in out
    assert "--times INT" in out and "(default: 1)" in out
    with pytest.raises(SystemExit):
        main(["data", "convert", "--help"])
    help_text = capsys.readouterr().out
    assert "options of --format echo_test:" in help_text and "--case KEEP|UPPER" in help_text

    src = _jsonl(tmp_path / "in.jsonl", [{"q": "p1", "a": "x", "b": "y"}, {"q": "p2", "a": "u", "b": "v"}])
    out_path = tmp_path / "o.jsonl"
    assert main(["data", "convert", "-f", "echo_test", str(src), "--out", str(out_path),
                 "--times", "3", "-O", "case=upper"]) == 0
    assert [[r.text for r in rec.responses] for rec in read_records(out_path)] == [["XXX", "YYY"], ["UUU", "VVV"]]
    # the option arrives typed: "3" became the int 3 before the loader saw it
    assert echo_source.make_options({"times": "3"}) == EchoOptions(times=3)
    assert load_dataset_file("echo_test", src, times="2")[0].responses[0].text == "xx"

    capsys.readouterr()
    assert main(["data", "convert", "-f", "echo_test", str(src), "--out", str(out_path), "--tims", "2"]) == 2
    assert ("--format echo_test: unknown key 'tims' (did you mean 'times'?); valid keys: case, times\n"
            in capsys.readouterr().err)
    assert main(["data", "convert", "-f", "echo_test", str(src), "--out", str(out_path), "--times", "many"]) == 2
    assert "--format echo_test: times: cannot read 'many' as int\n" in capsys.readouterr().err


def test_registry_refuses_bad_registrations(echo_source: DataSource) -> None:
    def load(source: Any, options: Any, *, report: Any, on_error: str, limit: int | None) -> list[ListRecord]:
        """A loader."""
        return []

    with pytest.raises(ValueError, match=r"data source 'Echo-Test' is already registered by .*test_loaders"):
        register_source("Echo-Test", options=EchoOptions)(load)

    @dataclass
    class Clash:
        limit: int = 3

    with pytest.raises(ValueError, match=r"option name\(s\) \['limit'\] are taken by `rankalign data convert`"):
        register_source("clash_test", options=Clash)(load)
    with pytest.raises(TypeError, match="must be a dataclass"):
        register_source("clash_test", options=dict)(load)
    with pytest.raises(TypeError, match=r"must take \(source, options, \*, report, on_error, limit\)"):
        register_source("clash_test")(lambda source: [])
    with pytest.raises(ValueError, match="needs a description"):
        register_source("clash_test")(lambda source, options, *, report, on_error, limit: [])
    assert "clash_test" not in LOADERS
    with pytest.raises(UserError, match="unknown data format 'clash_test'"):
        unregister_source("clash_test")


def test_python_options_are_checked(echo_source: DataSource) -> None:
    rows = [{"q": "p", "a": "x", "b": "y"}]
    assert echo_source(rows, options=EchoOptions(times=2))[0].responses[1].text == "yy"
    with pytest.raises(ConfigError, match="case: expected one of 'keep', 'upper', got 'lower'"):
        echo_source(rows, options=EchoOptions(case="lower"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes EchoOptions options, got dict"):
        echo_source(rows, options={"times": 2})
    with pytest.raises(TypeError, match="not both"):
        echo_source(rows, options=EchoOptions(), times=2)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        echo_source(rows, limit=-1)


# ------------------------------------------------------------------------------------ bad input and output
def _compress(data: bytes, kind: str) -> bytes:
    import bz2
    import gzip
    import lzma

    if kind == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor().compress(data)
    return {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind](data)


COMPRESSED = [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz"), ("zstd", ".zst")]


@pytest.mark.parametrize(("kind", "ext"), COMPRESSED)
def test_compressed_inputs_are_read(shared_data: Path, tmp_path: Path, kind: str, ext: str) -> None:
    plain = shared_data / "pku_saferlhf" / "test.head16.jsonl"
    packed = tmp_path / f"test.head16.jsonl{ext}"
    packed.write_bytes(_compress(plain.read_bytes(), kind))
    expected = [r.to_dict() for r in load_pku_saferlhf(plain)]
    assert [r.to_dict() for r in load_pku_saferlhf(packed)] == expected  # ids use the stem before the first dot
    array = tmp_path / f"rows.json{ext}"  # a .json array, compressed
    array.write_bytes(_compress(json.dumps(_read_jsonl(plain)).encode(), kind))
    assert len(load_pku_saferlhf(array)) == 16


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
@pytest.mark.parametrize(("kind", "ext"), COMPRESSED)
def test_damaged_compressed_input_is_one_line_and_writes_nothing(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, ext: str, damage: str
) -> None:
    plain = (shared_data / "pku_saferlhf" / "test.head16.jsonl").read_bytes()
    data = _compress(plain * 4, kind)
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:  # overwrite bytes in the middle of the stream
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:]
    src = tmp_path / f"pku.jsonl{ext}"
    src.write_bytes(data)
    out = tmp_path / "o.jsonl"
    assert main(["data", "convert", "-f", "pku_saferlhf", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rankalign data: error: pku.jsonl{ext}: ") and err.count("\n") == 1, err
    assert f"truncated or corrupt {kind} data" in err and f"check it with `{kind} -t FILE`" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_archives_and_unlabelled_compression_get_a_clear_message(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    row = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    plain = _jsonl(tmp_path / "hh.jsonl", [row])
    with zipfile.ZipFile(tmp_path / "hh.zip", "w") as zf:
        zf.write(plain, "hh.jsonl")
    (tmp_path / "hh.zip.jsonl").write_bytes((tmp_path / "hh.zip").read_bytes())
    (tmp_path / "hh.gz").write_bytes(_compress(plain.read_bytes(), "gzip"))
    for name, message in (("hh.zip", "hh.zip is a zip archive; extract it first"),
                          ("hh.zip.jsonl", "hh.zip.jsonl is a zip archive; extract it first"),
                          ("hh.gz", "input 'hh.gz' is gzip-compressed, but its name does not say what it holds: "
                                    "name it NAME.jsonl.gz or NAME.json.gz")):
        assert main(["data", "convert", "-f", "hh_rlhf", str(tmp_path / name), "--out", str(tmp_path / "o.jsonl")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_corrupt_parquet_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recs = [ListRecord.from_dict({"id": f"r{i}", "prompt": "p", "responses": ["a", "b"]}) for i in range(50)]
    write_records(recs, tmp_path / "g.parquet")
    data = (tmp_path / "g.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    for extra in ([], ["--limit", "3"]):  # read_records, and the row reader
        assert main(["data", "convert", "-f", "generic", str(tmp_path / "cut.parquet"),
                     "--out", str(tmp_path / "o.jsonl"), *extra]) == 2
        err = capsys.readouterr().err
        assert "cut.parquet: not a readable Parquet file" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.jsonl").exists()


def _hh_input(tmp_path: Path) -> Path:
    row = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    return _jsonl(tmp_path / "hh.jsonl", [row])


def test_output_path_errors_come_before_the_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = _hh_input(tmp_path)
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "afile").write_text("keep", encoding="utf-8")
    cases = [
        ("folder.jsonl", "output '{p}' is a folder, but a .jsonl output is a file"),
        ("afile", "output '{p}' exists and is a file, not a saved datasets folder"),
        ("afile/o.jsonl", "output '{p}' cannot be created: '{d}/afile' is a file, not a folder"),
        ("o.csv", "unsupported output 'o.csv'"),
    ]
    read: list[Any] = []
    import rankalign.data.sources as sources

    real = sources.load_dataset_file
    monkeypatch.setattr(sources, "load_dataset_file", lambda *a, **k: read.append(a) or real(*a, **k))
    for name, message in cases:
        out = tmp_path / name
        assert main(["data", "convert", "-f", "hh_rlhf", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message.format(p=out, d=tmp_path) in err and err.count("\n") == 1, err
    assert read == []  # no input was read for any of them
    assert (tmp_path / "afile").read_text(encoding="utf-8") == "keep" and (tmp_path / "folder.jsonl").is_dir()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (no file can be made there, even as root)")
def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _hh_input(tmp_path)
    for name in ("o.jsonl", "o.parquet", "ds", "sub/o.jsonl"):
        out = Path("/proc") / "rankalign-test" / name
        assert main(["data", "convert", "-f", "hh_rlhf", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"output '{out}' cannot be written: no permission to create files in '/proc'" in err, err
        assert err.count("\n") == 1, err


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_unwritable_output_folder_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _hh_input(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["data", "convert", "-f", "hh_rlhf", str(src), "--out", str(locked / "o.jsonl")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)


def test_os_error_while_writing_is_one_line_and_keeps_the_old_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import rankalign.data.io as rio

    src = _hh_input(tmp_path)
    out = tmp_path / "o.jsonl"
    out.write_text("old\n", encoding="utf-8")

    def full_disk(a: Any, b: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio.os, "replace", full_disk)
    assert main(["data", "convert", "-f", "hh_rlhf", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"could not write '{out}': No space left on device" in err and err.count("\n") == 2, err  # + the report
    assert out.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hh.jsonl", "o.jsonl"]


def test_the_documented_example_source_works(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The example of docs/data.md ("Adding a source"), run as written, as a module."""
    import sys
    import types

    docs = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    code = docs.split("### Adding a source", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("docs_example")
    monkeypatch.setitem(sys.modules, "docs_example", module)
    exec(compile(code, "docs/data.md", "exec"), module.__dict__)
    try:
        rows = [{"id": 1, "question": "Q?", "lang": "de", "answers": [{"text": "a", "votes": 3},
                                                                      {"text": "b", "votes": 1}]},
                {"id": 2, "question": "Q?", "lang": "en", "answers": [{"text": "a", "votes": 3},
                                                                      {"text": "b", "votes": 1}]},
                {"id": 3, "question": "Q?", "lang": "de", "answers": "none"}]
        src, out = _jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
        assert main(["data", "convert", "--format", "qa_votes", str(src), "--out", str(out), "--lang", "de"]) == 0
        assert "kept 1 record(s), skipped 2 (1 other language, 1 invalid answers)" in capsys.readouterr().err
        (rec,) = read_records(out)
        assert rec.id == "1" and [r.attributes["votes"] for r in rec.responses] == [3, 1]
    finally:
        unregister_source("qa_votes")


def test_an_option_name_two_formats_share_is_typed_by_the_chosen_format(
    echo_source: DataSource, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass(frozen=True)
    class ScaleOptions:
        times: float = field(default=1.0, metadata={"help": "scale the score"})

    @register_source("scale_test", options=ScaleOptions)
    def load_scale(source: Any, options: ScaleOptions, *, report: LoadReport, on_error: str,
                   limit: int | None) -> list[ListRecord]:
        """Test rows {q, a, b} -> lists of 2 with scores [times, 0]."""
        return convert_rows(source, lambda row, where: [ListRecord.from_dict(
            {"id": row["q"], "prompt": row["q"], "responses": [row["a"], row["b"]], "scores": [options.times, 0.0]},
            where=where)], report=report, on_error=on_error, limit=limit)

    try:
        monkeypatch.setenv("COLUMNS", "250")
        with pytest.raises(SystemExit):
            main(["data", "convert", "--help"])
        assert "options of --format scale_test:\n  also --times (listed above)" in capsys.readouterr().out
        src = _jsonl(tmp_path / "in.jsonl", [{"q": "p1", "a": "x", "b": "y"}])
        out = tmp_path / "o.jsonl"
        assert main(["data", "convert", "-f", "scale_test", str(src), "--out", str(out), "--times", "2.5"]) == 0
        assert read_records(out)[0].scores == [2.5, 0.0]
        assert main(["data", "convert", "-f", "echo_test", str(src), "--out", str(out), "--times", "2.5"]) == 2
        assert "--format echo_test: times: cannot read '2.5' as int" in capsys.readouterr().err
    finally:
        unregister_source("scale_test")
