"""Every option of the StaCoCoQA build, defined once: the Python API, the command line
(generated from these fields by :mod:`rankalign.cli_fields`) and ``summary.json`` read them here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from rankalign.data.record import parse_datetime
from rankalign.errors import ConfigError

#: a DuckDB memory size: a number and a unit (1000- or 1024-based), or a share of the RAM
_MEMORY_RE = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)(e\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|%)\s*$", re.IGNORECASE)


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


@dataclass
class StackExchangeOptions:
    """The filters and settings of :func:`~rankalign.data.stackexchange.build_stacocoqa`.

    Each field's ``metadata["help"]`` is its ``--help`` text; :meth:`validate` checks them all.
    """

    votes: str | None = _opt(None, "a Votes.xml for a single-file dump (adds up/down votes per post); "
                                   "site folders find theirs")
    code_filter: bool = _opt(True, "keep only questions with a code block (StaCoCoQA step 2); "
                                   "false for non-programming sites")
    start: str | None = _opt(None, "keep questions created at or after this ISO date/time")
    end: str | None = _opt(None, "keep questions created before this ISO date/time")
    min_answers: int = _opt(2, "smallest response pool (a list needs at least 2)")
    max_answers: int | None = _opt(None, "largest response pool; none: no limit")
    min_vote_spread: int | None = _opt(None, "smallest max-min vote difference within a pool; none: off")
    min_answer_votes: int | None = _opt(None, "drop answers with fewer votes; none: off")
    max_question_tokens: int | None = _opt(None, "drop questions (title + text) with more tokens; none: off")
    max_answer_tokens: int | None = _opt(None, "drop answers with more tokens; none: off")
    tokenizer: str | None = _opt(None, "Hugging Face tokenizer name or path for the token limits, e.g. the "
                                       "policy's; none: a whitespace word count")
    sample: int | None = _opt(None, "seeded fixed-size sample of the kept questions (the paper's sizes: 3000, "
                                    "8000, 18000, 29000, 64000); none: all")
    seed: int = _opt(42, "seed of the sample and of the split")
    test_fraction: float = _opt(0.1, "share of the test split (0.1 = the paper's 9:1)")
    workers: int = _opt(2, "processes for parsing and HTML to text (one per core)")
    strict: bool = _opt(False, "fail on any XML error instead of keeping the rows before it")
    chunk_rows: int = _opt(50_000, "rows per Parquet chunk while parsing (bounds the parse memory)")
    duckdb_memory: str = _opt("300MB", "DuckDB memory_limit, e.g. 300MB, 4GB, 8GiB or 50% (DuckDB spills to "
                                       "its temporary folder beyond it)")
    work_dir: str | None = _opt(None, "parent folder of the temporary work folder of Parquet chunks (needs "
                                      "about the dump's uncompressed size free); none: the system temp")
    progress: bool = _opt(True, "show progress bars (rows/s) on stderr")
    duckdb_threads: int | None = _opt(None, "DuckDB threads for the join, filters and sort; none: --workers")
    duckdb_temp_dir: str | None = _opt(None, "where DuckDB spills beyond --duckdb-memory; none: inside the "
                                             "work folder")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "options") -> StackExchangeOptions:
        """Build from a mapping (strings are converted to the field types); every unknown
        key, bad value and invalid option is reported in one :class:`ConfigError`."""
        from rankalign.cli_fields import coerce_fields

        problems: list[str] = []
        opts = cls(**coerce_fields(cls, values, where=where, problems=problems))
        problems += opts.problems()
        if problems:
            raise ConfigError(problems)
        return opts

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem of :meth:`problems`."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every problem of these options, each saying what is wrong and how to fix it."""
        return [*self._window_problems(), *self._number_problems(), *self._path_problems()]

    def _window_problems(self) -> list[str]:
        problems = []
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_datetime(value)
                except ValueError:
                    problems.append(f"--{name} {value!r} is not an ISO 8601 date (use e.g. 2020-01-01)")
        if self.start and self.end and not problems and parse_datetime(self.start) >= parse_datetime(self.end):
            problems.append(f"--start {self.start} is not before --end {self.end}; the time window is empty")
        return problems

    def _number_problems(self) -> list[str]:
        problems = []
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
        for name in ("workers", "chunk_rows", "duckdb_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        m = _MEMORY_RE.match(str(self.duckdb_memory))
        if m is None or float(m.group(1) + (m.group(3) or "")) <= 0:
            problems.append(f"--duckdb-memory {self.duckdb_memory!r} is not a memory size; give a number and "
                            "a unit, e.g. 300MB, 4GB, 8GiB, or a share of the RAM such as 50%")
        return problems

    def _path_problems(self) -> list[str]:
        problems = []
        if self.votes is not None and not Path(self.votes).is_file():
            problems.append(f"--votes {self.votes}: no such file; give the Votes.xml of the dump")
        for name in ("work_dir", "duckdb_temp_dir"):
            value = getattr(self, name)
            if value is not None and Path(value).exists() and not Path(value).is_dir():
                problems.append(f"--{name.replace('_', '-')} {value} is a file, not a folder; give a folder "
                                "(it is created when missing)")
        return problems

    def start_iso(self) -> str | None:
        return iso_key(self.start) if self.start else None

    def end_iso(self) -> str | None:
        return iso_key(self.end) if self.end else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=64)
def iso_key(value: str) -> str:
    """A date/time as the dump writes it (``YYYY-MM-DDTHH:MM:SS.fff``, UTC), for string comparison."""
    dt = parse_datetime(value)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]
