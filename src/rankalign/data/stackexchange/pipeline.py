"""The whole build: parse (a process pool) -> join and filters (DuckDB) -> records (the
pool) -> sample, split and write -> statistics. See :func:`build_stacocoqa`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.data.stackexchange import join, output, records, stats
from rankalign.data.stackexchange.filters import ANSWER_REASONS, QUESTION_REASONS
from rankalign.data.stackexchange.inputs import SiteInput, discover_sites, plan_ranges
from rankalign.data.stackexchange.options import StackExchangeOptions
from rankalign.data.stackexchange.parse import (
    ParseResult,
    merge_parts,
    parse_posts,
    parse_votes,
    progress_bar,
)
from rankalign.errors import UserError
from rankalign.outputs import owned_prefix, remove_orphans


def build_stacocoqa(
    dump: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: StackExchangeOptions | None = None,
) -> stats.BuildSummary:
    """Build StaCoCoQA-style list-wise records from a StackExchange dump (the package docstring).

    Args:
        dump: a ``Posts.xml`` (plain/.gz/.bz2/.zst/.7z), a site folder, or a folder of site folders.
        out_dir: receives ``train.jsonl``, ``test.jsonl``, ``summary.json``, ``stats.csv``,
            ``stats.md`` and ``stats.png`` (written atomically: all or nothing new).
        options: the filters and settings (:class:`StackExchangeOptions`).
    Returns:
        The summary (also written as ``summary.json``).
    Raises:
        FileNotFoundError: the dump does not exist.
        ConfigError: invalid options (all problems listed).
        UserError: an empty or corrupt dump file, a folder without Posts.xml, an output or
            work folder that cannot be written, an XML error with ``strict``.
    """
    opts = options or StackExchangeOptions()
    opts.validate()
    sites = discover_sites(dump, opts.votes)
    out = Path(out_dir)
    t0 = time.perf_counter()
    with output.staging_folder(out) as staging, _work_folder(opts) as tmp, _pool(opts.workers) as pool:
        parsed = _parse_all(sites, opts, tmp, pool)
        t_parse = time.perf_counter() - t0
        errors = _check_parsed(parsed, opts)
        if pool is not None:  # the workers wait for DuckDB's join and sort: import matplotlib meanwhile
            for _ in range(opts.workers):
                pool.submit(stats.import_plotting)
        built = [build_site(s.name, _chunks(parsed, s, "posts"), _chunks(parsed, s, "votes"), opts, tmp, pool=pool,
                            id_prefix=f"{s.name}/" if len(sites) > 1 else "") for s in sites]
        seconds = {"parse": round(t_parse, 3), "join_convert": round(time.perf_counter() - t0 - t_parse, 3),
                   "total": round(time.perf_counter() - t0, 3)}
        # the parsed chunks are no longer needed: deleted by a thread while the outputs are written
        cleaner = threading.Thread(target=_remove_files, args=([c for r in parsed for c in r.chunks],), daemon=True)
        cleaner.start()
        try:
            assign = output.assign_split(sum(b.kept for b in built), opts.sample, opts.test_fraction, opts.seed)
            summary = _summary(dump, sites, opts, parsed, built, errors, seconds, assign)
            _write_outputs(summary, built, assign, staging, pool)
        finally:
            cleaner.join()
        output.publish(staging, out)
    return summary


#: the work folder's name prefix (with the process id: a killed build's folder is removed by the next)
WORK_PREFIX = "rankalign-se-"


@contextlib.contextmanager
def _work_folder(opts: StackExchangeOptions) -> Iterator[Path]:
    """The temporary work folder (inside ``work_dir``, created when missing), removed on exit."""
    parent = Path(opts.work_dir) if opts.work_dir else None
    try:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(parent if parent is not None else tempfile.gettempdir(), WORK_PREFIX)
        tmp = tempfile.TemporaryDirectory(prefix=owned_prefix(WORK_PREFIX), dir=parent)
    except OSError as exc:
        raise UserError(f"--work-dir {parent}: cannot create the work folder there ({exc.strerror or exc}); "
                        "give a writable folder with about the dump's uncompressed size free") from None
    with tmp as path:
        yield Path(path)


def _chunks(parsed: list[ParseResult], site: SiteInput, kind: str) -> list[str]:
    return [c for r in parsed if r.site == site.name and r.kind == kind for c in r.chunks]


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)


# ---------------------------------------------------------------------------- parse
def _parse_all(sites: list[SiteInput], opts: StackExchangeOptions, tmp: Path,
               pool: ProcessPoolExecutor | None) -> list[ParseResult]:
    """Parse every Posts and Votes file (a large plain file as ``workers`` byte ranges in
    parallel); one merged result per file."""
    jobs = []
    n_parts = []
    for s in sites:
        for kind, fpath in (("posts", s.posts), ("votes", s.votes)):
            if fpath is None:
                continue
            ranges = plan_ranges(fpath, opts.workers) or [None]
            n_parts.append(len(ranges))
            jobs += [(kind, s.name, str(fpath), str(tmp), opts.chunk_rows, opts.progress, len(jobs) + k, rng)
                     for k, rng in enumerate(ranges)]
    results = _map(pool, _parse_job, jobs)
    parsed = []
    for n in n_parts:
        parsed.append(merge_parts(results[:n]))
        results = results[n:]
    return parsed


def _parse_job(args: tuple[Any, ...]) -> ParseResult:
    kind, site, path, out_dir, chunk_rows, progress, position, rng = args
    fn = parse_posts if kind == "posts" else parse_votes
    try:
        return fn(site, Path(path), Path(out_dir), chunk_rows=chunk_rows if kind == "posts" else max(chunk_rows * 20, 1),
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


def _check_parsed(parsed: list[ParseResult], opts: StackExchangeOptions) -> list[dict[str, Any]]:
    """The XML errors of the parse (warned about on stderr); a Posts file without rows, or
    an error with ``strict``, is a :class:`UserError`."""
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
    return errors


# ---------------------------------------------------------------------------- join + records
@dataclass
class SiteResult:
    """What the join, filters and records of one site kept and dropped."""

    site: str
    kept_parts: list[tuple[str, bytes]] = field(default_factory=list)  # records files and their line lengths
    kept: int = 0
    counts: records.Counts = field(default_factory=records.Counts)
    rows: Counter = field(default_factory=Counter)
    pool_by_year: dict[str, dict[int, dict[int, int]]] = field(default_factory=dict)
    tags: dict[str, Counter] = field(default_factory=dict)


def build_site(site: str, posts_chunks: list[str], votes_chunks: list[str], opts: StackExchangeOptions,
               work_dir: Path, *, pool: ProcessPoolExecutor | None = None, id_prefix: str = "") -> SiteResult:
    """Join and filter one site in DuckDB, then convert its candidate questions into records
    files ``work_dir/kept-<site>-<k>.jsonl`` (in question-Id order) in the pool."""
    res = SiteResult(site)
    records.token_counter(opts.tokenizer)  # fail early on a bad tokenizer
    if not posts_chunks:
        return res
    with join.duckdb_connection(opts, work_dir, site) as con:
        join.load_posts(con, posts_chunks, res.rows)
        res.rows["questions"] = join.question_stats(con, opts, res.counts.dropped)
        code = "acc_found AND has_code" if opts.code_filter else "acc_found"
        res.pool_by_year["D_Q"] = join.pool_stats(con, "acc_found")
        res.pool_by_year["D_C"] = join.pool_stats(con, code)
        res.tags["D_C"] = join.tag_counts(con, code)
        join.count_dropped_answers(con, opts, res.counts.answers_dropped)
        reader, n_candidates = join.candidate_stream(con, opts, votes_chunks)
        jobs = ((chunk, opts, bool(votes_chunks), site, id_prefix, str(work_dir / f"kept-{site}-{k:06d}.jsonl"))
                for k, chunk in enumerate(join.question_chunks(reader)))
        bar = progress_bar(n_candidates, f"{site} convert", opts.progress, unit="q")
        res.pool_by_year["kept"], res.tags["kept"] = {}, Counter()
        for done in _in_order(pool, records.convert_chunk, jobs):
            res.kept_parts.append((done.path, done.lengths))
            res.kept += done.kept
            res.counts.dropped.update(done.counts.dropped)
            res.counts.answers_dropped.update(done.counts.answers_dropped)
            stats.merge_years(res.pool_by_year["kept"], done.years)
            res.tags["kept"].update(done.tags)
            bar.update(done.questions)
        bar.close()
    return res


def _in_order(pool: ProcessPoolExecutor | None, fn: Callable[[Any], Any], jobs: Iterator[Any]) -> Iterator[Any]:
    """``fn`` of each job, in job order; in the pool, at most two jobs per worker in flight
    (bounds the memory of a lazy job stream), inline without a pool."""
    if pool is None:
        yield from map(fn, jobs)
        return
    pending: collections.deque[Any] = collections.deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        while len(pending) >= 2 * pool._max_workers:  # type: ignore[attr-defined]
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ---------------------------------------------------------------------------- process pool
@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """One process pool for the parse and records stages (``None``: run inline)."""
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


# ---------------------------------------------------------------------------- summary + outputs
def _row_counts(parsed: list[ParseResult], built: list[SiteResult]) -> tuple[Counter, list[str]]:
    """The ``rows`` of ``summary.json`` and the malformed-row examples."""
    rows: Counter = Counter()
    examples: list[str] = []
    for r in parsed:
        if r.kind == "posts":
            rows["rows"] += r.rows
            rows.update({k: v for k, v in r.counts.items() if k in ("malformed row", "other post types")})
            examples.extend(r.examples)
        else:
            rows["vote rows"] += r.rows
            rows.update(r.counts)
    rows["questions"] = sum(b.rows["questions"] for b in built)
    rows["answers"] = sum(r.counts["answers"] for r in parsed if r.kind == "posts")
    for b in built:
        rows["duplicate id"] += b.rows["duplicate id"]
        rows["answer without question"] += b.rows["answer without question"]
    return rows, examples


def _summary(dump: str | os.PathLike[str], sites: list[SiteInput], opts: StackExchangeOptions,
             parsed: list[ParseResult], built: list[SiteResult], errors: list[dict[str, Any]],
             seconds: dict[str, float], assign: Any) -> stats.BuildSummary:
    """The content of ``summary.json``; ``assign``: each kept record's split (0 not sampled, 1 train, 2 test)."""
    rows, examples = _row_counts(parsed, built)
    dropped, adropped = Counter(), Counter()
    pool: dict[str, dict[int, dict[int, int]]] = {"D_Q": {}, "D_C": {}, "kept": {}, "output": {}}
    tags: dict[str, Counter] = {"D_C": Counter(), "kept": Counter(), "output": Counter()}
    for b in built:
        dropped.update(b.counts.dropped)
        adropped.update(b.counts.answers_dropped)
        for stage in ("D_Q", "D_C", "kept"):
            stats.merge_years(pool[stage], b.pool_by_year.get(stage, {}))
        for stage in ("D_C", "kept"):
            tags[stage].update(b.tags.get(stage, Counter()))
    total = len(assign)
    _output_stats(built, assign, pool["output"], tags["output"])
    return stats.BuildSummary(
        dump=str(dump), sites=[s.name for s in sites], options=opts.to_dict(),
        rows={k: int(v) for k, v in rows.items()},
        questions={"total": rows["questions"], "kept": total,
                   "dropped": {r: int(dropped.get(r, 0)) for r in QUESTION_REASONS}},
        answers={"dropped": {r: int(adropped.get(r, 0)) for r in ANSWER_REASONS}},
        output={"kept": total, "sampled": int((assign > 0).sum()), "train": int((assign == 1).sum()),
                "test": int((assign == 2).sum()), "sample_requested": opts.sample, "seed": opts.seed,
                "test_fraction": opts.test_fraction,
                "note": (f"only {total} questions passed the filters; --sample {opts.sample} took them all"
                         if opts.sample is not None and opts.sample > total else None)},
        parse_errors=errors, examples=examples[:10], stats=stats.stats_dict(pool, tags), seconds=seconds,
        versions=stats.versions())


def _output_stats(built: list[SiteResult], assign: Any, years: dict[int, dict[int, int]], tags: Counter) -> None:
    """The statistics of the output records: those of all kept records when every one is in
    the output, else counted from the ``.info`` files of the sampled ones."""
    if bool((assign > 0).all()):
        for b in built:
            stats.merge_years(years, b.pool_by_year.get("kept", {}))
            tags.update(b.tags.get("kept", Counter()))
        return
    import orjson

    idx = 0
    for b in built:
        for part, _lengths in b.kept_parts:
            with open(Path(part).with_suffix(".info"), "rb") as finfo:
                for info in finfo:
                    if assign[idx]:
                        year, n_resp, rec_tags = orjson.loads(info)
                        stats.count_pool(years, year, n_resp)
                        tags.update(rec_tags)
                    idx += 1
    if idx != len(assign):
        raise RuntimeError(f"internal error: {idx} statistics lines for {len(assign)} kept records")


def _write_outputs(summary: stats.BuildSummary, built: list[SiteResult], assign: Any, staging: Path,
                   executor: ProcessPoolExecutor | None) -> None:
    """Write every output into ``staging``: the statistics files by an idle pool worker (a
    matplotlib plot, ~1 s) while this process copies the records into train/test."""
    total = len(assign)
    stats_job = executor.submit(stats.write_stats, summary.stats, staging) if executor is not None else None
    try:
        copied = output.write_splits([p for b in built for p in b.kept_parts], assign, staging)
    finally:
        if stats_job is not None:
            stats_job.result()
    if copied != total:
        raise RuntimeError(f"internal error: {copied} records for {total} kept")
    if stats_job is None:
        stats.write_stats(summary.stats, staging)
    (staging / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
