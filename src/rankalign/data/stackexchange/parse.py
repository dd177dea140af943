"""Parse: stream ``Posts.xml`` rows into Parquet chunks and ``Votes.xml`` rows into vote
counts, one file (or one byte range of a plain file) per job of the process pool.

lxml's parser, fed :data:`~.inputs.READ_BYTES` at a time, calls a *parser target* with a dict
of attributes per ``<row>``: no element tree and no element objects, so memory stays flat
whatever the file size. Each row is checked once (:func:`post_row`); the rows that pass
go to the chunk's columns. Rows are counted in ``ParseResult.counts``: ``questions``,
``answers``, ``other post types`` and ``malformed row`` (a missing or non-integer
``Id``/``PostTypeId``/``Score``, a missing or unparseable ``CreationDate``, a question
without ``Title``/``Body``, an answer without ``ParentId``/``Body``).

Broken XML (a cut-off file, non-UTF-8 bytes, an undefined entity) ends the stream: the
rows before it are kept and the error (line, column, message, rows read) is stored.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rankalign.data.stackexchange.html_text import has_code_block
from rankalign.data.stackexchange.inputs import READ_BYTES, ByteRange, newlines_before, open_part

#: a posts Parquet chunk is also cut when its bodies reach this many characters (bounds memory).
CHUNK_BODY_CHARS = 16 << 20
#: the columns of a posts chunk and their Arrow types
POST_COLUMNS = (
    ("seq", "int64"), ("id", "int64"), ("post_type", "int8"), ("parent_id", "int64"),
    ("accepted_answer_id", "int64"), ("created", "string"), ("score", "int64"),
    ("title", "string"), ("tags", "string"), ("body", "string"), ("has_code", "bool_"),
)
#: ``seq`` = part << PART_SHIFT | row number in the part: file order, unique over the parts.
PART_SHIFT = 40
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class ParseResult:
    """What one parse job read: Parquet chunks, row counts, an XML error if any.

    A job reads a whole file or one :class:`~.inputs.ByteRange` of it; :func:`merge_parts`
    joins the parts of a file (row numbers, error lines and ``rows_before`` become the file's).
    """

    site: str
    path: str
    kind: str  # "posts" or "votes"
    chunks: list[str] = field(default_factory=list)
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    seconds: float = 0.0
    part: int = 0
    start: int = 0  # the part's first byte in the file
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (row number in the part, problem)


def post_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t in POST_COLUMNS])


def _int64(value: str) -> int:
    """``int(value)``, which must fit a 64-bit column (ValueError otherwise)."""
    v = int(value)
    if not _INT64[0] <= v <= _INT64[1]:
        raise ValueError(f"{value!r} does not fit in 64 bits")
    return v


def _malformed(result: ParseResult, n: int, problem: str) -> None:
    result.counts["malformed row"] += 1
    if len(result.bad_rows) < 10:
        result.bad_rows.append((n, problem))


def post_row(a: dict[str, str], n: int, seq: int, result: ParseResult) -> tuple[Any, ...] | None:
    """The row checks: the columns (:data:`POST_COLUMNS`) of row ``n`` of a Posts.xml, or
    ``None`` for a row that is not kept (another post type, or malformed: counted)."""
    ptype = a.get("PostTypeId")
    id_s = a.get("Id")
    if ptype != "1" and ptype != "2":
        if ptype is None or id_s is None:
            _malformed(result, n, f"Id={id_s!r}: no PostTypeId/Id attribute")
        else:
            result.counts["other post types"] += 1
        return None
    body = a.get("Body")
    created = a.get("CreationDate")
    try:  # int() as Python reads it (" 3 ", "+5" and "1_0" are ints), within 64 bits
        pid = int(id_s)  # type: ignore[arg-type]
        score = int(a["Score"])
        if not (_INT64[0] <= pid <= _INT64[1] and _INT64[0] <= score <= _INT64[1]):
            raise ValueError(f"Id {id_s!r} or Score {a['Score']!r} does not fit in 64 bits")
        datetime.fromisoformat(created)  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError) as exc:
        return _malformed(result, n, f"Id={id_s!r}: missing or invalid Id/Score/CreationDate ({exc})")
    if body is None:
        return _malformed(result, n, f"Id={pid}: no Body attribute")
    if ptype == "1":
        title = a.get("Title")
        if title is None:
            return _malformed(result, n, f"Id={pid}: question without Title")
        acc = a.get("AcceptedAnswerId")
        try:
            acc_id = _int64(acc) if acc else None
        except ValueError:
            return _malformed(result, n, f"Id={pid}: AcceptedAnswerId {acc!r} is not an integer")
        return (seq, pid, 1, None, acc_id, created, score, title, a.get("Tags"), body, has_code_block(body))
    try:
        parent = _int64(a["ParentId"])
    except (KeyError, ValueError) as exc:
        return _malformed(result, n, f"Id={pid}: answer without a valid ParentId ({exc})")
    return (seq, pid, 2, parent, None, created, score, None, None, body, False)


class _RowTarget:
    """lxml parser target that keeps the attribute dict of every ``<row>`` start tag
    (about 20% faster than ``iterparse`` plus ``el.get``, and nothing to clear)."""

    __slots__ = ("count", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.count = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == "row":
            self.rows.append(attrib)
            self.count += 1

    def close(self) -> None:
        return None


def iter_rows(fh: Any, result: ParseResult, path: Path, rng: ByteRange | None = None, bar: Any = None
              ) -> Iterator[dict[str, str]]:
    """Yield the attributes of each ``<row>`` of a dump, in file order. An XML error ends the
    stream (the rows before it are still yielded) and is stored in ``result.error`` (line,
    column, message, rows read; of the part). ``bar`` (a tqdm bar) counts the rows."""
    from lxml import etree

    target = _RowTarget()
    rows = target.rows
    parser = etree.XMLParser(target=target, huge_tree=True)
    error = None
    while True:
        data = fh.read(READ_BYTES)
        try:
            if data:
                parser.feed(data)
            else:
                parser.close()
        except etree.XMLSyntaxError as exc:
            error = exc
        if rows:
            if bar is not None:
                bar.update(len(rows))
            yield from rows
            rows.clear()
        if error is not None or not data:
            break
    if error is not None:
        line, column = error.position if error.position else (0, 0)
        if rng is not None and rng.prefix and line == 1:  # the column in the file, without the root tag
            column = column - len(rng.prefix) + rng.col0
        result.error = {"file": str(path), "line": line, "column": column, "message": str(error.msg or error),
                        "rows_before": target.count}


def progress_bar(total: int | None, desc: str, enabled: bool, position: int = 0, unit: str = "rows") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                position=position, leave=False, mininterval=0.5, file=sys.stderr)


class _PostChunks:
    """Checked rows, written as uncompressed Parquet chunks ``posts-<site>-<part>-<k>.parquet``
    (read once: compressing would cost ~20% of the parse). The rows are kept as tuples and
    turned into columns once per chunk (``zip(*rows)``, in C)."""

    def __init__(self, out_dir: Path, site: str, part: int, result: ParseResult) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self._name = f"posts-{site}-{part:03d}"
        self._out_dir = out_dir
        self._result = result
        self._schema = post_schema()

    def flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(zip(*self.rows))
        self.rows.clear()
        types = cols[2]
        self._result.counts["questions"] += types.count(1)
        self._result.counts["answers"] += types.count(2)
        path = self._out_dir / f"{self._name}-{len(self._result.chunks):06d}.parquet"
        # arrays with explicit types, then from_arrays: ``pa.table(dict)`` imports pandas
        table = pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, self._schema, strict=True)],
                                     schema=self._schema)
        pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)
        self._result.chunks.append(str(path))


def parse_posts(
    site: str, path: Path, out_dir: Path, *, chunk_rows: int = 50_000, progress: bool = False, position: int = 0,
    byte_range: ByteRange | None = None,
) -> ParseResult:
    """Stream a ``Posts.xml`` (or one byte range of it) into Parquet chunks of
    :data:`POST_COLUMNS` (``created`` as written, ``body`` the raw HTML) in ``out_dir``: a
    chunk holds at most ``chunk_rows`` rows or about :data:`CHUNK_BODY_CHARS` characters of bodies."""
    t0 = time.perf_counter()
    part = byte_range.part if byte_range is not None else 0
    base = part << PART_SHIFT
    result = ParseResult(site, str(path), "posts", part=part, start=byte_range.start if byte_range else 0)
    chunks = _PostChunks(out_dir, site, part, result)
    rows = chunks.rows
    body_chars = 0
    bar = progress_bar(None, f"{site} posts" + (f" [{part}]" if byte_range else ""), progress, position)
    n = 0
    with open_part(path, out_dir, byte_range) as fh:
        for a in iter_rows(fh, result, path, byte_range, bar):
            n += 1
            row = post_row(a, n, base + n, result)
            if row is not None:
                rows.append(row)
                body_chars += len(row[9])
                if len(rows) >= chunk_rows or body_chars >= CHUNK_BODY_CHARS:
                    chunks.flush()
                    body_chars = 0
    bar.close()
    chunks.flush()
    result.rows = n
    result.seconds = time.perf_counter() - t0
    return result


def parse_votes(
    site: str, path: Path, out_dir: Path, *, chunk_rows: int = 1_000_000, progress: bool = False, position: int = 0,
    byte_range: ByteRange | None = None,
) -> ParseResult:
    """Stream a ``Votes.xml`` (or one byte range of it) to per-post up (VoteTypeId 2) and
    down (3) counts, in Parquet chunks ``votes-<site>-<part>-<k>.parquet`` (``post_id``,
    ``up``, ``down``; summed later)."""
    t0 = time.perf_counter()
    part = byte_range.part if byte_range is not None else 0
    result = ParseResult(site, str(path), "votes", part=part, start=byte_range.start if byte_range else 0)
    up: Counter = Counter()
    down: Counter = Counter()
    bar = progress_bar(None, f"{site} votes" + (f" [{part}]" if byte_range else ""), progress, position)
    n = 0
    with open_part(path, out_dir, byte_range) as fh:
        for a in iter_rows(fh, result, path, byte_range, bar):
            n += 1
            vt = a.get("VoteTypeId")
            if vt == "2" or vt == "3":
                try:
                    post = int(a.get("PostId"))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    result.counts["malformed vote"] += 1
                    continue
                (up if vt == "2" else down)[post] += 1
                result.counts["up votes" if vt == "2" else "down votes"] += 1
            if n % chunk_rows == 0:
                _write_votes(up, down, out_dir / f"votes-{site}-{part:03d}-{len(result.chunks):06d}.parquet", result)
    bar.close()
    _write_votes(up, down, out_dir / f"votes-{site}-{part:03d}-{len(result.chunks):06d}.parquet", result)
    result.rows = n
    result.seconds = time.perf_counter() - t0
    return result


def _write_votes(up: Counter, down: Counter, path: Path, result: ParseResult) -> None:
    """Write the vote counts so far to ``path`` (none: nothing) and clear them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted(set(up) | set(down))
    if not keys:
        return
    table = pa.Table.from_arrays(
        [pa.array(keys, pa.int64()), pa.array([up[k] for k in keys], pa.int64()),
         pa.array([down[k] for k in keys], pa.int64())], names=["post_id", "up", "down"])
    pq.write_table(table, path)
    result.chunks.append(str(path))
    up.clear()
    down.clear()


def merge_parts(parts: list[ParseResult]) -> ParseResult:
    """Join the results of a file's byte ranges (in file order) into the file's result.

    Row numbers (in the malformed-row examples), the error's line and ``rows_before`` become
    the file's. As with one stream, nothing after the first XML error is kept: the parts
    after it are dropped.
    """
    parts = sorted(parts, key=lambda r: r.part)
    first = parts[0]
    out = ParseResult(first.site, first.path, first.kind)
    for r in parts:
        out.chunks.extend(r.chunks)
        out.counts.update(r.counts)
        out.seconds = max(out.seconds, r.seconds)
        for n, problem in r.bad_rows:
            if len(out.examples) < 10:
                out.examples.append(f"{r.path} row {out.rows + n}: {problem}")
        if r.error is not None:
            e = r.error
            line = e["line"] + (newlines_before(r.path, r.start) if r.start else 0)
            # libxml2 repeats the position in its message: make that one the file's too
            message = re.sub(rf"line {e['line']}, column \d+$", f"line {line}, column {e['column']}", e["message"])
            out.error = {**e, "line": line, "message": message, "rows_before": e["rows_before"] + out.rows}
            out.rows += r.rows
            break
        out.rows += r.rows
    return out
