"""The question and answer filters of StaCoCoQA, each defined once.

StaCoCoQA (Yang, Zhao, Hu, Li, "Self-supervised Attribute-aware Dynamic Preference Ranking
Alignment", arXiv:2502.12189, §3.1) keeps questions with an accepted answer (step 1) and a
code block (step 2), cleans the HTML (step 3) and keeps lists of at least two answers. Each
:class:`Filter` below holds one rule as a Python predicate and, where DuckDB can decide it
before the HTML is converted, as a SQL expression over the same names. The join stage
(:mod:`.join`) turns the SQL forms into one ``CASE`` (:func:`sql_case`); the records stage
(:mod:`.records`) runs every Python form on the converted texts (:func:`first_failure`).
Both count a question under the FIRST filter it fails, in table order, so
``questions = kept + sum(dropped)``.

A filter has no SQL form when it needs the texts (empty body, token limits) or when the
answer filters that run later, on the texts, could still change its outcome: the pool only
shrinks, so "pool too small" and "vote spread too small" can be decided early, but "pool too
large" cannot.

==========================  =====================================================================
``no accepted answer``      no ``AcceptedAnswerId`` (step 1)
``accepted answer missing`` ``AcceptedAnswerId`` names no answer of this question in the dump
``no code block``           the question body has no ``<code>`` (step 2; off with ``code_filter=False``)
``outside time window``     question ``CreationDate`` not in ``[start, end)``
``accepted answer filtered`` an answer filter dropped the accepted answer (step 1 needs it in the pool)
``pool too small``          fewer than ``min_answers`` answers left
``pool too large``          more than ``max_answers`` answers left
``vote spread too small``   max - min votes of the pool < ``min_vote_spread``
``empty body``              question body (as text) is empty
``question too long``       question (title + text) longer than ``max_question_tokens``
==========================  =====================================================================

Answer filters (an answer of a kept question is dropped and counted under the first it
fails): ``answer below min votes`` (Score < ``min_answer_votes``), ``empty answer body``,
``answer too long`` (> ``max_answer_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from rankalign.data.stackexchange.options import StackExchangeOptions


class QuestionFacts(NamedTuple):
    """What the question filters look at. The SQL forms read the same names as columns of
    the join stage's ``qstat`` table; ``text``, ``prompt`` and ``count_tokens`` exist only
    after the HTML conversion."""

    accepted_answer_id: int | None
    acc_found: bool  # the accepted answer is an answer of this question in the dump
    has_code: bool
    created: str
    acc_ok: bool  # the accepted answer is still in the pool
    pool: int  # answers left in the pool
    vmax: int | None  # largest / smallest Score in the pool (None for an empty pool)
    vmin: int | None
    text: str | None = None
    prompt: str | None = None
    count_tokens: Callable[[str], int] | None = None


class AnswerFacts(NamedTuple):
    """What the answer filters look at (the SQL forms read ``a.score``)."""

    score: int
    text: str | None = None
    count_tokens: Callable[[str], int] | None = None


@dataclass(frozen=True)
class Filter:
    """One filter: ``fails(facts, opts)`` is true for a question (or answer) it drops;
    ``sql(opts)``, where given, is the same test as a DuckDB expression; ``applies(opts)``
    says whether the options switch it on."""

    reason: str
    fails: Callable[[Any, StackExchangeOptions], bool]
    sql: Callable[[StackExchangeOptions], str] | None = None
    applies: Callable[[StackExchangeOptions], bool] = lambda o: True


def _outside_window(created: str, o: StackExchangeOptions) -> bool:
    start, end = o.start_iso(), o.end_iso()
    return (start is not None and created < start) or (end is not None and created >= end)


def _window_sql(o: StackExchangeOptions) -> str:
    parts = []
    if o.start:
        parts.append(f"created < '{o.start_iso()}'")
    if o.end:
        parts.append(f"created >= '{o.end_iso()}'")
    return " OR ".join(parts)


QUESTION_FILTERS: tuple[Filter, ...] = (
    Filter("no accepted answer", lambda f, o: f.accepted_answer_id is None, lambda o: "accepted_answer_id IS NULL"),
    Filter("accepted answer missing", lambda f, o: not f.acc_found, lambda o: "NOT acc_found"),
    Filter("no code block", lambda f, o: not f.has_code, lambda o: "NOT has_code", lambda o: o.code_filter),
    Filter("outside time window", lambda f, o: _outside_window(f.created, o), _window_sql,
           lambda o: bool(o.start or o.end)),
    Filter("accepted answer filtered", lambda f, o: not f.acc_ok, lambda o: "NOT acc_ok"),
    Filter("pool too small", lambda f, o: f.pool < o.min_answers, lambda o: f"pool < {int(o.min_answers)}"),
    Filter("pool too large", lambda f, o: f.pool > o.max_answers, None, lambda o: o.max_answers is not None),
    Filter("vote spread too small", lambda f, o: f.vmax is not None and f.vmax - f.vmin < o.min_vote_spread,
           lambda o: f"vmax - vmin < {int(o.min_vote_spread)}", lambda o: o.min_vote_spread is not None),
    Filter("empty body", lambda f, o: not f.text),
    Filter("question too long", lambda f, o: f.count_tokens(f.prompt) > o.max_question_tokens, None,
           lambda o: o.max_question_tokens is not None),
)

ANSWER_FILTERS: tuple[Filter, ...] = (
    Filter("answer below min votes", lambda a, o: a.score < o.min_answer_votes,
           lambda o: f"a.score < {int(o.min_answer_votes)}", lambda o: o.min_answer_votes is not None),
    Filter("empty answer body", lambda a, o: not a.text),
    Filter("answer too long", lambda a, o: a.count_tokens(a.text) > o.max_answer_tokens, None,
           lambda o: o.max_answer_tokens is not None),
)

#: drop reasons, in the order they are checked
QUESTION_REASONS = tuple(f.reason for f in QUESTION_FILTERS)
ANSWER_REASONS = tuple(f.reason for f in ANSWER_FILTERS)


def active(filters: Sequence[Filter], opts: StackExchangeOptions, *, sql: bool = False) -> list[Filter]:
    """The filters the options switch on (with ``sql``: only those with a SQL form)."""
    return [f for f in filters if f.applies(opts) and (f.sql is not None or not sql)]


def first_failure(filters: Sequence[Filter], facts: Any, opts: StackExchangeOptions) -> str | None:
    """The reason of the first filter of ``filters`` (already :func:`active`) that ``facts`` fails."""
    for f in filters:
        if f.fails(facts, opts):
            return f.reason
    return None


def sql_case(filters: Sequence[Filter], opts: StackExchangeOptions) -> str:
    """``CASE WHEN <fails> THEN '<reason>' ... END``: the first active SQL filter failed
    (NULL when none is). A NULL test counts as passed, as in :func:`first_failure`'s forms."""
    cases = [f"WHEN ({f.sql(opts)}) THEN '{f.reason}'" for f in active(filters, opts, sql=True)]  # type: ignore[misc]
    return f"CASE {' '.join(cases)} ELSE NULL END" if cases else "NULL"


def sql_passes(filters: Sequence[Filter], opts: StackExchangeOptions) -> str:
    """A SQL condition true when no active SQL filter fails (``TRUE`` when none is active)."""
    tests = [f"({f.sql(opts)})" for f in active(filters, opts, sql=True)]  # type: ignore[misc]
    return f"NOT coalesce({' OR '.join(tests)}, FALSE)" if tests else "TRUE"
