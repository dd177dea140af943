"""UltraFeedback: rated completions, binarized (lists of 2) or raw (lists of M), with explicit scores.

Cui et al., "UltraFeedback: Boosting Language Models with Scaled AI Feedback",
arXiv:2310.01377. Explicit scores are what the soft list-wise labels of SPO use ("A Novel
Listwise Alignment Approach for Language Models with Explicit Rewards", OpenReview
Ek50sQQI1w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rankalign.data.io import LoadReport
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources.base import (
    Source,
    convert_rows,
    file_stem,
    get_field,
    require_distinct,
    row_number,
    text_items,
    to_number,
)
from rankalign.data.sources.registry import register_source


@dataclass(frozen=True)
class UltraFeedbackOptions:
    """Options of the ``ultrafeedback`` source."""

    score_key: str = field(default="overall_score", metadata={
        "help": "raw rows: the completion field that gives the scores (overall_score, fine_grained_score, "
                "or rating_<aspect>, e.g. rating_helpfulness)"})


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


def _raw_row(row: dict[str, Any], where: str, rid: str, score_key: str) -> ListRecord:
    prompt = get_field(row, "instruction", str, where)
    completions = get_field(row, "completions", list, where)
    responses = []
    scores = []
    for fname, comp, text in text_items(completions, "completions", "response", where):
        attrs: dict[str, Any] = {}
        if isinstance(comp.get("model"), str):
            attrs["model"] = comp["model"]
        for key in ("overall_score", "fine-grained_score"):
            if comp.get(key) is not None:
                attrs[key.replace("-", "_")] = to_number(comp[key], where, f"{fname}.{key}")
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
    require_distinct([r["text"] for r in responses], where)
    meta = {"source": "ultrafeedback"}
    if isinstance(row.get("source"), str):
        meta["origin"] = row["source"]
    return ListRecord.from_dict(
        {"id": rid, "prompt": prompt, "responses": responses, "scores": scores, "meta": meta}, where=where
    )


@register_source("ultrafeedback", options=UltraFeedbackOptions)
def load_ultrafeedback(
    source: Source, options: UltraFeedbackOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """UltraFeedback, binarized (lists of 2) or raw (lists of M), with explicit scores.

    Binarized rows ``{prompt, chosen, rejected, ...}``: ``chosen``/``rejected`` are strings or
    chat message lists (the last assistant turn is taken); ``scores`` = ``[score_chosen,
    score_rejected]`` or ``metadata.rating_chosen/rating_rejected``; ``ranking`` ``[0, 1]``;
    models go to the attributes. Raw rows ``{instruction, completions: [{response,
    overall_score, fine-grained_score, annotations{aspect: {Rating}}, model}]}``: one
    response per completion, ``scores`` from ``score_key`` (``overall_score`` by default),
    every numeric aspect rating as ``rating_<aspect>``; no ``ranking`` (the training order
    is then descending ``scores``, see ``ListRecord.preference_order``). ``id`` =
    ``prompt_id``/``id`` or ``<stem>-<line>``. Rows whose responses are identical are
    counted skips (``"identical responses"``).
    """
    stem = file_stem(source)
    score_key = options.score_key

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        rid = row.get("prompt_id") or row.get("id") or f"{stem}-{row_number(where)}"
        if "completions" in row or "instruction" in row:
            return [_raw_row(row, where, str(rid), score_key)]
        prompt = get_field(row, "prompt", str, where, fix="binarized rows have prompt/chosen/rejected; raw rows "
                                                          "have instruction/completions")
        texts = [_message_text(get_field(row, k, (str, list), where), where, k) for k in ("chosen", "rejected")]
        meta_in = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        scores = []
        for k in ("chosen", "rejected"):
            if row.get(f"score_{k}") is not None:
                scores.append(to_number(row[f"score_{k}"], where, f"score_{k}"))
            elif meta_in.get(f"rating_{k}") is not None:
                scores.append(to_number(meta_in[f"rating_{k}"], where, f"metadata.rating_{k}"))
            else:
                raise RecordError(where, f"score_{k}", "missing",
                                  f"give score_{k} or metadata.rating_{k}")
        require_distinct(texts, where)
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

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
