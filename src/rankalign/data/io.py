"""Read and write list-wise records: JSON Lines, Parquet and Hugging Face ``datasets``.

Writes are atomic: the output goes to a temporary file beside the target and is renamed
into place only when complete, so a killed run never leaves a half-written file.

Parquet / ``datasets`` layout: ``id``, ``prompt``, ``responses`` (list of
``{text, attributes}`` with ``attributes`` as a JSON string, since attribute sets differ
between sources and Arrow needs one schema), ``ranking``, ``scores``, ``meta`` (JSON
string), ``dynamic_ranking``, ``apdf``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.data.record import ListRecord, RecordError


@dataclass
class LoadReport:
    """What a load kept and what it skipped (with the first few messages)."""

    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(message)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"kept {self.kept} record(s)"
        if self.skipped:
            parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            text += f", skipped {self.total_skipped} ({parts})"
            for ex in self.examples[:3]:
                text += f"\n  e.g. {ex}"
        return text


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, delete it on error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write dicts as JSON Lines atomically; returns the number of rows written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _record_to_arrow_row(rec: ListRecord) -> dict[str, Any]:
    d = rec.to_dict()
    return {
        "id": d["id"],
        "prompt": d["prompt"],
        "responses": [{"text": r["text"], "attributes": json.dumps(r["attributes"], ensure_ascii=False)}
                      for r in d["responses"]],
        "ranking": d.get("ranking"),
        "scores": d.get("scores"),
        "meta": json.dumps(d.get("meta", {}), ensure_ascii=False),
        "dynamic_ranking": d.get("dynamic_ranking"),
        "apdf": d.get("apdf"),
    }


def _arrow_row_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    responses = []
    for r in row.get("responses") or []:
        attrs = r.get("attributes")
        if isinstance(attrs, str):
            attrs = json.loads(attrs) if attrs else {}
        responses.append({"text": r.get("text"), "attributes": attrs or {}})
    out["responses"] = responses
    meta = row.get("meta")
    if isinstance(meta, str):
        out["meta"] = json.loads(meta) if meta else {}
    return {k: v for k, v in out.items() if v is not None}


def records_to_dataset(records: Iterable[ListRecord]) -> Any:
    """Convert records to a ``datasets.Dataset`` (layout in the module docstring)."""
    import datasets

    return datasets.Dataset.from_list([_record_to_arrow_row(r) for r in records])


def dataset_to_records(ds: Any, *, on_error: str = "raise", report: LoadReport | None = None) -> list[ListRecord]:
    """Convert a ``datasets.Dataset`` (our layout, or plain §2 dicts) to records."""
    return _validate_rows(
        ((f"dataset row {i}", _arrow_row_to_dict(dict(row))) for i, row in enumerate(ds)),
        on_error=on_error, report=report,
    )


def _validate_rows(
    rows: Iterable[tuple[str, Any]], *, on_error: str, report: LoadReport | None
) -> list[ListRecord]:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = report if report is not None else LoadReport()
    out: list[ListRecord] = []
    seen: set[str] = set()
    for where, row in rows:
        try:
            rec = ListRecord.from_dict(row, where=where)
            if rec.id in seen:
                raise RecordError(where, "id", f"duplicate id {rec.id!r}", "ids must be unique within a file")
            seen.add(rec.id)
        except RecordError as exc:
            if on_error == "raise":
                raise
            report.skip(f"invalid {exc.field.split('[')[0].split('.')[0]}", str(exc))
            continue
        out.append(rec)
        report.kept += 1
    return out


def iter_jsonl(path: Path, *, on_error: str, report: LoadReport) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` for each non-blank line of a JSON Lines file (a BOM is allowed).

    An invalid line raises :class:`RecordError` (``on_error="raise"``) or is counted in
    ``report`` as "invalid JSON". A progress bar shows on a terminal.
    """
    from tqdm.auto import tqdm

    # disable=None: the bar shows only when stderr is a terminal
    with open(path, encoding="utf-8-sig") as fh, tqdm(desc=f"reading {path.name}", unit=" lines",
                                                      disable=None, leave=False) as bar:
        for lineno, line in enumerate(fh, 1):
            bar.update(1)
            if not line.strip():
                continue
            where = f"{path.name} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if on_error == "raise":
                    raise RecordError(where, "<json>", f"invalid JSON: {exc}") from None
                report.skip("invalid JSON", f"{where}: {exc}")
                continue
            yield where, row


def read_records(
    path: str | os.PathLike[str], *, on_error: str = "raise", report: LoadReport | None = None
) -> list[ListRecord]:
    """Read list-wise records from ``.jsonl``/``.json``, ``.parquet`` or a ``datasets`` folder.

    Args:
        path: the file or folder.
        on_error: ``"raise"`` stops at the first invalid record with a :class:`RecordError`;
            ``"skip"`` counts it in ``report`` and goes on.
        report: filled with kept/skipped counts.
    Raises:
        FileNotFoundError: the path does not exist.
        RecordError: an invalid record (``on_error="raise"``).
        ValueError: an unsupported format.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        import datasets

        return dataset_to_records(datasets.load_from_disk(str(p)), on_error=on_error, report=report)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        if suffix == ".json":
            text = p.read_text(encoding="utf-8-sig").strip()
            if text.startswith("["):
                rows = json.loads(text)
                return _validate_rows(((f"{p.name} item {i}", r) for i, r in enumerate(rows)),
                                      on_error=on_error, report=report)
        report = report if report is not None else LoadReport()
        rows_iter = iter_jsonl(p, on_error=on_error, report=report)
        return _validate_rows(rows_iter, on_error=on_error, report=report)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        return _validate_rows(
            ((f"{p.name} row {i}", _arrow_row_to_dict(r)) for i, r in enumerate(table.to_pylist())),
            on_error=on_error, report=report,
        )
    raise ValueError(f"unsupported data file {p.name!r}: use .jsonl, .json, .parquet or a datasets folder")


def write_records(records: Iterable[ListRecord], path: str | os.PathLike[str]) -> int:
    """Write records atomically; the format follows the suffix (``.jsonl``/``.parquet``),
    a path without suffix is written as a ``datasets`` folder (``save_to_disk``)."""
    p = Path(path)
    recs = list(records)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return write_jsonl((r.to_dict() for r in recs), p)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([_record_to_arrow_row(r) for r in recs])
        with atomic_path(p, ".parquet") as tmp:
            pq.write_table(table, tmp)
        return len(recs)
    if suffix == "":
        import shutil

        ds = records_to_dataset(recs)
        tmp_dir = p.parent / f".{p.name}.tmp"
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        ds.save_to_disk(str(tmp_dir))
        if p.exists():
            shutil.rmtree(p)
        os.replace(tmp_dir, p)
        return len(recs)
    raise ValueError(f"unsupported output {p.name!r}: use .jsonl, .parquet or a folder name without suffix")
