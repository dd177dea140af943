"""``rankalign data stackexchange DUMP --out DIR``: StaCoCoQA from StackExchange dumps.

See :mod:`rankalign.data.stackexchange` for the pipeline, the filter order and the
decisions (token counts, broken XML, ids). Defaults come from
:class:`~rankalign.data.stackexchange.StackExchangeOptions` (defined once there).

Exit codes: 0 on success (also when an XML error cut a file short: the rows before it are
kept and a warning is printed; ``--strict`` turns that into an error), 2 on bad input
(an empty dump, no Posts.xml, invalid options) — with a one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any

from rankalign.data.stackexchange import StackExchangeOptions


def register(data_subparsers: Any) -> None:
    """Add the ``stackexchange`` sub-command to the ``rankalign data`` sub-parsers."""
    d = StackExchangeOptions()
    p = data_subparsers.add_parser(
        "stackexchange", help="build StaCoCoQA-style list-wise records from a StackExchange dump",
        description="Stream-parse a StackExchange dump (Posts.xml plain/.gz/.bz2/.zst/.7z, or a folder of "
                    "site folders), join answers to questions, apply the StaCoCoQA steps (accepted answer, "
                    "code block, HTML to text, quality filters), sample and split 9:1. Writes DIR/train.jsonl, "
                    "DIR/test.jsonl, DIR/summary.json, DIR/stats.csv, DIR/stats.md, DIR/stats.png.",
    )
    p.add_argument("dump", metavar="DUMP", help="Posts.xml[.gz|.bz2|.zst|.7z], a site folder, or a folder of sites")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--votes", default=d.votes, help="Votes.xml of a single-file dump (adds up/down per answer)")
    p.add_argument("--no-code-filter", dest="code_filter", action="store_false",
                   help="keep questions without a code block (non-programming sites)")
    p.add_argument("--start", default=d.start, help="keep questions created at or after this ISO date")
    p.add_argument("--end", default=d.end, help="keep questions created before this ISO date")
    p.add_argument("--min-answers", type=int, default=d.min_answers, help="smallest pool size (default %(default)s)")
    p.add_argument("--max-answers", type=int, default=d.max_answers, help="largest pool size (default: no limit)")
    p.add_argument("--min-vote-spread", type=int, default=d.min_vote_spread,
                   help="smallest max-min vote difference in a pool (default: off)")
    p.add_argument("--min-answer-votes", type=int, default=d.min_answer_votes,
                   help="drop answers with fewer votes (default: off)")
    p.add_argument("--max-question-tokens", type=int, default=d.max_question_tokens,
                   help="drop questions (title + text) with more tokens (default: off)")
    p.add_argument("--max-answer-tokens", type=int, default=d.max_answer_tokens,
                   help="drop answers with more tokens (default: off)")
    p.add_argument("--tokenizer", default=d.tokenizer, metavar="NAME_OR_PATH",
                   help="tokenizer for the token limits, e.g. the policy's (default: whitespace word count)")
    p.add_argument("--sample", type=int, default=d.sample, metavar="N",
                   help="fixed-size seeded sample of the kept questions (paper: 3000, 8000, 18000, 29000, 64000)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the sample and split (default %(default)s)")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="test share of the seeded split (default %(default)s = 9:1)")
    p.add_argument("--workers", type=int, default=min(d.workers, os.cpu_count() or 1),
                   help="processes for parsing files and per-site joins (default %(default)s)")
    p.add_argument("--strict", action="store_true", help="fail on any XML error instead of keeping the rows before it")
    p.add_argument("--chunk-rows", type=int, default=d.chunk_rows, help="rows per Parquet chunk (memory bound)")
    p.add_argument("--duckdb-memory", default=d.duckdb_memory, help="DuckDB memory limit (default %(default)s)")
    p.add_argument("--work-dir", default=d.work_dir, help="where the temporary Parquet work folder goes")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> StackExchangeOptions:
    """The options from parsed arguments (every dataclass field has a same-named argument)."""
    values = {f.name: getattr(args, f.name) for f in fields(StackExchangeOptions) if hasattr(args, f.name)}
    values["progress"] = not getattr(args, "quiet", False) and sys.stderr.isatty()
    return StackExchangeOptions.from_dict(values)


def run(args: argparse.Namespace) -> int:
    """Build the data set; print the summary (kept, dropped per reason, XML warnings)."""
    from rankalign.data.stackexchange import build_stacocoqa

    summary = build_stacocoqa(args.dump, args.out, options_from_args(args))
    print(summary.text())
    print(f"wrote {args.out}/train.jsonl, test.jsonl, summary.json, stats.csv, stats.md, stats.png")
    return 0
