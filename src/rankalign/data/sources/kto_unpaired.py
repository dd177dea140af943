"""Unpaired feedback for KTO: rows ``{prompt, response, label | score}``, grouped by prompt.

KTO (Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization",
arXiv:2402.01306) learns from a binary signal per response — desirable or undesirable —
and needs no pairs and no ranking. This source reads such rows and writes each prompt's
responses as one list-wise record whose responses carry ``attributes["desirable"]``
(docs/methods.md#kto-unpaired); ``kto`` trains on those labels instead of the list's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources.base import (
    Collector,
    Skip,
    Source,
    file_stem,
    get_field,
    iter_rows,
    row_number,
    to_number,
)
from rankalign.data.sources.registry import register_source
from rankalign.errors import ConfigError

#: label values read as desirable / undesirable (strings compared case-insensitively)
DESIRABLE = ("desirable", "true", "1", "yes", "good")
UNDESIRABLE = ("undesirable", "false", "0", "no", "bad")


@dataclass(frozen=True)
class KTOUnpairedOptions:
    """Options of the ``kto_unpaired`` source."""

    prompt_field: str = field(default="prompt", metadata={"help": "the row field holding the prompt"})
    response_field: str = field(default="response", metadata={
        "help": "the row field holding the response (TRL's KTO files call it 'completion')"})
    label_field: str = field(default="label", metadata={
        "help": "the row field holding the explicit label: true/false, 1/0, or 'desirable'/'undesirable' "
                "(used unless score_field is given)"})
    score_field: str | None = field(default=None, metadata={
        "help": "label by a threshold on this numeric field instead (score >= threshold is desirable); "
                "needs --threshold"})
    threshold: float | None = field(default=None, metadata={
        "help": "with score_field: responses scoring at least this are desirable, the rest undesirable"})


def parse_label(value: Any, where: str, field_name: str) -> bool:
    """``True`` for desirable, ``False`` for undesirable; a :class:`RecordError` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in DESIRABLE + UNDESIRABLE:
        return value.strip().lower() in DESIRABLE
    raise RecordError(where, field_name, f"expected a label (true/false, 1/0, 'desirable'/'undesirable'), "
                                         f"got {value!r:.60}")


@register_source("kto_unpaired", options=KTOUnpairedOptions)
def load_kto_unpaired(
    source: Source, options: KTOUnpairedOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """Unpaired desirable/undesirable feedback {prompt, response, label | score} -> one list per prompt, for KTO.

    Each row is one response to one prompt with either an explicit label (``label_field``:
    true/false, 1/0, ``"desirable"``/``"undesirable"``) or, with ``score_field`` and
    ``threshold``, a score (``score >= threshold`` is desirable). Rows with the same prompt
    (exact text) become one record, responses in file order, each with
    ``attributes["desirable"]`` (and ``attributes["score"]`` plus the record's ``scores`` in
    score mode, so other methods can order such lists). The records carry no ``ranking``: the
    data was never ranked. A prompt with a single response gives a list of one, which only
    ``kto`` trains on (other methods refuse such lists). ``id`` = the first row's ``id`` or
    ``<stem>-<line>``. Counted skips: a row without the prompt/response/label field or with an
    invalid label or score, and a response repeated under the same prompt
    (``"duplicate response"``).

    Raises:
        ConfigError: ``score_field`` without ``threshold`` or the other way round (before
            anything is read).
    """
    if (options.score_field is None) != (options.threshold is None):
        raise ConfigError(["options of format 'kto_unpaired': score_field and threshold go together; give both "
                           "(label by a score threshold) or neither (read label_field)"])
    stem = file_stem(source)
    groups: dict[str, dict[str, Any]] = {}  # prompt -> {"id", "where", "responses", "texts"}
    col = Collector(report, on_error, limit)

    def read(row: Any, where: str) -> list[ListRecord]:
        if not isinstance(row, dict):
            raise RecordError(where, "<row>", f"expected a JSON object, got {type(row).__name__}")
        prompt = get_field(row, options.prompt_field, str, where)
        text = get_field(row, options.response_field, str, where)
        attrs: dict[str, Any]
        if options.score_field is not None:
            score = to_number(get_field(row, options.score_field, (int, float, str), where), where,
                              options.score_field)
            attrs = {"desirable": score >= options.threshold, "score": score}  # type: ignore[operator]
        else:
            attrs = {"desirable": parse_label(get_field(row, options.label_field, (bool, int, float, str), where),
                                              where, options.label_field)}
        group = groups.setdefault(prompt, {"id": row.get("id", f"{stem}-{row_number(where)}"), "where": where,
                                           "responses": [], "texts": set()})
        if text.strip() in group["texts"]:
            raise Skip("duplicate response", f"{where}: this response appears already under the same prompt")
        group["texts"].add(text.strip())
        group["responses"].append({"text": text, "attributes": attrs})
        return []

    for where, row in iter_rows(source, report=report, on_error=on_error):
        col.add(lambda row=row, where=where: read(row, where), where)
    for prompt, group in groups.items():
        if col.full:
            break
        responses = group["responses"]
        record: dict[str, Any] = {"id": group["id"], "prompt": prompt, "responses": responses,
                                  "meta": {"source": "kto_unpaired"}}
        if options.score_field is not None:
            record["scores"] = [r["attributes"]["score"] for r in responses]
        col.add(lambda record=record, where=group["where"]: [ListRecord.from_dict(record, where=where)],
                group["where"])
    return col.records
