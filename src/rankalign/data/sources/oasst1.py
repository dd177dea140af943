"""OpenAssistant OASST1: sibling assistant replies with human ranks, real list-wise gold rankings.

Köpf et al., "OpenAssistant Conversations -- Democratizing Large Language Model Alignment",
arXiv:2304.07327.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources.base import Collector, Skip, Source, get_field, iter_rows
from rankalign.data.sources.registry import register_source

_ROLE = {"prompter": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class OASST1Options:
    """Options of the ``oasst1`` source."""

    context: Literal["turns", "last"] = field(default="turns", metadata={
        "help": "prompt of a reply deeper in a tree: 'turns' renders the conversation so far "
                "(User: ... / Assistant: ...), 'last' keeps only the prompter's message"})


def _attributes(msg: dict[str, Any]) -> dict[str, Any]:
    """Attributes of one assistant reply: rank, message id, emoji counts and label means."""
    attrs: dict[str, Any] = {"rank": msg.get("rank"), "message_id": msg.get("message_id")}
    emojis = msg.get("emojis")
    counts: dict[str, Any] = {}
    if isinstance(emojis, dict):
        if "name" in emojis and "count" in emojis:  # flat table: {"name": [...], "count": [...]}
            counts = dict(zip(emojis.get("name") or [], emojis.get("count") or []))
        else:  # tree export: {"+1": 3, "-1": 1, ...}
            counts = {str(k): v for k, v in emojis.items()}
    for src, dst in (("+1", "thumbs_up"), ("-1", "thumbs_down")):
        value = counts.get(src, 0)
        attrs[dst] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
    labels = msg.get("labels")
    if isinstance(labels, dict):
        if "name" in labels and "value" in labels:  # flat table: parallel lists
            items = dict(zip(labels.get("name") or [], labels.get("value") or []))
        else:  # tree export: {"quality": {"value": 0.75, "count": 4}, ...}
            items = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in labels.items()}
        for name, value in items.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                attrs[f"label_{name}"] = float(value)
    if msg.get("synthetic") is not None:
        attrs["synthetic"] = bool(msg.get("synthetic"))
    return attrs


def _render_turns(turns: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{_ROLE.get(t['role'], t['role'])}: {t['text']}" for t in turns)


def _walk(
    node: dict[str, Any],
    history: list[dict[str, str]],
    *,
    tree_id: str,
    where: str,
    context: str,
    report: LoadReport,
) -> Iterator[ListRecord]:
    """Depth-first walk of one (non-deleted) message; yields one record per ranked prompter turn."""
    role = node.get("role")
    text = node.get("text")
    mid = node.get("message_id")
    if role not in _ROLE or not isinstance(text, str) or not isinstance(mid, str):
        raise RecordError(where, f"message {mid!r}", "needs a string message_id and text and role prompter/assistant")
    turns = [*history, {"role": role, "text": text}]
    replies = node.get("replies") or []
    if not isinstance(replies, list):
        raise RecordError(where, f"message {mid}.replies", "must be a list")
    alive = []
    for reply in replies:
        if not isinstance(reply, dict):
            raise RecordError(where, f"message {mid}.replies", "every reply must be an object")
        if reply.get("deleted"):
            report.skip("reply deleted", f"{where}: message {reply.get('message_id')} is deleted (with its subtree)")
            continue
        alive.append(reply)
    if role == "prompter":
        ranked = []
        for reply in alive:
            if reply.get("role") != "assistant":
                continue
            rank = reply.get("rank")
            if rank is None:
                report.skip("reply without rank", f"{where}: reply {reply.get('message_id')} to {mid} has no rank")
                continue
            if isinstance(rank, bool) or not isinstance(rank, (int, float)) or not math.isfinite(rank):
                raise RecordError(where, f"message {reply.get('message_id')}.rank", f"expected a number, got {rank!r}")
            ranked.append(reply)
        if len(ranked) >= 2:
            responses = [{"text": r.get("text"), "attributes": _attributes(r)} for r in ranked]
            ranking = sorted(range(len(ranked)), key=lambda i: ranked[i]["rank"])  # stable: ties keep input order
            depth = len(history)
            prompt = text if context == "last" or depth == 0 else _render_turns(turns)
            meta = {
                "source": "oasst1",
                "tree_id": tree_id,
                "depth": depth,
                "lang": node.get("lang"),
                "history": history,
            }
            yield ListRecord.from_dict(
                {"id": mid, "prompt": prompt, "responses": responses, "ranking": ranking, "meta": meta},
                where=where,
            )
        elif alive and any(r.get("role") == "assistant" for r in alive):
            report.skip("prompt with < 2 ranked replies",
                        f"{where}: prompter message {mid} has {len(ranked)} ranked reply(ies)")
    for reply in alive:
        yield from _walk(reply, turns, tree_id=tree_id, where=where, context=context, report=report)


@register_source("oasst1", options=OASST1Options)
def load_oasst1(
    source: Source, options: OASST1Options, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """OpenAssistant OASST1 message trees -> lists of sibling assistant replies ranked by humans.

    Accepts the tree export (one ``{"message_tree_id", "prompt": {message, "replies": [...]}}``
    per line) and the flat message table of the hub data set (one message per row with
    ``message_id``/``parent_id``; the trees are rebuilt after the whole input is read).

    For every prompter message (at any depth of a tree) whose non-deleted assistant replies
    include at least two with a ``rank``, one record is made:

    - ``id`` = the prompter message's ``message_id``;
    - ``prompt``: the prompter text at the root. Deeper in a tree (``context="turns"``,
      the default) the conversation so far rendered as plain turns,
      ``"User: ...\\n\\nAssistant: ...\\n\\nUser: <this message>"``, so the list is
      answerable on its own; ``context="last"`` keeps only the prompter text. The prior
      turns are always kept in ``meta["history"]`` as ``[{"role", "text"}]``;
    - ``responses``: the ranked replies in input order, attributes ``rank``,
      ``message_id``, ``thumbs_up``/``thumbs_down`` (emoji ``+1``/``-1`` counts), numeric
      ``label_<name>`` means where present, ``synthetic``;
    - ``ranking``: replies by ``rank`` ascending (0 = best), ties in input order.

    Counted skips: ``"reply deleted"`` (its subtree is not walked), ``"reply without rank"``
    (one per unranked assistant reply), ``"prompt with < 2 ranked replies"`` (a prompter
    message with assistant replies but fewer than two ranked).

    Returns:
        The records, in tree order (depth first).
    """
    context = options.context
    col = Collector(report, on_error, limit)
    flat: list[tuple[str, dict[str, Any]]] = []

    def from_tree(row: dict[str, Any], where: str) -> Iterator[ListRecord]:
        root = get_field(row, "prompt", dict, where, fix="a tree row is {message_tree_id, prompt: {...}}")
        if root.get("deleted"):
            raise Skip("reply deleted", f"{where}: the tree's first message is deleted")
        tree_id = str(row.get("message_tree_id") or root.get("message_id"))
        return _walk(root, [], tree_id=tree_id, where=where, context=context, report=report)

    for where, row in iter_rows(source, report=report, on_error=on_error):
        if col.full:
            break
        if isinstance(row, dict) and "prompt" not in row and "message_id" in row:
            flat.append((where, row))
            continue

        def make(row: Any = row, where: str = where) -> Iterable[ListRecord]:
            if not isinstance(row, dict):
                raise RecordError(where, "<row>", f"expected a JSON object, got {type(row).__name__}")
            return from_tree(row, where)

        col.add(make, where)

    if flat and not col.full:
        _from_flat(flat, col, context=context)
    return col.records


def _from_flat(flat: list[tuple[str, dict[str, Any]]], col: Collector, *, context: str) -> None:
    """Rebuild trees from flat message rows (``message_id``, ``parent_id``) and walk them."""
    nodes: dict[str, dict[str, Any]] = {}
    where_of: dict[str, str] = {}
    for where, row in flat:
        mid = row.get("message_id")
        if not isinstance(mid, str):
            col.add(lambda where=where: (_ for _ in ()).throw(
                RecordError(where, "message_id", "missing or not a string")), where)
            continue
        nodes[mid] = {**row, "replies": []}
        where_of[mid] = where
    roots = []
    for mid, node in nodes.items():
        parent = node.get("parent_id")
        if parent is None:
            roots.append(node)
        elif parent in nodes:
            nodes[parent]["replies"].append(node)
        else:
            col.report.skip("parent message missing", f"{where_of[mid]}: parent {parent} of {mid} not in the input")
    for root in roots:
        if col.full:
            return
        if root.get("deleted"):
            col.report.skip("reply deleted", f"{where_of[root['message_id']]}: the tree's first message is deleted")
            continue
        where = where_of[root["message_id"]]
        tree_id = str(root.get("message_tree_id") or root["message_id"])
        col.add(lambda root=root, where=where, tree_id=tree_id: _walk(
            root, [], tree_id=tree_id, where=where, context=context, report=col.report), where)
