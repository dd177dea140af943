"""Read and write list-wise records: JSON Lines, Parquet and Hugging Face ``datasets``.

Writes are atomic: the output goes to a temporary file beside the target and is renamed
into place only when complete, so a killed run never leaves a half-written file.

Parquet / ``datasets`` layout: ``id``, ``prompt``, ``responses`` (list of
``{text, attributes}`` with ``attributes`` as a JSON string, since attribute sets differ
between sources and Arrow needs one schema), ``ranking``, ``scores``, ``meta`` (JSON
string), ``dynamic_ranking``, ``apdf``, ``apdf_row_max``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
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
        # mkstemp creates the file 0600; give the output the mode a plain open() would
        os.chmod(tmp_path, _file_mode(target))
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _file_mode(target: Path) -> int:
    """The permission bits a new file gets from ``open()`` (0666 minus the umask), or the
    existing target's bits when it is being replaced."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


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
        "apdf_row_max": d.get("apdf_row_max"),
    }


def _arrow_row_to_dict(row: dict[str, Any], where: str = "row") -> dict[str, Any]:
    """Decode the JSON-string ``attributes``/``meta`` of an Arrow row.

    Raises:
        RecordError: naming ``where`` and the field, when a string does not decode.
    """
    out = dict(row)
    responses = []
    raw_responses = row.get("responses") or []
    if not isinstance(raw_responses, list):
        return {k: v for k, v in out.items() if v is not None}  # from_dict names the problem
    for i, r in enumerate(raw_responses):
        if not isinstance(r, dict):
            responses.append(r)  # a plain string response, or an error from_dict reports
            continue
        attrs = r.get("attributes")
        if isinstance(attrs, str):
            attrs = _json_field(attrs, where, f"responses[{i}].attributes")
        responses.append({"text": r.get("text"), "attributes": attrs or {}})
    out["responses"] = responses
    meta = row.get("meta")
    if isinstance(meta, str):
        out["meta"] = _json_field(meta, where, "meta")
    return {k: v for k, v in out.items() if v is not None}


def _json_field(text: str, where: str, field_name: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(where, field_name, f"not valid JSON ({exc}): {text[:60]!r}") from None


def records_to_dataset(records: Iterable[ListRecord]) -> Any:
    """Convert records to a ``datasets.Dataset`` (layout in the module docstring)."""
    import datasets

    return datasets.Dataset.from_list([_record_to_arrow_row(r) for r in records])


def dataset_to_records(ds: Any, *, on_error: str = "raise", report: LoadReport | None = None) -> list[ListRecord]:
    """Convert a ``datasets.Dataset`` (our layout, or plain §2 dicts) to records."""
    return _validate_rows(
        ((f"dataset row {i}", dict(row)) for i, row in enumerate(ds)),
        on_error=on_error, report=report, decode=True,
    )


def _validate_rows(
    rows: Iterable[tuple[str, Any]], *, on_error: str, report: LoadReport | None, decode: bool = False
) -> list[ListRecord]:
    """Build records from ``(where, row)``; ``decode``: rows are Arrow rows (JSON-string fields)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = report if report is not None else LoadReport()
    out: list[ListRecord] = []
    seen: set[str] = set()
    for where, row in rows:
        try:
            if decode and isinstance(row, dict):
                row = _arrow_row_to_dict(row, where)
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

    An invalid line (bad JSON, or bytes that are not UTF-8) raises :class:`RecordError`
    (``on_error="raise"``) or is counted in ``report`` as "invalid JSON". Lines are decoded
    one by one, so one bad line names its number and does not end the read. A progress bar
    shows on a terminal.
    """
    from tqdm.auto import tqdm

    # disable=None: the bar shows only when stderr is a terminal
    with open(path, "rb") as fh, tqdm(desc=f"reading {path.name}", unit=" lines",
                                      disable=None, leave=False) as bar:
        for lineno, raw in enumerate(fh, 1):
            bar.update(1)
            if not raw.strip():
                continue
            where = f"{path.name} line {lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                if not line.strip():  # e.g. a line holding only the BOM
                    continue
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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
            try:
                text = p.read_text(encoding="utf-8-sig").strip()
            except UnicodeDecodeError as exc:
                raise RecordError(p.name, "<json>", f"not UTF-8 text: {exc}", "save the file as UTF-8") from None
            if text.startswith("["):
                try:
                    rows = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise RecordError(p.name, "<json>", f"invalid JSON array: {exc}",
                                      "a .json file holds one JSON array of records, or one record per line") from None
                return _validate_rows(((f"{p.name} item {i}", r) for i, r in enumerate(rows)),
                                      on_error=on_error, report=report)
        report = report if report is not None else LoadReport()
        rows_iter = iter_jsonl(p, on_error=on_error, report=report)
        return _validate_rows(rows_iter, on_error=on_error, report=report)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        return _validate_rows(
            ((f"{p.name} row {i}", r) for i, r in enumerate(table.to_pylist())),
            on_error=on_error, report=report, decode=True,
        )
    raise ValueError(f"unsupported data file {p.name!r}: use .jsonl, .json, .parquet or a datasets folder")


def _is_saved_dataset(path: Path) -> bool:
    """True for a folder written by ``datasets.save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / name).is_file()
                                 for name in ("state.json", "dataset_info.json", "dataset_dict.json"))


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

        if p.exists() and not _is_saved_dataset(p):
            # never delete a file or a folder that is not an earlier output of ours
            raise ValueError(f"output {str(p)!r} exists and is not a saved datasets folder; "
                             "remove it, or name a new folder (or a .jsonl/.parquet file)")
        ds = records_to_dataset(recs)
        tmp_dir = p.parent / f".{p.name}.tmp"
        old_dir = p.parent / f".{p.name}.old"
        for leftover in (tmp_dir, old_dir):
            if leftover.exists():
                shutil.rmtree(leftover)
        try:
            ds.save_to_disk(str(tmp_dir))
            if p.exists():
                os.replace(p, old_dir)  # swap by renames: p is never missing or half-written
            os.replace(tmp_dir, p)
        except BaseException:
            if old_dir.exists() and not p.exists():
                os.replace(old_dir, p)
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        shutil.rmtree(old_dir, ignore_errors=True)
        return len(recs)
    raise ValueError(f"unsupported output {p.name!r}: use .jsonl, .parquet or a folder name without suffix")
