"""Records already in rankalign's list-wise shape (docs/data.md), validated."""

from __future__ import annotations

import json
import os
from typing import Any

from rankalign.data.io import LoadReport, _arrow_row_to_dict, read_records
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources.base import Source, convert_rows
from rankalign.data.sources.registry import NoOptions, register_source


@register_source("generic")
def load_generic(
    source: Source, options: NoOptions, *, report: LoadReport, on_error: str, limit: int | None
) -> list[ListRecord]:
    """Records already in the list-wise shape (JSONL, Parquet, a datasets folder), validated.

    Files and folders without a ``limit`` go through :func:`rankalign.data.io.read_records`;
    rows from an Arrow source written by :func:`rankalign.data.io.write_records`
    (JSON-string ``attributes`` and ``meta``) are decoded first.
    """
    if isinstance(source, (str, os.PathLike)) and limit is None:
        return read_records(source, on_error=on_error, report=report)

    def convert(row: dict[str, Any], where: str) -> list[ListRecord]:
        try:
            row = _arrow_row_to_dict(row, where)
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise RecordError(where, "responses", f"undecodable attributes/meta: {exc}") from None
        return [ListRecord.from_dict(row, where=where)]

    return convert_rows(source, convert, report=report, on_error=on_error, limit=limit)
