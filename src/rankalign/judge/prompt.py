"""The judging prompt and the parsing of a judge's answer.

The prompt follows the labelling rules of SeAdpra's Figure 12 (Yang et al., arXiv:2502.12189,
App. A): rank the candidates by semantic relevance first, then by popularity (votes, weighed
by the answer's age), lower outdated answers, break relevance ties by popularity, compare all
candidates, ignore presentation order and length, explain briefly, and end with the order as a
list of answer numbers. The wording is the project's own, written for any list size M, and
shows votes and creation time only where the record has them.

Parsing never guesses: the order is the *last* bracketed list of integers in the answer (or,
when there is none, a last line such as ``2 > 1 > 3``); it must be a permutation of 1..M, or
the answer is unparseable and recorded as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: stored in each judged record's ``meta.judge.prompt_version``; change it when the wording changes
PROMPT_VERSION = "seadpra-fig12-v1"

_RULES = (
    "You are an experienced member of a question-and-answer community. Rank the {m} answers below "
    "from best to worst for the question. Do not refuse: every answer must get a place.\n"
    "Rank first by semantic relevance: how directly and correctly an answer addresses the question. "
    "Then weigh popularity: the votes an answer received, judged against its creation time, since older "
    "answers had longer to collect votes. Lower your preference for answers whose content is outdated, so "
    "that an old answer is not favoured for its votes alone. When two answers are equally relevant, prefer "
    "the more popular one, and continue the ranking in the same way.\n"
    "Compare all {m} answers and explain your choices briefly. Stay objective: neither the order in which "
    "the answers are shown nor their length may influence the ranking."
)


def _attr(resp: Any, name: str) -> str | None:
    value = resp.attributes.get(name)
    return None if value is None else str(value)


def build_prompt(record: Any, max_answer_chars: int = 4000) -> str:
    """The judging prompt for one list (:class:`rankalign.data.record.ListRecord`).

    Each answer is shown as ``Answer i`` (1-based, in the record's order) with its votes and
    creation time when present; an answer longer than ``max_answer_chars`` is cut there and
    marked ``[... cut]``.
    """
    m = record.num_responses
    parts = [_RULES.format(m=m), "", "### Question", record.prompt.strip(), ""]
    for i, resp in enumerate(record.responses, 1):
        facts = [f"{label}: {v}" for label, v in (("votes", _attr(resp, "votes")),
                                                  ("created", _attr(resp, "created"))) if v is not None]
        text = resp.text.strip()
        if len(text) > max_answer_chars:
            text = text[:max_answer_chars] + " [... cut]"
        head = f"### Answer {i}" + (f" ({', '.join(facts)})" if facts else "")
        parts += [head, text, f"### End of answer {i}", ""]
    example = _example(m)
    parts.append(f"After the short explanations, end your reply with the ranking alone: the {m} answer numbers "
                 f"from best to worst as one list, for example {example}.")
    return "\n".join(parts)


def _example(m: int) -> list[int]:
    """The example order shown to the judge: answers 2 and 1 swapped, the rest in order."""
    return [2, 1, *range(3, m + 1)]


@dataclass
class Parsed:
    """A parsed answer: ``order`` (0-based, best first) or ``error`` (why it is unparseable)."""

    order: list[int] | None
    error: str | None = None


_BRACKETED = re.compile(r"\[\s*([0-9][0-9\s,;>]*)\]")
_LAST_LINE = re.compile(r"^\s*(?:[A-Za-z ]*:\s*)?(\d+(?:\s*(?:,|>|;)\s*\d+)+)\s*\.?\s*$")


def parse_order(answer: str, m: int) -> Parsed:
    """The order in a judge's ``answer`` for a list of ``m`` candidates.

    >>> parse_order("Answer 2 is best ... [2, 1, 3]", 3).order
    [1, 0, 2]
    >>> parse_order("I cannot assist with that.", 3).error
    'no ranking found (expected a list like [2, 1, 3] at the end)'
    """
    text = answer or ""
    found = _BRACKETED.findall(text)
    if found:
        raw = found[-1]
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        match = _LAST_LINE.match(lines[-1]) if lines else None
        if match is None:
            return Parsed(None, f"no ranking found (expected a list like {_example(m)} at the end)")
        raw = match.group(1)
    nums = [int(x) for x in re.split(r"[\s,;>]+", raw.strip()) if x]
    if sorted(nums) != list(range(1, m + 1)):
        return Parsed(None, f"the last ranking {nums} is not a permutation of 1..{m}")
    return Parsed([n - 1 for n in nums])
