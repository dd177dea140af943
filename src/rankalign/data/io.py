"""Read and write list-wise records: JSON Lines, Parquet and Hugging Face ``datasets``.

Writes are atomic: the output goes to a temporary file beside the target, is flushed to
disk and renamed into place only when complete, so a killed run never leaves a
half-written file (a ``datasets`` folder is swapped in by two renames). Output paths are
checked before anything is written (:func:`check_output_path`): a folder where a file is
expected, a file where a folder is expected, or a folder that is not writable is a
:class:`~rankalign.errors.UserError`, as is any error of the operating system while writing.

Reads take JSON Lines and ``.json`` files plain or compressed with gzip, bzip2, xz or
zstd (recognised by their first bytes; the format is the suffix before ``.gz``/``.bz2``/
``.xz``/``.zst``), and stream them line by line. A truncated or corrupt compressed file is
a one-line :class:`~rankalign.errors.UserError` naming the file and the last line read.

Parquet / ``datasets`` layout: ``id``, ``prompt``, ``responses`` (list of
``{text, attributes}`` with ``attributes`` as a JSON string, since attribute sets differ
between sources and Arrow needs one schema), ``ranking``, ``scores``, ``meta`` (JSON
string), ``dynamic_ranking``, ``apdf``, ``apdf_row_max``.
"""

from __future__ import annotations

import contextlib
import io
import json
import lzma
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rankalign.data.record import ListRecord, RecordError
from rankalign.errors import UserError
from rankalign.outputs import atomic_path


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
    """Convert a ``datasets.Dataset`` (our layout, or plain record dicts) to records."""
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


# ------------------------------------------------------------------------------ reading inputs
#: suffix -> compression read on the fly; the data format is the suffix before it
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_ARCHIVES = ((b"PK\x03\x04", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!", "rar"))
_READABLE = ".jsonl, .json or .parquet (JSON plain or .gz/.bz2/.xz/.zst)"


def data_suffix(path: str | os.PathLike[str]) -> str:
    """The data format's suffix, lower case, looking through a compression suffix
    (``a.jsonl.gz`` -> ``.jsonl``; ``a.gz`` -> ``""``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    return Path(p.stem).suffix.lower() if suffix in COMPRESSIONS else suffix


def sniff_compression(path: str | os.PathLike[str]) -> str | None:
    """The compression of ``path`` from its first bytes (``"gzip"``, ``"bzip2"``, ``"xz"``,
    ``"zstd"``), or ``None`` for an uncompressed file.

    Raises:
        UserError: the file cannot be opened, or is an archive (zip, 7z, rar) to extract first.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for magic, kind in _ARCHIVES:
        if head.startswith(magic):
            raise UserError(f"{Path(path).name} is a {kind} archive; extract it first "
                            f"(inputs are {_READABLE}, or a datasets folder)")
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


class _ZstdReader(io.RawIOBase):
    """A zstd stream (one or more frames) as a raw binary file; a stream that ends inside a
    frame raises :class:`EOFError` (``zstandard``'s own reader returns the partial data)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if self._started and not self._obj.eof:
                    raise EOFError("zstd data ended inside a frame")
                return 0
            while chunk:
                if self._obj.eof:  # the next frame of a multi-frame file
                    self._obj = self._dctx.decompressobj()
                self._started = True
                self._pending += self._obj.decompress(chunk)
                chunk = self._obj.unused_data if self._obj.eof else b""
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _read_errors(compression: str | None) -> tuple[type[BaseException], ...]:
    """The exceptions a decompressing read raises on truncated or corrupt data."""
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
    if compression == "zstd":
        import zstandard

        errors += (zstandard.ZstdError,)
    return errors


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[tuple[IO[bytes], str | None]]:
    """Open a file for binary reading, decompressing it on the fly when its first bytes say
    it is gzip, bzip2, xz or zstd; yields ``(stream, compression or None)``.

    Raises:
        UserError: the file cannot be opened, or is an archive.
    """
    compression = sniff_compression(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with raw:
        if compression is None:
            yield raw, None
            return
        if compression == "gzip":
            import gzip

            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "bzip2":
            import bz2

            stream = bz2.BZ2File(raw, mode="rb")
        elif compression == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")
        else:
            stream = io.BufferedReader(_ZstdReader(raw), buffer_size=1 << 16)
        with stream:
            yield stream, compression


def _corrupt(path: Path, compression: str | None, after: str, exc: BaseException) -> UserError:
    what = f"truncated or corrupt {compression} data" if compression else "a read error"
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    fix = f" (check it with `{_CHECK[compression]}`)" if compression in _CHECK else ""
    return UserError(f"{path.name}: {what} {after}: {detail}{fix}")


_CHECK = {"gzip": "gzip -t FILE", "bzip2": "bzip2 -t FILE", "xz": "xz -t FILE", "zstd": "zstd -t FILE"}


def iter_jsonl(path: Path, *, on_error: str, report: LoadReport) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` for each non-blank line of a JSON Lines file (a BOM is allowed),
    plain or compressed (see :func:`open_input`), line by line.

    An invalid line (bad JSON, or bytes that are not UTF-8) raises :class:`RecordError`
    (``on_error="raise"``) or is counted in ``report`` as "invalid JSON". Lines are decoded
    one by one, so one bad line names its number and does not end the read. A progress bar
    shows on a terminal.

    Raises:
        UserError: the file cannot be read, or its compressed data is truncated or corrupt
            (whatever ``on_error`` says: the rest of the file is lost, not one line).
    """
    from tqdm.auto import tqdm

    path = Path(path)
    # disable=None: the bar shows only when stderr is a terminal
    with open_input(path) as (fh, compression), tqdm(desc=f"reading {path.name}", unit=" lines",
                                                     disable=None, leave=False) as bar:
        errors = _read_errors(compression)
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except errors as exc:
                after = f"after line {lineno}" if lineno else "before the first line"
                raise _corrupt(path, compression, after, exc) from None
            if not raw:
                return
            lineno += 1
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


def read_json_array(path: Path) -> list[Any] | None:
    """The items of a ``.json`` file holding one JSON array, or ``None`` when the file is
    JSON Lines instead (its first character is not ``[``; only the start is read then).

    Raises:
        RecordError: the array is not valid JSON or the file is not UTF-8.
        UserError: the file cannot be read, or its compressed data is truncated or corrupt.
    """
    with open_input(path) as (fh, compression):
        try:
            head = b""
            while not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
                chunk = fh.read(4096)
                if not chunk:
                    break
                head += chunk
            if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                return None
            data = head + fh.read()
        except _read_errors(compression) as exc:
            raise _corrupt(path, compression, "while reading", exc) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError(path.name, "<json>", f"not UTF-8 text: {exc}", "save the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(path.name, "<json>", f"invalid JSON array: {exc}",
                          "a .json file holds one JSON array of records, or one record per line") from None


def parquet_file(path: Path) -> Any:
    """``pyarrow.parquet.ParquetFile`` of ``path``.

    Raises:
        UserError: a compressed, corrupt or truncated Parquet file (one line, naming it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if sniff_compression(path):
        raise UserError(f"{path.name} is compressed; decompress it first (Parquet compresses its own columns)")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path.name}: not a readable Parquet file ({detail})") from None


def iter_parquet_rows(path: Path, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, one batch in memory at a time.

    Raises:
        UserError: the file is not readable Parquet (see :func:`parquet_file`), or a column
            chunk is corrupt.
    """
    import pyarrow as pa

    pf = parquet_file(path)
    batches = pf.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{path.name}: corrupt Parquet data ({detail})") from None
        yield from batch.to_pylist()


def read_records(
    path: str | os.PathLike[str], *, on_error: str = "raise", report: LoadReport | None = None
) -> list[ListRecord]:
    """Read list-wise records from ``.jsonl``/``.json`` (plain or compressed), ``.parquet``
    or a ``datasets`` folder.

    Args:
        path: the file or folder.
        on_error: ``"raise"`` stops at the first invalid record with a :class:`RecordError`;
            ``"skip"`` counts it in ``report`` and goes on.
        report: filled with kept/skipped counts.
    Raises:
        FileNotFoundError: the path does not exist.
        RecordError: an invalid record (``on_error="raise"``).
        UserError: an unreadable, truncated or corrupt file.
        ValueError: an unsupported format.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        import datasets

        return dataset_to_records(datasets.load_from_disk(str(p)), on_error=on_error, report=report)
    suffix = data_suffix(p)
    if suffix in (".jsonl", ".json"):
        if suffix == ".json":
            rows = read_json_array(p)
            if rows is not None:
                return _validate_rows(((f"{p.name} item {i}", r) for i, r in enumerate(rows)),
                                      on_error=on_error, report=report)
        report = report if report is not None else LoadReport()
        rows_iter = iter_jsonl(p, on_error=on_error, report=report)
        return _validate_rows(rows_iter, on_error=on_error, report=report)
    if suffix == ".parquet":
        return _validate_rows(
            ((f"{p.name} row {i}", r) for i, r in enumerate(iter_parquet_rows(p))),
            on_error=on_error, report=report, decode=True,
        )
    raise ValueError(f"unsupported data file {p.name!r}: use {_READABLE}, or a datasets folder")


def read_selected_records(path: str | os.PathLike[str], *, on_error: str = "skip", split: str | None = None,
                          limit: int | None = None, purpose: str = "use") -> tuple[list[ListRecord], int]:
    """The records of ``path`` whose ``meta.split`` is ``split`` (all when ``None``), at most
    ``limit`` of them, and the number skipped as invalid; the load report goes to stderr.

    Raises:
        UserError: no record is left (the message names the file, the split and ``purpose``).
    """
    import sys

    report = LoadReport()
    records = read_records(path, on_error=on_error, report=report)
    print(f"{path}: {report.summary()}", file=sys.stderr)
    if split is not None:
        records = [r for r in records if str(r.meta.get("split")) == split]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise UserError(f"no records to {purpose} in {path}"
                        + (f" with meta.split == {split!r}" if split is not None else ""))
    return records, report.total_skipped


def _is_saved_dataset(path: Path) -> bool:
    """True for a folder written by ``datasets.save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / name).is_file()
                                 for name in ("state.json", "dataset_info.json", "dataset_dict.json"))


OUTPUT_SUFFIXES = (".jsonl", ".json", ".parquet")


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Check that :func:`write_records` can write ``path``, before any work is done.

    Raises:
        UserError: an unsupported suffix; a folder where a ``.jsonl``/``.parquet`` file is
            asked for; an existing file or unrelated folder where a ``datasets`` folder (a
            name without suffix) is asked for; a parent that is a file; a folder that is
            not writable.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix and suffix not in OUTPUT_SUFFIXES:
        raise UserError(f"unsupported output {p.name!r}: use NAME.jsonl, NAME.parquet, "
                        "or a folder name without suffix (a datasets folder)")
    if suffix and p.is_dir():
        raise UserError(f"output {str(p)!r} is a folder, but a {suffix} output is a file: name a file, "
                        "or drop the suffix to write a datasets folder")
    if not suffix and p.exists() and not _is_saved_dataset(p):
        # never delete a file or a folder that is not an earlier output of ours
        what = "a folder" if p.is_dir() else "a file"
        raise UserError(f"output {str(p)!r} exists and is {what}, not a saved datasets folder; remove it, "
                        "or name a new folder (or a .jsonl/.parquet file)")
    from rankalign.outputs import check_can_create

    # a parent that is a file, or no file can be created beside the output (probed, so
    # root and read-only file systems are covered too)
    check_can_create(p, "output", beside=True)


def write_records(records: Iterable[ListRecord], path: str | os.PathLike[str]) -> int:
    """Write records atomically; the format follows the suffix (``.jsonl``/``.parquet``),
    a path without suffix is written as a ``datasets`` folder (``save_to_disk``).

    Raises:
        UserError: the path cannot be written (see :func:`check_output_path`), or the
            operating system refuses a write (a full disk, permissions); the old output, if
            any, is left as it was.
    """
    p = Path(path)
    check_output_path(p)
    recs = list(records)
    try:
        return _write_records(recs, p)
    except OSError as exc:
        raise UserError(f"could not write {str(p)!r}: {exc.strerror or exc}") from None


def _write_records(recs: list[ListRecord], p: Path) -> int:
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
    import shutil

    ds = records_to_dataset(recs)
    p.parent.mkdir(parents=True, exist_ok=True)
    # unique names beside the target: two writers never share a temporary folder
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    old_dir: Path | None = None
    try:
        ds.save_to_disk(str(tmp_dir))
        if p.exists():
            old_dir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
            os.replace(p, old_dir)  # onto the empty folder just made
        # swap by two renames: p is missing only between them, and never half-written
        os.replace(tmp_dir, p)
    except BaseException:
        if old_dir is not None and old_dir.exists() and not p.exists():
            os.replace(old_dir, p)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return len(recs)
