"""Join and filters: DuckDB over the parsed Parquet chunks of one site.

Duplicate Ids keep their first row; answers are joined to questions by ``ParentId``; the
filters that DuckDB can decide (their SQL forms in :mod:`.filters`) run here, on every
question, without the bodies. Only the surviving questions and their answers are then read
with their bodies, as one stream ordered by question Id, and cut into chunks of whole
questions (Arrow IPC bytes) for the records stage.

DuckDB runs with ``memory_limit = duckdb_memory`` and ``duckdb_threads`` threads, and spills
to ``duckdb_temp_dir`` (default: the work folder) beyond the limit, so a dump larger than the
RAM needs free disk, not memory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rankalign.data.stackexchange.filters import ANSWER_FILTERS, QUESTION_FILTERS, sql_case, sql_passes
from rankalign.data.stackexchange.options import StackExchangeOptions
from rankalign.data.stackexchange.stats import POOL_SIZES
from rankalign.errors import UserError

#: questions per conversion chunk (a chunk also ends at CONVERT_CHARS characters of HTML).
CONVERT_QUESTIONS = 1000
CONVERT_CHARS = 8 << 20
#: the columns of the candidate stream, in order (one question row, kind 0, then its answers, kind 1)
STREAM_COLS = ("qid", "kind", "id", "title", "tags", "body", "created", "score", "accepted_answer_id", "up", "down")


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _run(con: Any, sql: str) -> None:
    """Run a statement whose result is not read (DuckDB wants every result consumed)."""
    con.execute(sql).fetchall()


def _one(con: Any, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


@contextmanager
def duckdb_connection(opts: StackExchangeOptions, work_dir: Path, site: str) -> Iterator[Any]:
    """A DuckDB connection with the options' memory limit, threads and spill folder (a fresh
    folder inside ``duckdb_temp_dir`` or ``work_dir``, removed afterwards). An out-of-memory
    error becomes a :class:`UserError` that says which option to raise."""
    import duckdb

    parent = Path(opts.duckdb_temp_dir) if opts.duckdb_temp_dir else work_dir
    try:
        parent.mkdir(parents=True, exist_ok=True)
        spill = Path(tempfile.mkdtemp(prefix="duckdb-", dir=parent))
    except OSError as exc:
        raise UserError(f"--duckdb-temp-dir {parent}: cannot create a folder there ({exc.strerror}); "
                        "give a writable folder") from None
    try:
        con = duckdb.connect(config={"memory_limit": opts.duckdb_memory, "temp_directory": str(spill),
                                     "threads": opts.duckdb_threads or opts.workers,
                                     "preserve_insertion_order": False})
    except duckdb.Error as exc:
        shutil.rmtree(spill, ignore_errors=True)
        raise UserError(f"DuckDB refused the settings --duckdb-memory {opts.duckdb_memory!r}, --duckdb-threads "
                        f"{opts.duckdb_threads or opts.workers}: {str(exc).splitlines()[0]}") from None
    try:
        _run(con, f"SET enable_progress_bar = {'true' if opts.progress else 'false'}")
        yield con
    except duckdb.OutOfMemoryException as exc:
        raise UserError(f"site {site}: DuckDB ran out of memory ({str(exc).splitlines()[0]}); "
                        f"raise --duckdb-memory (now {opts.duckdb_memory})") from None
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def load_posts(con: Any, posts_chunks: list[str], rows: Counter) -> None:
    """Tables ``meta`` (the first row of each Id, without the texts) and view ``posts``;
    counts ``duplicate id`` and ``answer without question`` into ``rows``."""
    _run(con, f"CREATE VIEW posts AS SELECT * FROM read_parquet({_sql_list(posts_chunks)})")
    _run(con, "CREATE TEMP TABLE firsts AS SELECT id, min(seq) AS seq, count(*) AS n FROM posts GROUP BY id")
    rows["duplicate id"] = _one(con, "SELECT coalesce(sum(n - 1), 0) FROM firsts")
    _run(con, """CREATE TEMP TABLE meta AS SELECT p.seq, p.id, p.post_type, p.parent_id, p.accepted_answer_id,
                   p.created, p.score, p.has_code FROM posts p SEMI JOIN firsts f ON p.seq = f.seq""")
    rows["answer without question"] = _one(con, "SELECT count(*) FROM meta a WHERE a.post_type = 2 AND "
                                                "a.parent_id NOT IN (SELECT id FROM meta WHERE post_type = 1)")


def question_stats(con: Any, opts: StackExchangeOptions, dropped: Counter) -> int:
    """Table ``qstat``: per question the columns of :class:`~.filters.QuestionFacts` (the pool
    after the SQL answer filters), ``n_all`` (all its answers), ``year`` and ``reason`` (the
    first SQL question filter it fails, NULL for a candidate); counts the reasons into
    ``dropped``. Returns the number of questions."""
    answer_ok = sql_passes(ANSWER_FILTERS, opts)
    _run(con, f"""
        CREATE TEMP TABLE qstat AS
        SELECT q.id, q.seq, q.accepted_answer_id, q.created, q.has_code,
               TRY_CAST(substr(q.created, 1, 4) AS INTEGER) AS year,
               count(a.id) AS n_all,
               count(a.id) FILTER (WHERE {answer_ok}) AS pool,
               max(a.score) FILTER (WHERE {answer_ok}) AS vmax,
               min(a.score) FILTER (WHERE {answer_ok}) AS vmin,
               coalesce(bool_or(a.id = q.accepted_answer_id), FALSE) AS acc_found,
               coalesce(bool_or(a.id = q.accepted_answer_id AND {answer_ok}), FALSE) AS acc_ok
        FROM meta q LEFT JOIN meta a ON a.post_type = 2 AND a.parent_id = q.id
        WHERE q.post_type = 1
        GROUP BY ALL""")
    _run(con, "ALTER TABLE qstat ADD COLUMN reason VARCHAR")
    _run(con, f"UPDATE qstat SET reason = {sql_case(QUESTION_FILTERS, opts)}")
    for reason, n in con.execute("SELECT reason, count(*) FROM qstat WHERE reason IS NOT NULL "
                                 "GROUP BY reason").fetchall():
        dropped[reason] += int(n)
    return _one(con, "SELECT count(*) FROM qstat")


def count_dropped_answers(con: Any, opts: StackExchangeOptions, answers_dropped: Counter) -> None:
    """Count the answers of the candidate questions that a SQL answer filter drops."""
    case = sql_case(ANSWER_FILTERS, opts)
    if case == "NULL":
        return
    for reason, n in con.execute(f"""SELECT reason, count(*) FROM (
            SELECT {case} AS reason FROM qstat c JOIN meta a ON a.post_type = 2 AND a.parent_id = c.id
            WHERE c.reason IS NULL) WHERE reason IS NOT NULL GROUP BY reason""").fetchall():
        answers_dropped[reason] += int(n)


def pool_stats(con: Any, where: str) -> dict[int, dict[int, int]]:
    """Questions per creation year with at least k answers (k in POOL_SIZES; the pool = all
    answers of the question): Table 7 of arXiv:2502.12189."""
    cols = ", ".join(f"count(*) FILTER (WHERE n_all >= {k})" for k in POOL_SIZES)
    rows = con.execute(f"SELECT year, {cols} FROM qstat WHERE {where} GROUP BY year ORDER BY year").fetchall()
    return {int(r[0]): {k: int(v) for k, v in zip(POOL_SIZES, r[1:], strict=True)} for r in rows if r[0] is not None}


def tag_counts(con: Any, where: str) -> Counter:
    """Tag uses of the questions of ``qstat`` that satisfy ``where`` (Table 8), split as
    :func:`~.records.split_tags` splits them (``<a><b>`` or ``|a|b|``)."""
    return Counter(dict(con.execute(f"""
        SELECT tag, count(*) FROM (
            SELECT unnest(CASE WHEN starts_with(p.tags, '<') THEN string_split(p.tags[2:-2], '><')
                               ELSE string_split(p.tags, '|') END) AS tag
            FROM posts p SEMI JOIN (SELECT seq FROM qstat WHERE {where}) s ON p.seq = s.seq
            WHERE p.tags IS NOT NULL AND p.tags <> '')
        WHERE tag <> '' GROUP BY tag""").fetchall()))


def candidate_stream(con: Any, opts: StackExchangeOptions, votes_chunks: list[str]) -> tuple[Any, int]:
    """The candidate questions, each followed by the answers of its pool, ordered by question
    Id then answer Id, with their texts and votes (:data:`STREAM_COLS`), as an Arrow batch
    reader; and the number of candidates. The rows are first listed without their bodies
    (small), then read in one join and one sort that DuckDB spills beyond its memory limit."""
    votes_join = ""
    votes_cols = "NULL::BIGINT AS up, NULL::BIGINT AS down"
    if votes_chunks:
        _run(con, f"""CREATE TEMP TABLE votes AS SELECT post_id, sum(up)::BIGINT AS up, sum(down)::BIGINT AS down
                        FROM read_parquet({_sql_list(votes_chunks)}) GROUP BY post_id""")
        votes_join = "LEFT JOIN votes v ON v.post_id = p.id"
        votes_cols = "coalesce(v.up, 0) AS up, coalesce(v.down, 0) AS down"
    _run(con, f"""CREATE TEMP TABLE needed AS
        SELECT c.seq, c.id AS qid, 0 AS kind FROM qstat c WHERE c.reason IS NULL
        UNION ALL
        SELECT a.seq, c.id AS qid, 1 AS kind FROM qstat c JOIN meta a ON a.post_type = 2 AND a.parent_id = c.id
        WHERE c.reason IS NULL AND {sql_passes(ANSWER_FILTERS, opts)}""")
    n_candidates = _one(con, "SELECT count(*) FROM qstat WHERE reason IS NULL")
    reader = con.sql(f"""
        SELECT n.qid, n.kind, p.id, p.title, p.tags, p.body, p.created, p.score, p.accepted_answer_id, {votes_cols}
        FROM posts p JOIN needed n ON p.seq = n.seq {votes_join}
        ORDER BY n.qid, n.kind, p.id""").to_arrow_reader(8192)
    return reader, n_candidates


def question_chunks(reader: Any) -> Iterator[bytes]:
    """Cut the ordered (question, answers...) stream into chunks of whole questions (at most
    CONVERT_QUESTIONS questions or about CONVERT_CHARS characters of HTML), each an Arrow IPC
    stream (bytes) in :data:`STREAM_COLS` order.

    The cuts are found with Arrow/numpy on the ``kind`` column (a question's group starts at
    its ``kind == 0`` row) and the body lengths, so the main process never turns rows into
    Python objects: the pool workers do, and sending Arrow buffers costs a copy instead of
    pickling ~10^5 Python strings.
    """
    import pyarrow as pa

    rest = None  # the unfinished tail of the batches so far
    for batch in reader:
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch])
        if rest is not None:
            table = pa.concat_tables([rest, table])
        begin = 0
        for end in _cuts(table):
            yield _ipc(table.slice(begin, end - begin))
            begin = end
        rest = table.slice(begin) if begin < table.num_rows else None
    if rest is not None:
        begin = 0
        for end in [*_cuts(rest), rest.num_rows]:
            if end > begin:
                yield _ipc(rest.slice(begin, end - begin))
            begin = end


def _cuts(table: Any) -> list[int]:
    """The rows where a chunk of ``table`` ends: before the first question start at which
    CONVERT_QUESTIONS questions or CONVERT_CHARS characters of bodies are in the chunk."""
    import numpy as np
    import pyarrow.compute as pc

    starts = np.flatnonzero(table.column("kind").to_numpy() == 0)
    chars = np.cumsum(pc.fill_null(pc.utf8_length(table.column("body")), 0).to_numpy(), dtype=np.int64)
    cuts = []
    begin, first = 0, 0  # the row where the current chunk starts; starts[first] == begin
    while first + 1 < len(starts):
        ks = np.arange(first + 1, len(starts))
        before = chars[starts[ks] - 1] - (chars[begin - 1] if begin else 0)
        hit = np.flatnonzero((ks - first >= CONVERT_QUESTIONS) | (before >= CONVERT_CHARS))
        if not len(hit):
            break
        first = int(ks[hit[0]])
        begin = int(starts[first])
        cuts.append(begin)
    return cuts


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
