"""StaCoCoQA from StackExchange dumps (Yang, Zhao, Hu, Li, arXiv:2502.12189, §3.1):
rankalign.data.stackexchange.

Real dumps (coffee, ai.meta) are checked against counts taken independently with
xml.etree.ElementTree; the code-block path and every bad-input case use small Posts.xml
files written here. The outputs on all the shared dumps are compared with those of the
pipeline before its rewrite by benchmarks/compare_stackexchange_outputs.py.
"""

from __future__ import annotations

import bz2
import gzip
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from rankalign.cli import main
from rankalign.data.record import ListRecord
from rankalign.data.stackexchange import (
    QUESTION_REASONS,
    StackExchangeOptions,
    build_stacocoqa,
    has_code_block,
    html_to_text,
)
from rankalign.errors import ConfigError, UserError

BOM = "\ufeff"


def _opts(**kw) -> StackExchangeOptions:
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return StackExchangeOptions(**kw)


def _attr(value: str) -> str:
    """An XML attribute as the dumps write it: entities escaped, newlines as &#xA;."""
    return quoteattr(value).replace("&#10;", "&#xA;")


def _row(**attrs: object) -> str:
    return "  <row " + " ".join(f"{k}={_attr(str(v))}" for k, v in attrs.items()) + " />"


def q(id: int, body: str, acc: int | None = None, created: str = "2020-03-01T10:00:00.000", score: int = 5,
      title: str | None = None, tags: str = "<python><pandas>") -> str:
    a = {"Id": id, "PostTypeId": 1, "CreationDate": created, "Score": score, "Body": body,
         "Title": title or f"Question {id}", "Tags": tags}
    if acc is not None:
        a["AcceptedAnswerId"] = acc
    return _row(**a)


def ans(id: int, parent: int, body: str, score: int = 1, created: str = "2020-03-02T10:00:00.000") -> str:
    return _row(Id=id, PostTypeId=2, ParentId=parent, CreationDate=created, Score=score, Body=body)


def write_posts(path: Path, rows: list[str], bom: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (BOM if bom else "") + '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "\n".join(rows) + "\n</posts>\n"
    path.write_bytes(text.encode("utf-8"))
    return path


def read_jsonl(path: Path) -> list[dict]:
    # split on "\n" only: a text may hold U+2028, which str.splitlines() also splits on
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    return read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl"), json.loads(
        (out / "summary.json").read_text())


CODE_Q = "<p>Why does this fail &amp; how?</p>\n<pre><code>if a &lt; b:\n\n\n    print(&quot;x&quot;)\n</code></pre>\n<p>Thanks</p>"
INLINE_Q = "<p>Call <code>df.head()</code> please</p>"
PLAIN_Q = "<p>No code at all, just &lt;words&gt;.</p>"


def small_site(tmp_path: Path) -> Path:
    """Three questions (pre/code, inline code, no code), each with an accepted answer and 3 answers."""
    rows = [
        q(1, CODE_Q, acc=11), ans(10, 1, "<p>First</p>", 3), ans(11, 1, "<p>Use <code>&lt;=</code></p>", 10),
        ans(12, 1, "<p>Third</p>", -2),
        q(2, INLINE_Q, acc=21), ans(20, 2, "<p>a</p>", 1), ans(21, 2, "<p>b</p>", 2), ans(22, 2, "<p>c</p>", 0),
        q(3, PLAIN_Q, acc=31), ans(30, 3, "<p>x</p>", 1), ans(31, 3, "<p>y</p>", 4), ans(32, 3, "<p>z</p>", 2),
    ]
    return write_posts(tmp_path / "site" / "Posts.xml", rows)


# ----------------------------------------------------------------------------- HTML to text
def test_html_to_text_fences_code_and_unescapes_entities():
    # hand-derived: paragraphs separated by one blank line, the <pre> block fenced with its
    # blank lines kept, entities unescaped (&amp; -> &, &lt; -> <, &quot; -> ")
    expected = 'Why does this fail & how?\n\n```\nif a < b:\n\n\n    print("x")\n```\n\nThanks'
    assert html_to_text(CODE_Q) == expected
    assert html_to_text(INLINE_Q) == "Call `df.head()` please"
    assert html_to_text("<ul><li>one</li><li>two</li></ul>") == "- one\n\n- two"
    assert html_to_text("a<br>b &unknownentity; <img src='x' alt='pic'>") == "a\nb &unknownentity; pic"
    assert html_to_text("") == "" and html_to_text("  \n ") == "" and html_to_text(None) == ""


def test_has_code_block():
    assert has_code_block(CODE_Q) and has_code_block(INLINE_Q) and has_code_block('<code class="x">y</code>')
    assert not has_code_block(PLAIN_Q) and not has_code_block("<p>codex</p>") and not has_code_block(None)


# ----------------------------------------------------------------------------- real dumps
def _independent_counts(posts: Path) -> dict:
    """Counts taken with xml.etree.ElementTree, independently of the pipeline."""
    rows = [r.attrib for r in ET.parse(posts).getroot().iter("row")]
    questions = {r["Id"]: r for r in rows if r.get("PostTypeId") == "1"}
    answers = [r for r in rows if r.get("PostTypeId") == "2"]
    by_parent: dict[str, list[dict]] = {}
    for a in answers:
        by_parent.setdefault(a["ParentId"], []).append(a)
    with_acc = {i: r for i, r in questions.items() if r.get("AcceptedAnswerId")}
    found = {i for i, r in with_acc.items() if any(a["Id"] == r["AcceptedAnswerId"] for a in by_parent.get(i, []))}
    pool_ok = {i for i in found if len(by_parent.get(i, [])) >= 2}
    return {"questions": len(questions), "answers": len(answers), "with_accepted": len(with_acc),
            "found": len(found), "found_ids": found, "kept_ids": pool_ok, "by_parent": by_parent, "q": questions}


@pytest.mark.parametrize("site", ["coffee", "ai.meta"])
def test_real_dump_counts_match_elementtree(shared_data, tmp_path, site):
    posts = shared_data / "stackexchange" / site / "Posts.xml"
    ref = _independent_counts(posts)
    out = tmp_path / "out"
    s = build_stacocoqa(posts.parent, out, _opts(code_filter=False, test_fraction=0.2)).to_dict()
    d = s["questions"]["dropped"]
    assert s["rows"]["questions"] == ref["questions"] == s["questions"]["total"]
    assert s["rows"]["answers"] == ref["answers"]
    assert s["questions"]["total"] - d["no accepted answer"] == ref["with_accepted"]
    assert s["questions"]["total"] - d["no accepted answer"] - d["accepted answer missing"] == ref["found"]
    assert s["questions"]["kept"] + sum(d.values()) == s["questions"]["total"]
    train, test, on_disk = outputs(out)
    assert on_disk["questions"] == s["questions"]
    ids = [r["id"] for r in train + test]
    assert set(ids) == ref["kept_ids"] and len(ids) == len(set(ids))
    assert len(test) == round(0.2 * len(ids))
    for r in train + test:
        rec = ListRecord.from_dict(r)
        qrow = ref["q"][rec.id]
        assert rec.meta["accepted_answer_id"] == qrow["AcceptedAnswerId"]
        assert rec.meta["title"] == qrow["Title"] and rec.prompt.startswith(qrow["Title"] + "\n\n")
        expected = ref["by_parent"][rec.id]
        assert [a.attributes["post_id"] for a in rec.responses] == sorted((a["Id"] for a in expected), key=int)
        assert [a.attributes["votes"] for a in rec.responses] == [
            int(a["Score"]) for a in sorted(expected, key=lambda a: int(a["Id"]))]
        assert sum(a.attributes["accepted"] for a in rec.responses) == 1
    if site == "ai.meta":  # the site folder brings its Votes.xml
        votes = [v.attrib for v in ET.parse(posts.parent / "Votes.xml").getroot().iter("row")]
        up = Counter(v["PostId"] for v in votes if v["VoteTypeId"] == "2")
        down = Counter(v["PostId"] for v in votes if v["VoteTypeId"] == "3")
        assert s["rows"]["up votes"] == 1589 and s["rows"]["down votes"] == 180
        for r in train + test:
            for a in r["responses"]:
                assert a["attributes"]["up"] == up[a["attributes"]["post_id"]]
                assert a["attributes"]["down"] == down[a["attributes"]["post_id"]]
    assert (out / "stats.png").stat().st_size > 1000 and (out / "stats.csv").read_text().startswith("table,")


def test_real_dump_votes_flag_and_time_window(shared_data, tmp_path):
    posts = shared_data / "stackexchange" / "ai.meta" / "Posts.xml"
    ref = _independent_counts(posts)
    s = build_stacocoqa(posts, tmp_path / "o", _opts(code_filter=False, votes=str(posts.parent / "Votes.xml"),
                                                     start="2017-01-01", end="2018-01-01")).to_dict()
    inside = {i for i in ref["kept_ids"] if "2017-01-01" <= ref["q"][i]["CreationDate"] < "2018-01-01"}
    train, test, _ = outputs(tmp_path / "o")
    assert {r["id"] for r in train + test} == inside
    # the window is checked before the pool size: every question with its accepted answer found counts
    outside = {i for i in ref["found_ids"] if not "2017-01-01" <= ref["q"][i]["CreationDate"] < "2018-01-01"}
    assert s["questions"]["dropped"]["outside time window"] == len(outside) > 0
    assert all("up" in a["attributes"] for r in train for a in r["responses"])


# ----------------------------------------------------------------------------- code-block path
def test_code_filter_and_fenced_code(tmp_path):
    posts = small_site(tmp_path)
    s = build_stacocoqa(posts, tmp_path / "o", _opts(test_fraction=0.0)).to_dict()
    train, test, _ = outputs(tmp_path / "o")
    assert test == [] and [r["id"] for r in train] == ["1", "2"]
    assert s["questions"]["dropped"]["no code block"] == 1
    r1 = train[0]
    assert r1["prompt"] == "Question 1\n\n" + html_to_text(CODE_Q)
    assert "```\nif a < b:\n\n\n    print(\"x\")\n```" in r1["prompt"]
    assert [a["text"] for a in r1["responses"]] == ["First", "Use `<=`", "Third"]
    assert [a["attributes"]["votes"] for a in r1["responses"]] == [3, 10, -2]  # negative score kept
    assert [a["attributes"]["accepted"] for a in r1["responses"]] == [False, True, False]
    assert r1["responses"][0]["attributes"]["created"] == "2020-03-02T10:00:00.000"
    assert r1["meta"]["tags"] == ["python", "pandas"] and r1["meta"]["accepted_answer_id"] == "11"
    s2 = build_stacocoqa(posts, tmp_path / "o2", _opts(code_filter=False, test_fraction=0.0)).to_dict()
    assert s2["questions"]["kept"] == 3 and s2["questions"]["dropped"]["no code block"] == 0


def test_quality_filters(tmp_path):
    posts = small_site(tmp_path)
    run = lambda **kw: build_stacocoqa(posts, tmp_path / "o", _opts(code_filter=False, test_fraction=0.0, **kw))  # noqa: E731
    # pool sizes are 3 everywhere
    assert run(min_answers=4).questions["dropped"]["pool too small"] == 3
    assert run(max_answers=2).questions["dropped"]["pool too large"] == 3
    # vote spreads: q1 12, q2 2, q3 3
    s = run(min_vote_spread=3)
    assert s.questions["dropped"]["vote spread too small"] == 1 and s.questions["kept"] == 2
    # min answer votes 1: q1 drops answer 12 (-2), q2 drops 22 (0) -> pool 2; q3 keeps 3
    s = run(min_answer_votes=1)
    assert s.answers["dropped"]["answer below min votes"] == 2 and s.questions["kept"] == 3
    train, _, _ = outputs(tmp_path / "o")
    assert [len(r["responses"]) for r in train] == [2, 2, 3]
    # min answer votes 3: q2's accepted answer (2 votes) goes -> "accepted answer filtered"
    # min answer votes 3: q2's accepted answer (2 votes) goes -> "accepted answer filtered";
    # q3 keeps only its accepted answer (4) -> "pool too small"; q1 keeps 10 and 11
    s = run(min_answer_votes=3)
    assert s.questions["dropped"]["accepted answer filtered"] == 1
    assert s.questions["dropped"]["pool too small"] == 1 and s.questions["kept"] == 1
    # token limits (whitespace words): q1's prompt is long, answers are 1-2 words
    s = run(max_question_tokens=8)
    assert s.questions["dropped"]["question too long"] == 1
    s = run(max_answer_tokens=1)
    assert s.answers["dropped"]["answer too long"] == 1 and s.questions["dropped"]["accepted answer filtered"] == 1


def test_quality_filter_counts_add_up(tmp_path):
    posts = small_site(tmp_path)
    s = build_stacocoqa(posts, tmp_path / "o", _opts(min_answer_votes=4)).to_dict()
    d = s["questions"]["dropped"]
    assert list(d) == list(QUESTION_REASONS)
    assert s["questions"]["kept"] == 0 and sum(d.values()) == 3
    # q1: only its accepted answer (10) has >= 4 votes -> pool too small; q2: accepted (2) filtered;
    # q3: no code block (checked first)
    assert d["pool too small"] == 1 and d["accepted answer filtered"] == 1 and d["no code block"] == 1


def test_sample_and_split_are_seeded(tmp_path):
    rows = []
    for i in range(1, 41):
        rows += [q(i, CODE_Q, acc=1000 + i), ans(1000 + i, i, "<p>a</p>", 2), ans(2000 + i, i, "<p>b</p>", 1)]
    posts = write_posts(tmp_path / "s" / "Posts.xml", rows)
    a = build_stacocoqa(posts, tmp_path / "a", _opts(sample=20, seed=3, test_fraction=0.1)).to_dict()
    b = build_stacocoqa(posts, tmp_path / "b", _opts(sample=20, seed=3, test_fraction=0.1)).to_dict()
    build_stacocoqa(posts, tmp_path / "c", _opts(sample=20, seed=4, test_fraction=0.1))
    ta, sa, _ = outputs(tmp_path / "a")
    tb, sb, _ = outputs(tmp_path / "b")
    tc, sc, _ = outputs(tmp_path / "c")
    assert (len(ta), len(sa)) == (18, 2) and a["output"]["sampled"] == 20 and a["questions"]["kept"] == 40
    assert ta == tb and sa == sb and b == {**a, "seconds": b["seconds"]}
    assert {r["id"] for r in ta} & {r["id"] for r in sa} == set()
    assert {r["id"] for r in ta + sa} != {r["id"] for r in tc + sc}
    s = build_stacocoqa(posts, tmp_path / "d", _opts(sample=100)).to_dict()
    assert s["output"]["sampled"] == 40 and "took them all" in s["output"]["note"]


# ----------------------------------------------------------------------------- robust input
def test_robust_rows(tmp_path):
    rows = [
        q(1, CODE_Q, acc=99), ans(10, 1, "<p>a</p>"), ans(11, 1, "<p>b</p>"),           # accepted answer missing
        q(2, CODE_Q, acc=21), ans(20, 2, "<p>a</p>"), ans(21, 2, "<p>b\nc</p>"),        # written as &#xA;
        ans(20, 2, "<p>duplicate of 20</p>", 99),                                      # duplicate id, first kept
        q(3, "", acc=31), ans(30, 3, "<p>a</p>"), ans(31, 3, "<p>b</p>"),               # empty question body
        q(4, CODE_Q, acc=41), ans(40, 4, "  "), ans(41, 4, "<p>b</p>"), ans(42, 4, "<p>c</p>"),  # empty answer
        '  <row Id="5" PostTypeId="1" Score="1" Body="&lt;code&gt;x&lt;/code&gt;" Title="t" />',  # no CreationDate
        '  <row Id="6" PostTypeId="2" CreationDate="2020-01-01T00:00:00" Score="1" Body="x" />',  # no ParentId
        '  <row PostTypeId="1" CreationDate="2020-01-01T00:00:00" Score="x" Body="x" Title="t" />',  # no Id
        ans(70, 12345, "<p>orphan</p>"),
    ]
    posts = write_posts(tmp_path / "s" / "Posts.xml", rows)
    # no code filter: an empty body has no code block, which would be checked first
    s = build_stacocoqa(posts, tmp_path / "o", _opts(test_fraction=0.0, code_filter=False)).to_dict()
    train, _, _ = outputs(tmp_path / "o")
    assert s["rows"]["malformed row"] == 3 and len(s["examples"]) == 3
    assert s["rows"]["duplicate id"] == 1 and s["rows"]["answer without question"] == 1
    d = s["questions"]["dropped"]
    assert d["accepted answer missing"] == 1 and d["empty body"] == 1
    assert s["answers"]["dropped"]["empty answer body"] == 1
    assert [r["id"] for r in train] == ["2", "4"]
    assert [a["text"] for a in train[0]["responses"]] == ["a", "b\nc"]
    assert [a["attributes"]["votes"] for a in train[0]["responses"]] == [1, 1]  # not the duplicate's 99


def _broken(tmp_path: Path, tail: bytes) -> Path:
    good = write_posts(tmp_path / "g" / "Posts.xml", [
        q(1, CODE_Q, acc=11), ans(10, 1, "<p>a</p>"), ans(11, 1, "<p>b</p>"),
        q(2, CODE_Q, acc=21), ans(20, 2, "<p>a</p>"), ans(21, 2, "<p>b</p>")]).read_bytes()
    head = good[: good.index(b"</posts>")]
    p = tmp_path / "bad" / "Posts.xml"
    p.parent.mkdir()
    p.write_bytes(head + tail)
    return p


@pytest.mark.parametrize("tail, message", [
    (b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="tru', "truncated"),
    (b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="\xff\xfe" />\n</posts>', "non-UTF-8"),
    (b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="&nbsp;" />\n</posts>', "entity"),
])
def test_broken_xml_keeps_rows_before_and_reports(tmp_path, capsys, tail, message):
    p = _broken(tmp_path, tail)
    out = tmp_path / "o"
    rc = main(["data", "stackexchange", str(p), "--out", str(out), "--workers", "1", "-q", "--test-fraction", "0"])
    assert rc == 0, message
    err = capsys.readouterr().err
    assert "warning: XML error" in err and "line 9" in err
    train, _, s = outputs(out)
    assert [r["id"] for r in train] == ["1", "2"]
    (e,) = s["parse_errors"]
    assert e["line"] == 9 and e["rows_before"] == 6 and e["file"] == str(p)
    # --strict: exit 2, one-line error, nothing written
    out2 = tmp_path / "o2"
    rc = main(["data", "stackexchange", str(p), "--out", str(out2), "--workers", "1", "-q", "--strict"])
    assert rc == 2
    assert "strict mode" in capsys.readouterr().err
    assert not (out2 / "train.jsonl").exists() and not (out2 / "summary.json").exists()


@pytest.mark.parametrize("content", [b"", BOM.encode(), b'<?xml version="1.0"?>\n<posts>\n</posts>\n'])
def test_empty_file_is_a_clear_error(tmp_path, capsys, content):
    p = tmp_path / "Posts.xml"
    p.write_bytes(content)
    with pytest.raises(UserError, match=r"Posts\.xml"):
        build_stacocoqa(p, tmp_path / "o", _opts())
    rc = main(["data", "stackexchange", str(p), "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "train.jsonl").exists()


def test_failed_build_leaves_no_output(tmp_path, monkeypatch):
    from rankalign.data.stackexchange import stats

    posts = small_site(tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(stats, "plot_stats", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_stacocoqa(posts, tmp_path / "o", _opts(work_dir=str(work)))
    assert list((tmp_path / "o").iterdir()) == []  # no train/test/summary, no staging folder
    assert list(work.iterdir()) == []  # the parquet work folder is gone
    # over an earlier build: its files stay whole, none is replaced by a half-written one
    monkeypatch.undo()
    build_stacocoqa(posts, tmp_path / "o", _opts(test_fraction=0.0))
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    monkeypatch.setattr(stats, "plot_stats", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_stacocoqa(posts, tmp_path / "o", _opts(test_fraction=0.5))
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before


# ----------------------------------------------------------------------------- wrappers, folders
def _no_site(splits: tuple[list[dict], ...]) -> list[list[dict]]:
    out = []
    for recs in splits:
        for r in recs:
            r["meta"].pop("site")
        out.append(recs)
    return out


def test_compressed_wrappers_give_the_same_records(tmp_path):
    import py7zr
    import zstandard

    posts = small_site(tmp_path)
    raw = posts.read_bytes()
    ref_out = tmp_path / "plain"
    build_stacocoqa(posts, ref_out, _opts())
    ref = _no_site(outputs(ref_out)[:2])
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "Posts.xml.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "bz").mkdir()
    (tmp_path / "bz" / "Posts.xml.bz2").write_bytes(bz2.compress(raw))
    (tmp_path / "zs").mkdir()
    (tmp_path / "zs" / "Posts.xml.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    with py7zr.SevenZipFile(tmp_path / "site.7z", "w") as z:
        z.write(posts, "Posts.xml")
    for dump in (tmp_path / "gz", tmp_path / "bz" / "Posts.xml.bz2", tmp_path / "zs", tmp_path / "site.7z"):
        o = tmp_path / ("out-" + dump.name)
        build_stacocoqa(dump, o, _opts())
        assert _no_site(outputs(o)[:2]) == ref, dump


def test_folder_of_two_sites_in_parallel(tmp_path):
    small_site(tmp_path / "a")
    small_site(tmp_path / "b")
    root = tmp_path / "dump"
    root.mkdir()
    (tmp_path / "a" / "site").rename(root / "alpha")
    (tmp_path / "b" / "site").rename(root / "beta")
    s = build_stacocoqa(root, tmp_path / "o", _opts(workers=2, test_fraction=0.0)).to_dict()
    train, _, _ = outputs(tmp_path / "o")
    assert s["sites"] == ["alpha", "beta"] and s["questions"]["total"] == 6
    assert [r["id"] for r in train] == ["alpha/1", "alpha/2", "beta/1", "beta/2"]
    assert {r["meta"]["site"] for r in train} == {"alpha", "beta"}


# ----------------------------------------------------------------------------- options, CLI
def test_options_are_validated_all_at_once():
    with pytest.raises(ConfigError) as exc:
        StackExchangeOptions.from_dict({"min_answers": 1, "test_fraction": 1.5, "start": "yesterday"})
    text = str(exc.value)
    assert "3 configuration problems" in text and "--min-answers" in text and "--test-fraction" in text
    with pytest.raises(ConfigError, match=r"unknown key 'min_answer' \(did you mean 'min_answers'"):
        StackExchangeOptions.from_dict({"min_answer": 2})
    # strings (from the command line or YAML) become the field types; a bad one is named
    assert StackExchangeOptions.from_dict({"min_answers": "3", "code_filter": "false"}).min_answers == 3
    with pytest.raises(ConfigError, match="min_answers: cannot read 'many' as int"):
        StackExchangeOptions.from_dict({"min_answers": "many"})


def test_cli_end_to_end(tmp_path, capsys):
    posts = small_site(tmp_path)
    out = tmp_path / "o"
    rc = main(["data", "stackexchange", str(posts), "--out", str(out), "-q", "--workers", "1",
               "--min-answer-votes", "0", "--test-fraction", "0.5", "--seed", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "kept 2" in printed and "1 no code block" in printed and "1 answer below min votes" in printed
    train, test, s = outputs(out)
    assert len(train) == 1 and len(test) == 1 and s["options"]["min_answer_votes"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "stats.csv", "stats.md", "stats.png", "summary.json", "test.jsonl", "train.jsonl"]
    rc = main(["data", "stackexchange", str(tmp_path / "nope.xml"), "--out", str(out)])
    assert rc == 2 and "no such dump" in capsys.readouterr().err


def test_parallel_byte_ranges_give_the_same_build(tmp_path, monkeypatch):
    """A plain Posts.xml parsed as byte ranges by 2 processes gives the single-stream build:
    same records, counts (a duplicate Id across the ranges keeps its first row), malformed
    row numbers, and the XML error of a truncated tail at the same line with the same rows_before."""
    from rankalign.data.stackexchange import inputs as se

    rows = []
    for i in range(1, 41):
        body = CODE_Q if i % 3 else INLINE_Q
        rows += [q(i * 10, body, acc=i * 10 + 2), ans(i * 10 + 1, i * 10, "<p>one</p>", i % 4),
                 ans(i * 10 + 2, i * 10, f"<p>two {i}</p>", 5)]
    rows.insert(5, _row(Id=7, PostTypeId=1, Score=1))  # malformed (no CreationDate): row 6
    rows.insert(100, _row(Id=8, PostTypeId=2, Score=1))  # malformed, in the second range: row 101
    rows.insert(110, q(10, PLAIN_Q, acc=11))  # duplicate (second range) of the first question: dropped, counted
    text = (BOM + '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "\n".join(rows) + "\n</posts>\n")
    whole = tmp_path / "whole" / "Posts.xml"
    whole.parent.mkdir()
    whole.write_bytes(text.encode())
    cut = tmp_path / "cut" / "Posts.xml"
    cut.parent.mkdir()
    cut.write_bytes(text.encode()[:-200])  # truncated inside the last rows
    size = whole.stat().st_size
    monkeypatch.setattr(se, "SPLIT_MIN_BYTES", size // 4)
    ranges = se.plan_ranges(whole, 2)
    assert ranges is not None and len(ranges) == 2 and ranges[1].prefix == b"<posts>"
    assert text.encode()[ranges[1].start:ranges[1].start + 5] == b"<row "
    for src in (whole, cut):
        build_stacocoqa(src, tmp_path / f"one-{src.parent.name}", _opts(workers=1))
        build_stacocoqa(src, tmp_path / f"two-{src.parent.name}", _opts(workers=2))
        tr1, te1, s1 = outputs(tmp_path / f"one-{src.parent.name}")
        tr2, te2, s2 = outputs(tmp_path / f"two-{src.parent.name}")
        assert tr1 == tr2 and te1 == te2 and len(tr1) + len(te1) > 30
        for s in (s1, s2):
            s.pop("seconds")
            s["options"].pop("workers")
        assert s1 == s2
        assert s1["rows"]["duplicate id"] == 1 and s1["rows"]["malformed row"] == 2
        assert [e.split(" row ")[1].split(":")[0] for e in s1["examples"]] == ["6", "101"]
    assert s1["parse_errors"] and s1["parse_errors"][0]["line"] > 100


def test_question_chunks_cut_whole_questions_at_the_limits(monkeypatch):
    """The main process cuts the ordered (question, answers...) Arrow stream into chunks of
    whole questions without making Python rows; regrouped, the chunks give back exactly the
    stream grouped naively, and every chunk stops at the first question boundary where
    CONVERT_QUESTIONS questions or CONVERT_CHARS body characters are reached."""
    import random

    import pyarrow as pa

    from rankalign.data.stackexchange import join
    from rankalign.data.stackexchange.records import chunk_columns, group_rows

    rnd = random.Random(7)
    rows = []
    for qid in range(1, 60):
        for kind in [0] + [1] * rnd.randrange(0, 5):
            body = None if rnd.random() < 0.1 else "é" * rnd.randrange(0, 40)
            rows.append((qid, kind, qid * 100 + len(rows), "t", "<a>", body, "2012-01-01", 1, None, None, None))
    cols = list(zip(*rows, strict=True))
    types = [pa.int64(), pa.int32(), pa.int64(), pa.string(), pa.string(), pa.string(), pa.string(),
             pa.int64(), pa.int64(), pa.int64(), pa.int64()]
    table = pa.Table.from_arrays([pa.array(c, t) for c, t in zip(cols, types, strict=True)], names=list(join.STREAM_COLS))
    naive: list[list[tuple]] = []
    for row in rows:
        if not naive or naive[-1][0][0] != row[0]:
            naive.append([])
        naive[-1].append(row)
    for max_q, max_chars in ((4, 10**9), (10**9, 100), (3, 60), (1, 1)):
        monkeypatch.setattr(join, "CONVERT_QUESTIONS", max_q)
        monkeypatch.setattr(join, "CONVERT_CHARS", max_chars)
        sizes = [rnd.randrange(1, 30) for _ in range(40)]
        batches, start = [], 0
        for size in sizes:
            if start < table.num_rows:
                batches.extend(table.slice(start, size).to_batches())
            start += size
        if start < table.num_rows:
            batches.extend(table.slice(start).to_batches())
        chunks = [group_rows(chunk_columns(c)) for c in join.question_chunks(iter(batches))]
        assert [g for c in chunks for g in c] == naive
        for c in chunks[:-1]:  # reference rule: stop after the group that reaches a limit
            chars = [sum(len(r[5] or "") for r in g) for g in c]
            assert len(c) == max_q or sum(chars) >= max_chars
            assert len(c) - 1 < max_q and sum(chars[:-1]) < max_chars  # no limit reached earlier
        assert len(chunks[-1]) <= max_q


def test_pool_workers_do_not_import_pandas():
    """pyarrow would import pandas (~0.4 s per worker) on its first pa.array; the pool's
    initializer stops that, and the Parquet writing path still works without it."""
    from rankalign.data.stackexchange.pipeline import _pool

    with _pool(2) as pool:
        assert pool is not None
        assert pool.submit(_pandas_loaded_after_parquet_write).result() is False


def _pandas_loaded_after_parquet_write() -> bool:
    import io
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays([pa.array([1, None], pa.int64()), pa.array(["a", None], pa.string())],
                                 names=["x", "y"])
    pq.write_table(table, io.BytesIO(), compression="none")
    return "pandas" in sys.modules


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_route_lines_copies_runs_to_their_files(tmp_path, monkeypatch, kernel_copy):
    import array
    import os

    import numpy as np

    from rankalign.data.stackexchange.output import route_lines

    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    lines = [f'{{"id": {i}, "t": "{"x" * (i % 7)}"}}\n'.encode() for i in range(50)]
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines))
    lengths = array.array("I", map(len, lines)).tobytes()
    assign = np.random.default_rng(0).integers(0, 3, size=60).astype(np.uint8)  # longer than the part
    with open(tmp_path / "a", "wb", buffering=0) as fa, open(tmp_path / "b", "wb", buffering=0) as fb:
        assert route_lines(str(part), lengths, assign, (None, fa, fb)) == 50
    for k, name in ((1, "a"), (2, "b")):
        assert (tmp_path / name).read_bytes() == b"".join(ln for ln, w in zip(lines, assign, strict=False) if w == k)


# ----------------------------------------------------------------------------- row checks
def test_row_checks_on_malformed_rows(tmp_path):
    """Each kind of malformed row is counted once and not kept; the kept rows' columns are
    as written (a lowercase ``<code`` marks a code block, an upper-case one does not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankalign.data.stackexchange import parse_posts

    rows = [
        q(1, CODE_Q, acc=11), ans(10, 1, "<p>a</p>"), ans(11, 1, "<p>b</p>"),
        '  <row Id="5" PostTypeId="1" Score="1" Body="x" Title="t" />',                            # no date
        '  <row Id="6" PostTypeId="2" CreationDate="2020-01-01T00:00:00" Score="1" Body="x" />',   # no ParentId
        '  <row PostTypeId="1" CreationDate="2020-01-01T00:00:00" Score="x" Body="x" Title="t" />',  # no Id
        '  <row Id="7" PostTypeId="1" CreationDate="2020-13-01" Score="1" Body="x" Title="t" />',   # bad date
        '  <row Id="8" PostTypeId="1" CreationDate="2020-01-01" Score="1" Body="x" />',             # no Title
        '  <row Id="9" PostTypeId="1" CreationDate="2020-01-01" Score=" 3 " Body="x" Title="t" AcceptedAnswerId="" />',
        '  <row Id="12" PostTypeId="1" CreationDate="2020-01-01" Score="1" Body="x" Title="t" AcceptedAnswerId="z" />',
        '  <row Id="13" PostTypeId="2" ParentId="1" CreationDate="2020-01-01" Score="1" />',         # no Body
        '  <row Id="14" PostTypeId="4" Body="wiki" />', '  <row PostTypeId="5" />', '  <row Id="15" />',
        '  <row Id="16" PostTypeId="2" ParentId="1_0" CreationDate="2020-01-01" Score="-2" Body="y" />',
        '  <row Id="17" PostTypeId="2" ParentId="1" CreationDate="2020-02-29T23:59:59.999999" Score="0" Body="z" />',
        '  <row Id="18" PostTypeId="2" ParentId="1" CreationDate="2019-02-29T00:00:00" Score="0" Body="z" />',
        '  <row Id="19" PostTypeId="1" CreationDate="2020-01-01T00:00:00.5" Score="7" '
        'Body="&lt;codex&gt; &lt;CODE\u00a0x&gt; &amp;amp; &#xA; \u00e9" Title="T &amp; &quot;q&quot;" Tags="&lt;a&gt;" />',
        '  <row Id="20" PostTypeId="1" CreationDate="2020-01-01T00:00:00" Score="1" Body="&lt;code&#x2003;" '
        'Title="" AcceptedAnswerId="+5" />',
        '  <row Id="21" PostTypeId="2" ParentId="1" CreationDate="2020-01-01" Score="99999999999999999999" Body="b" />',
    ]
    posts = write_posts(tmp_path / "s" / "Posts.xml", rows)
    (tmp_path / "w").mkdir()
    r = parse_posts("s", posts, tmp_path / "w", chunk_rows=3)
    t = pa.concat_tables([pq.read_table(c) for c in r.chunks]).sort_by("seq")
    # malformed: 5, 6, no Id, 7, 8, 12, 13, PostTypeId 5 without Id, 15 (no PostTypeId), 18, 21 = 11
    # (Score " 3 " and ParentId "1_0" are ints for Python's int(); 2020-02-29 exists, 2019-02-29 does not)
    assert r.counts["malformed row"] == 11 and r.counts["other post types"] == 1 and r.rows == 20
    assert t.column("id").to_pylist() == [1, 10, 11, 9, 16, 17, 19, 20] and len(r.bad_rows) == 10
    code = dict(zip(t.column("id").to_pylist(), t.column("has_code").to_pylist(), strict=True))
    assert code[1] is True and code[9] is False and code[20] is True  # "<code" + EM SPACE
    assert code[19] is True  # "<codex" does not count, "<CODE" + NO-BREAK SPACE does (any case, any space)
    acc = dict(zip(t.column("id").to_pylist(), t.column("accepted_answer_id").to_pylist(), strict=True))
    assert acc[9] is None and acc[20] == 5
    assert t.filter(pa.compute.equal(t.column("id"), 19)).column("title").to_pylist() == ['T & "q"']


@pytest.mark.parametrize("tail", [
    b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="tru',
    b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="\xff\xfe" />\n</posts>',
    b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="&nbsp;" />\n</posts>',
    b'  <row Id="30" PostTypeId="2" ParentId="2" Score="1" Body="a" /><row Id="31" <',
])
def test_parse_reports_xml_errors_with_the_rows_before(tmp_path, tail):
    from rankalign.data.stackexchange import parse_posts

    p = _broken(tmp_path, tail)
    r = parse_posts("s", p, p.parent)
    assert r.error is not None and r.error["line"] == 9 and r.error["file"] == str(p)
    assert r.error["rows_before"] == r.rows >= 6 and r.counts["questions"] == 2


def test_a_doctype_with_entities_is_parsed(tmp_path):
    import pyarrow.parquet as pq

    from rankalign.data.stackexchange import parse_posts

    posts = tmp_path / "Posts.xml"
    posts.write_text('<?xml version="1.0"?>\n<!DOCTYPE posts [<!ENTITY who "me">]>\n<posts>\n'
                     '  <row Id="1" PostTypeId="1" CreationDate="2020-01-01T00:00:00" Score="1" Body="&who;" '
                     'Title="t" />\n</posts>\n')
    r = parse_posts("s", posts, tmp_path)
    assert r.error is None and pq.read_table(r.chunks[0]).column("body").to_pylist() == ["me"]


# ----------------------------------------------------------------------------- the filter table
def _facts_rows(seed: int, n: int = 400) -> list:
    """Random question facts, consistent as the join stage makes them (an empty pool has no
    votes; the accepted answer is in the pool only when it was found)."""
    import random

    from rankalign.data.stackexchange.filters import QuestionFacts

    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        pool = rnd.choice([0, 1, 2, 3, 5, 9])
        votes = [rnd.randint(-3, 6) for _ in range(pool)]
        found = rnd.random() < 0.8
        out.append(QuestionFacts(
            accepted_answer_id=None if rnd.random() < 0.2 else rnd.randint(1, 10**12), acc_found=found,
            has_code=rnd.random() < 0.5, created=f"{rnd.randint(2009, 2024)}-0{rnd.randint(1, 9)}-01T12:00:00.000",
            acc_ok=found and pool > 0 and rnd.random() < 0.8, pool=pool,
            vmax=max(votes) if votes else None, vmin=min(votes) if votes else None))
    return out


FILTER_OPTIONS = [
    {}, {"code_filter": False}, {"start": "2015-01-01"}, {"end": "2016-03-01T00:00:00"},
    {"start": "2012-05-01", "end": "2020-01-01", "min_answers": 3, "min_vote_spread": 2},
    {"min_vote_spread": 0, "max_answers": 4, "min_answer_votes": 1, "max_question_tokens": 5},
]


@pytest.mark.parametrize("options", FILTER_OPTIONS)
def test_every_filter_gives_the_same_answer_in_sql_and_python(options):
    """Each filter with a SQL form is evaluated by DuckDB (as the join stage does: a NULL
    test passes) and in Python on the same random facts: the same rows fail, and the SQL
    CASE of the join stage names the same first reason as the Python loop of the records stage."""
    import duckdb

    from rankalign.data.stackexchange.filters import (
        ANSWER_FILTERS,
        QUESTION_FILTERS,
        active,
        first_failure,
        sql_case,
        sql_passes,
    )

    opts = _opts(**options)
    rows = _facts_rows(len(str(options)))
    con = duckdb.connect()
    con.execute("CREATE TABLE qstat (accepted_answer_id BIGINT, acc_found BOOLEAN, has_code BOOLEAN, "
                "created VARCHAR, acc_ok BOOLEAN, pool BIGINT, vmax BIGINT, vmin BIGINT)")
    con.executemany("INSERT INTO qstat VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [tuple(r[:8]) for r in rows])
    both = 0  # filters for which both outcomes occur in the sample
    for f in active(QUESTION_FILTERS, opts, sql=True):
        sql = [v for (v,) in con.execute(f"SELECT coalesce(({f.sql(opts)}), FALSE) FROM qstat "
                                         "ORDER BY rowid").fetchall()]
        assert sql == [f.fails(r, opts) for r in rows], f.reason
        both += 0 < sum(sql) < len(rows)
    assert both >= 4
    firsts = [v for (v,) in con.execute(f"SELECT {sql_case(QUESTION_FILTERS, opts)} FROM qstat ORDER BY rowid")
              .fetchall()]
    assert firsts == [first_failure(active(QUESTION_FILTERS, opts, sql=True), r, opts) for r in rows]
    # the answer filters: a.score against the vote threshold
    from rankalign.data.stackexchange.filters import AnswerFacts

    scores = list(range(-4, 8))
    con.execute("CREATE TABLE answers (score BIGINT)")
    con.executemany("INSERT INTO answers VALUES (?)", [(v,) for v in scores])
    sql = [v for (v,) in con.execute(f"SELECT {sql_passes(ANSWER_FILTERS, opts)} FROM answers a "
                                     "ORDER BY rowid").fetchall()]
    py = [first_failure(active(ANSWER_FILTERS, opts, sql=True), AnswerFacts(s), opts) is None for s in scores]
    assert sql == py


def test_filter_table_is_the_one_list_of_reasons():
    """The summary's reasons are the table's, in its order; the filters without a SQL form
    are exactly those that need the texts or that a later answer filter can still change."""
    from rankalign.data.stackexchange.filters import ANSWER_FILTERS, QUESTION_FILTERS

    assert QUESTION_REASONS == tuple(f.reason for f in QUESTION_FILTERS)
    assert [f.reason for f in QUESTION_FILTERS if f.sql is None] == [
        "pool too large", "empty body", "question too long"]
    assert [f.reason for f in ANSWER_FILTERS if f.sql is not None] == ["answer below min votes"]


def test_pool_too_large_is_decided_after_the_answer_filters(tmp_path):
    """A pool of 3 with an empty answer has 2 answers left: with --max-answers 2 it is kept
    (the SQL stage could not have dropped it early)."""
    rows = [q(1, CODE_Q, acc=11), ans(10, 1, " "), ans(11, 1, "<p>b</p>"), ans(12, 1, "<p>c</p>")]
    posts = write_posts(tmp_path / "s" / "Posts.xml", rows)
    s = build_stacocoqa(posts, tmp_path / "o", _opts(max_answers=2, test_fraction=0.0))
    assert s.questions["kept"] == 1 and s.answers["dropped"]["empty answer body"] == 1


# ----------------------------------------------------------------------------- bad input: one line, no traceback
def _cli_error(capsys, argv: list[str]) -> str:
    rc = main(["data", "stackexchange", *argv, "-q", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("rankalign data: error:"), err
    return err


def _compressed(tmp_path: Path, kind: str, damage: str) -> Path:
    import zstandard

    raw = small_site(tmp_path).read_bytes()
    packed = {"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress,
              "zst": zstandard.ZstdCompressor().compress}[kind](raw)
    data = packed[: len(packed) // 2] if damage == "truncated" else b"this is not a compressed file at all" * 40
    p = tmp_path / f"Posts.xml.{kind}"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("kind, tool", [("gz", "gzip -t"), ("bz2", "bzip2 -t"), ("zst", "zstd -t")])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_compressed_dump(tmp_path, capsys, kind, tool, damage):
    p = _compressed(tmp_path, kind, damage)
    err = _cli_error(capsys, [str(p), "--out", str(tmp_path / "o")])
    assert f"{p}: the compressed file is truncated or corrupt" in err and f"`{tool} {p}`" in err
    assert list((tmp_path / "o").iterdir()) == []
    with pytest.raises(UserError, match="truncated or corrupt"):  # in a pool worker too
        build_stacocoqa(p, tmp_path / "o2", _opts(workers=2))


@pytest.mark.parametrize("content", [b"not a 7z archive", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 30])
def test_a_7z_file_that_is_not_an_archive(tmp_path, capsys, content):
    p = tmp_path / "site.7z"
    p.write_bytes(content)
    err = _cli_error(capsys, [str(p), "--out", str(tmp_path / "o")])
    assert f"{p}: the compressed file is truncated or corrupt" in err and "`7z t" in err


def test_output_path_that_is_a_file(tmp_path, capsys):
    posts = small_site(tmp_path)
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    err = _cli_error(capsys, [str(posts), "--out", str(out)])
    assert f"--out {out} is a file, not a folder" in err and out.read_text() == "keep me"
    err = _cli_error(capsys, [str(posts), "--out", str(out / "sub")])  # a folder below a file
    assert "cannot write there" in err


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_output_folder_that_cannot_be_written(tmp_path, capsys):
    posts = small_site(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        err = _cli_error(capsys, [str(posts), "--out", str(out)])
    finally:
        out.chmod(0o700)
    assert "cannot write there" in err


@pytest.mark.parametrize("argv, message", [
    (["--duckdb-memory", "lots"], "--duckdb-memory 'lots' is not a memory size; give a number and a unit"),
    (["--duckdb-memory", "0MB"], "--duckdb-memory '0MB' is not a memory size"),
    (["--duckdb-threads", "0"], "--duckdb-threads must be >= 1, got 0"),
    (["--duckdb-threads", "two"], "duckdb_threads: cannot read 'two' as int"),
    (["--min-answer", "2"], "unrecognized arguments: --min-answer"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    posts = small_site(tmp_path)
    if argv[0] == "--min-answer":  # argparse's own error: usage, then the message, exit 2
        with pytest.raises(SystemExit) as exc:
            main(["data", "stackexchange", str(posts), "--out", str(tmp_path / "o"), *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        return
    assert message in _cli_error(capsys, [str(posts), "--out", str(tmp_path / "o"), *argv])
    assert not (tmp_path / "o").exists()


def test_work_dir_or_duckdb_temp_dir_that_is_a_file(tmp_path, capsys):
    posts = small_site(tmp_path)
    f = tmp_path / "afile"
    f.write_text("x")
    for flag in ("--work-dir", "--duckdb-temp-dir"):
        err = _cli_error(capsys, [str(posts), "--out", str(tmp_path / "o"), flag, str(f)])
        assert f"{flag} {f} is a file, not a folder" in err
    err = _cli_error(capsys, [str(posts), "--out", str(tmp_path / "o"), "--work-dir", str(f / "below")])
    assert f"--work-dir {f / 'below'}: cannot create the work folder there" in err


def test_duckdb_settings_are_used(tmp_path, monkeypatch):
    """--duckdb-memory, --duckdb-threads and --duckdb-temp-dir reach DuckDB; the spill folder
    is created inside the given folder and removed afterwards."""
    import duckdb

    seen = {}
    real = duckdb.connect

    def spy(*args, **kwargs):
        con = real(*args, **kwargs)
        seen.update(kwargs["config"])
        seen["limit"] = con.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()
        return con

    monkeypatch.setattr(duckdb, "connect", spy)
    posts = small_site(tmp_path)
    spill = tmp_path / "spill" / "here"
    s = build_stacocoqa(posts, tmp_path / "o", _opts(duckdb_memory="1GiB", duckdb_threads=3,
                                                     duckdb_temp_dir=str(spill)))
    assert seen["memory_limit"] == "1GiB" and seen["threads"] == 3
    assert seen["temp_directory"].startswith(str(spill)) and seen["limit"] == [("1.0 GiB", 3)]
    assert spill.is_dir() and list(spill.iterdir()) == [] and s.questions["kept"] == 2


# ----------------------------------------------------------------------------- CLI, summary
def test_cli_help_is_generated_from_the_option_fields(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        main(["data", "stackexchange", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(StackExchangeOptions):
        assert f"--{f.name.replace('_', '-')}" in text or f"--{f.name}" in text, f.name
        assert " ".join(f.metadata["help"].split()) in text, f.name


def test_cli_options_reach_the_build(tmp_path):
    posts = small_site(tmp_path)
    out = tmp_path / "o"
    assert main(["data", "stackexchange", str(posts), "--out", str(out), "--code-filter", "false", "--progress",
                 "false", "--workers", "1", "--duckdb-memory", "200MB", "--test-fraction", "0"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["options"]["code_filter"] is False and s["options"]["duckdb_memory"] == "200MB"
    assert s["questions"]["kept"] == 3
    assert main(["data", "stackexchange", str(posts), "--out", str(out), "--no-code-filter", "-q",
                 "--workers", "1"]) == 0
    assert json.loads((out / "summary.json").read_text())["options"]["code_filter"] is False


def test_summary_names_the_parser_versions(tmp_path):
    from lxml import etree

    s = build_stacocoqa(small_site(tmp_path), tmp_path / "o", _opts()).to_dict()
    assert s["versions"]["lxml"] == ".".join(map(str, etree.LXML_VERSION))
    assert s["versions"]["libxml2"] == ".".join(map(str, etree.LIBXML_VERSION))
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["versions"] == s["versions"]
