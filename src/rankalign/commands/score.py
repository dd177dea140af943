"""``rankalign score``: write a reward model's scores into list-wise records.

::

    rankalign score --reward-model runs/rm --data lists.jsonl --out lists.scored.jsonl [--batch-size 8]

Every response of every record is scored by the reward model (a ``rankalign train-rm`` folder
or any HF sequence classifier with one label; :func:`rankalign.reward.model.score_responses`)
and the scores go into the record's ``scores`` field (higher is better), with the model's
path in ``meta["scores_source"]``. Data that had no scores can then feed PRO's reward
temperature, SPO's soft labels and ``--order-source scores``. The output is checked before
anything is loaded and written atomically (``.jsonl``, ``.parquet`` or a ``datasets``
folder); invalid input records are skipped and counted (``--data-on-error raise`` stops).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rankalign.errors import ConfigError, UserError


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class ScoreOptions:
    """Options of ``rankalign score``."""

    reward_model: str | None = _opt(None, "reward model: a `rankalign train-rm` output folder or an HF sequence "
                                          "classifier with one label (required)")
    data: str | None = _opt(None, "input records: .jsonl/.json (plain or compressed), .parquet or a datasets "
                                  "folder (required)")
    out: str | None = _opt(None, "output: NAME.jsonl, NAME.parquet, or a folder name without suffix (datasets) "
                                 "(required)")
    batch_size: int = _opt(8, "(prompt, response) pairs per forward")
    max_length: int = _opt(512, "maximum tokens of prompt + response (the prompt is cut first, from the left)")
    max_prompt_length: int | None = _opt(None, "maximum prompt tokens (default: max_length // 2)")
    keep_existing: bool = _opt(False, "records that already have scores keep them (default: they are replaced)")
    data_on_error: str = _opt("skip", "invalid input records: skip (counted and reported) or raise")
    dtype: str = _opt("float32", "weights dtype: float32, bfloat16 or float16")
    trust_remote_code: bool = _opt(False, "allow the model repository to run its own code")

    def __post_init__(self) -> None:
        problems = [f"--{name.replace('_', '-')}: missing (required)"
                    for name in ("reward_model", "data", "out") if not getattr(self, name)]
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_length < 2:
            problems.append(f"--max-length must be >= 2, got {self.max_length}")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length < self.max_length:
            problems.append(f"--max-prompt-length must be >= 1 and < --max-length ({self.max_length}), "
                            f"got {self.max_prompt_length}")
        if self.data_on_error not in ("skip", "raise"):
            problems.append(f"--data-on-error must be skip or raise, got {self.data_on_error!r}")
        if problems:
            raise ConfigError(problems)


def register(subparsers: Any) -> None:
    from rankalign.cli_fields import add_dataclass_fields, type_hints

    p = subparsers.add_parser(
        "score", allow_abbrev=False, help="write a reward model's scores into list-wise records (scores field)",
        description="Score every response of every record with a reward model and write the records with their "
                    "`scores` (higher is better), atomically.")
    add_dataclass_fields(p, dataclasses.fields(ScoreOptions), types=type_hints(ScoreOptions))
    p.set_defaults(func=run)


def score_records(records: list[Any], model: Any, tokenizer: Any, opts: ScoreOptions) -> tuple[int, int]:
    """Fill ``scores`` (and ``meta["scores_source"]``) of ``records`` in place; ``(scored, kept)`` counts."""
    from rankalign.reward.model import score_responses

    todo = [r for r in records if not (opts.keep_existing and r.scores is not None)]
    prompts = [r.prompt for r in todo for _ in r.responses]
    texts = [resp.text for r in todo for resp in r.responses]
    flat = score_responses(model, tokenizer, prompts, texts, batch_size=opts.batch_size, max_length=opts.max_length,
                           max_prompt_length=opts.max_prompt_length, show_progress=True) if texts else []
    start = 0
    for r in todo:
        r.scores = flat[start:start + r.num_responses]
        r.meta = {**(r.meta or {}), "scores_source": {"reward_model": str(opts.reward_model)}}
        start += r.num_responses
    return len(todo), len(records) - len(todo)


def run(args: argparse.Namespace) -> int:
    from rankalign.cli_fields import build_dataclass, given_values
    from rankalign.data.io import LoadReport, check_output_path, read_records, write_records
    from rankalign.reward.model import load_reward_model

    opts = build_dataclass(ScoreOptions, given_values(args, [f.name for f in dataclasses.fields(ScoreOptions)]))
    check_output_path(str(opts.out))  # before any model or data is loaded
    report = LoadReport()
    records = read_records(str(opts.data), on_error=opts.data_on_error, report=report)
    if not records:
        raise UserError(f"--data {opts.data}: no valid lists ({report.summary()}); each record needs a prompt and "
                        "at least 2 non-empty responses (see docs/data.md)")
    model, tokenizer = load_reward_model(str(opts.reward_model), trust_remote_code=opts.trust_remote_code,
                                         dtype=opts.dtype)
    scored, kept = score_records(records, model, tokenizer, opts)
    n = write_records(records, str(opts.out))
    print(f"scored {scored} record(s)" + (f", kept the scores of {kept}" if kept else "") + f"; wrote {n} to {opts.out}")
    if report.total_skipped:
        print(f"input: {report.summary()}")
    return 0
