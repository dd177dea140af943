"""Inputs and archives: find the sites of a dump, open a dump file as a byte stream
(plain, ``.gz``, ``.bz2``, ``.zst``, ``.7z``), and cut a large plain file into byte ranges
that are parsed in parallel.

A truncated or corrupt compressed file is a :class:`UserError` naming the file (the XML
inside it would be cut at a random place); a cut-off *plain* file is an XML error of the
parse stage instead (its rows before the cut are kept).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rankalign.errors import UserError

#: the suffixes a dump file may have, in the order they are looked for in a site folder.
DUMP_SUFFIXES = (".xml", ".xml.gz", ".xml.bz2", ".xml.zst", ".xml.7z", ".7z")
_COMPRESSED = (".gz", ".bz2", ".zst", ".7z")
#: bytes read from a dump at a time.
READ_BYTES = 1 << 20


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
        UserError: a folder holds no ``Posts.xml`` (in any supported wrapper), or an input is empty.
    """
    p = Path(dump)
    if not p.exists():
        raise FileNotFoundError(f"no such dump file or folder: {p}")
    if p.is_file():
        name = p.parent.name or "site"
        if p.name.lower().endswith(".7z") and not p.name.lower().startswith("posts"):
            name = p.name[:-3].removesuffix("-Posts")
        sites = [SiteInput(name, p, Path(votes) if votes else None)]
    elif (posts := _find_dump_file(p, "Posts")) is not None:
        sites = [SiteInput(p.name, posts, Path(votes) if votes else _find_dump_file(p, "Votes"))]
    elif votes is not None:
        raise UserError("--votes works with a single Posts file or site folder; "
                        "in a folder of sites, put Votes.xml beside each Posts.xml")
    else:
        sites = [SiteInput(sub.name, sp, _find_dump_file(sub, "Votes"))
                 for sub in sorted(x for x in p.iterdir() if x.is_dir())
                 if (sp := _find_dump_file(sub, "Posts")) is not None]
    if not sites:
        raise UserError(f"{p}: no Posts.xml found (looked for Posts{{{','.join(DUMP_SUFFIXES)}}} in the "
                        "folder and in each sub-folder); give a Posts.xml file or a folder of site folders")
    for s in sites:
        for f in (s.posts, s.votes):
            if f is not None and f.stat().st_size == 0:
                raise UserError(f"{f} is empty (0 bytes); give a complete StackExchange dump file")
    return sites


class _Checked:
    """A decompressing stream whose read errors become a :class:`UserError` naming the file."""

    def __init__(self, fh: Any, path: Path, tool: str) -> None:
        self._fh = fh
        self._path = path
        self._tool = tool

    def read(self, size: int = -1) -> bytes:
        try:
            return self._fh.read(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise corrupt(self._path, self._tool, exc) from None


def corrupt(path: Path, tool: str, exc: BaseException) -> UserError:
    """The error for a truncated or corrupt compressed dump."""
    return UserError(f"{path}: the compressed file is truncated or corrupt ({exc}); download it again "
                     f"(`{tool} {path}` checks a file)")


class _ZstdReader:
    """A ``.zst`` file as a stream of its frames, decompressed; a file that ends inside a
    frame is an error (zstandard's own stream reader returns the partial data silently)."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._path = path
        self._dobj = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False

    def read(self, size: int = -1) -> bytes:
        while True:
            data = self._raw.read(READ_BYTES)
            if not data:
                if self._in_frame:
                    raise corrupt(self._path, "zstd -t", EOFError("the file ends inside a zstd frame"))
                return b""
            out = []
            while data:
                try:
                    out.append(self._dobj.decompress(data))
                except self._zstd.ZstdError as exc:
                    raise corrupt(self._path, "zstd -t", exc) from None
                self._in_frame = not self._dobj.eof
                data = self._dobj.unused_data if self._dobj.eof else b""
                if self._dobj.eof:  # the next frame (if any) needs a fresh decompressor
                    self._dobj = self._zstd.ZstdDecompressor().decompressobj()
            if any(out):
                return b"".join(out)


@contextlib.contextmanager
def open_dump(path: Path, work_dir: Path) -> Iterator[Any]:
    """Open a dump file as a binary stream (``read(size)``), decompressing on the fly.

    A ``.7z`` archive cannot be streamed: its ``Posts.xml``/``Votes.xml`` (the member
    whose name matches the archive's kind) is extracted into ``work_dir`` first.

    Raises:
        UserError: a compressed file is truncated or corrupt, or not an archive at all.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            yield _Checked(fh, path, "gzip -t")
    elif name.endswith(".bz2"):
        with bz2.open(path, "rb") as fh:
            yield _Checked(fh, path, "bzip2 -t")
    elif name.endswith(".zst"):
        with open(path, "rb") as raw:
            yield _ZstdReader(raw, path)
    elif name.endswith(".7z"):
        with open(_extract_7z(path, work_dir), "rb") as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield fh


def _extract_7z(path: Path, work_dir: Path) -> Path:
    """Extract the Posts.xml (or Votes.xml) of a ``.7z`` dump into ``work_dir``; its path."""
    import lzma

    import py7zr

    kind = "votes" if "votes" in path.name.lower() else "posts"
    try:
        with py7zr.SevenZipFile(path, "r") as archive:
            names = archive.getnames()
            members = [n for n in names if Path(n).name.lower() == f"{kind}.xml"] or [
                n for n in names if n.lower().endswith(".xml")]
            if not members:
                raise UserError(f"{path}: the archive holds no {kind.capitalize()}.xml; give the site's "
                                f"{kind.capitalize()} archive")
            target = Path(tempfile.mkdtemp(prefix="7z-", dir=work_dir))
            archive.extract(path=target, targets=[members[0]])
    except (py7zr.exceptions.ArchiveError, lzma.LZMAError, EOFError, KeyError, ValueError) as exc:
        raise corrupt(path, "7z t", exc) from None
    out = target / members[0]
    if not out.is_file():
        raise corrupt(path, "7z t", EOFError(f"{members[0]} could not be extracted"))
    return out


# ---------------------------------------------------------------------------- byte ranges
#: a plain (uncompressed) dump file of at least this many bytes per worker is parsed as
#: ``workers`` byte ranges in parallel (each range starts at a ``<row``).
SPLIT_MIN_BYTES = 32 << 20
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
    if parts < 2 or path.name.lower().endswith(_COMPRESSED) or path.stat().st_size < parts * min_bytes:
        return None
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        m = _ROOT_RE.match(head)
        if m is None or head.find(_ROW_START, m.end()) < 0:
            return None
        decl = (m.group("decl") or b"").lower().replace(b" ", b"")
        if b"encoding=" in decl and not re.search(rb"encoding=[\"']utf-?8[\"']", decl):
            return None
        starts = _row_starts(fh, size, parts)
    if len(starts) < 2:
        return None
    root = m.group("root")
    return [ByteRange(k, start, size if k == len(starts) - 1 else starts[k + 1][0],
                      b"<" + root + b">" if k else b"", b"" if k == len(starts) - 1 else b"</" + root + b">", col0)
            for k, (start, col0) in enumerate(starts)]


def _row_starts(fh: IO[bytes], size: int, parts: int) -> list[tuple[int, int]]:
    """(byte, column) of the first ``<row`` at or after each ``k * size / parts``; (0, 0) first."""
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
    return starts


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


@contextlib.contextmanager
def open_part(path: Path, work_dir: Path, rng: ByteRange | None) -> Iterator[Any]:
    """The dump (``rng is None``) or one byte range of a plain dump, as a binary stream."""
    if rng is None:
        with open_dump(path, work_dir) as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield _RangeReader(fh, rng)


def newlines_before(path: str, offset: int) -> int:
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
