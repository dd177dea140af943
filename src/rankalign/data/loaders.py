"""Loaders for public preference data sets -> list-wise :class:`ListRecord` (SPEC §2, §3).

Every loader has the signature::

    load_<name>(source, *, report=None, on_error="skip", limit=None, **options) -> list[ListRecord]

``source`` is a path (JSON Lines read line by line, a ``.json`` array, ``.parquet``, or a
``datasets`` folder saved with ``save_to_disk``) or an iterable of row dicts (e.g. a
``datasets.Dataset``). A row that cannot be converted is counted in ``report`` under a
reason (``"invalid JSON"``, ``"missing chosen"``, ``"invalid responses"``, ...) and the load
goes on; with ``on_error="raise"`` the first malformed row raises :class:`RecordError`
naming the row and the field instead. Rows that are well formed but carry no list-wise
preference (an OASST1 reply without a rank, an HH pair whose two dialogues differ before
the last assistant turn, two identical responses) are *always* counted skips, never errors.

:data:`LOADERS` maps a format name to its loader; :func:`load_dataset_file` dispatches on
it and also accepts ``hf:NAME[:SPLIT]`` to read a Hugging Face hub data set (network on the
user's side only).

Formats and the reading taken for each (details in each loader's docstring):

- ``oasst1``: OpenAssistant message trees (or the flat message table); one list per
  prompter message with >= 2 ranked assistant replies, gold ``ranking`` from ``rank``.
- ``hh_rlhf``: Anthropic HH-RLHF ``{chosen, rejected}`` dialogues -> list of 2.
- ``pku_saferlhf``: PKU-SafeRLHF pairs with helpfulness / harmlessness attributes.
- ``ultrafeedback``: binarized rows (list of 2 with ratings) or raw rows with
  ``completions`` (list of M with ``overall_score``).
- ``stack_exchange_preferences``: HuggingFaceH4/stack-exchange-preferences rows.
- ``pro``: PRO's own ``{prefix, suffix, reward, sft_index}`` files.
- ``generic``: records already in the §2 shape (delegates to :func:`read_records`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rankalign.data.io import LoadReport, _arrow_row_to_dict, iter_jsonl, read_records
from rankalign.data.record import ListRecord, RecordError, parse_datetime
from rankalign.errors import UserError

Source = str | os.PathLike[str] | Iterable[dict[str, Any]]
Loader = Callable[..., list[ListRecord]]

__all__ = [
    "LOADERS",
    "Skip",
    "available_formats",
    "iter_rows",
    "load_dataset_file",
    "load_generic",
    "load_hh_rlhf",
    "load_oasst1",
    "load_pku_saferlhf",
    "load_pro",
    "load_stack_exchange_preferences",
    "load_ultrafeedback",
]


class Skip(Exception):
    """A well-formed row that yields no list (counted under ``reason``, never raised to the user)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------------------- reading rows
def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _reason(exc: RecordError) -> str:
    """A short counter key for a record error: ``missing <field>`` or ``invalid <field>``."""
    root = exc.field.split("[")[0].split(".")[0]
    if root == "<json>":
        return "invalid JSON"
    if root == "<row>":
        return "invalid row"
    if root == "responses" and exc.field.endswith(".text") and exc.problem.startswith("missing"):
        return "empty response text"
    return f"missing {root}" if exc.problem.startswith("missing") else f"invalid {root}"


def iter_rows(source: Source, *, report: LoadReport, on_error: str = "skip") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` from a file, folder or iterable, streaming JSON Lines line by line.

    ``where`` names the row in messages (``"train.jsonl line 12"``, ``"row 3"``). Lines that
    are not valid JSON are counted in ``report`` as ``"invalid JSON"`` (or raise a
    :class:`RecordError` with ``on_error="raise"``).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an unsupported file type.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        if p.is_dir():
            import datasets

            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                raise UserError(f"{p} holds several splits {list(ds)}; point at one split's folder")
            for i, row in enumerate(ds):
                yield f"{p.name} row {i}", dict(row)
            return
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            i = 0
            for batch in pq.ParquetFile(p).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield f"{p.name} row {i}", row
                    i += 1
            return
        if suffix == ".json":
            with open(p, encoding="utf-8-sig") as fh:
                head = fh.read(4096).lstrip()
            if head.startswith("["):
                try:
                    rows = json.loads(p.read_text(encoding="utf-8-sig"))
                except json.JSONDecodeError as exc:
                    raise RecordError(p.name, "<json>", f"invalid JSON array: {exc}") from None
                for i, row in enumerate(rows):
                    yield f"{p.name} item {i}", row
                return
        elif suffix not in (".jsonl", ".jsonlines", ".ndjson"):
            raise ValueError(f"unsupported input {p.name!r}: use .jsonl, .json, .parquet or a datasets folder")
        yield from iter_jsonl(p, on_error=on_error, report=report)
        return
    from tqdm.auto import tqdm

    total = len(source) if hasattr(source, "__len__") else None  # type: ignore[arg-type]
    for i, row in enumerate(tqdm(source, desc="reading rows", total=total, disable=None, leave=False)):
        yield f"row {i}", row


def _stem(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name.split(".")[0] or "row"
    return "row"


def _index_of(where: str) -> str:
    """The trailing number of a ``where`` label (line/row number), used to make stable ids."""
    return where.rsplit(" ", 1)[-1]


class _Collector:
    """Validates converted records, drops duplicate ids, counts everything, honours ``limit``."""

    def __init__(self, report: LoadReport, on_error: str, limit: int | None) -> None:
        _check_on_error(on_error)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.report = report
        self.on_error = on_error
        self.limit = limit
        self.records: list[ListRecord] = []
        self.seen: set[str] = set()

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.records) >= self.limit

    def add(self, make: Callable[[], Iterable[ListRecord]], where: str) -> None:
        """Run ``make`` (a row's conversion) and keep its records, counting skips and errors."""
        try:
            recs = list(make())
        except Skip as skip:
            self.report.skip(skip.reason, skip.message)
            return
        except RecordError as exc:
            if self.on_error == "raise":
                raise
            self.report.skip(_reason(exc), str(exc))
            return
        for rec in recs:
            if self.full:
                return
            if rec.id in self.seen:
                if self.on_error == "raise":
                    raise RecordError(where, "id", f"duplicate id {rec.id!r}", "ids must be unique within a file")
                self.report.skip("duplicate id", f"{where}: duplicate id {rec.id!r}")
                continue
            self.seen.add(rec.id)
            self.records.append(rec)
            self.report.kept += 1


def _run(
    source: Source,
    convert: Callable[[dict[str, Any], str], Iterable[ListRecord]],
    *,
    report: LoadReport | None,
    on_error: str,
    limit: int | None,
) -> list[ListRecord]:
    report = report if report is not None else LoadReport()
    col = _Collector(report, on_error, limit)
    for where, row in iter_rows(source, report=report, on_error=on_error):
        if col.full:
            break

        def make(row: Any = row, where: str = where) -> Iterable[ListRecord]:
            if not isinstance(row, dict):
                raise RecordError(where, "<row>", f"expected a JSON object, got {type(row).__name__}")
            return convert(row, where)

        col.add(make, where)
    return col.records


# ---------------------------------------------------------------------------- field helpers
def _get(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *, fix: str = "") -> Any:
    """``row[key]`` checked against ``kind``; a :class:`RecordError` naming the field otherwise."""
    if key not in row or row[key] is None:
        raise RecordError(where, key, "missing", fix)
    value = row[key]
    bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if not isinstance(value, kind) or bad_bool:
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RecordError(where, key, f"expected {names}, got {type(value).__name__} {value!r:.60}", fix)
    return value


def _number(value: Any, where: str, field_name: str) -> float:
    """A finite float from an int/float (or a numeric string, as some exports write ratings)."""
    if isinstance(value, bool):
        raise RecordError(where, field_name, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RecordError(where, field_name, f"expected a number, got {value!r:.60}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise RecordError(where, field_name, f"expected a finite number, got {value!r:.60}")
    return float(value)


def _distinct(texts: list[str], where: str) -> None:
    """Skip a list whose responses are all the same text (no preference can be learned)."""
    if len({t.strip() for t in texts}) < 2:
        raise Skip("identical responses", f"{where}: all responses have the same text")


# ---------------------------------------------------------------------------- OASST1
_OASST_ROLE = {"prompter": "User", "assistant": "Assistant"}


def _oasst_attributes(msg: dict[str, Any]) -> dict[str, Any]:
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
    return "\n\n".join(f"{_OASST_ROLE.get(t['role'], t['role'])}: {t['text']}" for t in turns)


def _oasst_walk(
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
    if role not in _OASST_ROLE or not isinstance(text, str) or not isinstance(mid, str):
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
            responses = [{"text": r.get("text"), "attributes": _oasst_attributes(r)} for r in ranked]
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
        yield from _oasst_walk(reply, turns, tree_id=tree_id, where=where, context=context, report=report)


def load_oasst1(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    context: str = "turns",
) -> list[ListRecord]:
    """Load OpenAssistant OASST1 into lists of sibling assistant replies ranked by humans.

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

    Args:
        source: path or iterable of rows (see the module docstring).
        report: filled with kept/skipped counts.
        on_error: ``"skip"`` counts malformed rows; ``"raise"`` raises :class:`RecordError`.
        limit: stop after this many records.
        context: ``"turns"`` or ``"last"`` (see above).
    Returns:
        The records, in tree order (depth first).
    """
    if context not in ("turns", "last"):
        raise ValueError(f"context must be 'turns' or 'last', got {context!r}")
    report = report if report is not None else LoadReport()
    col = _Collector(report, on_error, limit)
    flat: list[tuple[str, dict[str, Any]]] = []

    def from_tree(row: dict[str, Any], where: str) -> Iterator[ListRecord]:
        root = _get(row, "prompt", dict, where, fix="a tree row is {message_tree_id, prompt: {...}}")
        if root.get("deleted"):
            raise Skip("reply deleted", f"{where}: the tree's first message is deleted")
        tree_id = str(row.get("message_tree_id") or root.get("message_id"))
        return _oasst_walk(root, [], tree_id=tree_id, where=where, context=context, report=report)

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
        _oasst_from_flat(flat, col, context=context)
    return col.records


def _oasst_from_flat(flat: list[tuple[str, dict[str, Any]]], col: _Collector, *, context: str) -> None:
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
        col.add(lambda root=root, where=where, tree_id=tree_id: _oasst_walk(
            root, [], tree_id=tree_id, where=where, context=context, report=col.report), where)


# ---------------------------------------------------------------------------- HH-RLHF
_HH_ASSISTANT = "\n\nAssistant:"


def _split_dialogue(text: str, where: str, field_name: str) -> tuple[str, str]:
    """Split an HH dialogue at its last ``"\\n\\nAssistant:"``: (dialogue so far + marker, reply)."""
    cut = text.rfind(_HH_ASSISTANT)
    if cut < 0:
        raise RecordError(where, field_name, f"has no {_HH_ASSISTANT!r} turn",
                          "HH-RLHF dialogues alternate '\\n\\nHuman:' and '\\n\\nAssistant:' turns")
    end = cut + len(_HH_ASSISTANT)
    return text[:end], text[end:].strip()


def load_hh_rlhf(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
) -> list[ListRecord]:
    """Load Anthropic HH-RLHF ``{"chosen", "rejected"}`` dialogues as lists of 2.

    Each dialogue is split at its last ``"\\n\\nAssistant:"``: ``prompt`` is the dialogue up
    to and including that marker (the model is cued to answer, as in the data set's own
    convention and PRO's ``"\\n\\nHuman: ...\\n\\nAssistant:"`` prefixes), the response is
    the text after it, stripped. Both dialogues must give the same prompt, else the row is
    a counted skip ``"prompts differ"``. ``ranking`` is ``[0, 1]`` (chosen first).
    ``id`` = ``<file stem>-<line or row number>`` (the data set has no ids).
    An empty reply fails validation (``"invalid responses"``); identical replies are
    skipped (``"identical responses"``).
    """
    stem = _stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        chosen = _get(row, "chosen", str, where)
        rejected = _get(row, "rejected", str, where)
        p_chosen, r_chosen = _split_dialogue(chosen, where, "chosen")
        p_rejected, r_rejected = _split_dialogue(rejected, where, "rejected")
        if p_chosen != p_rejected:
            raise Skip("prompts differ", f"{where}: chosen and rejected differ before the last assistant turn")
        if r_chosen and r_chosen == r_rejected:
            _distinct([r_chosen, r_rejected], where)
        return [ListRecord.from_dict({
            "id": row.get("id", f"{stem}-{_index_of(where)}"),
            "prompt": p_chosen,
            "responses": [{"text": r_chosen}, {"text": r_rejected}],
            "ranking": [0, 1],
            "meta": {"source": "hh_rlhf"},
        }, where=where)]

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- PKU-SafeRLHF
def _binary_id(row: dict[str, Any], key: str, where: str) -> int:
    value = _get(row, key, int, where, fix="expected 0 or 1")
    if value not in (0, 1):
        raise RecordError(where, key, f"expected 0 or 1, got {value!r}")
    return int(value)


def load_pku_saferlhf(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
) -> list[ListRecord]:
    """Load PKU-SafeRLHF pairs as lists of 2 with helpfulness and harmlessness attributes.

    Rows: ``prompt``, ``response_0/1``, ``better_response_id``, ``safer_response_id``,
    ``is_response_*_safe`` (seed 000 App. B uses the two attributes).

    Response ``i`` gets ``helpfulness`` = 1 if ``better_response_id == i`` else 0,
    ``harmlessness`` = 1 if ``safer_response_id == i`` else 0, ``safe`` =
    ``is_response_i_safe``, and where present ``severity`` (``response_i_severity_level``),
    ``harm_categories`` (the names flagged true) and ``model`` (``response_i_source``).
    Responses keep the input order; ``ranking`` is the *helpfulness* order (better
    response first), the data set's primary preference; the safety preference is in the
    attributes and in ``meta["safer_id"]`` (what SaferHit, SPEC §7, uses as gold).
    ``id`` = ``<file stem>-<line or row number>``.
    """
    stem = _stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        prompt = _get(row, "prompt", str, where)
        texts = [_get(row, f"response_{i}", str, where) for i in (0, 1)]
        better = _binary_id(row, "better_response_id", where)
        safer = _binary_id(row, "safer_response_id", where)
        _distinct(texts, where)
        responses = []
        for i, text in enumerate(texts):
            attrs: dict[str, Any] = {
                "helpfulness": 1.0 if better == i else 0.0,
                "harmlessness": 1.0 if safer == i else 0.0,
            }
            safe = row.get(f"is_response_{i}_safe")
            if safe is not None:
                if not isinstance(safe, bool):
                    raise RecordError(where, f"is_response_{i}_safe", f"expected true/false, got {safe!r}")
                attrs["safe"] = safe
            severity = row.get(f"response_{i}_severity_level")
            if severity is not None:
                attrs["severity"] = _number(severity, where, f"response_{i}_severity_level")
            cats = row.get(f"response_{i}_harm_category")
            if isinstance(cats, dict):
                attrs["harm_categories"] = sorted(k for k, v in cats.items() if v)
            model = row.get(f"response_{i}_source")
            if isinstance(model, str):
                attrs["model"] = model
            responses.append({"text": text, "attributes": attrs})
        meta: dict[str, Any] = {"source": "pku_saferlhf", "better_id": better, "safer_id": safer}
        if isinstance(row.get("prompt_source"), str):
            meta["prompt_source"] = row["prompt_source"]
        return [ListRecord.from_dict({
            "id": row.get("id", f"{stem}-{_index_of(where)}"),
            "prompt": prompt,
            "responses": responses,
            "ranking": [better, 1 - better],
            "meta": meta,
        }, where=where)]

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- UltraFeedback
def _message_text(value: Any, where: str, field_name: str) -> str:
    """A response given as a string or as a chat message list (the last assistant turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        for msg in reversed(value):
            if isinstance(msg, dict) and msg.get("role") == "assistant" and isinstance(msg.get("content"), str):
                return msg["content"]
        raise RecordError(where, field_name, "message list has no assistant turn with string content")
    raise RecordError(where, field_name, f"expected a string or a message list, got {type(value).__name__}")


def _ultrafeedback_raw(row: dict[str, Any], where: str, rid: str, score_key: str) -> ListRecord:
    prompt = _get(row, "instruction", str, where)
    completions = _get(row, "completions", list, where)
    responses = []
    scores = []
    for i, comp in enumerate(completions):
        fname = f"completions[{i}]"
        if not isinstance(comp, dict):
            raise RecordError(where, fname, f"expected an object, got {type(comp).__name__}")
        text = comp.get("response")
        if not isinstance(text, str):
            raise RecordError(where, f"{fname}.response", "missing or not a string")
        attrs: dict[str, Any] = {}
        if isinstance(comp.get("model"), str):
            attrs["model"] = comp["model"]
        for key in ("overall_score", "fine-grained_score"):
            if comp.get(key) is not None:
                attrs[key.replace("-", "_")] = _number(comp[key], where, f"{fname}.{key}")
        annotations = comp.get("annotations")
        if isinstance(annotations, dict):
            for aspect, ann in annotations.items():
                rating = ann.get("Rating") if isinstance(ann, dict) else None
                try:
                    value = float(rating)  # "N/A" and missing ratings are left out
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):  # so are "nan"/"inf" (float() parses them)
                    attrs[f"rating_{aspect}"] = value
        key = score_key.replace("-", "_")
        if key not in attrs:
            raise RecordError(where, f"{fname}.{score_key}", "missing",
                              "choose another score_key (overall_score, fine_grained_score)")
        scores.append(attrs[key])
        responses.append({"text": text, "attributes": attrs})
    _distinct([r["text"] for r in responses], where)
    meta = {"source": "ultrafeedback"}
    if isinstance(row.get("source"), str):
        meta["origin"] = row["source"]
    return ListRecord.from_dict(
        {"id": rid, "prompt": prompt, "responses": responses, "scores": scores, "meta": meta}, where=where
    )


def load_ultrafeedback(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    score_key: str = "overall_score",
) -> list[ListRecord]:
    """Load UltraFeedback, binarized (lists of 2) or raw (lists of M), with explicit scores.

    Binarized rows ``{prompt, chosen, rejected, ...}``: ``chosen``/``rejected`` are strings or
    chat message lists (the last assistant turn is taken); ``scores`` = ``[score_chosen,
    score_rejected]`` or ``metadata.rating_chosen/rating_rejected``; ``ranking`` ``[0, 1]``;
    models go to the attributes. Raw rows ``{instruction, completions: [{response,
    overall_score, fine-grained_score, annotations{aspect: {Rating}}, model}]}``: one
    response per completion, ``scores`` from ``score_key`` (``overall_score`` by default),
    every numeric aspect rating as ``rating_<aspect>``; no ``ranking`` (the order is
    descending ``scores``, SPEC §5). ``id`` = ``prompt_id``/``id`` or ``<stem>-<line>``.
    Rows whose responses are identical are counted skips (``"identical responses"``).
    """
    stem = _stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        rid = row.get("prompt_id") or row.get("id") or f"{stem}-{_index_of(where)}"
        if "completions" in row or "instruction" in row:
            return [_ultrafeedback_raw(row, where, str(rid), score_key)]
        prompt = _get(row, "prompt", str, where, fix="binarized rows have prompt/chosen/rejected; raw rows "
                                                     "have instruction/completions")
        texts = [_message_text(_get(row, k, (str, list), where), where, k) for k in ("chosen", "rejected")]
        meta_in = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        scores = []
        for k in ("chosen", "rejected"):
            if row.get(f"score_{k}") is not None:
                scores.append(_number(row[f"score_{k}"], where, f"score_{k}"))
            elif meta_in.get(f"rating_{k}") is not None:
                scores.append(_number(meta_in[f"rating_{k}"], where, f"metadata.rating_{k}"))
            else:
                raise RecordError(where, f"score_{k}", "missing",
                                  f"give score_{k} or metadata.rating_{k}")
        _distinct(texts, where)
        responses = []
        for k, text in zip(("chosen", "rejected"), texts):
            attrs: dict[str, Any] = {}
            model = meta_in.get(f"{k}_model")
            if isinstance(model, str):
                attrs["model"] = model
            responses.append({"text": text, "attributes": attrs})
        meta: dict[str, Any] = {"source": "ultrafeedback"}
        if isinstance(meta_in.get("source"), str):
            meta["origin"] = meta_in["source"]
        return [ListRecord.from_dict({
            "id": rid, "prompt": prompt, "responses": responses, "ranking": [0, 1], "scores": scores,
            "meta": meta,
        }, where=where)]

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- H4 stack-exchange-preferences
def _html_to_text(html: str) -> str:
    """Plain text of StackExchange HTML, code blocks fenced (the dump pipeline's converter)."""
    from rankalign.data.se_html import html_to_text

    return html_to_text(html)


def _looks_like_html(text: str) -> bool:
    return "<" in text and ">" in text and any(tag in text for tag in ("<p>", "<pre", "<code>", "<br", "<a ", "<ul>"))


def load_stack_exchange_preferences(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    html: str = "text",
) -> list[ListRecord]:
    """Load HuggingFaceH4/stack-exchange-preferences rows (seed 000's 8-domain experiments).

    Row: ``{qid, question, answers: [{answer_id, author, pm_score, selected, text}], date,
    metadata}``. ``id`` = ``qid``; ``prompt`` = the question; one response per answer with
    attributes ``votes`` = ``pm_score`` (note: H4's *preference-model* score, a log-scaled
    transform of the raw votes with a bonus for the accepted answer — monotone in the
    votes, so the community order is the same), ``accepted`` = ``selected``,
    ``answer_id``, ``author``. The row's ``date`` is the *question's* date, so it goes to
    ``meta["created"]`` (ISO 8601) and not to the answers (SPEC §4: an answer without a
    date gets no popularity decay — the same result as one shared date). No ``ranking``:
    the order is the community's (accepted first, then votes, SPEC §5).

    Args:
        html: ``"text"`` (default) converts the HTML of questions and answers to plain text
            with fenced code blocks; ``"keep"`` stores it unchanged.
    """
    if html not in ("text", "keep"):
        raise ValueError(f"html must be 'text' or 'keep', got {html!r}")

    def clean(text: str) -> str:
        return _html_to_text(text) if html == "text" and _looks_like_html(text) else text

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        qid = _get(row, "qid", (str, int), where)
        question = _get(row, "question", str, where)
        answers = _get(row, "answers", list, where)
        responses = []
        for i, ans in enumerate(answers):
            fname = f"answers[{i}]"
            if not isinstance(ans, dict):
                raise RecordError(where, fname, f"expected an object, got {type(ans).__name__}")
            text = ans.get("text")
            if not isinstance(text, str):
                raise RecordError(where, f"{fname}.text", "missing or not a string")
            pm_score = ans.get("pm_score")
            if pm_score is None:
                raise RecordError(where, f"{fname}.pm_score", "missing", "every answer needs its pm_score")
            if isinstance(pm_score, str):
                raise RecordError(where, f"{fname}.pm_score", f"expected a number, got {pm_score!r:.60}")
            attrs: dict[str, Any] = {
                "votes": _number(pm_score, where, f"{fname}.pm_score"),
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

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- PRO
def _pro_prefix(prefix: Any, where: str, i: int) -> str:
    """One PRO prefix as text: a string, or a list of turns joined with the ``<|prompter|>``/
    ``<|assistant|>`` markers replaced by HH's ``"\\n\\nHuman: "``/``"\\n\\nAssistant: "``."""
    if isinstance(prefix, list) and all(isinstance(p, str) for p in prefix):
        text = "".join(prefix)
    elif isinstance(prefix, str):
        text = prefix
    else:
        raise RecordError(where, f"prefix[{i}]", "expected a string or a list of strings")
    return text.replace("<|prompter|>", "\n\nHuman: ").replace("<|assistant|>", "\n\nAssistant: ").rstrip()


def load_pro(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
) -> list[ListRecord]:
    """Load PRO's own prefix/suffix/reward training files (seed 001) as scored lists.

    The format is that of DAMO-ConvAI/PRO ``train/*_preprocess_data``. Each line is ``{"prefix": [p_1..p_n], "suffix": [s_1..s_n], "reward": [r_1..r_n],
    "sft_index": 0, "meta": <source>}``: candidate ``k`` is ``prefix[k] + suffix[k]``; a
    prefix is a string or a list of turn strings marked ``<|prompter|>``/``<|assistant|>``
    (rendered as ``"\\n\\nHuman: "``/``"\\n\\nAssistant: "``, trailing space stripped, as
    PRO's data collator does). Every candidate must share the prefix (else a counted skip
    ``"prefixes differ"``). PRO trains on the file order (y^1 best; its preprocessing
    sorts candidates by reward), so ``ranking`` = ``[0..n-1]`` and ``scores`` = ``reward``
    (PRO's temperatures, eq. 8-9; files made without a reward model carry all 1.0).
    ``sft_index`` and the source go to ``meta``. ``id`` = ``<stem>-<line>``.
    """
    stem = _stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        prefixes = _get(row, "prefix", list, where)
        suffixes = _get(row, "suffix", list, where)
        if len(prefixes) != len(suffixes):
            raise RecordError(where, "suffix", f"has {len(suffixes)} items for {len(prefixes)} prefixes",
                              "prefix and suffix need one entry per candidate")
        prompts = {_pro_prefix(p, where, i) for i, p in enumerate(prefixes)}
        if len(prompts) > 1:
            raise Skip("prefixes differ", f"{where}: candidates have {len(prompts)} different prefixes")
        reward = row.get("reward")
        scores = None
        if reward is not None:
            if not isinstance(reward, list) or len(reward) != len(suffixes):
                raise RecordError(where, "reward", f"needs one number per candidate ({len(suffixes)})")
            scores = [_number(r, where, f"reward[{i}]") for i, r in enumerate(reward)]
        for i, s in enumerate(suffixes):
            if not isinstance(s, str):
                raise RecordError(where, f"suffix[{i}]", f"expected a string, got {type(s).__name__}")
        _distinct(suffixes, where)
        meta: dict[str, Any] = {"source": "pro"}
        if row.get("sft_index") is not None:
            meta["sft_index"] = row["sft_index"]
        if isinstance(row.get("meta"), str):
            meta["origin"] = row["meta"]
        rec: dict[str, Any] = {
            "id": row.get("id", f"{stem}-{_index_of(where)}"),
            "prompt": prompts.pop() if prompts else "",
            "responses": [{"text": s.strip()} for s in suffixes],
            "ranking": list(range(len(suffixes))),
            "meta": meta,
        }
        if scores is not None:
            rec["scores"] = scores
        return [ListRecord.from_dict(rec, where=where)]

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- generic
def load_generic(
    source: Source,
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
) -> list[ListRecord]:
    """Load records already in the SPEC §2 shape (JSONL, Parquet, a datasets folder, or rows).

    Files and folders go through :func:`read_records`.

    Rows from an Arrow source written by :func:`write_records` (JSON-string ``attributes``
    and ``meta``) are decoded first.
    """
    report = report if report is not None else LoadReport()
    _check_on_error(on_error)
    if isinstance(source, (str, os.PathLike)) and limit is None:
        return read_records(source, on_error=on_error, report=report)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        try:
            row = _arrow_row_to_dict(row, where)
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise RecordError(where, "responses", f"undecodable attributes/meta: {exc}") from None
        return [ListRecord.from_dict(row, where=where)]

    return _run(source, convert, report=report, on_error=on_error, limit=limit)


# ---------------------------------------------------------------------------- registry
#: format name -> loader; ``rankalign data formats`` lists these.
LOADERS: dict[str, Loader] = {
    "oasst1": load_oasst1,
    "hh_rlhf": load_hh_rlhf,
    "pku_saferlhf": load_pku_saferlhf,
    "ultrafeedback": load_ultrafeedback,
    "stack_exchange_preferences": load_stack_exchange_preferences,
    "pro": load_pro,
    "generic": load_generic,
}


def available_formats() -> dict[str, str]:
    """Format name -> the first line of its loader's docstring."""
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in LOADERS.items()}


def _hf_rows(spec: str) -> Any:
    """Rows of ``hf:NAME[:SPLIT]`` via ``datasets.load_dataset`` (network on the user's side)."""
    body = spec[len("hf:"):]
    name, _, split = body.partition(":")
    if not name:
        raise UserError(f"{spec!r}: give a data set name, e.g. hf:Anthropic/hh-rlhf:test")
    import datasets

    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # offline, unknown name, missing split: one clear message
        raise UserError(
            f"could not load Hugging Face data set {name!r} (split {split or 'train'!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(this needs network access to the hub, or a local copy: download the files and "
            "pass their path instead)"
        ) from None


def load_dataset_file(
    fmt: str,
    path: str | os.PathLike[str] | Iterable[dict[str, Any]],
    *,
    report: LoadReport | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    **options: Any,
) -> list[ListRecord]:
    """Load ``path`` with the loader of format ``fmt`` (see :data:`LOADERS`).

    Args:
        fmt: a key of :data:`LOADERS`.
        path: a file, a ``datasets`` folder, rows, or ``"hf:NAME[:SPLIT]"`` (split ``train``
            by default) to read a hub data set with ``datasets.load_dataset``.
        report: filled with kept/skipped counts.
        on_error: ``"skip"`` or ``"raise"``.
        limit: keep at most this many records.
        options: loader-specific keywords (e.g. ``context`` for oasst1).
    Raises:
        UserError: an unknown format or option, or an unreachable hub data set.
    """
    if fmt not in LOADERS:
        raise UserError(f"unknown data format {fmt!r}; choose one of {', '.join(LOADERS)}")
    loader = LOADERS[fmt]
    import inspect

    allowed = [p for p in inspect.signature(loader).parameters if p not in ("source", "report", "on_error", "limit")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for format {fmt!r}; it takes {allowed or 'none'}")
    source: Any = path
    if isinstance(path, str) and path.startswith("hf:"):
        source = _hf_rows(path)
    return loader(source, report=report, on_error=on_error, limit=limit, **options)
