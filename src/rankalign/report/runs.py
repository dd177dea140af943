"""Reading run folders written by ``rankalign train``, ``rankalign eval`` and ``rankalign demo``.

A *run* is a folder holding at least one of

- ``train_log.jsonl`` and/or ``rankalign_config.json`` (``rankalign train``; the log format
  is in docs/training.md "Output and logs");
- ``metrics.json`` (+ ``generations.jsonl``) (``rankalign eval``).

The two halves are joined when they live apart: a folder's ``eval/`` or ``model/`` sub-folder
is read too (``rankalign demo`` trains into ``DIR/model``), and an evaluation whose
``metrics.json`` names a trained folder as its ``settings.model`` picks up that folder's
config and log. A folder with none of these files is not a run: a one-line error names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

TRAIN_FILES = ("train_log.jsonl", "rankalign_config.json")
EVAL_FILES = ("metrics.json",)
#: sub-folders read as part of a run (the demo trains into DIR/model; DIR/eval is a common layout)
SUB_FOLDERS = ("model", "eval")


@dataclass
class Run:
    """One run: what training and evaluation wrote.

    Attributes:
        name: display name (the folder name; made unique with its parent where two clash).
        path: the folder given.
        config: ``rankalign_config.json`` (``{}`` when absent).
        log: the rows of ``train_log.jsonl`` (``[]`` when absent).
        metrics: ``metrics.json``'s ``metrics``: name -> ``{mean, ci_low, ci_high, n}``.
        per_example: metric name -> {record id: value}, from ``generations.jsonl`` and ``ranking.jsonl``
            (read by :func:`rankalign.evaluation.compare.load_run`).
        generations: ``generations.jsonl`` rows (id, prompt, generation, ...).
        sources: the files read, for the report's provenance table.
    """

    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_example: dict[str, dict[str, float]] = field(default_factory=dict)
    generations: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        """The training method (``rankalign_config.json``'s ``method``), else ``"?"``."""
        return str(self.config.get("method", "?"))

    def train_rows(self, kind: str = "train") -> list[dict[str, Any]]:
        """Log rows of one type (``train``, ``eval``, ``summary``, ``truncation``)."""
        return [r for r in self.log if r.get("type") == kind]

    @property
    def data_size(self) -> int | None:
        """Lists trained on (the log's ``truncation`` header), or ``None``."""
        for row in self.train_rows("truncation"):
            if isinstance(row.get("lists"), int):
                return int(row["lists"])
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rewrite the file by "
                        "running the command that made it again") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a truncated last line (a killed writer) is dropped, any other bad line is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):
                break  # a log cut by a kill mid-line
            raise UserError(f"{path} line {i}: not valid JSON ({exc.msg}); fix or delete the line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _is_run_folder(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in TRAIN_FILES + EVAL_FILES)


def _read_train(run: Run, folder: Path) -> None:
    cfg = folder / "rankalign_config.json"
    if cfg.is_file() and not run.config:
        data = _read_json(cfg)
        if not isinstance(data, dict):
            raise UserError(f"{cfg}: expected a JSON object (a saved ListwiseConfig)")
        run.config = data
        run.sources.append(str(cfg))
    log = folder / "train_log.jsonl"
    if log.is_file() and not run.log:
        run.log = _read_jsonl(log)
        run.sources.append(str(log))


def _read_eval(run: Run, folder: Path) -> None:
    path = folder / "metrics.json"
    if not path.is_file() or run.metrics:
        return
    data = _read_json(path)
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: no 'metrics' object; is this a `rankalign eval` output?")
    for name, est in metrics.items():
        if not isinstance(est, dict) or not {"mean", "ci_low", "ci_high"} <= set(est):
            raise UserError(f"{path}: metric {name!r} lacks mean/ci_low/ci_high; is this a `rankalign eval` output?")
    run.metrics = {str(k): dict(v) for k, v in metrics.items()}
    run.sources.append(str(path))
    from rankalign.evaluation.compare import PER_EXAMPLE_FILES
    from rankalign.evaluation.compare import load_run as load_values

    if any((folder / f).is_file() for f in PER_EXAMPLE_FILES):  # per-prompt values, as `rankalign compare` reads them
        run.per_example = load_values(folder).values
        run.sources += [str(folder / f) for f in PER_EXAMPLE_FILES if (folder / f).is_file()]
    gens = folder / "generations.jsonl"
    if gens.is_file():
        run.generations = _read_jsonl(gens)
    model = data.get("settings", {}).get("model") if isinstance(data.get("settings"), dict) else None
    if isinstance(model, str) and not run.config:
        trained = Path(model)
        if not trained.is_absolute():
            trained = (folder / model) if (folder / model).is_dir() else Path(model)
        if trained.is_dir() and any((trained / f).is_file() for f in TRAIN_FILES):
            _read_train(run, trained)


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read one run folder (see the module docstring).

    Raises:
        UserError: ``path`` is not a folder, or holds none of the files of a run.
    """
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{str(p)!r} is not a folder; give run folders written by `rankalign train` or "
                        "`rankalign eval`")
    folders = [p] + [p / s for s in SUB_FOLDERS if _is_run_folder(p / s)]
    if not any(_is_run_folder(f) for f in folders):
        raise UserError(f"{str(p)!r} is not a run: it holds none of {', '.join(TRAIN_FILES + EVAL_FILES)} "
                        f"(nor do its {'/'.join(SUB_FOLDERS)} sub-folders); give folders written by "
                        "`rankalign train` or `rankalign eval`")
    run = Run(name=name or p.resolve().name, path=p)
    for f in folders:
        _read_train(run, f)
    for f in folders:
        _read_eval(run, f)
    return run


def load_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[Run]:
    """Read every run; names are ``names`` when given (one per path), else the folder names, made
    unique with the parent folder where two clash.

    Raises:
        UserError: no run given, or any folder that is not a run (all named in one message).
    """
    if not paths:
        raise UserError("no run folders given; pass one or more folders written by `rankalign train`/`eval`")
    if names is not None and len(names) != len(paths):
        raise UserError(f"{len(names)} names for {len(paths)} run folders")
    problems, runs = [], []
    for k, p in enumerate(paths):
        try:
            runs.append(load_run(p, None if names is None else names[k]))
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} folders are not runs: " + " | ".join(problems))
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    seen: dict[str, int] = {}
    for r in runs:  # the same folder twice, or equal parent/name pairs: number them
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}#{seen[r.name]}"
    return runs


def find_run(runs: Sequence[Run], key: str) -> Run:
    """The run named ``key`` (its name, folder name or path).

    Raises:
        UserError: no run matches (the message lists the names).
    """
    for r in runs:
        if key in (r.name, str(r.path), r.path.name) or Path(key).resolve() == r.path.resolve():
            return r
    raise UserError(f"--baseline {key!r} is none of the runs given: {', '.join(r.name for r in runs)}")


def common_metrics(runs: Sequence[Run], wanted: Sequence[str] = ()) -> list[str]:
    """Metrics to report: ``wanted`` (each must exist in some run), else those every evaluated run has,
    in the first run's order."""
    evaluated = [r for r in runs if r.metrics]
    if wanted:
        known = {m for r in evaluated for m in r.metrics}
        missing = [m for m in wanted if m not in known]
        if missing:
            raise UserError(f"--metrics: {missing} in no run's metrics.json; known: {sorted(known)}")
        return list(wanted)
    if not evaluated:
        return []
    shared = set(evaluated[0].metrics)
    for r in evaluated[1:]:
        shared &= set(r.metrics)
    return [m for m in evaluated[0].metrics if m in shared]


def flat_settings(run: Run) -> dict[str, Any]:
    """The run's settings as one flat mapping: config fields, hyper-parameters (given ones, and the
    method's declared defaults for the rest), and ``data_size`` (lists trained on)."""
    out: dict[str, Any] = {}
    for key, value in run.config.items():
        if key != "hparams" and _is_scalar(value):
            out[key] = value
    hp = run.config.get("hparams")
    out.update(_hparam_defaults(run.method))
    if isinstance(hp, Mapping):
        out.update({k: v for k, v in hp.items() if _is_scalar(v)})
    if run.data_size is not None:
        out["data_size"] = run.data_size
    return out


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _hparam_defaults(method: str) -> dict[str, Any]:
    """Declared defaults of a method's hyper-parameters (empty for an unknown method)."""
    try:
        from rankalign.losses import hyperparameters
    except ImportError:  # pragma: no cover - torch missing
        return {}
    return {hp.name: hp.default for hp in hyperparameters().values() if method in hp.methods}
