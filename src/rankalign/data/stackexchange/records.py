"""Records: HTML to text, the filters that need the texts, and the list-wise records of a
chunk of candidate questions (runs in a pool worker, which writes the chunk's records to a
file of its own and returns only counts and statistics).

A record (:class:`~rankalign.data.record.ListRecord`'s JSON form) is the question (title,
blank line, text) as the prompt and the answers of its pool as the responses, in the dump's
order (ascending answer Id, i.e. creation order, not sorted by votes: the input order carries
no preference), each with ``votes``, ``created``, ``accepted`` (the questioner's pick) and
``post_id`` (and ``up``/``down`` with a Votes.xml). Token counts: a whitespace word count by
default; with ``tokenizer`` the tokens without special tokens (``trust_remote_code`` is never set).
"""

from __future__ import annotations

import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.data.record import ListRecord
from rankalign.data.stackexchange.filters import (
    ANSWER_FILTERS,
    QUESTION_FILTERS,
    AnswerFacts,
    QuestionFacts,
    active,
    first_failure,
)
from rankalign.data.stackexchange.html_text import has_code_block, html_to_texts
from rankalign.data.stackexchange.join import STREAM_COLS
from rankalign.data.stackexchange.options import StackExchangeOptions
from rankalign.data.stackexchange.stats import count_pool
from rankalign.errors import UserError

_TOKEN_COUNTERS: dict[str | None, Callable[[str], int]] = {}


def token_counter(tokenizer: str | None) -> Callable[[str], int]:
    """The token counter of the length filters (whitespace words, or a Hugging Face
    tokenizer), made once per process."""
    counter = _TOKEN_COUNTERS.get(tokenizer)
    if counter is not None:
        return counter
    if tokenizer is None:
        counter = _count_words
    else:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"--tokenizer {tokenizer!r} could not be loaded ({exc}); give a local tokenizer "
                            "folder or a model name available offline") from None
        counter = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    _TOKEN_COUNTERS[tokenizer] = counter
    return counter


def _count_words(text: str) -> int:
    return len(text.split())


def split_tags(tags: str | None) -> list[str]:
    """``<a><b>`` (classic dumps) or ``|a|b|`` (newer dumps) -> ``["a", "b"]``."""
    if not tags:
        return []
    if tags.startswith("<"):
        return [t for t in tags[1:-1].split("><") if t]
    return [t for t in tags.split("|") if t]


def group_rows(columns: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """The columns of a chunk -> one list of row tuples per question (rows of the same qid)."""
    groups: list[list[tuple[Any, ...]]] = []
    for row in zip(*columns, strict=True):
        if not groups or row[0] != groups[-1][0][0]:
            groups.append([])
        groups[-1].append(row)
    return groups


def chunk_columns(data: bytes) -> list[list[Any]]:
    """An Arrow IPC chunk of :func:`~.join.question_chunks` -> its columns (:data:`STREAM_COLS`) as lists."""
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    return [table.column(name).to_pylist() for name in STREAM_COLS]


@dataclass
class Counts:
    """Questions and answers dropped, by reason."""

    dropped: Counter = field(default_factory=Counter)
    answers_dropped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class _Context:
    opts: StackExchangeOptions
    count_tokens: Callable[[str], int]
    question_filters: list[Any]
    answer_filters: list[Any]
    has_votes: bool
    site: str
    id_prefix: str


def _responses(group: list[tuple[Any, ...]], texts: list[str], ctx: _Context, counts: Counts
               ) -> list[dict[str, Any]]:
    """The responses of a question that pass the answer filters (the others are counted)."""
    acc_id = group[0][8]
    responses = []
    for (_q, _k, a_id, _t, _g, _b, a_created, a_score, _acc, a_up, a_down), text in zip(group[1:], texts[1:],
                                                                                        strict=True):
        reason = first_failure(ctx.answer_filters, AnswerFacts(a_score, text, ctx.count_tokens), ctx.opts)
        if reason is not None:
            counts.answers_dropped[reason] += 1
            continue
        attrs: dict[str, Any] = {"votes": a_score, "created": a_created, "accepted": a_id == acc_id,
                                 "post_id": str(a_id)}
        if ctx.has_votes:
            attrs["up"] = a_up
            attrs["down"] = a_down
        responses.append({"text": text, "attributes": attrs})
    return responses


def question_record(group: list[tuple[Any, ...]], texts: list[str], ctx: _Context, counts: Counts
                    ) -> dict[str, Any] | None:
    """One candidate question and its pool (rows in :data:`STREAM_COLS` order, ``texts``
    their bodies as text) -> the record's JSON form, or ``None`` when a filter drops it
    (counted under the first filter it fails)."""
    _qid, _kind, q_id, q_title, q_tags, q_body, q_created, q_score, acc_id, q_up, q_down = group[0]
    title = (q_title or "").strip()
    responses = _responses(group, texts, ctx, counts)
    votes = [r["attributes"]["votes"] for r in responses]
    prompt = f"{title}\n\n{texts[0]}"
    facts = QuestionFacts(
        accepted_answer_id=acc_id, acc_found=any(row[2] == acc_id for row in group[1:]),
        has_code=has_code_block(q_body), created=q_created,
        acc_ok=any(r["attributes"]["accepted"] for r in responses), pool=len(responses),
        vmax=max(votes) if votes else None, vmin=min(votes) if votes else None,
        text=texts[0], prompt=prompt, count_tokens=ctx.count_tokens)
    reason = first_failure(ctx.question_filters, facts, ctx.opts)
    if reason is not None:
        counts.dropped[reason] += 1
        return None
    meta = {"title": title, "tags": split_tags(q_tags), "accepted_answer_id": str(acc_id),
            "created": q_created, "score": q_score, "site": ctx.site, "source": "stackexchange",
            "question_id": str(q_id)}
    if ctx.has_votes:
        meta["up"] = q_up
        meta["down"] = q_down
    return {"id": f"{ctx.id_prefix}{q_id}", "prompt": prompt, "responses": responses, "meta": meta}


@dataclass
class ConvertResult:
    """What one conversion chunk produced: its JSON-lines file (and, with a sample, the
    ``.info`` file beside it: ``[year, responses, tags]`` per record), statistics and drops."""

    path: str
    lengths: bytes  # the byte length of each record's line, as uint32
    years: dict[int, dict[int, int]]
    tags: Counter
    kept: int
    questions: int
    counts: Counts


def convert_chunk(args: tuple[bytes, StackExchangeOptions, bool, str, str, str]) -> ConvertResult:
    """HTML to text, the text filters and the records of a chunk of candidate questions,
    written to the file ``path`` (one JSON object per line, as orjson writes it).

    Every field is valid by construction (ints from Arrow, dates checked while parsing,
    non-empty stripped texts, at least ``min_answers`` >= 2 responses); the chunk's first
    record is still read back with :meth:`ListRecord.from_dict` as a guard against drift.
    """
    import orjson

    data, opts, has_votes, site, id_prefix, path = args
    ctx = _Context(opts, token_counter(opts.tokenizer), active(QUESTION_FILTERS, opts), active(ANSWER_FILTERS, opts),
                   has_votes, site, id_prefix)
    columns = chunk_columns(data)
    texts = html_to_texts(columns[5])
    counts = Counts()
    lines: list[bytes] = []
    stats: list[tuple[int, int, list[str]]] = []  # (year, responses, tags) per record
    groups = group_rows(columns)
    start = 0
    for group in groups:
        rec = question_record(group, texts[start:start + len(group)], ctx, counts)
        start += len(group)
        if rec is None:
            continue
        if not lines:
            ListRecord.from_dict(rec, where=f"site {site} question {rec['id']}")
        lines.append(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
        stats.append((int(rec["meta"]["created"][:4]), len(rec["responses"]), rec["meta"]["tags"]))
    with open(path, "wb") as fh:
        fh.write(b"".join(lines))
    if opts.sample is not None:  # the statistics of a sample are counted from these
        with open(Path(path).with_suffix(".info"), "wb") as fh:
            fh.write(b"".join(orjson.dumps(s, option=orjson.OPT_APPEND_NEWLINE) for s in stats))
    years: dict[int, dict[int, int]] = {}
    tags: Counter = Counter()
    for year, n_resp, rec_tags in stats:
        count_pool(years, year, n_resp)
        tags.update(rec_tags)
    return ConvertResult(path, array.array("I", map(len, lines)).tobytes(), years, tags, len(stats), len(groups),
                         counts)
