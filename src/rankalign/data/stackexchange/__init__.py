"""StaCoCoQA from StackExchange data dumps.

StaCoCoQA is the list-wise code-QA data set of Yang, Zhao, Hu, Li, "Self-supervised
Attribute-aware Dynamic Preference Ranking Alignment" (arXiv:2502.12189, §3.1, Tables 7-8):
questions with an accepted answer and a code block, their HTML cleaned to text, each with
its pool of answers as the candidate responses. The build streams the dump with memory
bounded whatever its size; one module per stage:

1. :mod:`.inputs` - find the sites, open plain/``.gz``/``.bz2``/``.zst``/``.7z`` files, cut
   a large plain file into byte ranges parsed in parallel;
2. :mod:`.parse` - lxml parser target -> row checks -> Parquet chunks (a process pool of
   ``workers``); ``Votes.xml`` -> up/down counts per post;
3. :mod:`.join` with :mod:`.filters` - DuckDB: duplicate Ids, answers joined to questions,
   the filters it can decide (one table of filters, each with its SQL and Python form);
4. :mod:`.html_text` and :mod:`.records` - HTML to text, the filters on the texts, the
   records (in the pool, chunks of whole questions in question-Id order);
5. :mod:`.output` - seeded sample and 9:1 split, atomic write of the outputs;
6. :mod:`.stats` - Tables 7-8 statistics and ``summary.json``.

:mod:`.options` holds :class:`StackExchangeOptions` (the API's and the CLI's options) and
:mod:`.pipeline` runs the stages (:func:`build_stacocoqa`).

**Decisions** (documented, tested):

- Broken XML (truncated file, non-UTF-8 bytes, an undefined entity): the rows parsed
  before the error are kept, the error (file, line, column, message, rows read) goes to
  ``summary.json`` ``parse_errors`` and to stderr as a warning, and the build succeeds
  (exit 0); with ``strict=True`` the build fails with a :class:`UserError` and writes
  nothing. An empty file (or one without any ``<row>``), and a truncated or corrupt
  compressed file, are always errors.
- Record ids: the question Id; with several sites ``"<site>/<Id>"`` (Ids repeat across sites).
- Duplicate Ids keep their first row; an answer whose ``ParentId`` names no question is
  counted (``answer without question``) and dropped.
- The time window is half-open: ``start <= created < end`` (dates or date-times, ISO 8601).
"""

from rankalign.data.stackexchange.filters import (
    ANSWER_FILTERS,
    ANSWER_REASONS,
    QUESTION_FILTERS,
    QUESTION_REASONS,
)
from rankalign.data.stackexchange.html_text import has_code_block, html_to_text, html_to_texts
from rankalign.data.stackexchange.inputs import (
    DUMP_SUFFIXES,
    SiteInput,
    discover_sites,
    open_dump,
    plan_ranges,
)
from rankalign.data.stackexchange.options import StackExchangeOptions
from rankalign.data.stackexchange.parse import parse_posts, parse_votes
from rankalign.data.stackexchange.pipeline import build_stacocoqa
from rankalign.data.stackexchange.stats import POOL_SIZES, ROW_REASONS, BuildSummary

__all__ = [
    "ANSWER_FILTERS",
    "ANSWER_REASONS",
    "DUMP_SUFFIXES",
    "POOL_SIZES",
    "QUESTION_FILTERS",
    "QUESTION_REASONS",
    "ROW_REASONS",
    "BuildSummary",
    "SiteInput",
    "StackExchangeOptions",
    "build_stacocoqa",
    "discover_sites",
    "has_code_block",
    "html_to_text",
    "html_to_texts",
    "open_dump",
    "parse_posts",
    "parse_votes",
    "plan_ranges",
]
