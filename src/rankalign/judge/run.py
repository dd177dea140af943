"""Judge lists with a chat model and store the order as each record's ``ranking``.

Resumable: every answer is appended (flushed and synced) to ``OUT.judge-cache.jsonl`` as soon
as it arrives, keyed by record id and a hash of judge + prompt; a rerun re-asks only records
with no cached answer (or whose cached attempt failed in transport), so a killed run loses at
most the answer in flight. Unparseable answers and refusals are cached too (asking again with
temperature 0 would give the same) and counted; they are never guessed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.judge.backends import Reply
from rankalign.judge.prompt import PROMPT_VERSION, build_prompt, parse_order


def cache_key(judge_name: str, prompt: str) -> str:
    """Identifies one question to one judge: a changed prompt, wording version or judge is asked anew."""
    return hashlib.sha256(f"{PROMPT_VERSION}\n{judge_name}\n{prompt}".encode()).hexdigest()[:24]


class AnswerCache:
    """Append-only JSONL of judge answers: ``{"id", "key", "status", "answer", "order", "error"}``.

    A last line cut by a kill is ignored; a later line for the same id and key wins.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(row, dict) and "id" in row and "key" in row:
                    self.entries[(str(row["id"]), str(row["key"]))] = row

    def get(self, rid: str, key: str) -> dict[str, Any] | None:
        return self.entries.get((rid, key))

    def add(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[(str(row["id"]), str(row["key"]))] = row


@dataclass
class JudgeSummary:
    """What a judging run did.

    Attributes:
        counts: ``judged`` (ordered), ``unparseable``, ``refused``, ``failed``, ``asked`` (requests
            made now), ``cached`` (answers reused from the cache).
        problems: ``(record id, status, reason)`` for every record left without an order.
        agreement: ``{"community": order_agreement(...), "previous_ranking": ...}`` where computable.
    """

    counts: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)

    def text(self) -> str:
        c = self.counts
        lines = [f"judged {c['judged']} lists; unparseable {c['unparseable']}, refused {c['refused']}, "
                 f"failed {c['failed']} (left out); {c['asked']} asked now, {c['cached']} from the cache"]
        for name, a in self.agreement.items():
            lines.append(f"agreement with the {name.replace('_', ' ')} order over {a['lists']} lists: "
                         f"Kendall tau {a['kendall_tau']:.3f}, top-1 {a['top1']:.3f}")
        for rid, status, reason in self.problems[:10]:
            lines.append(f"  {status}: record id={rid!r}: {reason}")
        if len(self.problems) > 10:
            lines.append(f"  ... and {len(self.problems) - 10} more (answers in the cache)")
        return "\n".join(lines)


def judge_records(records: Sequence[Any], judge: Callable[[str], Reply], judge_name: str, cache: AnswerCache, *,
                  max_answer_chars: int = 4000, progress: bool = False) -> tuple[list[Any], JudgeSummary]:
    """Ask ``judge`` for each record's order (cached), and return the judged copies and a summary.

    Each judged record is a copy with ``ranking`` = the judge's order (0-based, best first) and
    ``meta["judge"]`` = ``{"model", "prompt_version", "raw_answer", "previous_ranking"}``.
    Records without a parseable order are left out and listed in the summary.
    """
    from tqdm.auto import tqdm

    from rankalign.evaluation.metrics import order_agreement

    summary = JudgeSummary()
    judged = []
    for rec in tqdm(records, desc="judging", unit="list", disable=not progress):
        prompt = build_prompt(rec, max_answer_chars)
        key = cache_key(judge_name, prompt)
        rid = str(rec.id)
        row = cache.get(rid, key)
        if row is not None and row.get("status") != "failed":
            summary.counts["cached"] += 1
        else:
            reply = judge(prompt)
            summary.counts["asked"] += 1
            row = {"id": rid, "key": key, "judge": judge_name, "prompt_version": PROMPT_VERSION,
                   "status": reply.status, "answer": reply.text, "order": None, "error": reply.error,
                   "attempts": reply.attempts}
            if reply.status == "ok":
                parsed = parse_order(reply.text or "", rec.num_responses)
                row["order"], row["error"] = parsed.order, parsed.error
                if parsed.order is None:
                    row["status"] = "unparseable"
            cache.add(row)
        if row["status"] != "ok":
            summary.counts[row["status"]] += 1
            summary.problems.append((rid, row["status"], str(row.get("error"))))
            continue
        out = copy.deepcopy(rec)
        out.meta["judge"] = {"model": judge_name, "prompt_version": PROMPT_VERSION, "raw_answer": row["answer"],
                             "previous_ranking": rec.ranking}
        out.ranking = [int(i) for i in row["order"]]
        judged.append(out)
        summary.counts["judged"] += 1
    with_votes = [r for r in judged if any("votes" in x.attributes or "accepted" in x.attributes
                                           for x in r.responses)]
    if with_votes:
        summary.agreement["community"] = order_agreement([r.ranking for r in with_votes],
                                                         [r.community_order() for r in with_votes])
    with_prev = [r for r in judged if r.meta["judge"]["previous_ranking"] is not None]
    if with_prev:
        summary.agreement["previous_ranking"] = order_agreement([r.ranking for r in with_prev],
                                                                [r.meta["judge"]["previous_ranking"]
                                                                 for r in with_prev])
    return judged, summary


def make_judge(opts: Any) -> tuple[Callable[[str], Reply], str]:
    """The judge the options name, and its name for provenance."""
    from rankalign.judge.backends import LocalChatModel, endpoint_from_env

    if opts.base_url is not None:
        ep = endpoint_from_env(opts.base_url, opts.model, opts.api_key_env, max_retries=opts.max_retries,
                               backoff_s=opts.backoff_s, timeout_s=opts.timeout_s, max_tokens=opts.max_tokens)
        return ep, ep.name
    path = None if opts.local_model == "default" else opts.local_model
    local = LocalChatModel(path, max_new_tokens=opts.max_tokens, max_prompt_tokens=opts.max_prompt_tokens,
                           trust_remote_code=opts.trust_remote_code)
    return local, local.name


def judge_file(opts: Any, *, judge: Callable[[str], Reply] | None = None, judge_name: str | None = None
               ) -> JudgeSummary:
    """Read ``opts.data``, judge every list, write the judged records to ``opts.out`` (atomically).

    Raises:
        ConfigError: bad options (all listed at once); UserError: an unwritable output, an
            unreachable endpoint, a rejected key.
    """
    from rankalign.data.io import check_output_path, read_selected_records, write_records

    opts.validate()
    check_output_path(opts.out)
    records, _ = read_selected_records(opts.data, on_error=opts.on_error, split=opts.split, limit=opts.limit,
                                       purpose="judge")
    if judge is None:
        judge, judge_name = make_judge(opts)
    cache = AnswerCache(opts.cache_path)
    judged, summary = judge_records(records, judge, judge_name or "judge", cache,
                                    max_answer_chars=opts.max_answer_chars, progress=opts.progress)
    write_records(judged, opts.out)
    return summary
