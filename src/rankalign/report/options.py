"""Every option of ``rankalign report``, defined once: the Python API and the command line
(generated from these fields by :mod:`rankalign.cli_fields`) read them here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rankalign.errors import ConfigError


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


@dataclass
class ReportOptions:
    """What :func:`rankalign.report.build_report` puts into the report (docs/evaluation.md#reports-and-judging)."""

    out: str = _opt("report", "output folder: report.md, report.html, report.json and figures/*.png go there")
    baseline: str | None = _opt(None, "run (folder name or path) that the paired differences are taken "
                                      "against; none: the first run given")
    metrics: str | None = _opt(None, "comma-separated metrics to show, in this order (e.g. PrefHit@1,"
                                     "PrefRecall@3,BLEU); none: every metric the runs share")
    title: str = _opt("rankalign run report", "title of the report")
    bootstrap: int = _opt(10000, "bootstrap resamples of the paired differences")
    seed: int = _opt(0, "bootstrap seed")
    alpha: float = _opt(0.05, "1 - confidence level of the intervals (0.05: 95 %)")
    ranked_data: str | None = _opt(None, "records written by `rankalign rank` (they hold apdf and "
                                         "dynamic_ranking); needed for --apdf-lists")
    apdf_lists: str | None = _opt(None, "comma-separated record ids whose APDF matrices are drawn "
                                        "(each single-attribute matrix and the multi-APDF)")
    apdf_attributes: str = _opt("semantic,popularity", "attributes the ranked data was ranked with "
                                                       "(as given to `rankalign rank --attributes`)")
    half_life_days: float = _opt(365.0, "popularity half life the ranked data was ranked with")
    embedding_model: str | None = _opt(None, "sentence-embedding model for the semantic matrix (none: "
                                             "all-MiniLM-L6-v2, as `rankalign rank`)")
    max_examples: int = _opt(5, "sample generations shown per run (0: none)")

    def problems(self) -> list[str]:
        """Every invalid option, as one line each."""
        out = []
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 1:
            out.append(f"bootstrap: must be an integer >= 1, got {self.bootstrap!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            out.append(f"alpha: must lie in (0, 1), got {self.alpha!r}")
        if not isinstance(self.max_examples, int) or self.max_examples < 0:
            out.append(f"max_examples: must be an integer >= 0, got {self.max_examples!r}")
        if not (isinstance(self.half_life_days, (int, float)) and self.half_life_days > 0):
            out.append(f"half_life_days: must be a positive number, got {self.half_life_days!r}")
        if self.apdf_lists and not self.ranked_data:
            out.append("apdf_lists: needs --ranked-data FILE (records written by `rankalign rank`)")
        return out

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @staticmethod
    def split(value: str | None) -> list[str]:
        """A comma-separated option as a list (empty for none)."""
        return [v.strip() for v in (value or "").split(",") if v.strip()]
