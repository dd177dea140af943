"""PKU-SafeRLHF: pairs with a helpfulness and a harmlessness preference.

Ji et al., "PKU-SafeRLHF: Towards Multi-Level Safety Alignment for LLMs with Human
Preference", arXiv:2406.15513.
"""

from __future__ import annotations

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
    to_number,
)
from rankalign.data.sources.registry import NoOptions, register_source


def _binary_id(row: dict[str, Any], key: str, where: str) -> int:
    value = get_field(row, key, int, where, fix="expected 0 or 1")
    if value not in (0, 1):
        raise RecordError(where, key, f"expected 0 or 1, got {value!r}")
    return int(value)


@register_source("pku_saferlhf")
def load_pku_saferlhf(
    source: Source, options: NoOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """PKU-SafeRLHF pairs -> lists of 2 with helpfulness and harmlessness attributes.

    Rows: ``prompt``, ``response_0/1``, ``better_response_id``, ``safer_response_id``,
    ``is_response_*_safe`` (the two attributes of the safety experiments of SeAdpra, Yang
    et al., arXiv:2502.12189, Appendix B).

    Response ``i`` gets ``helpfulness`` = 1 if ``better_response_id == i`` else 0,
    ``harmlessness`` = 1 if ``safer_response_id == i`` else 0, ``safe`` =
    ``is_response_i_safe``, and where present ``severity`` (``response_i_severity_level``),
    ``harm_categories`` (the names flagged true) and ``model`` (``response_i_source``).
    Responses keep the input order; ``ranking`` is the *helpfulness* order (better
    response first), the data set's primary preference; the safety preference is in the
    attributes and in ``meta["safer_id"]`` (the gold of the SaferHit metric,
    docs/evaluation.md). ``id`` = ``<file stem>-<line or row number>``.
    """
    stem = file_stem(source)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        prompt = get_field(row, "prompt", str, where)
        texts = [get_field(row, f"response_{i}", str, where) for i in (0, 1)]
        better = _binary_id(row, "better_response_id", where)
        safer = _binary_id(row, "safer_response_id", where)
        require_distinct(texts, where)
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
                attrs["severity"] = to_number(severity, where, f"response_{i}_severity_level")
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
            "id": row.get("id", f"{stem}-{row_number(where)}"),
            "prompt": prompt,
            "responses": responses,
            "ranking": [better, 1 - better],
            "meta": meta,
        }, where=where)]

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
