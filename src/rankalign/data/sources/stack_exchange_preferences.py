"""HuggingFaceH4/stack-exchange-preferences: questions with all their answers and vote-based scores.

The 8-domain StackExchange experiments of SeAdpra (Yang, Zhao, Hu, Li, "Self-supervised
Attribute-aware Dynamic Preference Ranking Alignment", arXiv:2502.12189) use these rows.
For the raw data dumps (``Posts.xml``), see ``rankalign data stackexchange``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord, RecordError, parse_datetime
from rankalign.data.sources.base import Skip, Source, convert_rows, get_field, text_items, to_number
from rankalign.data.sources.registry import register_source


@dataclass(frozen=True)
class StackExchangePreferencesOptions:
    """Options of the ``stack_exchange_preferences`` source."""

    html: Literal["text", "keep"] = field(default="text", metadata={
        "help": "'text' converts the HTML of questions and answers to plain text with fenced code blocks; "
                "'keep' stores it unchanged"})


def _html_to_text(html: str) -> str:
    """Plain text of StackExchange HTML, code blocks fenced (the dump pipeline's converter)."""
    from rankalign.data.se_html import html_to_text

    return html_to_text(html)


def _looks_like_html(text: str) -> bool:
    return "<" in text and ">" in text and any(tag in text for tag in ("<p>", "<pre", "<code>", "<br", "<a ", "<ul>"))


@register_source("stack_exchange_preferences", options=StackExchangePreferencesOptions)
def load_stack_exchange_preferences(
    source: Source, options: StackExchangePreferencesOptions, *, report: LoadReport, on_error: str,
    limit: int | None,
) -> list[ListRecord]:
    """HuggingFaceH4/stack-exchange-preferences rows -> one list of answers per question.

    Row: ``{qid, question, answers: [{answer_id, author, pm_score, selected, text}], date,
    metadata}``. ``id`` = ``qid``; ``prompt`` = the question; one response per answer with
    attributes ``votes`` = ``pm_score`` (note: H4's *preference-model* score, a log-scaled
    transform of the raw votes with a bonus for the accepted answer — monotone in the
    votes, so the community order is the same), ``accepted`` = ``selected``,
    ``answer_id``, ``author``. The row's ``date`` is the *question's* date, so it goes to
    ``meta["created"]`` (ISO 8601) and not to the answers (an answer without a date gets
    no popularity decay in the SeAdpra attributes — the same result as one shared date).
    No ``ranking``: the training order is the community's (accepted first, then votes, see
    ``ListRecord.preference_order``). Questions with fewer than 2 answers are counted
    skips (``"fewer than 2 answers"``).
    """
    html = options.html

    def clean(text: str) -> str:
        return _html_to_text(text) if html == "text" and _looks_like_html(text) else text

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        qid = get_field(row, "qid", (str, int), where)
        question = get_field(row, "question", str, where)
        answers = get_field(row, "answers", list, where)
        responses = []
        for fname, ans, text in text_items(answers, "answers", "text", where):
            pm_score = ans.get("pm_score")
            if pm_score is None:
                raise RecordError(where, f"{fname}.pm_score", "missing", "every answer needs its pm_score")
            if isinstance(pm_score, str):
                raise RecordError(where, f"{fname}.pm_score", f"expected a number, got {pm_score!r:.60}")
            attrs: dict[str, Any] = {
                "votes": to_number(pm_score, where, f"{fname}.pm_score"),
                "accepted": bool(ans.get("selected", False)),
            }
            for key in ("answer_id", "author"):
                if ans.get(key) is not None:
                    attrs[key] = ans[key]
            responses.append({"text": clean(text), "attributes": attrs})
        if len(responses) < 2:
            raise Skip("fewer than 2 answers", f"{where}: question {qid} has {len(responses)} answer(s)")
        meta: dict[str, Any] = {"source": "stack_exchange_preferences"}
        date = row.get("date")
        if date is not None:
            try:
                meta["created"] = parse_datetime(str(date).replace("/", "-")).isoformat()
            except ValueError:
                raise RecordError(where, "date", f"unparseable date {date!r}", "expected e.g. 2008/09/13") from None
        if isinstance(row.get("metadata"), list):
            meta["urls"] = [u for u in row["metadata"] if isinstance(u, str)]
        return [ListRecord.from_dict(
            {"id": qid, "prompt": clean(question), "responses": responses, "meta": meta}, where=where)]

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
