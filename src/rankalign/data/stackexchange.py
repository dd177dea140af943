"""StaCoCoQA from StackExchange data dumps (seed 000 §3.1, Tables 7-8, Figure 11; SPEC §3).

Pipeline, with memory bounded whatever the dump size:

1. **Parse** (a process pool of ``--workers``): every ``Posts.xml`` (plain, ``.gz``,
   ``.bz2``, ``.zst``; ``.7z`` is first extracted into the work folder) is streamed, when
   the C extension is built, by libxml2's push parser with a C callback that writes Arrow
   buffers (:func:`_posts_parser`), else through an lxml parser target (no element tree: a
   dict of attributes per row, :func:`_post_row`), into uncompressed Parquet chunks of about
   ``chunk_rows`` rows / :data:`CHUNK_BODY_CHARS` characters of HTML (the work folder needs
   about the dump's uncompressed size of free disk); ``Votes.xml`` is streamed
   to up (VoteTypeId 2) / down (3) counts per post. A plain file of at least
   ``workers`` x :data:`SPLIT_MIN_BYTES` is cut into ``workers`` byte ranges, each starting
   at a ``<row`` and wrapped in the root element's tags (:func:`plan_ranges`), parsed in
   parallel; row numbers, XML error lines and ``rows_before`` are the file's, and nothing
   after the first XML error is kept, exactly as with one stream.
2. **Join and filter** (DuckDB over the Parquet chunks, in the main process, ``workers``
   threads, ``memory_limit`` = ``duckdb_memory`` (300MB default), spilling to the work
   folder): duplicate Ids keep their first row; answers are joined to questions by
   ``ParentId``; the cheap filters (accepted answer, code block, window, vote filter, pool
   size, vote spread) run here, so only the surviving questions and their answers are read
   with their bodies.
3. **Convert** (the surviving questions ordered by Id, cut into chunks of
   :data:`CONVERT_QUESTIONS` whole questions on the Arrow stream and sent to the process
   pool as Arrow IPC bytes): HTML to text (:mod:`rankalign.data.se_html`), token-length
   filters, the list-wise :class:`~rankalign.data.record.ListRecord` as JSON (orjson, or the
   same bytes from C for the default options: :func:`_records_in_c`); each worker writes its
   chunk's records to a file of its own and returns counts and statistics.
4. **Sample and split**: a seeded fixed-size sample (``--sample``; the paper's 3K, 8K,
   18K, 29K, 64K) and a seeded 9:1 train/test split; ``train.jsonl``, ``test.jsonl``,
   ``summary.json``, ``stats.csv``, ``stats.md`` and ``stats.png`` are written to a
   staging folder inside the output folder (the statistics files by a pool worker while
   the main process copies the chunk files' records into train/test, in question-Id order)
   and renamed into place at the end; the work
   folder of Parquet chunks is a temporary folder removed on exit (also on error).

Question filters, in this order; a question is counted under the FIRST reason it fails:

==========================  =====================================================================
``no accepted answer``      no ``AcceptedAnswerId`` (StaCoCoQA step 1)
``accepted answer missing`` ``AcceptedAnswerId`` names no answer of this question in the dump
``no code block``           the question body has no ``<code>`` (step 2; off with ``code_filter=False``)
``outside time window``     question ``CreationDate`` not in ``[start, end)``
``accepted answer filtered`` the accepted answer was dropped by an answer filter (below): step 1
                            requires the questioner-picked answer in the pool
``pool too small``          fewer than ``min_answers`` answers left (checked after each answer filter)
``pool too large``          more than ``max_answers`` answers left
``vote spread too small``   max - min votes of the pool < ``min_vote_spread``
``empty body``              question body (as text) is empty
``question too long``       question (title + text) longer than ``max_question_tokens``
==========================  =====================================================================

The checks of rows 5-8 run twice: in DuckDB after the vote filter (cheap, on every
question) and again in Python after the text filters; both count under the same names,
so the counts add up: ``questions = kept + sum(dropped)``.

Answer filters (each answer of a surviving question is dropped and counted, in order):
``answer below min votes`` (Score < ``min_answer_votes``), ``empty answer body``,
``answer too long`` (> ``max_answer_tokens``).

Row-level problems are counted in ``rows``: ``malformed row`` (a missing or non-integer
``Id``/``PostTypeId``/``Score``, a missing ``CreationDate`` or an unparseable one, a
question without ``Title``/``Body``, an answer without ``ParentId``/``Body``),
``duplicate id`` (the first row with an Id is kept), ``answer without question``.

**Decisions** (documented, tested):

- Token counts: a whitespace word count by default (``len(text.split())``); with
  ``tokenizer`` (a Hugging Face name or local path; give the policy's tokenizer) the
  number of tokens without special tokens. ``trust_remote_code`` is never set.
- Broken XML (truncated file, non-UTF-8 bytes, an undefined entity): the rows parsed
  before the error are kept, the error (file, line, column, message, rows read) goes to
  ``summary.json`` ``parse_errors`` and to stderr as a warning, and the build succeeds
  (exit 0); with ``strict=True`` the build fails with a :class:`UserError` and writes
  nothing. An empty file (or one without any ``<row>``) is always an error.
- Record ids: the question Id; with several sites ``"<site>/<Id>"`` (Ids repeat across sites).
- Responses are in the dump's order (ascending answer Id, i.e. creation order), not sorted
  by votes, so the input order carries no preference; ``accepted`` marks the questioner's pick.
- The time window is half-open: ``start <= created < end`` (dates or date-times, ISO 8601).
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import csv
import functools
import gzip
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from rankalign.data.record import ListRecord, parse_datetime
from rankalign.data.se_html import has_code_block, html_to_text, html_to_texts
from rankalign.errors import ConfigError, UserError

#: the suffixes a dump file may have, in the order they are looked for in a site folder.
DUMP_SUFFIXES = (".xml", ".xml.gz", ".xml.bz2", ".xml.zst", ".xml.7z", ".7z")
#: question drop reasons, in the order they are checked (module docstring).
QUESTION_REASONS = (
    "no accepted answer", "accepted answer missing", "no code block", "outside time window",
    "accepted answer filtered", "pool too small", "pool too large", "vote spread too small",
    "empty body", "question too long",
)
ANSWER_REASONS = ("answer below min votes", "empty answer body", "answer too long")
ROW_REASONS = ("malformed row", "duplicate id", "answer without question")
#: pool-size thresholds of the statistics (Table 7 of seed 000: sizes 3, 5, 8, 10, 15, 20).
POOL_SIZES = (2, 3, 5, 8, 10, 15, 20)


# ---------------------------------------------------------------------------- options
@dataclass
class StackExchangeOptions:
    """Every option of the StaCoCoQA build, defined once (the CLI reads these defaults).

    Attributes:
        votes: a ``Votes.xml`` for a single-file dump (site folders find theirs).
        code_filter: keep only questions with a code block (step 2); off for
            non-programming sites.
        start: keep questions created at or after this ISO date/time.
        end: keep questions created before this ISO date/time.
        min_answers: smallest response pool (a list needs at least 2).
        max_answers: largest response pool (``None``: no limit).
        min_vote_spread: smallest max-min vote difference within a pool (``None``: off).
        min_answer_votes: drop answers with fewer votes (``None``: off).
        max_question_tokens: drop questions (title + text) longer than this.
        max_answer_tokens: drop answers longer than this.
        tokenizer: Hugging Face tokenizer name or path for the token counts
            (``None``: whitespace word count).
        sample: fixed sample size drawn (seeded) from the kept questions (``None``: all).
        seed: seed of the sample and of the split.
        test_fraction: share of the test split (0.1 = the paper's 9:1).
        workers: processes for parsing and per-site joins.
        strict: fail on any XML error instead of keeping the rows before it.
        chunk_rows: rows per Parquet chunk while parsing (bounds memory).
        duckdb_memory: DuckDB ``memory_limit`` (it spills to the work folder beyond it).
        work_dir: parent folder of the temporary work folder (default: the system temp).
        progress: show progress bars (rows/s) on stderr.
    """

    votes: str | None = None
    code_filter: bool = True
    start: str | None = None
    end: str | None = None
    min_answers: int = 2
    max_answers: int | None = None
    min_vote_spread: int | None = None
    min_answer_votes: int | None = None
    max_question_tokens: int | None = None
    max_answer_tokens: int | None = None
    tokenizer: str | None = None
    sample: int | None = None
    seed: int = 42
    test_fraction: float = 0.1
    workers: int = 2
    strict: bool = False
    chunk_rows: int = 50_000
    duckdb_memory: str = "300MB"
    work_dir: str | None = None
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StackExchangeOptions:
        """Build from a mapping; unknown keys are an error (typos must not pass)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError([f"unknown option(s) {unknown}; valid options are {sorted(names)}"])
        opts = cls(**values)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Check every option; raise :class:`ConfigError` listing all problems at once."""
        problems: list[str] = []
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_datetime(value)
                except ValueError:
                    problems.append(f"--{name} {value!r} is not an ISO 8601 date (use e.g. 2020-01-01)")
        if self.start and self.end and not problems and parse_datetime(self.start) >= parse_datetime(self.end):
            problems.append(f"--start {self.start} is not before --end {self.end}; the time window is empty")
        if self.min_answers < 2:
            problems.append(f"--min-answers {self.min_answers} < 2: a list-wise record needs at least 2 responses")
        if self.max_answers is not None and self.max_answers < self.min_answers:
            problems.append(f"--max-answers {self.max_answers} < --min-answers {self.min_answers}")
        for name in ("min_vote_spread", "max_question_tokens", "max_answer_tokens", "sample"):
            value = getattr(self, name)
            if value is not None and value < (1 if name != "min_vote_spread" else 0):
                problems.append(f"--{name.replace('_', '-')} must be positive, got {value}")
        if not 0.0 <= self.test_fraction < 1.0:
            problems.append(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.workers < 1:
            problems.append(f"--workers must be >= 1, got {self.workers}")
        if self.chunk_rows < 1:
            problems.append(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.votes is not None and not Path(self.votes).is_file():
            problems.append(f"--votes {self.votes}: no such file")
        if problems:
            raise ConfigError(problems)

    def start_iso(self) -> str | None:
        return _iso_key(self.start) if self.start else None

    def end_iso(self) -> str | None:
        return _iso_key(self.end) if self.end else None


def _iso_key(value: str) -> str:
    """A date/time as the dump writes it (``YYYY-MM-DDTHH:MM:SS.fff``, UTC), for string comparison."""
    dt = parse_datetime(value)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]


# ---------------------------------------------------------------------------- inputs
@dataclass
class SiteInput:
    """One site of a dump: its name, its Posts file and optional Votes file."""

    name: str
    posts: Path
    votes: Path | None = None


def _find_dump_file(folder: Path, stem: str) -> Path | None:
    for suffix in DUMP_SUFFIXES:
        for name in (stem + suffix, stem.lower() + suffix):
            p = folder / name
            if p.is_file():
                return p
    return None


def discover_sites(dump: str | os.PathLike[str], votes: str | os.PathLike[str] | None = None) -> list[SiteInput]:
    """Find the sites of ``dump``: a Posts file, a site folder, or a folder of site folders.

    Raises:
        FileNotFoundError: ``dump`` does not exist.
        UserError: a folder holds no ``Posts.xml`` (in any supported wrapper).
    """
    p = Path(dump)
    if not p.exists():
        raise FileNotFoundError(f"no such dump file or folder: {p}")
    if p.is_file():
        name = p.parent.name or "site"
        if p.name.lower().endswith(".7z") and not p.name.lower().startswith("posts"):
            name = p.name[:-3].removesuffix("-Posts")
        return [SiteInput(name, p, Path(votes) if votes else None)]
    posts = _find_dump_file(p, "Posts")
    if posts is not None:
        return [SiteInput(p.name, posts, Path(votes) if votes else _find_dump_file(p, "Votes"))]
    if votes is not None:
        raise UserError("--votes works with a single Posts file or site folder; "
                        "in a folder of sites, put Votes.xml beside each Posts.xml")
    sites = []
    for sub in sorted(x for x in p.iterdir() if x.is_dir()):
        sp = _find_dump_file(sub, "Posts")
        if sp is not None:
            sites.append(SiteInput(sub.name, sp, _find_dump_file(sub, "Votes")))
    if not sites:
        raise UserError(f"{p}: no Posts.xml found (looked for Posts{{{','.join(DUMP_SUFFIXES)}}} in the "
                        "folder and in each sub-folder); give a Posts.xml file or a folder of site folders")
    return sites


@contextlib.contextmanager
def open_dump(path: Path, work_dir: Path) -> Iterator[IO[bytes]]:
    """Open a dump file as a binary stream, decompressing ``.gz``/``.bz2``/``.zst`` on the fly.

    A ``.7z`` archive cannot be streamed: its ``Posts.xml``/``Votes.xml`` (the member
    whose name matches the archive's kind) is extracted into ``work_dir`` first.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            yield fh
    elif name.endswith(".bz2"):
        with bz2.open(path, "rb") as fh:
            yield fh
    elif name.endswith(".zst"):
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as fh:
            yield fh  # type: ignore[misc]
    elif name.endswith(".7z"):
        import py7zr

        kind = "votes" if "votes" in name else "posts"
        with py7zr.SevenZipFile(path, "r") as archive:
            members = [n for n in archive.getnames() if Path(n).name.lower() == f"{kind}.xml"]
            if not members:
                members = [n for n in archive.getnames() if n.lower().endswith(".xml")]
            if not members:
                raise UserError(f"{path}: the archive holds no {kind.capitalize()}.xml")
            target = Path(tempfile.mkdtemp(prefix="7z-", dir=work_dir))
            archive.extract(path=target, targets=[members[0]])
        with open(target / members[0], "rb") as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield fh


# ---------------------------------------------------------------------------- parsing
#: a plain (uncompressed) dump file of at least this many bytes per worker is parsed as
#: ``workers`` byte ranges in parallel (each range starts at a ``<row``).
SPLIT_MIN_BYTES = 32 << 20
#: a posts Parquet chunk is also cut when its bodies reach this many characters (bounds memory).
CHUNK_BODY_CHARS = 16 << 20
_ROOT_RE = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml(?P<decl>[^?]*)\?>)?\s*(?:<!--.*?-->\s*)*"
                      rb"<(?P<root>[A-Za-z_][\w.\-]*)\s*>", re.S)
_ROW_START = b"<row"


@dataclass(frozen=True)
class ByteRange:
    """A part of a plain dump file parsed on its own: ``[start, end)`` wrapped in
    ``prefix``/``suffix`` (the root element's tags) so that it is a complete document.

    Attributes:
        part: the range's index in the file (0 = the head, with the XML declaration).
        start: first byte (a ``<row`` for every part but the first).
        end: end byte (exclusive).
        prefix: bytes fed before the range (``<posts>`` for parts > 0).
        suffix: bytes fed after the range (``</posts>`` for all parts but the last).
        col0: 0-based column of ``start`` within its line (to report the file's columns).
    """

    part: int
    start: int
    end: int
    prefix: bytes = b""
    suffix: bytes = b""
    col0: int = 0


def plan_ranges(path: Path, parts: int, min_bytes: int | None = None) -> list[ByteRange] | None:
    """Split a plain-XML dump into up to ``parts`` byte ranges, each starting at a ``<row``.

    ``None`` (parse the file as one stream) for compressed files, files smaller than
    ``parts * min_bytes``, a declared encoding other than UTF-8, a DOCTYPE (entities), or a
    head that does not look like ``<?xml ...?><root>`` followed by rows. A ``<row`` never
    occurs inside an attribute value (XML escapes ``<``), so the ranges cut the file between rows.
    """
    min_bytes = SPLIT_MIN_BYTES if min_bytes is None else min_bytes
    if parts < 2 or path.name.lower().endswith((".gz", ".bz2", ".zst", ".7z")):
        return None
    size = path.stat().st_size
    if size < parts * min_bytes:
        return None
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        m = _ROOT_RE.match(head)
        if m is None or head.find(_ROW_START, m.end()) < 0:
            return None
        decl = (m.group("decl") or b"").lower().replace(b" ", b"")
        if b"encoding=" in decl and not re.search(rb"encoding=[\"']utf-?8[\"']", decl):
            return None
        root = m.group("root")
        starts: list[tuple[int, int]] = [(0, 0)]
        for k in range(1, parts):
            pos = k * size // parts
            if pos <= starts[-1][0]:
                continue
            fh.seek(pos)
            buf = fh.read(1 << 20)
            i = buf.find(_ROW_START)
            while i >= 0 and i + 4 < len(buf) and buf[i + 4:i + 5] not in (b" ", b"\t", b"\n", b"\r", b"/", b">"):
                i = buf.find(_ROW_START, i + 1)
            if i < 0 or i + 4 >= len(buf):
                break
            start = pos + i
            back_from = max(0, start - 4096)
            fh.seek(back_from)
            back = fh.read(start - back_from)
            starts.append((start, len(back) - (back.rfind(b"\n") + 1)))
    if len(starts) < 2:
        return None
    ranges = []
    for k, (start, col0) in enumerate(starts):
        last = k == len(starts) - 1
        ranges.append(ByteRange(k, start, size if last else starts[k + 1][0],
                                b"<" + root + b">" if k else b"", b"" if last else b"</" + root + b">", col0))
    return ranges


class _RangeReader:
    """A file-like ``read(size)`` over one :class:`ByteRange` (prefix, bytes, suffix)."""

    def __init__(self, fh: IO[bytes], rng: ByteRange) -> None:
        self._fh = fh
        fh.seek(rng.start)
        self._left = rng.end - rng.start
        self._head = rng.prefix
        self._tail = rng.suffix

    def read(self, size: int = -1) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out
        if self._left > 0:
            b = self._fh.read(self._left if size is None or size < 0 else min(size, self._left))
            self._left = self._left - len(b) if b else 0
            if b:
                return b
        out, self._tail = self._tail, b""
        return out


@dataclass
class ParseResult:
    """What one parse job read: Parquet chunks, row counts, an XML error if any.

    A job reads a whole file or one :class:`ByteRange` of it; :func:`_merge_parts` joins the
    parts of a file (row numbers, error lines and ``rows_before`` become the file's).
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


_POST_SCHEMA_FIELDS = (
    ("seq", "int64"), ("id", "int64"), ("post_type", "int8"), ("parent_id", "int64"),
    ("accepted_answer_id", "int64"), ("created", "string"), ("score", "int64"),
    ("title", "string"), ("tags", "string"), ("body", "string"), ("has_code", "bool_"),
)
#: ``seq`` = part << _PART_SHIFT | row number in the part: file order, unique over the parts.
_PART_SHIFT = 40


def _post_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t in _POST_SCHEMA_FIELDS])


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _int64(value: str) -> int:
    """``int(value)``, which must fit a 64-bit column (ValueError otherwise)."""
    v = int(value)
    if not _INT64[0] <= v <= _INT64[1]:
        raise ValueError(f"{value!r} does not fit in 64 bits")
    return v


def _int_or_none(value: str | None) -> int | None:
    return _int64(value) if value else None


def _progress(total: int | None, desc: str, enabled: bool, position: int = 0, unit: str = "rows") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                position=position, leave=False, mininterval=0.5, file=sys.stderr)


@contextlib.contextmanager
def _open_part(path: Path, work_dir: Path, rng: ByteRange | None) -> Iterator[Any]:
    """The dump (``rng is None``) or one byte range of a plain dump, as a binary stream."""
    if rng is None:
        with open_dump(path, work_dir) as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield _RangeReader(fh, rng)


#: bytes fed to the XML parser at a time.
FEED_BYTES = 1 << 20


class _RowTarget:
    """lxml parser target that keeps the attribute dict of every ``<row>`` start tag.

    A target parser builds no tree and creates no element objects: lxml calls :meth:`start`
    with the attributes already decoded into a dict (about 20% faster than ``iterparse``
    plus ``el.get`` on a dump, and memory stays flat without any clearing).
    """

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


def _store_xml_error(result: ParseResult, path: Path, rng: ByteRange | None, line: int, column: int, message: str,
                     rows_before: int) -> None:
    """Store an XML error (line and column of the part; the column of line 1 of a byte range
    without the root tag put before it) in ``result.error``."""
    if rng is not None and rng.prefix and line == 1:
        column = column - len(rng.prefix) + rng.col0
    result.error = {"file": str(path), "line": line, "column": column, "message": message, "rows_before": rows_before}


class _Replay:
    """A binary stream that gives ``head`` first, then the rest of ``fh``."""

    def __init__(self, head: bytes, fh: Any) -> None:
        self._head = head
        self._fh = fh

    def read(self, size: int = -1) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out
        return self._fh.read(size)


def _iter_rows(fh: Any, result: ParseResult, path: Path, rng: ByteRange | None = None, bar: Any = None
               ) -> Iterator[dict[str, str]]:
    """Yield the attributes of each ``<row>`` of a dump (a dict per row, in file order),
    feeding lxml :data:`FEED_BYTES` at a time. An XML error ends the stream (the rows before
    it are still yielded) and is stored in ``result.error`` (line, column, message, rows
    read; of the part). ``bar`` (a tqdm bar) counts the rows and is closed at the end."""
    from lxml import etree

    target = _RowTarget()
    rows = target.rows
    parser = etree.XMLParser(target=target, huge_tree=True)
    error = None
    while True:
        data = fh.read(FEED_BYTES)
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
        _store_xml_error(result, path, rng, line, column, str(error.msg or error), target.count)
    if bar is not None:
        bar.close()


#: the columns of a posts chunk, in the order of :data:`_POST_SCHEMA_FIELDS`
_POST_COLS = tuple(n for n, _ in _POST_SCHEMA_FIELDS)


def _post_row(a: dict[str, str], n: int, cols: tuple[list[Any], ...], result: ParseResult, base: int) -> int:
    """Check one ``<row>`` of a Posts.xml and append a question or answer to ``cols`` (in
    :data:`_POST_COLS` order); count other post types and malformed rows (module docstring).
    Returns the characters of the body appended (0 when nothing was)."""
    counts = result.counts
    ptype_s = a.get("PostTypeId")
    id_s = a.get("Id")

    def malformed(problem: str) -> int:
        counts["malformed row"] += 1
        if len(result.bad_rows) < 10:
            result.bad_rows.append((n, problem))
        return 0

    if ptype_s != "1" and ptype_s != "2":
        if ptype_s is None or id_s is None:
            return malformed(f"Id={id_s!r}: no PostTypeId/Id attribute")
        counts["other post types"] += 1
        return 0
    body = a.get("Body")
    cdate = a.get("CreationDate")
    try:
        pid = _int64(id_s)  # type: ignore[arg-type]
        score = _int64(a["Score"])
        datetime.fromisoformat(cdate)  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError) as exc:
        return malformed(f"Id={id_s!r}: missing or invalid Id/Score/CreationDate ({exc})")
    if body is None:
        return malformed(f"Id={pid}: no Body attribute")
    if ptype_s == "1":
        title = a.get("Title")
        if title is None:
            return malformed(f"Id={pid}: question without Title")
        try:
            acc = _int_or_none(a.get("AcceptedAnswerId"))
        except ValueError:
            return malformed(f"Id={pid}: AcceptedAnswerId {a.get('AcceptedAnswerId')!r} is not an integer")
        counts["questions"] += 1
        row = (base + n, pid, 1, None, acc, cdate, score, title, a.get("Tags"), body, has_code_block(body))
    else:
        try:
            parent = _int64(a["ParentId"])
        except (KeyError, ValueError) as exc:
            return malformed(f"Id={pid}: answer without a valid ParentId ({exc})")
        counts["answers"] += 1
        row = (base + n, pid, 2, parent, None, cdate, score, None, None, body, False)
    for col, value in zip(cols, row, strict=True):
        col.append(value)
    return len(body)


@functools.cache
def _bound_se_rows() -> Any:
    """``rankalign.data._se_rows`` bound to the libxml2 inside lxml (once per process), or
    None when it is not built or lxml's library does not export the push parser."""
    try:
        from lxml import etree

        from rankalign.data import _se_rows
    except ImportError:
        return None
    return _se_rows if _se_rows.bind(etree.__file__) else None


def _posts_parser(base: int) -> Any:
    """The whole parse in C (``rankalign.data._se_rows.PostsParser``: libxml2's push parser,
    from lxml's library, with a C start-element callback), or None when it is not built, lxml's
    library does not export the parser, or ``RANKALIGN_PURE_PYTHON`` is set."""
    module = None if os.environ.get("RANKALIGN_PURE_PYTHON") else _bound_se_rows()
    return module.PostsParser(base) if module is not None else None


def _c_table(rows: int, columns: list[tuple[bytes, bytes | None, bytes | None, int]], schema: Any) -> Any:
    """The Arrow table of :meth:`PostsParser.take`'s buffers (no copy of the values)."""
    import pyarrow as pa

    arrays = []
    for (values, offsets, valid, nulls), f in zip(columns, schema, strict=True):
        vb = pa.py_buffer(values)
        mask = pa.py_buffer(valid) if valid is not None and nulls else None
        if pa.types.is_string(f.type):
            arrays.append(pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), vb, mask, nulls))
        elif pa.types.is_boolean(f.type):
            arrays.append(pa.Array.from_buffers(pa.uint8(), rows, [None, vb]).cast(pa.bool_()))
        else:
            arrays.append(pa.Array.from_buffers(f.type, rows, [mask, vb], null_count=nulls))
    return pa.Table.from_arrays(arrays, schema=schema)


def parse_posts(
    site: str, path: Path, out_dir: Path, *, chunk_rows: int = 50_000, progress: bool = False, position: int = 0,
    byte_range: ByteRange | None = None,
) -> ParseResult:
    """Stream a ``Posts.xml`` (or one byte range of it) into Parquet chunks
    ``out_dir/posts-<site>-<part>-<k>.parquet``.

    Columns: ``seq`` (file order), ``id``, ``post_type``, ``parent_id``,
    ``accepted_answer_id``, ``created`` (as written), ``score``, ``title``, ``tags``,
    ``body`` (raw HTML; only kept for questions and answers) and ``has_code``.
    Malformed rows are counted and not written (see the module docstring). The rows are
    parsed and checked in C when the extension is built (:func:`_posts_parser`; the rows it
    does not take go to :func:`_post_row`), else by lxml and :func:`_post_row`. A chunk is
    written when it holds ``chunk_rows`` rows or :data:`CHUNK_BODY_CHARS` characters of
    bodies (checked after each :data:`FEED_BYTES` of input in C).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    part = byte_range.part if byte_range is not None else 0
    base = part << _PART_SHIFT
    result = ParseResult(site, str(path), "posts", part=part, start=byte_range.start if byte_range else 0)
    schema = _post_schema()
    cols: tuple[list[Any], ...] = tuple([] for _ in _POST_COLS)
    body_chars = 0
    c_tables: list[Any] = []  # tables of the C parser's buffers, written with the rows in cols

    def flush() -> None:
        if not cols[0] and not c_tables:
            return
        chunk = out_dir / f"posts-{site}-{part:03d}-{len(result.chunks):06d}.parquet"
        # uncompressed: the chunks are read once, and compressing costs ~20% of the parse
        # arrays with explicit types, then from_arrays: ``pa.table(dict)`` imports pandas
        tables = list(c_tables)
        if cols[0]:
            tables.append(pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)],
                                               schema=schema))
        pq.write_table(tables[0] if len(tables) == 1 else pa.concat_tables(tables), chunk, compression="none",
                       use_dictionary=False, write_statistics=False)
        result.chunks.append(str(chunk))
        for c in cols:
            c.clear()
        c_tables.clear()


    bar = _progress(None, f"{site} posts" + (f" [{part}]" if byte_range else ""), progress, position)
    with _open_part(path, out_dir, byte_range) as fh:
        parser = _posts_parser(base)
        if parser is not None:  # a DOCTYPE (entity declarations) is left to lxml
            head = fh.read(FEED_BYTES)
            doctype, first_row = head.find(b"<!DOCTYPE"), head.find(b"<row")
            if doctype >= 0 and (first_row < 0 or doctype < first_row):
                parser = None
            fh = _Replay(head, fh)
        if parser is not None:  # C: libxml2 and the row checks; the rows it does not take, in Python
            seen = 0
            while True:
                data = fh.read(FEED_BYTES)
                parser.feed(data, not data)
                bar.update(parser.n - seen)
                seen = parser.n
                done = not data or parser.error is not None
                if done or parser.size >= chunk_rows or parser.body_bytes >= CHUNK_BODY_CHARS:
                    rows, columns, slow, _ = parser.take()
                    if rows:
                        c_tables.append(_c_table(rows, columns, schema))
                    for n, a in slow:
                        _post_row(a, n, cols, result, base)
                    flush()
                if done:
                    break
            n = parser.n
            if parser.error is not None:  # formatted as lxml formats it
                line, column, message = parser.error
                message = message or "XML error"
                if line > 0:
                    message = f"{message}, line {line}, column {column}" if column > 0 else f"{message}, line {line}"
                _store_xml_error(result, path, byte_range, line, column, message, n)
            for key, value in (("questions", parser.questions), ("answers", parser.answers),
                               ("other post types", parser.other)):
                if value:  # as Python counts: only the reasons that occur
                    result.counts[key] += value
            bar.close()
        else:  # Python: a row at a time
            n = 0
            for a in _iter_rows(fh, result, path, byte_range, bar):
                n += 1
                body_chars += _post_row(a, n, cols, result, base)
                if len(cols[0]) >= chunk_rows or body_chars >= CHUNK_BODY_CHARS:
                    flush()
                    body_chars = 0
    flush()
    result.rows = n
    result.seconds = time.perf_counter() - t0
    return result


def parse_votes(
    site: str, path: Path, out_dir: Path, *, chunk_rows: int = 1_000_000, progress: bool = False, position: int = 0,
    byte_range: ByteRange | None = None,
) -> ParseResult:
    """Stream a ``Votes.xml`` (or one byte range of it) to per-post up (VoteTypeId 2) and
    down (3) counts, in Parquet chunks ``out_dir/votes-<site>-<part>-<k>.parquet``
    (``post_id``, ``up``, ``down``; summed later)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    part = byte_range.part if byte_range is not None else 0
    result = ParseResult(site, str(path), "votes", part=part, start=byte_range.start if byte_range else 0)
    up: Counter = Counter()
    down: Counter = Counter()

    def flush() -> None:
        keys = sorted(set(up) | set(down))
        if not keys:
            return
        table = pa.Table.from_arrays(
            [pa.array(keys, pa.int64()), pa.array([up[k] for k in keys], pa.int64()),
             pa.array([down[k] for k in keys], pa.int64())], names=["post_id", "up", "down"])
        chunk = out_dir / f"votes-{site}-{part:03d}-{len(result.chunks):06d}.parquet"
        pq.write_table(table, chunk)
        result.chunks.append(str(chunk))
        up.clear()
        down.clear()

    bar = _progress(None, f"{site} votes" + (f" [{part}]" if byte_range else ""), progress, position)
    n = 0
    with _open_part(path, out_dir, byte_range) as fh:
        for a in _iter_rows(fh, result, path, byte_range, bar):
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
                flush()
    flush()
    result.rows = n
    result.seconds = time.perf_counter() - t0
    return result


def _parse_job(args: tuple[str, str, str, str, int, bool, int, ByteRange | None]) -> ParseResult:
    kind, site, path, out_dir, chunk_rows, progress, position, rng = args
    fn = parse_posts if kind == "posts" else parse_votes
    try:
        return fn(site, Path(path), Path(out_dir),
                  chunk_rows=chunk_rows if kind == "posts" else max(chunk_rows * 20, 1),
                  progress=progress, position=position, byte_range=rng)
    finally:
        _release_memory()


def _release_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise), so that a pool
    worker does not hold the peak of its parse job while it converts HTML later."""
    import ctypes
    import gc

    gc.collect()
    if "pyarrow" in sys.modules:  # Arrow's own allocator (mimalloc) keeps freed pages too
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _merge_parts(parts: list[ParseResult]) -> ParseResult:
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
            line = e["line"] + (_newlines_before(r.path, r.start) if r.start else 0)
            # libxml2 repeats the position in its message: make that one the file's too
            message = re.sub(rf"line {e['line']}, column \d+$", f"line {line}, column {e['column']}", e["message"])
            out.error = {**e, "line": line, "message": message, "rows_before": e["rows_before"] + out.rows}
            out.rows += r.rows
            break
        out.rows += r.rows
    return out


def _newlines_before(path: str, offset: int) -> int:
    """The newlines in the first ``offset`` bytes of a plain file: what turns the line of an
    error in a byte range into the file's (counted only then, not while parsing)."""
    n = 0
    with open(path, "rb") as fh:
        while offset > 0:
            data = fh.read(min(offset, 1 << 24))
            if not data:
                break
            n += data.count(b"\n")
            offset -= len(data)
    return n


# ---------------------------------------------------------------------------- join + filters
@dataclass
class SiteResult:
    """What the join/filter stage of one site kept and dropped."""

    site: str
    kept_dir: str
    kept_parts: list[str] = field(default_factory=list)  # JSON-lines files in question-Id order
    kept_lengths: list[bytes] = field(default_factory=list)  # their lines' byte lengths (uint32)
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    answers_dropped: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)
    pool_by_year: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)
    tags: dict[str, Counter] = field(default_factory=dict)
    seconds: float = 0.0


def _tokens_counter(tokenizer: str | None) -> Callable[[str], int]:
    """The token counter of the length filters (whitespace words, or a HF tokenizer)."""
    if tokenizer is None:
        return lambda text: len(text.split())
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"--tokenizer {tokenizer!r} could not be loaded ({exc}); give a local tokenizer "
                        "folder or a model name available offline") from None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _split_tags(tags: str | None) -> list[str]:
    """``<a><b>`` (classic dumps) or ``|a|b|`` (newer dumps) -> ``["a", "b"]``."""
    if not tags:
        return []
    if tags.startswith("<"):
        return [t for t in tags[1:-1].split("><") if t]
    return [t for t in tags.split("|") if t]


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _pool_stats_sql(con: Any, where: str) -> dict[int, dict[int, int]]:
    """Questions per creation year with at least k answers (k in POOL_SIZES): Table 7."""
    cols = ", ".join(f"count(*) FILTER (WHERE n_all >= {k})" for k in POOL_SIZES)
    rows = con.execute(f"SELECT year, {cols} FROM qstat WHERE {where} GROUP BY year ORDER BY year").fetchall()
    return {int(r[0]): {k: int(v) for k, v in zip(POOL_SIZES, r[1:], strict=True)} for r in rows if r[0] is not None}


def _ddl(con: Any, sql: str) -> None:
    """Run a statement whose result is not read (DuckDB wants every result consumed)."""
    con.execute(sql).fetchall()


def build_site(
    site: str, posts_chunks: list[str], votes_chunks: list[str], opts: StackExchangeOptions,
    work_dir: Path, *, position: int = 0, pool: ProcessPoolExecutor | None = None, id_prefix: str = "",
) -> SiteResult:
    """Join answers to questions, apply the StaCoCoQA filters, convert and write the kept
    records (one JSON object per line, ordered by question Id) to ``work_dir/kept-<site>-<k>.jsonl``,
    one file per conversion chunk, written by the worker that converted it (and, per record,
    ``[year, responses, tags]`` to ``kept-<site>-<k>.info`` for the statistics of a sample).

    Only the questions that pass the cheap filters in DuckDB (and their vote-filtered
    answers) reach the HTML conversion, in chunks of :data:`CONVERT_QUESTIONS` questions
    spread over ``pool`` (in order; inline without a pool).
    """
    import duckdb

    t0 = time.perf_counter()
    res = SiteResult(site, str(work_dir))
    if opts.tokenizer is not None and opts.tokenizer not in _TOKEN_COUNTERS:  # fail early on a bad tokenizer
        _TOKEN_COUNTERS[opts.tokenizer] = _tokens_counter(opts.tokenizer)
    if not posts_chunks:
        return res
    spill = Path(tempfile.mkdtemp(prefix="duckdb-", dir=work_dir))
    con = duckdb.connect(config={"memory_limit": opts.duckdb_memory, "temp_directory": str(spill),
                                 "threads": max(1, opts.workers), "preserve_insertion_order": False})
    try:
        _ddl(con, f"SET enable_progress_bar = {'true' if opts.progress else 'false'}")
        _ddl(con, f"CREATE VIEW posts AS SELECT * FROM read_parquet({_sql_list(posts_chunks)})")
        # first row of each Id (duplicates counted)
        _ddl(con, "CREATE TEMP TABLE firsts AS SELECT id, min(seq) AS seq, count(*) AS n FROM posts GROUP BY id")
        res.rows["duplicate id"] = int(con.execute("SELECT coalesce(sum(n - 1), 0) FROM firsts").fetchall()[0][0])
        _ddl(con, """CREATE TEMP TABLE meta AS SELECT p.seq, p.id, p.post_type, p.parent_id, p.accepted_answer_id,
                       p.created, p.score, p.has_code FROM posts p SEMI JOIN firsts f ON p.seq = f.seq""")
        res.rows["answer without question"] = int(con.execute(
            "SELECT count(*) FROM meta a WHERE a.post_type = 2 AND a.parent_id NOT IN "
            "(SELECT id FROM meta WHERE post_type = 1)").fetchall()[0][0])
        minv = opts.min_answer_votes
        vote_ok = "TRUE" if minv is None else f"a.score >= {int(minv)}"
        _ddl(con, f"""
            CREATE TEMP TABLE qstat AS
            SELECT q.id, q.seq, q.accepted_answer_id, q.created, q.has_code, TRY_CAST(substr(q.created, 1, 4) AS INTEGER) AS year,
                   count(a.id) AS n_all,
                   count(a.id) FILTER (WHERE {vote_ok}) AS n_v,
                   max(a.score) FILTER (WHERE {vote_ok}) AS vmax,
                   min(a.score) FILTER (WHERE {vote_ok}) AS vmin,
                   coalesce(bool_or(a.id = q.accepted_answer_id), FALSE) AS acc_found,
                   coalesce(bool_or(a.id = q.accepted_answer_id AND {vote_ok}), FALSE) AS acc_ok
            FROM meta q LEFT JOIN meta a ON a.post_type = 2 AND a.parent_id = q.id
            WHERE q.post_type = 1
            GROUP BY ALL""")
        start, end = opts.start_iso(), opts.end_iso()
        cases = ["WHEN accepted_answer_id IS NULL THEN 'no accepted answer'",
                 "WHEN NOT acc_found THEN 'accepted answer missing'"]
        if opts.code_filter:
            cases.append("WHEN NOT has_code THEN 'no code block'")
        if start:
            cases.append(f"WHEN created < '{start}' THEN 'outside time window'")
        if end:
            cases.append(f"WHEN created >= '{end}' THEN 'outside time window'")
        cases.append("WHEN NOT acc_ok THEN 'accepted answer filtered'")
        cases.append(f"WHEN n_v < {opts.min_answers} THEN 'pool too small'")
        if opts.min_vote_spread is not None:
            cases.append(f"WHEN vmax - vmin < {int(opts.min_vote_spread)} THEN 'vote spread too small'")
        _ddl(con, "ALTER TABLE qstat ADD COLUMN reason VARCHAR")
        _ddl(con, f"UPDATE qstat SET reason = CASE {' '.join(cases)} ELSE NULL END")
        for reason, n in con.execute("SELECT reason, count(*) FROM qstat WHERE reason IS NOT NULL GROUP BY reason").fetchall():
            res.dropped[reason] += int(n)
        res.rows["questions"] = int(con.execute("SELECT count(*) FROM qstat").fetchall()[0][0])
        # Table 7 statistics for D_Q (step 1) and D_C (step 2), pool = all answers of the question
        res.pool_by_year["D_Q"] = _pool_stats_sql(con, "acc_found")
        code_cond = "acc_found AND has_code" if opts.code_filter else "acc_found"
        res.pool_by_year["D_C"] = _pool_stats_sql(con, code_cond)
        # tag counts of D_C in SQL, split exactly as _split_tags does
        res.tags["D_C"] = Counter(dict(con.execute(f"""
            SELECT tag, count(*) FROM (
                SELECT unnest(CASE WHEN starts_with(p.tags, '<') THEN string_split(p.tags[2:-2], '><')
                                   ELSE string_split(p.tags, '|') END) AS tag
                FROM posts p SEMI JOIN (SELECT seq FROM qstat WHERE {code_cond}) s ON p.seq = s.seq
                WHERE p.tags IS NOT NULL AND p.tags <> '')
            WHERE tag <> '' GROUP BY tag""").fetchall()))

        votes_join = ""
        votes_cols = "NULL::BIGINT AS up, NULL::BIGINT AS down"
        if votes_chunks:
            _ddl(con, f"""CREATE TEMP TABLE votes AS SELECT post_id, sum(up)::BIGINT AS up, sum(down)::BIGINT AS down
                            FROM read_parquet({_sql_list(votes_chunks)}) GROUP BY post_id""")
            votes_join = "LEFT JOIN votes v ON v.post_id = p.id"
            votes_cols = "coalesce(v.up, 0) AS up, coalesce(v.down, 0) AS down"
        # one ordered stream: each candidate question, then its answers (the vote-filtered pool).
        # The rows needed are first listed without their bodies (small), then one join with
        # that small build side and one sort that DuckDB spills to disk beyond memory_limit.
        _ddl(con, f"""CREATE TEMP TABLE needed AS
            SELECT c.seq, c.id AS qid, 0 AS kind FROM qstat c WHERE c.reason IS NULL
            UNION ALL
            SELECT a.seq, c.id AS qid, 1 AS kind FROM qstat c JOIN meta a ON a.post_type = 2 AND a.parent_id = c.id
            WHERE c.reason IS NULL AND {vote_ok}""")
        query = f"""
            SELECT n.qid, n.kind, p.id, p.title, p.tags, p.body, p.created, p.score, p.accepted_answer_id,
                   {votes_cols}
            FROM posts p JOIN needed n ON p.seq = n.seq {votes_join}
            ORDER BY n.qid, n.kind, p.id"""
        n_below = 0
        if minv is not None:
            n_below = int(con.execute(f"""SELECT count(*) FROM qstat c JOIN meta a ON a.post_type = 2
                          AND a.parent_id = c.id WHERE c.reason IS NULL AND a.score < {int(minv)}""").fetchall()[0][0])
        res.answers_dropped["answer below min votes"] += n_below
        n_cand = int(con.execute("SELECT count(*) FROM qstat WHERE reason IS NULL").fetchall()[0][0])
        bar = _progress(n_cand, f"{site} convert", opts.progress, position, unit="q")
        reader = con.sql(query).to_arrow_reader(8192)
        final_years: dict[int, dict[int, int]] = {}
        res.tags["kept"] = Counter()
        has_votes = bool(votes_chunks)
        pending: collections.deque[Any] = collections.deque()
        max_pending = 2 * (pool._max_workers if pool is not None else 1)  # type: ignore[attr-defined]

        def collect(done: ConvertResult) -> None:
            res.kept_parts.append(done.path)
            res.kept_lengths.append(done.lengths)
            res.kept += done.kept
            res.dropped.update(done.dropped)
            res.answers_dropped.update(done.answers_dropped)
            _merge_years(final_years, done.years)
            res.tags["kept"].update(done.tags)
            bar.update(done.questions)

        for k, chunk in enumerate(_question_chunks(reader)):
            job = (chunk, opts, has_votes, site, id_prefix, str(work_dir / f"kept-{site}-{k:06d}.jsonl"))
            if pool is None:
                collect(_convert_chunk(job))
                continue
            pending.append(pool.submit(_convert_chunk, job))
            while len(pending) >= max_pending:
                collect(pending.popleft().result())
        while pending:
            collect(pending.popleft().result())
        bar.close()
        res.pool_by_year["kept"] = final_years
    except duckdb.OutOfMemoryException as exc:
        raise UserError(f"site {site}: DuckDB ran out of memory ({str(exc).splitlines()[0]}); "
                        f"raise --duckdb-memory (now {opts.duckdb_memory})") from None
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    res.seconds = time.perf_counter() - t0
    return res


#: questions per conversion chunk (a chunk also ends at CONVERT_CHARS characters of HTML).
CONVERT_QUESTIONS = 1000
CONVERT_CHARS = 8 << 20
_STREAM_COLS = ("qid", "kind", "id", "title", "tags", "body", "created", "score", "accepted_answer_id", "up", "down")


def _question_chunks(reader: Any) -> Iterator[bytes]:
    """Cut the ordered (question, answers...) stream into chunks of whole questions (at most
    CONVERT_QUESTIONS questions or about CONVERT_CHARS characters of HTML), each an Arrow IPC
    stream (bytes) in :data:`_STREAM_COLS` order.

    The cuts are found with Arrow/numpy on the ``kind`` column (a question's group starts at
    its ``kind == 0`` row) and the body lengths, so the main process never turns rows into
    Python objects: the pool workers do that (:func:`_group_rows`), and sending Arrow buffers
    costs a copy instead of pickling ~10^5 Python strings.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    buffered: list[Any] = []

    def encode(table: Any) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def cuts(table: Any, final: bool) -> Iterator[Any]:
        """Yield the complete chunks at the head of ``table`` (all of it when ``final``); the
        unfinished rest goes to ``buffered``."""
        kinds = table.column("kind").to_numpy()
        starts = np.flatnonzero(kinds == 0)
        chars = np.cumsum(pc.fill_null(pc.utf8_length(table.column("body")), 0).to_numpy(), dtype=np.int64)
        begin = 0  # row where the current chunk starts; starts[first] == begin
        first = 0
        n_starts = len(starts)
        while True:
            # cut before start k (k > first) once k - first questions or CONVERT_CHARS chars are in
            base = chars[begin - 1] if begin else 0
            ks = np.arange(first + 1, n_starts)
            if not len(ks):
                break
            before = chars[starts[ks] - 1] - base
            hit = np.flatnonzero((ks - first >= CONVERT_QUESTIONS) | (before >= CONVERT_CHARS))
            if not len(hit):
                break
            k = int(ks[hit[0]])
            yield table.slice(begin, int(starts[k]) - begin)
            begin, first = int(starts[k]), k
        rest = table.slice(begin)
        buffered.clear()
        if final:
            if rest.num_rows:
                yield rest
        elif rest.num_rows:
            buffered.append(rest)

    schema = None
    for batch in reader:
        if schema is None:
            schema = batch.schema
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch], schema=schema)
        if buffered:  # the unfinished tail of the previous batches comes first
            table = pa.concat_tables([buffered[0], table])
        for piece in cuts(table, final=False):
            yield encode(piece)
    if buffered:
        for piece in cuts(buffered[0], final=True):
            yield encode(piece)


def _chunk_columns(data: bytes) -> list[list[Any]]:
    """An Arrow IPC chunk of :func:`_question_chunks` -> its columns (:data:`_STREAM_COLS`) as lists."""
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    return [table.column(name).to_pylist() for name in _STREAM_COLS]


def _group_rows(columns: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """The columns of a chunk -> one list of row tuples per question (rows of the same qid)."""
    groups: list[list[tuple[Any, ...]]] = []
    group: list[tuple[Any, ...]] = []
    current = None
    for row in zip(*columns, strict=True):
        if row[0] != current:
            if group:
                groups.append(group)
            group = []
            current = row[0]
        group.append(row)
    if group:
        groups.append(group)
    return groups


def _records_in_c(opts: StackExchangeOptions) -> Any:
    """``rankalign.data._se_rows.records`` (the records of a chunk in C, the same bytes as the
    Python code) when it is built and the options are ones it handles (no token limits, no
    pool maximum, no vote spread), else None."""
    if (opts.max_answers is not None or opts.min_vote_spread is not None or opts.max_question_tokens is not None
            or opts.max_answer_tokens is not None or os.environ.get("RANKALIGN_PURE_PYTHON")):
        return None
    try:
        from rankalign.data._se_rows import records
    except ImportError:
        return None
    return records


@dataclass
class ConvertResult:
    """What one conversion chunk produced: its JSON-lines file (and the ``.info`` file beside
    it: ``[year, responses, tags]`` per record), statistics and drop counts."""

    path: str
    lengths: bytes  # the byte length of each record's line, as uint32
    years: dict[int, dict[int, int]]
    tags: Counter
    kept: int
    questions: int
    dropped: Counter
    answers_dropped: Counter


_TOKEN_COUNTERS: dict[str | None, Callable[[str], int]] = {}


def _convert_chunk(args: tuple[bytes, StackExchangeOptions, bool, str, str, str]) -> ConvertResult:
    """HTML to text, text filters and records for a chunk of candidate questions (runs in a
    worker, which writes the records to the chunk's own file: the main process only gets counts).

    The JSON lines are written straight from dicts in :meth:`ListRecord.to_dict`'s shape (or
    their bytes by :func:`_records_in_c`);
    every field is valid by construction (ints from Arrow, dates checked while parsing,
    non-empty stripped texts, at least ``min_answers`` >= 2 responses), and the chunk's first
    record is still re-read with :meth:`ListRecord.from_dict` as a guard against drift.
    """
    import array

    import orjson

    data, opts, has_votes, site, id_prefix, path = args
    columns = _chunk_columns(data)
    texts = html_to_texts(columns[5])  # all bodies in one call
    years: dict[int, dict[int, int]] = {}
    tags: Counter = Counter()
    stats: list[tuple[str, int, list[str]]] = []  # (created, responses, tags) per record
    records = _records_in_c(opts)
    if records is not None:
        jsonl, lengths, stats, dropped, adropped, n_questions = records(
            tuple(columns), texts, opts.min_answers, has_votes, site, id_prefix, _split_tags)
        dropped, adropped = Counter(dropped), Counter(adropped)
        if jsonl:
            ListRecord.from_dict(orjson.loads(jsonl[:jsonl.index(b"\n")]), where=f"site {site}, chunk {path}")
    else:
        chunk = _group_rows(columns)
        count_tokens = _TOKEN_COUNTERS.get(opts.tokenizer)
        if count_tokens is None:
            count_tokens = _TOKEN_COUNTERS[opts.tokenizer] = _tokens_counter(opts.tokenizer)
        counts = SiteResult(site, "")
        lines: list[bytes] = []
        dumps = orjson.dumps
        newline = orjson.OPT_APPEND_NEWLINE
        start = 0
        for group in chunk:
            rec = _finish_question(group, texts[start: start + len(group)], opts, count_tokens, counts,
                                   has_votes=has_votes, site=site, id_prefix=id_prefix)
            start += len(group)
            if rec is None:
                continue
            if not lines:
                ListRecord.from_dict(rec, where=f"site {site} question {rec['id']}")
            lines.append(dumps(rec, option=newline))
            stats.append((rec["meta"]["created"], len(rec["responses"]), rec["meta"]["tags"]))
        jsonl = b"".join(lines)
        lengths = array.array("I", map(len, lines)).tobytes()
        dropped, adropped, n_questions = counts.dropped, counts.answers_dropped, len(chunk)
    for created, n_resp, rec_tags in stats:
        _count_pool(years, int(created[:4]), n_resp)
        tags.update(rec_tags)
    with open(path, "wb") as fh:
        fh.write(jsonl)
    if opts.sample is not None:  # the statistics of a sample are counted from these
        with open(Path(path).with_suffix(".info"), "wb") as fh:
            fh.write(b"".join(orjson.dumps((int(c[:4]), n, t), option=orjson.OPT_APPEND_NEWLINE)
                             for c, n, t in stats))
    return ConvertResult(path, lengths, years, tags, len(stats), n_questions, dropped, adropped)


def _count_pool(years: dict[int, dict[int, int]], year: int, n_responses: int) -> None:
    """Count one question of ``year`` under every pool-size threshold it reaches (Table 7)."""
    row = years.get(year)
    if row is None:
        row = years[year] = dict.fromkeys(POOL_SIZES, 0)
    for k in POOL_SIZES:
        if n_responses >= k:
            row[k] += 1


def _finish_question(
    group: list[tuple[Any, ...]], texts: list[str], opts: StackExchangeOptions, count_tokens: Callable[[str], int],
    res: SiteResult, *, has_votes: bool, site: str, id_prefix: str = "",
) -> dict[str, Any] | None:
    """One candidate question and its (vote-filtered) answers (rows in :data:`_STREAM_COLS`
    order, ``texts`` their bodies as text); apply the text filters; the record's JSON form
    or ``None``."""
    _qid, _kind, q_id, q_title, q_tags, _q_body, q_created, q_score, acc_id, q_up, q_down = group[0]
    title = (q_title or "").strip()
    question_text = texts[0]
    responses: list[dict[str, Any]] = []
    acc_dropped = False
    max_answer_tokens = opts.max_answer_tokens
    for (_q, _k, a_id, _t, _g, _b, a_created, a_score, _acc, a_up, a_down), text in zip(group[1:], texts[1:],
                                                                                        strict=True):
        reason = None
        if not text:
            reason = "empty answer body"
        elif max_answer_tokens is not None and count_tokens(text) > max_answer_tokens:
            reason = "answer too long"
        if reason is not None:
            res.answers_dropped[reason] += 1
            acc_dropped = acc_dropped or a_id == acc_id
            continue
        attrs: dict[str, Any] = {"votes": a_score, "created": a_created, "accepted": a_id == acc_id,
                                 "post_id": str(a_id)}
        if has_votes:
            attrs["up"] = a_up
            attrs["down"] = a_down
        responses.append({"text": text, "attributes": attrs})
    reason = None
    if acc_dropped:
        reason = "accepted answer filtered"
    elif len(responses) < opts.min_answers:
        reason = "pool too small"
    elif opts.max_answers is not None and len(responses) > opts.max_answers:
        reason = "pool too large"
    elif opts.min_vote_spread is not None and (
            max(r["attributes"]["votes"] for r in responses) - min(r["attributes"]["votes"] for r in responses)
            < opts.min_vote_spread):
        reason = "vote spread too small"
    elif not question_text:
        reason = "empty body"
    prompt = f"{title}\n\n{question_text}"
    if reason is None and opts.max_question_tokens is not None and count_tokens(prompt) > opts.max_question_tokens:
        reason = "question too long"
    if reason is not None:
        res.dropped[reason] += 1
        return None
    meta = {"title": title, "tags": _split_tags(q_tags), "accepted_answer_id": str(acc_id),
            "created": q_created, "score": q_score, "site": site, "source": "stackexchange",
            "question_id": str(q_id)}
    if has_votes:
        meta["up"] = q_up
        meta["down"] = q_down
    return {"id": f"{id_prefix}{q_id}", "prompt": prompt, "responses": responses, "meta": meta}


# ---------------------------------------------------------------------------- the whole build
@dataclass
class BuildSummary:
    """The content of ``summary.json`` (see :func:`build_stacocoqa`)."""

    dump: str
    sites: list[str]
    options: dict[str, Any]
    rows: dict[str, int]
    questions: dict[str, Any]
    answers: dict[str, Any]
    output: dict[str, Any]
    parse_errors: list[dict[str, Any]]
    examples: list[str]
    stats: dict[str, Any]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """A short human summary: kept, and why rows were dropped."""
        lines = [f"StaCoCoQA build of {self.dump} ({len(self.sites)} site(s)): "
                 f"{self.rows.get('rows', 0)} rows read, {self.questions['total']} questions, "
                 f"kept {self.questions['kept']}; wrote {self.output['train']} train + {self.output['test']} test"]
        drops = {k: v for k, v in self.questions["dropped"].items() if v}
        if drops:
            lines.append("  questions dropped: " + ", ".join(f"{v} {k}" for k, v in drops.items()))
        adrops = {k: v for k, v in self.answers["dropped"].items() if v}
        if adrops:
            lines.append("  answers dropped: " + ", ".join(f"{v} {k}" for k, v in adrops.items()))
        rdrops = {k: self.rows.get(k, 0) for k in ROW_REASONS if self.rows.get(k, 0)}
        if rdrops:
            lines.append("  rows skipped: " + ", ".join(f"{v} {k}" for k, v in rdrops.items()))
        for err in self.parse_errors:
            lines.append(f"  WARNING: XML error in {err['file']} at line {err['line']}, column {err['column']}: "
                         f"{err['message']} (kept the {err['rows_before']} rows before it)")
        return "\n".join(lines)


def _merge_years(dst: dict[int, dict[int, int]], src: dict[int, dict[int, int]]) -> None:
    for year, row in src.items():
        d = dst.setdefault(int(year), dict.fromkeys(POOL_SIZES, 0))
        for k, v in row.items():
            d[int(k)] += v


def build_stacocoqa(
    dump: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: StackExchangeOptions | None = None,
) -> BuildSummary:
    """Build StaCoCoQA-style list-wise records from a StackExchange dump (module docstring).

    Args:
        dump: a ``Posts.xml`` (plain/.gz/.bz2/.zst/.7z), a site folder, or a folder of site folders.
        out_dir: receives ``train.jsonl``, ``test.jsonl``, ``summary.json``, ``stats.csv``,
            ``stats.md`` and ``stats.png``.
        options: the filters and settings (:class:`StackExchangeOptions`).
    Returns:
        The summary (also written as ``summary.json``).
    Raises:
        FileNotFoundError: the dump does not exist.
        ConfigError: invalid options (all problems listed).
        UserError: an empty dump file, a folder without Posts.xml, an XML error with ``strict``.
    """
    opts = options or StackExchangeOptions()
    opts.validate()
    sites = discover_sites(dump, opts.votes)
    for s in sites:
        for p in (s.posts, s.votes):
            if p is not None and p.stat().st_size == 0:
                raise UserError(f"{p} is empty (0 bytes); give a complete StackExchange dump file")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rankalign-se-", dir=opts.work_dir) as tmp, \
            _pool(opts.workers, len(sites)) as pool:
        jobs = []
        files = []
        for s in sites:
            for kind, fpath in (("posts", s.posts), ("votes", s.votes)):
                if fpath is None:
                    continue
                ranges = plan_ranges(fpath, opts.workers) or [None]
                files.append(len(ranges))
                for rng in ranges:
                    jobs.append((kind, s.name, str(fpath), tmp, opts.chunk_rows, opts.progress, len(jobs), rng))
        part_results = _map(pool, _parse_job, jobs)
        parsed = []
        for n_parts in files:
            parsed.append(_merge_parts(part_results[:n_parts]))
            part_results = part_results[n_parts:]
        t_parse = time.perf_counter() - t0
        errors = [r.error for r in parsed if r.error is not None]
        for r in parsed:
            if r.kind == "posts" and r.rows == 0:
                detail = f": {r.error['message']}" if r.error else ""
                raise UserError(f"{r.path}: no <row> element found{detail}; is this a StackExchange Posts.xml?")
        if errors and opts.strict:
            e = errors[0]
            raise UserError(f"XML error in {e['file']} at line {e['line']}, column {e['column']}: {e['message']} "
                            f"(strict mode; drop --strict to keep the {e['rows_before']} rows before it)")
        for e in errors:
            print(f"warning: XML error in {e['file']} at line {e['line']}, column {e['column']}: {e['message']}; "
                  f"kept the {e['rows_before']} rows before it", file=sys.stderr)
        if pool is not None:  # the workers wait for DuckDB's join and sort: import matplotlib meanwhile
            for _ in range(opts.workers):
                pool.submit(_import_plotting)
        built = []
        for s in sites:  # DuckDB uses `workers` threads; the HTML conversion runs in the pool
            pc = [c for r in parsed if r.site == s.name and r.kind == "posts" for c in r.chunks]
            vc = [c for r in parsed if r.site == s.name and r.kind == "votes" for c in r.chunks]
            built.append(build_site(s.name, pc, vc, opts, Path(tmp), pool=pool,
                                    id_prefix=f"{s.name}/" if len(sites) > 1 else ""))
        t_join = time.perf_counter() - t0 - t_parse
        seconds = {"parse": round(t_parse, 3), "join_convert": round(t_join, 3),
                   "total": round(time.perf_counter() - t0, 3)}
        # the parsed chunks are no longer needed: deleted by a thread while the outputs are written
        import threading

        cleaner = threading.Thread(target=_remove_files, args=([c for r in parsed for c in r.chunks],), daemon=True)
        cleaner.start()
        try:
            return _finish(dump, sites, opts, parsed, built, errors, out, seconds, pool)
        finally:
            cleaner.join()


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)


@contextlib.contextmanager
def _pool(workers: int, n_sites: int) -> Iterator[ProcessPoolExecutor | None]:
    """One process pool for the parse and HTML-conversion stages (``None``: run inline)."""
    if workers <= 1:
        yield None
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as ex:
        yield ex


def _worker_init() -> None:
    """Pool worker start-up: keep pyarrow from importing pandas.

    ``pyarrow.array`` on a Python list asks pyarrow's lazy pandas shim whether the list is
    a pandas object, which imports pandas (~0.4 s CPU and ~60 MB per worker) although the
    workers never use it. The shim tries the import once and remembers the answer, so it is
    made to try while ``import pandas`` is blocked, and the block is lifted right after (a
    later explicit ``import pandas`` still works; only pyarrow's pandas conversions are off
    in the worker, and the workers call none).
    """
    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        import pyarrow as pa

        pa.array([], pa.int64())
    finally:
        sys.meta_path.remove(blocker)


class _NoPandas:
    """A ``sys.meta_path`` finder that makes ``import pandas`` fail (see :func:`_worker_init`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not imported in the parse workers")
        return None


def _map(pool: ProcessPoolExecutor | None, fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
    """Run jobs in the pool (inline without one, or for a single job); results in job order."""
    if pool is None or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    return list(pool.map(fn, jobs))


def _finish(
    dump: str | os.PathLike[str], sites: list[SiteInput], opts: StackExchangeOptions,
    parsed: list[ParseResult], built: list[SiteResult], errors: list[dict[str, Any]], out: Path,
    seconds: dict[str, float], executor: ProcessPoolExecutor | None = None,
) -> BuildSummary:
    """Sample, split, write every output into a staging folder and rename into place."""
    import numpy as np
    import orjson

    total = sum(b.kept for b in built)
    rng = np.random.default_rng(opts.seed)
    chosen = np.arange(total) if opts.sample is None or opts.sample >= total else np.sort(
        rng.choice(total, size=opts.sample, replace=False))
    n_test = round(len(chosen) * opts.test_fraction)
    assign = np.zeros(total, dtype=np.uint8)  # 0 not sampled, 1 train, 2 test
    assign[chosen] = 1
    if n_test:
        assign[chosen[rng.permutation(len(chosen))[:n_test]]] = 2
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        out_years: dict[int, dict[int, int]] = {}
        out_tags: Counter = Counter()
        n_train = int((assign == 1).sum())
        n_test_w = int((assign == 2).sum())
        if len(chosen) == total:  # every kept record is in the output: the same statistics
            for b in built:
                _merge_years(out_years, b.pool_by_year.get("kept", {}))
                out_tags.update(b.tags.get("kept", Counter()))
        else:  # statistics of the sampled records (from the small .info files)
            idx = 0
            for b in built:
                for part in b.kept_parts:
                    with open(Path(part).with_suffix(".info"), "rb") as finfo:
                        for info in finfo:
                            where = assign[idx]
                            idx += 1
                            if where:
                                year, n_resp, rec_tags = orjson.loads(info)
                                _count_pool(out_years, year, n_resp)
                                out_tags.update(rec_tags)
            if idx != total:
                raise RuntimeError(f"internal error: {idx} statistics lines for {total} kept records")
        rows: Counter = Counter()
        examples: list[str] = []
        for r in parsed:
            if r.kind == "posts":
                rows["rows"] += r.rows
                rows.update({k: v for k, v in r.counts.items() if k in ("malformed row", "other post types")})
                examples.extend(r.examples)
            else:
                rows["vote rows"] += r.rows
                rows.update({k: v for k, v in r.counts.items()})
        rows["questions"] = sum(b.rows["questions"] for b in built)
        rows["answers"] = sum(r.counts["answers"] for r in parsed if r.kind == "posts")
        for b in built:
            rows["duplicate id"] += b.rows["duplicate id"]
            rows["answer without question"] += b.rows["answer without question"]
        dropped: Counter = Counter()
        adropped: Counter = Counter()
        pool: dict[str, dict[int, dict[int, int]]] = {"D_Q": {}, "D_C": {}, "kept": {}, "output": out_years}
        tags: dict[str, Counter] = {"D_C": Counter(), "kept": Counter(), "output": out_tags}
        for b in built:
            dropped.update(b.dropped)
            adropped.update(b.answers_dropped)
            for stage in ("D_Q", "D_C", "kept"):
                _merge_years(pool[stage], b.pool_by_year.get(stage, {}))
            for stage in ("D_C", "kept"):
                tags[stage].update(b.tags.get(stage, Counter()))
        stats = {
            "pool_by_year": {st: {str(y): {str(k): v for k, v in row.items()} for y, row in sorted(d.items())}
                             for st, d in pool.items()},
            "top_tags": {st: _top_tags(c) for st, c in tags.items()},
            "pool_sizes": list(POOL_SIZES),
        }
        opts_dict = asdict(opts)
        summary = BuildSummary(
            dump=str(dump), sites=[s.name for s in sites], options=opts_dict,
            rows={k: int(v) for k, v in rows.items()},
            questions={"total": rows["questions"], "kept": total,
                       "dropped": {r: int(dropped.get(r, 0)) for r in QUESTION_REASONS}},
            answers={"dropped": {r: int(adropped.get(r, 0)) for r in ANSWER_REASONS}},
            output={"kept": total, "sampled": len(chosen), "train": n_train, "test": n_test_w,
                    "sample_requested": opts.sample, "seed": opts.seed, "test_fraction": opts.test_fraction,
                    "note": (f"only {total} questions passed the filters; --sample {opts.sample} took them all"
                             if opts.sample is not None and opts.sample > total else None)},
            parse_errors=errors, examples=examples[:10], stats=stats, seconds=seconds,
        )
        # the statistics files (a matplotlib import and plot, ~1 s) are written by an idle pool
        # worker while this process copies the records into train/test
        stats_job = executor.submit(_write_stats, stats, staging) if executor is not None else None
        try:
            idx = 0
            with open(staging / "train.jsonl", "wb", buffering=0) as ftr, \
                    open(staging / "test.jsonl", "wb", buffering=0) as fte:
                for b in built:
                    for part, lengths in zip(b.kept_parts, b.kept_lengths, strict=True):
                        idx += _route_lines(part, lengths, assign[idx:], (None, ftr, fte))
        finally:
            if stats_job is not None:
                stats_job.result()
        if idx != total:
            raise RuntimeError(f"internal error: {idx} records for {total} kept")
        if stats_job is None:
            _write_stats(stats, staging)
        (staging / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        for name in ("train.jsonl", "test.jsonl", "stats.csv", "stats.md", "stats.png", "summary.json"):
            os.replace(staging / name, out / name)  # summary.json last: it marks a complete build
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _route_lines(path: str, lengths: bytes, assign: Any, files: tuple[Any, ...]) -> int:
    """Copy each line of the file ``path`` (``lengths``: their byte lengths, uint32) to
    ``files[assign[i]]`` (unbuffered binary files; ``None``: dropped), as runs of consecutive
    lines that go to the same file, copied by the kernel (``os.copy_file_range``) where it can.
    Returns the number of lines."""
    import numpy as np

    ends = np.cumsum(np.frombuffer(lengths, dtype=np.uint32), dtype=np.int64)
    n = len(ends)
    if not n:
        return 0
    where = np.asarray(assign[:n])
    change = np.flatnonzero(where[1:] != where[:-1]) + 1  # first line of each run but the first
    starts = np.concatenate(([0], change)).tolist()
    stops = np.concatenate((change, [n])).tolist()
    with open(path, "rb", buffering=0) as src:
        for a, b in zip(starts, stops, strict=True):
            dst = files[int(where[a])]
            if dst is not None:
                _copy_range(src, dst, int(ends[a - 1]) if a else 0, int(ends[b - 1]))
    return n


def _copy_range(src: Any, dst: Any, start: int, stop: int) -> None:
    """Append bytes ``[start, stop)`` of ``src`` to ``dst`` (both unbuffered binary files)."""
    copy = getattr(os, "copy_file_range", None)
    while start < stop:
        if copy is not None:
            try:
                done = copy(src.fileno(), dst.fileno(), stop - start, start)
            except OSError:  # another file system, an old kernel: plain reads and writes
                copy = None
                continue
            if done == 0:
                raise RuntimeError(f"internal error: {src.name} ends before byte {stop}")
        else:
            src.seek(start)
            data = src.read(min(stop - start, 1 << 24))
            if not data:
                raise RuntimeError(f"internal error: {src.name} ends before byte {stop}")
            done = dst.write(data)
        start += done


def _top_tags(counter: Counter, k: int = 90) -> list[dict[str, Any]]:
    """Table 8: the k most frequent tags with volume and share of all tag uses."""
    total = sum(counter.values())
    return [{"tag": t, "volume": n, "percentage": round(n / total, 4) if total else 0.0}
            for t, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _write_stats(stats: dict[str, Any], folder: Path) -> None:
    """``stats.csv`` (long format), ``stats.md`` (Tables 7-8 style) and ``stats.png``."""
    sizes = stats["pool_sizes"]
    with open(folder / "stats.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["table", "stage", "year", "min_pool_size", "tag", "count", "percentage"])
        for stage, years in stats["pool_by_year"].items():
            for year, row in years.items():
                for k in sizes:
                    w.writerow(["pool_by_year", stage, year, k, "", row[str(k)], ""])
        for stage, rows in stats["top_tags"].items():
            for r in rows:
                w.writerow(["top_tags", stage, "", "", r["tag"], r["volume"], r["percentage"]])
    md = io.StringIO()
    md.write("# StaCoCoQA build statistics\n\n## Questions per year with at least k answers (cf. seed 000 Table 7)\n")
    for stage, years in stats["pool_by_year"].items():
        md.write(f"\n### {stage}\n\n| Year | " + " | ".join(f"Size>={k}" for k in sizes) + " |\n")
        md.write("|---" * (len(sizes) + 1) + "|\n")
        for year, row in years.items():
            md.write(f"| {year} | " + " | ".join(str(row[str(k)]) for k in sizes) + " |\n")
    md.write("\n## Top tags (cf. seed 000 Table 8)\n")
    for stage, rows in stats["top_tags"].items():
        md.write(f"\n### {stage}\n\n| Tag | Volume | Percentage |\n|---|---|---|\n")
        for r in rows[:30]:
            md.write(f"| {r['tag']} | {r['volume']} | {r['percentage']:.3f} |\n")
    (folder / "stats.md").write_text(md.getvalue(), encoding="utf-8")
    _plot_stats(stats, folder / "stats.png")


def _import_plotting() -> None:
    """Import matplotlib with the Agg backend (a pool worker does it while it would wait:
    the statistics plot, at the end of the build, then does not wait for the import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def _plot_stats(stats: dict[str, Any], path: Path) -> None:
    _import_plotting()
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    years = stats["pool_by_year"]["output"]
    sizes = stats["pool_sizes"]
    labels = list(years)
    width = 0.8 / max(1, len(sizes))
    for j, k in enumerate(sizes):
        ax1.bar([i + j * width for i in range(len(labels))], [years[y][str(k)] for y in labels], width,
                label=f">= {k}")
    ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=45)
    ax1.set_title("Output questions per year by pool size (Table 7)")
    ax1.set_ylabel("questions")
    if labels:
        ax1.legend(fontsize=7, title="answers")
    top = stats["top_tags"]["output"][:15]
    ax2.barh([r["tag"] for r in top][::-1], [r["volume"] for r in top][::-1])
    ax2.set_title("Top tags of the output (Table 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stacocoqa_defaults() -> StackExchangeOptions:
    """The default options (one place; the CLI reads its defaults from here)."""
    return StackExchangeOptions()


__all__ = [
    "BuildSummary",
    "StackExchangeOptions",
    "build_stacocoqa",
    "discover_sites",
    "has_code_block",
    "html_to_text",
    "parse_posts",
    "parse_votes",
]
