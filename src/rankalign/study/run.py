"""``rankalign study``: build the data, measure label quality, train and evaluate every
(method, seed) cell, write the study report. Resumable at every stage.

Layout of ``output_dir`` (small files, committable; no data set text is copied there):

* ``split.json`` — the ids of the training and held-out lists, and where they came from;
* ``label_quality.json`` — every ranking rule against human choices (:mod:`.labels`);
* ``reward_model.json`` — the reward model used for the Reward column and its held-out accuracy;
* ``cells/<method>/seed-<s>/`` — ``rankalign_config.json``, ``train_log.jsonl``, ``eval/``
  (``metrics.json``, ``ranking.jsonl``, ``generations.jsonl`` without the prompts) and
  ``done.json``, written last: a cell with ``done.json`` is never recomputed, a cell without it
  is removed and redone, so a crash loses at most the cell in progress;
* ``study.md``, ``study.html``, ``study.json``, ``figures/`` (:mod:`.summary`) and
  ``report/`` (the ``rankalign report`` of every finished cell).

Models, checkpoints, the built lists and the reference log-prob cache shared by every cell
(``ref_logps/``) live in ``work_dir`` (large; not committed).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rankalign.errors import UserError
from rankalign.study.config import StudyConfig, StudyMethod

#: the training settings of every cell unless the study's ``train`` or a method's ``train`` says otherwise
TRAIN_DEFAULTS: dict[str, Any] = {
    "use_lora": True, "max_steps": 16, "learning_rate": 3e-4, "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1, "max_length": 256, "max_prompt_length": 128, "max_list_size": 4,
    "lr_scheduler_type": "constant", "warmup_steps": 0, "logging_steps": 1, "save_strategy": "no",
}
#: the reward model's settings unless ``reward_model.settings`` says otherwise
REWARD_DEFAULTS: dict[str, Any] = {
    "use_lora": True, "learning_rate": 5e-4, "max_steps": 30, "per_device_train_batch_size": 2,
    "max_length": 256, "max_prompt_length": 128, "max_list_size": 4, "rm_loss": "pl", "save_strategy": "no",
    "logging_steps": 1,
}


def _say(text: str) -> None:
    print(f"[study] {text}", file=sys.stderr, flush=True)


def _write_json(obj: Any, path: Path) -> None:
    from rankalign.evaluation.report import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(obj, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it and run the study again to recompute it") from None


# ---------------------------------------------------------------------- data
def _data_key(cfg: StudyConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg.data)


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every leaf that differs (dotted keys into nested mappings)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _check_same(path: Path, old: Any, new: dict[str, Any], what: str) -> None:
    """Refuse to reuse a result computed with other settings (a result without settings is taken as it is)."""
    if not isinstance(old, dict):
        return
    diff = changed_settings(old, new)
    if diff:
        raise UserError(f"{path}: {what} was computed with other settings ({'; '.join(diff[:6])}"
                        f"{'; ...' if len(diff) > 6 else ''}); use a new output_dir for the new settings, or "
                        "put the old values back to resume this study")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _site_folders(cfg: StudyConfig) -> list[Path]:
    root = Path(cfg.data.stackexchange or "")
    found = sorted(p for p in root.iterdir() if p.is_dir())
    if cfg.data.sites is None:
        return found
    names = {p.name: p for p in found}
    missing = [s for s in cfg.data.sites if s not in names]
    if missing:
        raise UserError(f"data.sites: {missing} not found under {root}; present: {', '.join(names) or '(none)'}")
    return [names[s] for s in cfg.data.sites]


def _stackexchange_lists(cfg: StudyConfig) -> dict[str, list[Any]]:
    """Site name -> its lists of >= ``min_answers`` answers (built once into the work folder)."""
    from rankalign.data.io import read_records
    from rankalign.data.stackexchange.options import StackExchangeOptions
    from rankalign.data.stackexchange.pipeline import build_stacocoqa

    out: dict[str, list[Any]] = {}
    for site in _site_folders(cfg):
        built = cfg.work / "data" / "stackexchange" / site.name
        if not (built / "summary.json").is_file():
            _say(f"building lists of {site.name}")
            build_stacocoqa(site, built, StackExchangeOptions(code_filter=False, min_answers=cfg.data.min_answers,
                                                              progress=False))
        recs = [r for f in ("train.jsonl", "test.jsonl") if (built / f).is_file()
                for r in read_records(built / f, on_error="raise")]
        for r in recs:  # question ids repeat across sites: the site names the list
            r.meta["site"] = site.name
            r.id = f"{site.name}/{r.id}"
        out[site.name] = [r for r in recs if r.num_responses >= cfg.data.min_answers]
    return out


def _oasst1_lists(cfg: StudyConfig) -> list[Any]:
    from rankalign.data.sources import load_dataset_file

    if cfg.data.oasst1 is None:
        return []
    return [r for r in load_dataset_file("oasst1", cfg.data.oasst1) if r.num_responses >= cfg.data.min_answers]


def load_groups(cfg: StudyConfig) -> dict[str, list[Any]]:
    """Every group of lists: one per site, ``all sites`` pooled, and ``oasst1`` when given."""
    groups: dict[str, list[Any]] = {}
    if cfg.data.stackexchange:
        sites = _stackexchange_lists(cfg)
        groups.update(sites)
        groups["all sites"] = [r for recs in sites.values() for r in recs]
    if cfg.data.oasst1:
        groups["oasst1"] = _oasst1_lists(cfg)
    return groups


def split_lists(records: list[Any], test_lists: int, train_lists: int | None, seed: int) -> tuple[list[Any], list[Any]]:
    """``(train, test)``: a seeded shuffle of the lists by id; the first ``test_lists`` are held out."""
    by_id = {str(r.id): r for r in records}
    if len(by_id) != len(records):
        raise UserError("the study's lists have duplicate ids; one question would be in train and test")
    ids = sorted(by_id)
    np.random.default_rng(seed).shuffle(ids)
    if len(ids) < test_lists + 1:
        raise UserError(f"{len(ids)} lists are too few for {test_lists} held-out lists and a training set; "
                        "lower data.test_lists or add sites")
    test = [by_id[i] for i in ids[:test_lists]]
    rest = ids[test_lists:]
    train = [by_id[i] for i in (rest if train_lists is None else rest[:train_lists])]
    return train, test


def prepare_data(cfg: StudyConfig, groups: dict[str, list[Any]]) -> tuple[list[Any], list[Any]]:
    """The training and held-out lists, written to ``work_dir/data/{train,test}.jsonl``;
    ``split.json`` keeps their ids (a changed data section is an error, not a silent re-split)."""
    from rankalign.data.io import write_records

    pool = groups["all sites"] if cfg.data.domain == "stackexchange" else groups["oasst1"]
    train, test = split_lists(pool, cfg.data.test_lists, cfg.data.train_lists, cfg.data.split_seed)
    split_path = Path(cfg.output_dir) / "split.json"
    split = {"data": _data_key(cfg), "train_ids": [str(r.id) for r in train], "test_ids": [str(r.id) for r in test],
             "train_sites": _counts(train), "test_sites": _counts(test)}
    if split_path.is_file():
        old = _read_json(split_path)
        if old.get("train_ids") != split["train_ids"] or old.get("test_ids") != split["test_ids"]:
            raise UserError(f"{split_path}: the data section changed since the finished cells were computed; "
                            "use a new output_dir (or delete the old results) to start a new study")
    else:
        _write_json(split, split_path)
    data_dir = cfg.work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_records(train, data_dir / "train.jsonl")
    write_records(test, data_dir / "test.jsonl")
    return train, test


def _counts(records: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        key = str(r.meta.get("site") or r.meta.get("source") or "?")
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------- label quality
def rule_specs(cfg: StudyConfig) -> list[Any]:
    from rankalign.ranking.rules import rule_key
    from rankalign.study.labels import RuleSpec

    specs = []
    for lab in cfg.labels:
        if isinstance(lab, dict):
            attrs = lab.get("attributes")
            specs.append(RuleSpec(str(lab.get("name", lab.get("rule"))), rule_key(lab.get("rule", lab.get("name"))),
                                  tuple(attrs) if attrs else None))
        else:
            specs.append(RuleSpec(str(lab), rule_key(lab)))
    return specs


def measure_labels(cfg: StudyConfig, groups: dict[str, list[Any]], encoder: Any) -> dict[str, Any]:
    """``label_quality.json`` (computed once)."""
    from rankalign.ranking.rank import compute_phi
    from rankalign.study.labels import label_quality

    path = Path(cfg.output_dir) / "label_quality.json"
    settings = _jsonable({"labels": cfg.labels, "data": _data_key(cfg), "bootstrap": cfg.eval.bootstrap})
    if path.is_file():
        old = _read_json(path)
        if old.get("settings", settings) == settings:
            return old
        _say("the labels or the data changed since label_quality.json was written: measuring again")
    _say(f"label quality of {len(cfg.labels)} rule(s) on {len(groups)} group(s)")
    t0 = time.perf_counter()
    phi = {g: compute_phi(recs, encoder, show_progress=False) for g, recs in groups.items() if recs}
    result = label_quality(groups, rule_specs(cfg), phi, n_boot=cfg.eval.bootstrap)
    result["seconds"] = time.perf_counter() - t0
    result["settings"] = settings
    _write_json(result, path)
    return result


# ---------------------------------------------------------------------- reward model
def reward_model(cfg: StudyConfig, train: list[Any], test: list[Any]) -> str | None:
    """The reward model folder (trained once into ``work_dir/reward_model`` when asked)."""
    if "reward" not in cfg.eval.metrics:
        return None
    if cfg.reward_model.path:
        return cfg.reward_model.path
    folder = cfg.work / "reward_model"
    marker = Path(cfg.output_dir) / "reward_model.json"
    settings = reward_settings(cfg)
    if marker.is_file():
        _check_same(marker, _read_json(marker).get("settings"), _jsonable(settings), "the reward model")
        if (folder / "config.json").is_file():
            return str(folder)
        _say("the reward model's folder is gone (a new machine?): training it again with the same settings")
    from rankalign.reward.config import load_reward_config
    from rankalign.reward.train import train_reward_model

    if folder.exists():
        shutil.rmtree(folder)
    rm_cfg = load_reward_config(None, {**settings, "output_dir": str(folder)})
    _say(f"training the reward model ({rm_cfg.rm_loss}, {rm_cfg.max_steps} steps) on {len(train)} lists")
    t0 = time.perf_counter()
    result = train_reward_model(rm_cfg, [r for r in train], eval_records=list(test))
    _write_json({"settings": settings, "held_out": result.metrics, "seconds": time.perf_counter() - t0}, marker)
    return str(folder)


def reward_settings(cfg: StudyConfig) -> dict[str, Any]:
    """The ``rankalign train-rm`` keys of the study's reward model (``output_dir`` aside)."""
    settings = {**REWARD_DEFAULTS, **cfg.reward_model.settings}
    if cfg.model:
        settings["model"] = cfg.model
    return settings


# ---------------------------------------------------------------------- cells
def cell_dirs(cfg: StudyConfig, spec: StudyMethod, seed: int) -> tuple[Path, Path]:
    """``(result folder, work folder)`` of one cell."""
    rel = Path("cells") / spec.name / f"seed-{seed}"
    return Path(cfg.output_dir) / rel, cfg.work / rel


def cells(cfg: StudyConfig) -> list[tuple[StudyMethod, int]]:
    """Every (method, seed) cell in run order; ``base`` runs once (it trains nothing)."""
    out = []
    for spec in cfg.method_specs():
        for seed in (cfg.seeds[:1] if spec.is_base else cfg.seeds):
            out.append((spec, seed))
    return out


def is_done(cfg: StudyConfig, spec: StudyMethod, seed: int) -> bool:
    """Whether the cell finished; one finished with other settings is an error naming them."""
    path = cell_dirs(cfg, spec, seed)[0] / "done.json"
    if not path.is_file():
        return False
    _check_same(path, _read_json(path).get("settings"), cell_settings(cfg, spec, seed), f"cell {spec.name} seed {seed}")
    return True


def train_values(cfg: StudyConfig, spec: StudyMethod, seed: int) -> dict[str, Any]:
    """The ``rankalign train`` keys of one cell (``output_dir`` aside)."""
    values = {**TRAIN_DEFAULTS, **cfg.train, **spec.train, **spec.hparams, "method": spec.method, "seed": seed,
              "disable_tqdm": True}
    if cfg.model:
        values["model"] = cfg.model
    if cfg.embedding_model:
        values["embedding_model"] = cfg.embedding_model
    return values


#: training keys that differ between the cells of one method without changing what it trains
_PER_CELL = frozenset({"hparams", "seed", "data_seed", "output_dir", "logging_dir", "ref_logps_dir"})


def effective_settings(cfg: StudyConfig, spec: StudyMethod) -> dict[str, Any]:
    """Every ``rankalign train`` key and loss hyper-parameter a (trained) method runs with, as
    training reads them (``max-list-size`` = ``max_list_size``, ``"1e-2"`` = 0.01; defaults
    filled in), the seed and output folders aside."""
    import dataclasses

    from rankalign.losses.registry import get_loss_class

    config = train_config(cfg, spec, cfg.seeds[0], cfg.work / "check")
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _PER_CELL}
    out.update({f.name: config.hparam(f.name) for f in dataclasses.fields(get_loss_class(spec.method).hyperparams)})
    return out


def setting_value(cfg: StudyConfig, spec: StudyMethod, key: str) -> Any:
    """The value a method trains with for a ``rankalign train`` key or one of its loss's
    hyper-parameters (:func:`effective_settings`).

    Raises:
        KeyError: ``key`` is neither (or ``spec`` is ``base``, which trains nothing).
    """
    if spec.is_base:
        raise KeyError(key)
    return effective_settings(cfg, spec)[key.replace("-", "_")]


def spa_values(cfg: StudyConfig, spec: StudyMethod, seed: int, output_dir: Path) -> dict[str, Any]:
    """The ``rankalign spa`` keys of an SPA cell: the cell's training keys (every phase trains
    ``max_steps``), its ``spa`` options, the training lists as the seed set and their prompts
    as the rounds' prompts (every method sees the same data)."""
    values = {k: v for k, v in train_values(cfg, spec, seed).items() if k != "method"}
    return {**values, **spec.spa, "data": str(cfg.work / "data" / "train.jsonl"),
            "prompts": str(spa_prompts_path(cfg)), "output_dir": str(output_dir),
            "ref_logps_dir": str(ref_logps_dir(cfg))}  # the seed DPO shares DPO-BT's cache


def ref_logps_dir(cfg: StudyConfig) -> Path:
    """The reference log-prob cache every cell shares (files keyed by data + reference weights)."""
    return cfg.work / "ref_logps"


def spa_prompts_path(cfg: StudyConfig) -> Path:
    return cfg.work / "data" / "spa_prompts.jsonl"


def cell_settings(cfg: StudyConfig, spec: StudyMethod, seed: int) -> dict[str, Any]:
    """What a cell's result depends on (stored in its ``done.json``, compared on resume)."""
    from dataclasses import asdict

    reward = None
    if "reward" in cfg.eval.metrics:
        reward = cfg.reward_model.path or reward_settings(cfg)
    return _jsonable({"train": None if spec.is_base else train_values(cfg, spec, seed),
                      **({"spa": spec.spa} if spec.spa else {}),
                      "model": cfg.model, "embedding_model": cfg.embedding_model, "eval": asdict(cfg.eval),
                      "reward_model": reward})


def train_config(cfg: StudyConfig, spec: StudyMethod, seed: int, output_dir: Path) -> Any:
    from rankalign.training import load_config

    # one reference log-prob cache for the whole study: its files are keyed by data + reference
    # weights, so every reference method and seed on the same lists computes it once
    return load_config(None, {**train_values(cfg, spec, seed), "output_dir": str(output_dir),
                              "ref_logps_dir": str(ref_logps_dir(cfg))})


def _ranked_copies(records: list[Any], config: Any, phi: list[np.ndarray] | None) -> list[Any]:
    """Training lists with this cell's D^R and APDF (only for methods that read them)."""
    import copy

    from rankalign.ranking.rank import RankingConfig, rank_records

    recs = [copy.copy(r) for r in records]
    for r in recs:
        r.dynamic_ranking = r.apdf = r.apdf_row_max = None
    if config.loss_class().needs_apdf or config.effective_order_source() == "dynamic":
        rank_records(recs, RankingConfig(attributes=config.ranking_attributes, rule=config.ranking_rule,
                                         half_life_days=config.half_life_days), phi=phi, show_progress=False)
    return recs


def run_cell(cfg: StudyConfig, spec: StudyMethod, seed: int, train: list[Any], rm: str | None,
             embed_fn: Callable[[list[str]], Any], phi: list[np.ndarray] | None) -> dict[str, Any]:
    """Train (unless ``base``) and evaluate one cell; writes its result folder, ``done.json`` last."""
    from rankalign.commands.eval import EvalOptions, run_eval
    from rankalign.training import train as train_policy

    out, work = cell_dirs(cfg, spec, seed)
    for folder in (out, work):  # an unfinished cell starts again from nothing
        if folder.exists():
            shutil.rmtree(folder)
    out.mkdir(parents=True)
    timings: dict[str, float] = {}
    model_path = cfg.model
    if spec.spa:
        t0 = time.perf_counter()
        final = _run_spa_cell(cfg, spec, seed, train, work / "model")
        timings["train"] = time.perf_counter() - t0
        model_path = str(final)
        shutil.copy2(work / "model" / "spa_summary.json", out / "spa_summary.json")
        for name in ("rankalign_config.json", "train_log.jsonl"):  # the last round's
            if (final / name).is_file():
                shutil.copy2(final / name, out / name)
    elif not spec.is_base:
        config = train_config(cfg, spec, seed, work / "model")
        t0 = time.perf_counter()
        result = train_policy(config, _ranked_copies(train, config, phi))
        timings["train"] = time.perf_counter() - t0
        del result
        model_path = str(work / "model")
        for name in ("rankalign_config.json", "train_log.jsonl"):
            if (work / "model" / name).is_file():
                shutil.copy2(work / "model" / name, out / name)
    t0 = time.perf_counter()
    e = cfg.eval
    opts = EvalOptions(data=str(cfg.work / "data" / "test.jsonl"), output_dir=str(out / "eval"), model=model_path,
                       metrics=e.metrics, reward_model=rm, max_new_tokens=e.max_new_tokens, num_beams=e.num_beams,
                       batch_size=e.batch_size, max_length=e.max_length, max_prompt_length=e.max_prompt_length,
                       k=e.k, bootstrap=e.bootstrap, embedding_model=cfg.embedding_model, quiet=True,
                       on_error="raise")
    run_eval(opts, embed_fn=embed_fn)
    timings["eval"] = time.perf_counter() - t0
    _strip_prompts(out / "eval" / "generations.jsonl")
    metrics = _read_json(out / "eval" / "metrics.json")["metrics"]
    if not cfg.keep_models and (work / "model").exists():
        shutil.rmtree(work / "model")
    done = {"method": spec.name, "loss": spec.method, "seed": seed, "timings_s": timings,
            "metrics": {k: v["mean"] for k, v in metrics.items()}, "settings": cell_settings(cfg, spec, seed)}
    _write_json(done, out / "done.json")
    return done


def _run_spa_cell(cfg: StudyConfig, spec: StudyMethod, seed: int, train: list[Any], folder: Path) -> Path:
    """SPA (Kim et al., arXiv:2406.04412) as one cell: DPO on the training lists, then
    ``rounds`` rounds that sample answers to the training prompts, label them with the
    model's implicit reward and refine-train; returns the last round's model folder."""
    from rankalign.data.io import write_jsonl
    from rankalign.iterative.spa import build_run, run_spa

    path = spa_prompts_path(cfg)
    if not path.is_file():
        write_jsonl([{"id": r.id, "prompt": r.prompt} for r in train], path)
    run = build_run(spa_values(cfg, spec, seed, folder))
    run_spa(run, show_progress=False)
    return folder / f"round-{run.options.rounds}"


def _strip_prompts(path: Path) -> None:
    """Drop the prompt text from a generations file (the results hold ids and model output only)."""
    from rankalign.data.io import write_jsonl

    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    write_jsonl(({k: v for k, v in row.items() if k != "prompt"} for row in rows), path)


# ---------------------------------------------------------------------- the study
@contextlib.contextmanager
def _lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An exclusive advisory lock on ``path`` (``flock``) while the block runs: yields whether it
    was taken (``wait``: block until it is). The kernel releases it when the process ends, so a
    killed worker leaves no stale lock. Without ``fcntl`` (Windows) every lock is granted."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX only
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_study(cfg: StudyConfig, *, encoder: Any = None, only_labels: bool = False,
              max_cells: int | None = None, breadth_first: bool = False, command: str | None = None) -> Path:
    """Run (or resume) the study; returns the output folder.

    Several workers may run the same study at once (one per GPU): the preparation (label table,
    split, reward model) runs under a lock that the others wait for, and each cell under its own
    lock, so a worker skips the cells another is computing; a killed worker's locks are freed.

    Args:
        cfg: the study (:func:`rankalign.study.config.load_study_config`).
        encoder: a sentence-embedding encoder object (tests inject a fake); default
            ``cfg.embedding_model``.
        only_labels: stop after the label-quality table.
        max_cells: compute at most this many unfinished cells, then write the report
            (a session-sized slice of a long study).
        breadth_first: take unfinished cells seed by seed (every method's first seed, then
            every method's second, ...) instead of method by method, so that a slice
            covers every method once before any method gets a second seed.
        command: the command line that reproduces the study, for the report.
    """
    from rankalign.evaluation.evaluate import make_embed_fn
    from rankalign.ranking.embeddings import load_embedder
    from rankalign.ranking.rank import compute_phi
    from rankalign.study.summary import write_summary

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    encoder = encoder if encoder is not None else load_embedder(cfg.embedding_model)
    locks = cfg.work / "locks"
    with _lock(locks / "prepare.lock", wait=True):
        groups = load_groups(cfg)
        for g, recs in groups.items():
            _say(f"{g}: {len(recs)} lists of >= {cfg.data.min_answers} responses")
        measure_labels(cfg, groups, encoder)
        if not only_labels:
            train, test = prepare_data(cfg, groups)
            _say(f"{len(train)} training lists, {len(test)} held-out lists ({cfg.data.domain})")
            every = cells(cfg)
            todo = [(s, seed) for s, seed in every if not is_done(cfg, s, seed)]
            _say(f"{len(every) - len(todo)} of {len(every)} cells already done")
            if breadth_first:
                todo.sort(key=lambda cell: cfg.seeds.index(cell[1]))  # stable: config order within a seed
            if max_cells is not None:
                todo = todo[:max_cells]
            rm = reward_model(cfg, train, test) if todo else None
    if not only_labels and todo:
        phi = compute_phi(train, encoder, show_progress=False)
        embed_fn = make_embed_fn(encoder)
        for k, (spec, seed) in enumerate(todo, 1):
            with _lock(locks / f"{spec.name}.seed-{seed}.lock", wait=False) as mine:
                if not mine or is_done(cfg, spec, seed):
                    _say(f"cell {k}/{len(todo)}: {spec.name} seed {seed} "
                         + ("taken by another worker" if not mine else "finished by another worker") + ", skipped")
                    continue
                _say(f"cell {k}/{len(todo)}: {spec.name} seed {seed}")
                t0 = time.perf_counter()
                done = run_cell(cfg, spec, seed, train, rm, embed_fn, phi)
            _say(f"cell {spec.name} seed {seed} done in {time.perf_counter() - t0:.0f} s: "
                 + ", ".join(f"{m} {v:.3f}" for m, v in done["metrics"].items() if isinstance(v, (int, float))))
    write_summary(cfg, time.perf_counter() - t_start, command)
    _say(f"wrote {out / 'study.md'} and {out / 'study.html'}")
    return out
