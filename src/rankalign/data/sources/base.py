"""What every data source shares: reading rows, collecting records, counted skips, field helpers.

A source's loader reads rows with :func:`iter_rows` (or lets :func:`convert_rows` do it),
turns each row into zero or more :class:`ListRecord` and hands them to a
:class:`Collector`, which validates, drops duplicate ids, counts every skip in the
:class:`LoadReport` under a short reason and stops at ``limit``. A row that cannot be
converted raises :class:`RecordError` (counted as ``"missing <field>"``/``"invalid <field>"``,
or raised with ``on_error="raise"``); a well-formed row that holds no list-wise preference
raises :class:`Skip` (always counted, never raised).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rankalign.data.io import (
    COMPRESSIONS,
    LoadReport,
    data_suffix,
    iter_jsonl,
    iter_parquet_rows,
    read_json_array,
    sniff_compression,
)
from rankalign.data.record import ListRecord, RecordError
from rankalign.errors import UserError

#: what a loader reads: a path (file or ``datasets`` folder) or an iterable of row dicts
Source = str | os.PathLike[str] | Iterable[dict[str, Any]]

__all__ = [
    "Collector",
    "Skip",
    "Source",
    "check_on_error",
    "convert_rows",
    "file_stem",
    "get_field",
    "iter_rows",
    "require_distinct",
    "row_number",
    "skip_reason",
    "to_number",
]


class Skip(Exception):
    """A well-formed row that yields no list (counted under ``reason``, never raised to the user)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_on_error(on_error: str) -> None:
    """Raises ``ValueError`` unless ``on_error`` is ``"raise"`` or ``"skip"``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def skip_reason(exc: RecordError) -> str:
    """A short counter key for a record error: ``missing <field>`` or ``invalid <field>``."""
    root = exc.field.split("[")[0].split(".")[0]
    if root == "<json>":
        return "invalid JSON"
    if root == "<row>":
        return "invalid row"
    if root == "responses" and exc.field.endswith(".text") and exc.problem.startswith("missing"):
        return "empty response text"
    return f"missing {root}" if exc.problem.startswith("missing") else f"invalid {root}"


# ---------------------------------------------------------------------------- reading rows
def iter_rows(source: Source, *, report: LoadReport, on_error: str = "skip") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` from a file, folder or iterable, streaming JSON Lines line by line.

    Files: ``.jsonl``/``.jsonlines``/``.ndjson`` and ``.json`` (one array, or JSON Lines),
    plain or compressed with gzip/bzip2/xz/zstd (``.jsonl.gz`` ...), ``.parquet``, or a
    folder written by ``datasets.save_to_disk``. ``where`` names the row in messages
    (``"train.jsonl line 12"``, ``"row 3"``). Lines that are not valid JSON are counted in
    ``report`` as ``"invalid JSON"`` (or raise a :class:`RecordError` with ``on_error="raise"``).

    Raises:
        FileNotFoundError: the path does not exist.
        UserError: an unreadable, truncated or corrupt file, an archive, or a folder
            holding several splits.
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
        suffix = data_suffix(p)
        if suffix == ".parquet":
            for i, row in enumerate(iter_parquet_rows(p)):
                yield f"{p.name} row {i}", row
            return
        if suffix == ".json":
            rows = read_json_array(p)
            if rows is not None:
                for i, row in enumerate(rows):
                    yield f"{p.name} item {i}", row
                return
        elif suffix not in (".jsonl", ".jsonlines", ".ndjson"):
            kind = sniff_compression(p)  # an archive is a UserError naming it
            if kind:
                ext = next(s for s, k in COMPRESSIONS.items() if k == kind)
                raise ValueError(f"input {p.name!r} is {kind}-compressed, but its name does not say what it "
                                 f"holds: name it NAME.jsonl{ext} or NAME.json{ext}")
            raise ValueError(f"unsupported input {p.name!r}: use .jsonl or .json (plain or .gz/.bz2/.xz/.zst), "
                             ".parquet, or a datasets folder")
        yield from iter_jsonl(p, on_error=on_error, report=report)
        return
    from tqdm.auto import tqdm

    total = len(source) if hasattr(source, "__len__") else None  # type: ignore[arg-type]
    for i, row in enumerate(tqdm(source, desc="reading rows", total=total, disable=None, leave=False)):
        yield f"row {i}", row


def file_stem(source: Source) -> str:
    """The file name before its first dot (``train.jsonl.gz`` -> ``train``), or ``"row"``
    for rows; used to make ids for data sets that have none."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name.split(".")[0] or "row"
    return "row"


def row_number(where: str) -> str:
    """The trailing number of a ``where`` label (line/row number), used to make stable ids."""
    return where.rsplit(" ", 1)[-1]


class Collector:
    """Validates converted records, drops duplicate ids, counts everything, honours ``limit``."""

    def __init__(self, report: LoadReport, on_error: str, limit: int | None) -> None:
        check_on_error(on_error)
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
            self.report.skip(skip_reason(exc), str(exc))
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


def convert_rows(
    source: Source,
    convert: Callable[[dict[str, Any], str], Iterable[ListRecord]],
    *,
    report: LoadReport,
    on_error: str,
    limit: int | None,
) -> list[ListRecord]:
    """Read ``source`` with :func:`iter_rows` and run ``convert(row, where)`` on each object row.

    A row that is not a JSON object is an ``"invalid row"``; everything ``convert`` raises
    is counted (or raised) by the :class:`Collector`. Reading stops at ``limit`` records.
    """
    col = Collector(report, on_error, limit)
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
def get_field(row: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *, fix: str = "") -> Any:
    """``row[key]`` checked against ``kind``; a :class:`RecordError` naming the field otherwise
    (``bool`` is not accepted as an ``int``)."""
    if key not in row or row[key] is None:
        raise RecordError(where, key, "missing", fix)
    value = row[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    bad_bool = isinstance(value, bool) and bool not in kinds
    if not isinstance(value, kinds) or bad_bool:
        names = "/".join(k.__name__ for k in kinds)
        raise RecordError(where, key, f"expected {names}, got {type(value).__name__} {value!r:.60}", fix)
    return value


def text_items(items: list[Any], list_name: str, text_key: str, where: str
               ) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``(field name, item, text)`` for each object of a row's list of candidates
    (``answers[i]``, ``completions[i]``), whose ``text_key`` must be a string.

    Raises:
        RecordError: an item that is not an object, or without a text, naming ``list_name[i]``.
    """
    for i, item in enumerate(items):
        fname = f"{list_name}[{i}]"
        if not isinstance(item, dict):
            raise RecordError(where, fname, f"expected an object, got {type(item).__name__}")
        text = item.get(text_key)
        if not isinstance(text, str):
            raise RecordError(where, f"{fname}.{text_key}", "missing or not a string")
        yield fname, item, text


def to_number(value: Any, where: str, field_name: str) -> float:
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


def require_distinct(texts: list[str], where: str) -> None:
    """Skip a list whose responses are all the same text (no preference can be learned)."""
    if len({t.strip() for t in texts}) < 2:
        raise Skip("identical responses", f"{where}: all responses have the same text")
