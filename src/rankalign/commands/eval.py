"""``rankalign eval``: score a model on test lists (metrics: docs/methods.md#metrics, docs/evaluation.md).

Metric groups (``--metrics``, comma-separated; default ``auto``):

* ``generation``: generate an answer per prompt, then PrefHit@k / PrefRecall@k, BLEU,
  ROUGE-L, CoSim (and SaferHit where the data names a safer response);
* ``ranking``: held-out ranking accuracy, no generation (Kendall tau, top-1, pairwise
  accuracy, NDCG of the policy's implicit reward or mean token log-prob against the gold
  order; :mod:`rankalign.evaluation.ranking_accuracy`);
* ``reward``: the reward of each generation under ``--reward-model``;
* ``toxicity``: the toxic-label probability of each generation under ``--toxicity-model``.

``auto`` = ``generation,ranking`` (``generation`` alone with ``--from-generations``), plus
``reward``/``toxicity`` when their model is given. Writes ``DIR/metrics.json`` (every metric
with its bootstrap CI), ``DIR/generations.jsonl`` (one row per prompt with every
per-example value), ``DIR/ranking.jsonl`` (one row per ranked list) and ``DIR/report.md``;
each file atomically, once everything is computed. The options are the fields of
:class:`EvalOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import ConfigError, UserError
from rankalign.outputs import check_output_dir, writing

#: the files ``rankalign eval`` writes into ``--output-dir``
OUTPUT_FILES = ("metrics.json", "generations.jsonl", "ranking.jsonl", "report.md")
#: the metric groups of ``--metrics``
METRIC_GROUPS = ("generation", "ranking", "reward", "toxicity")
#: metric groups that need a gold order
GOLD_GROUPS = ("generation", "ranking")


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class EvalOptions:
    """Options of ``rankalign eval`` (defaults defined here only)."""

    data: str | None = _opt(None, "test records (.jsonl, .parquet or a datasets folder); required")
    output_dir: str | None = _opt(None, "where metrics.json, generations.jsonl, ranking.jsonl and report.md go; "
                                        "required")
    model: str | None = _opt(None, "model folder (a `rankalign train` output, an adapter folder) or hub name; "
                                   "none: the offline SmolLM2-135M-Instruct")
    metrics: str = _opt("auto", "comma-separated metric groups: generation, ranking (no generation), reward, "
                                "toxicity; auto = generation,ranking (generation alone with --from-generations) "
                                "plus reward/toxicity when their model is given")
    from_generations: str | None = _opt(None, "recompute the metrics from saved answers instead of generating: an "
                                              "eval output folder or its generations.jsonl (matched by record id)")
    ref_model: str | None = _opt(None, "reference model of the ranking's implicit reward beta*(logp - logp_ref); "
                                       "none: for a `rankalign train` output of a reference method, the model the "
                                       "run started from (rankalign_config.json) or the LoRA base; otherwise the "
                                       "mean token log-prob is ranked")
    beta: float | None = _opt(None, "beta of the implicit reward (scales, never reorders); none: the run's beta, "
                                    "else 0.1")
    max_length: int = _opt(512, "ranking: maximum tokens of prompt + response, as in training")
    max_prompt_length: int = _opt(256, "ranking: maximum prompt tokens (cut from the left), as in training")
    ranking_batch_size: int = _opt(2, "ranking: lists per forward pass")
    reward_model: str | None = _opt(None, "reward model folder (rankalign train-rm output or any HF sequence "
                                          "classifier with one score); adds the Reward column")
    toxicity_model: str | None = _opt(None, "toxicity classifier folder (any HF sequence classifier); adds the "
                                            "Toxicity column = probability of the toxic label")
    toxicity_label: str | None = _opt(None, "name (or index) of the classifier's toxic label; none: a label named "
                                            "toxic, else the one containing 'toxic' (not non-/not-), else label 1 "
                                            "of two (docs/evaluation.md)")
    max_new_tokens: int = _opt(128, "tokens generated per answer")
    num_beams: int = _opt(4, "beam width (beam search by default, as in SeAdpra's evaluation); 1 = greedy, faster "
                             "on a CPU")
    batch_size: int = _opt(4, "prompts per generate call; texts per reward/toxicity batch")
    k: str = _opt("1,3", "comma-separated k of PrefHit@k / PrefRecall@k")
    limit: int | None = _opt(None, "evaluate only the first N records")
    split: str | None = _opt(None, "keep only records whose meta.split equals this (e.g. test)")
    embedding_model: str | None = _opt(None, "sentence-embedding model for Sim(x, R_i) (none: all-MiniLM-L6-v2, "
                                             "offline)")
    bootstrap: int = _opt(1000, "bootstrap resamples for the CIs")
    seed: int = _opt(0, "bootstrap seed")
    on_error: str = _opt("skip", "invalid records: skip (counted) or raise (stop at the first)")
    trust_remote_code: bool = _opt(False, "let model folders run their own code (never by default)")
    quiet: bool = _opt(False, "no progress bars")


def register(subparsers: Any) -> None:
    from rankalign.cli_fields import add_dataclass_fields, type_hints

    p = subparsers.add_parser(
        "eval",
        help="score a model on test lists: held-out ranking accuracy, generation metrics, reward, toxicity",
        description="Score a model on test records. ranking: order each list by the policy's implicit reward (or "
                    "mean token log-prob) and compare with the gold order (Kendall tau, top-1, pairwise accuracy, "
                    "NDCG), no generation. generation: generate an answer per prompt and compute PrefHit@k, "
                    "PrefRecall@k, BLEU, ROUGE-L, CoSim. reward / toxicity: score the answers with a classifier "
                    "given by path. Every mean with a bootstrap CI. Gold order: the record's `ranking`, else "
                    "descending scores, else the community order (accepted first, then votes).",
    )
    add_dataclass_fields(p, dataclasses.fields(EvalOptions), types=type_hints(EvalOptions))
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """The :class:`EvalOptions` of the flags given on the command line (the rest keep their defaults)."""
    from rankalign.cli_fields import build_dataclass, given_values

    return build_dataclass(EvalOptions, given_values(args, [f.name for f in dataclasses.fields(EvalOptions)]))


# ---------------------------------------------------------------------------- checks
def resolve_metrics(opts: EvalOptions) -> list[str]:
    """The metric groups to run (``auto`` expanded); raises :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    if opts.metrics.strip().lower() == "auto":
        groups = ["generation"] if opts.from_generations else ["generation", "ranking"]
        groups += [g for g, m in (("reward", opts.reward_model), ("toxicity", opts.toxicity_model)) if m]
    else:
        groups = []
        for name in (x.strip().lower() for x in opts.metrics.split(",") if x.strip()):
            if name not in METRIC_GROUPS:
                problems.append(f"--metrics: unknown group {name!r}; choose from {', '.join(METRIC_GROUPS)} or auto")
            elif name not in groups:
                groups.append(name)
        if not groups and not problems:
            problems.append("--metrics is empty; give e.g. generation,ranking (or auto)")
        for g, m, flag in (("reward", opts.reward_model, "--reward-model"),
                           ("toxicity", opts.toxicity_model, "--toxicity-model")):
            if g in groups and not m:
                problems.append(f"--metrics {g} needs {flag} PATH")
            if m and g not in groups:
                problems.append(f"{flag} is given but --metrics has no {g}; add {g} to --metrics (or use auto)")
        if "ranking" in groups and opts.from_generations and opts.model is None:
            problems.append("--metrics ranking with --from-generations needs --model (saved answers do not say "
                            "which model to rank with)")
    if problems:
        raise ConfigError(problems)
    return groups


def _check_options(opts: EvalOptions) -> tuple[tuple[int, ...], list[str]]:
    """Every problem of the options at once (before any record or model is read)."""
    from rankalign.evaluation.evaluate import parse_ks

    problems: list[str] = []
    for name in ("max_new_tokens", "num_beams", "batch_size", "bootstrap", "max_length", "max_prompt_length",
                 "ranking_batch_size"):
        value = getattr(opts, name)
        if value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if opts.max_prompt_length >= opts.max_length:
        problems.append(f"--max-prompt-length ({opts.max_prompt_length}) must be < --max-length ({opts.max_length})")
    if opts.limit is not None and opts.limit < 1:
        problems.append(f"--limit must be >= 1, got {opts.limit}")
    if opts.on_error not in ("skip", "raise"):
        problems.append(f"--on-error must be skip or raise, got {opts.on_error!r}")
    if opts.beta is not None and opts.beta <= 0:
        problems.append(f"--beta must be > 0, got {opts.beta}")
    try:
        ks = parse_ks(opts.k)
    except ValueError as exc:
        problems.append(str(exc))
        ks = ()
    if opts.data is None:
        problems.append("--data is required: the test records (.jsonl, .parquet or a datasets folder)")
    elif not Path(opts.data).exists():
        problems.append(f"--data {opts.data}: no such file or folder")
    if opts.output_dir is None:
        problems.append("--output-dir is required: the folder for metrics.json and the per-example files")
    else:
        try:
            check_output_dir(opts.output_dir, "--output-dir", OUTPUT_FILES)
        except UserError as exc:
            problems.append(str(exc))
    for flag, value in (("--model", opts.model), ("--ref-model", opts.ref_model)):
        if value is not None and _looks_local(value) and not Path(value).expanduser().exists():
            problems.append(f"{flag} {value!r}: no such model folder; give an existing folder or a hub name")
    for flag, value in (("--reward-model", opts.reward_model), ("--toxicity-model", opts.toxicity_model)):
        if value is not None and not Path(value).expanduser().is_dir():
            problems.append(f"{flag} {value!r}: no such model folder")
    if opts.from_generations is not None and not Path(opts.from_generations).exists():
        problems.append(f"--from-generations {opts.from_generations}: no such run folder or file")
    try:
        groups = resolve_metrics(opts)
    except ConfigError as exc:
        problems.extend(exc.problems)
        groups = []
    if problems:
        raise ConfigError(problems)
    return ks, groups


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ``org/name`` (starts with ``.``/``/``/``~`` or has more than one ``/``)."""
    from rankalign.training.models import is_default_model

    return not is_default_model(name) and (name.startswith((".", "/", "~")) or name.count("/") != 1)


# ---------------------------------------------------------------------------- the run
def run_eval(args: argparse.Namespace | EvalOptions, *, model: Any = None, tokenizer: Any = None,
             embed_fn: Any = None) -> int:
    """Run the evaluation described by ``args``; ``model``/``tokenizer``/``embed_fn`` override loading."""
    opts = args if isinstance(args, EvalOptions) else options_from_args(args)
    ks, groups = _check_options(opts)
    t0 = time.perf_counter()
    records, skipped = _load_records(opts)
    groups = _check_gold(records, groups, opts, ks)
    timings: dict[str, float] = {}
    generating = not opts.from_generations and any(g in groups for g in ("generation", "reward", "toxicity"))
    needs_model = "ranking" in groups or generating
    if needs_model and (model is None or tokenizer is None):
        model, tokenizer = _load_model(opts.model, opts.trust_remote_code)
    timings["load"] = time.perf_counter() - t0
    generations = _generations(opts, groups, records, model, tokenizer, timings)
    metrics: dict[str, dict[str, float | int]] = {}
    extra: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    if generations is not None:
        rows = {r.id: {"id": r.id, "prompt": r.prompt, "generation": generations[r.id]}
                for r in records if r.id in generations}
    if "generation" in groups:
        _generation_metrics(opts, records, generations, ks, embed_fn, metrics, extra, rows, timings)
    for group, scorer in (("reward", _reward_scores), ("toxicity", _toxicity_scores)):
        if group in groups:
            t = time.perf_counter()
            name = group.capitalize()
            ids = list(rows)
            values = scorer(opts, [rows[i]["prompt"] for i in ids], [rows[i]["generation"] for i in ids])
            for i, v in zip(ids, values):
                rows[i][name] = v
            metrics[name] = _estimate(values, opts)
            timings[group] = time.perf_counter() - t
    ranking = None
    if "ranking" in groups:
        t = time.perf_counter()
        ranking = _ranking(opts, records, model, tokenizer)
        metrics.update(ranking.metrics)
        timings["ranking"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    settings = _settings(opts, groups, len(records), skipped, ks, ranking)
    out = _write_outputs(Path(opts.output_dir or "."), metrics, extra, list(rows.values()), ranking, settings,
                         timings)
    for name, est in metrics.items():
        print(f"{name:>26}: {est['mean']:.4f}  [{est['ci_low']:.4f}, {est['ci_high']:.4f}]  (n = {est['n']})")
    if ranking is not None and ranking.skipped:
        print(f"ranking: {ranking.skipped_summary()}", file=sys.stderr)
    print(f"wrote {', '.join(str(out / f) for f in _written(rows, ranking))} ({timings['total']:.1f} s)")
    return 0


def _load_records(opts: EvalOptions) -> tuple[list[Any], int]:
    """The records to evaluate (after ``--split`` and ``--limit``) and the number skipped as invalid."""
    from rankalign.data.io import read_selected_records

    return read_selected_records(opts.data, on_error=opts.on_error, split=opts.split, limit=opts.limit,
                                 purpose="evaluate")


def _check_gold(records: list[Any], groups: list[str], opts: EvalOptions, ks: tuple[int, ...]) -> list[str]:
    """Drop or refuse the metric groups the data cannot serve: no gold order, k beyond every list."""
    from rankalign.evaluation.metrics import gold_problem

    no_gold = [r.id for r in records if gold_problem(r) == "no gold order"]
    gold_groups = [g for g in groups if g in GOLD_GROUPS]
    if gold_groups and len(no_gold) == len(records):
        still = [g for g in groups if g not in GOLD_GROUPS]
        msg = (f"{opts.data}: none of the {len(records)} records has a gold order (no ranking, scores, votes or "
               f"accepted flag, e.g. id={no_gold[0]!r}), which {', '.join(gold_groups)} need; reward and toxicity "
               "still run (--metrics reward,toxicity with --reward-model / --toxicity-model)")
        if opts.metrics.strip().lower() == "auto" and still:
            print(f"note: {msg}; running {', '.join(still)} only", file=sys.stderr)
            return still
        raise UserError(msg)
    if gold_groups and no_gold:
        print(f"note: {len(no_gold)} of {len(records)} records have no gold order (e.g. id={no_gold[0]!r}); they "
              f"are skipped for {', '.join(gold_groups)} (reward and toxicity use every record)", file=sys.stderr)
    if "generation" in groups:
        longest = max(r.num_responses for r in records)
        too_big = [k for k in ks if k > longest]
        if too_big:
            raise UserError(f"--k {','.join(map(str, too_big))}: larger than every list (the longest has {longest} "
                            f"responses), so PrefHit@k would be 1 for every prompt; use k <= {longest}")
    return groups


def _load_model(name: str | None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The policy and its tokenizer; on the GPU where there is one."""
    import torch

    from rankalign.training.models import load_model_and_tokenizer

    folder = Path(name) if name else None
    if folder is not None and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        model, tokenizer = _load_adapter(folder, trust_remote_code)
    else:
        model, tokenizer = load_model_and_tokenizer(name, trust_remote_code=trust_remote_code)
    if torch.cuda.is_available():  # generate on the GPU where there is one
        model = model.to("cuda")
    return model, tokenizer


def _load_adapter(folder: Path, trust_remote_code: bool) -> tuple[Any, Any]:
    """A LoRA adapter folder (``rankalign train --use-lora --merge-lora false``) as a peft model on its
    base, so that the ranking can use the base with the adapter disabled as the reference."""
    from peft import PeftModel

    from rankalign.training.models import load_model_and_tokenizer, load_tokenizer

    try:
        base_name = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--model {str(folder)!r}: unreadable adapter_config.json ({exc})") from None
    base, _ = load_model_and_tokenizer(base_name, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, str(folder)), load_tokenizer(str(folder), trust_remote_code=trust_remote_code)


def _generations(opts: EvalOptions, groups: list[str], records: list[Any], model: Any, tokenizer: Any,
                 timings: dict[str, float]) -> dict[str, str] | None:
    """record id -> answer: read from ``--from-generations`` or generated (batched, progress bar)."""
    if not any(g in groups for g in ("generation", "reward", "toxicity")):
        return None
    t = time.perf_counter()
    if opts.from_generations:
        saved = read_generations(opts.from_generations)
        missing = [r.id for r in records if r.id not in saved]
        if len(missing) == len(records):
            raise UserError(f"--from-generations {opts.from_generations}: none of its record ids is in {opts.data}; "
                            "give the data the generations were made for")
        if missing:
            print(f"note: {len(missing)} of {len(records)} records have no saved generation (e.g. "
                  f"id={missing[0]!r}); skipped for the generation metrics", file=sys.stderr)
        extra = len(set(saved) - {r.id for r in records})
        if extra:
            print(f"note: {extra} saved generation(s) belong to records not in this evaluation (ignored)",
                  file=sys.stderr)
        timings["read_generations"] = time.perf_counter() - t
        return {r.id: saved[r.id] for r in records if r.id in saved}
    from rankalign.evaluation.generate import generate_responses

    answers = generate_responses(model, tokenizer, [r.prompt for r in records], max_new_tokens=opts.max_new_tokens,
                                 num_beams=opts.num_beams, batch_size=opts.batch_size, show_progress=not opts.quiet)
    timings["generate"] = time.perf_counter() - t
    return {r.id: a for r, a in zip(records, answers)}


def read_generations(path: str | Path) -> dict[str, str]:
    """record id -> generation from an eval output folder or its ``generations.jsonl``.

    Raises:
        UserError: no generations.jsonl in the folder, a damaged line, a row without ``id``
            or ``generation``, an id twice.
    """
    p = Path(path)
    file = p / "generations.jsonl" if p.is_dir() else p
    if not file.is_file():
        raise UserError(f"--from-generations {p}: no generations.jsonl there; give a `rankalign eval` output "
                        "folder or its generations.jsonl")
    from rankalign.evaluation.compare import rows_by_id

    out: dict[str, str] = {}
    for rid, lineno, row in rows_by_id(file):
        if not isinstance(row.get("generation"), str):
            raise UserError(f"{file}:{lineno}: a row needs 'id' and a text 'generation'")
        out[rid] = row["generation"]
    return out


def _generation_metrics(opts: EvalOptions, records: list[Any], generations: dict[str, str] | None,
                        ks: tuple[int, ...], embed_fn: Any, metrics: dict[str, Any], extra: dict[str, Any],
                        rows: dict[str, dict[str, Any]], timings: dict[str, float]) -> None:
    """PrefHit/PrefRecall, BLEU, ROUGE-L, CoSim on the records with a gold order and an answer."""
    from rankalign.evaluation.evaluate import make_embed_fn, score_generations
    from rankalign.evaluation.metrics import gold_problem

    t = time.perf_counter()
    scored = [r for r in records if generations and r.id in generations and gold_problem(r) != "no gold order"]
    if not scored:
        return
    if embed_fn is None:
        embed_fn = make_embed_fn(opts.embedding_model, show_progress=not opts.quiet)
    result = score_generations(scored, [generations[r.id] for r in scored], embed_fn,  # type: ignore[index]
                               ks=ks, n_bootstrap=opts.bootstrap, seed=opts.seed)
    metrics.update(result.metrics)
    extra.update(result.extra)
    for ex in result.examples:
        rows[ex["id"]].update({k: v for k, v in ex.items() if k not in ("id", "generation")})
    timings["score_generations"] = time.perf_counter() - t


def _estimate(values: list[float], opts: EvalOptions) -> dict[str, float | int]:
    from rankalign.evaluation.metrics import estimate

    return estimate(values, n=opts.bootstrap, seed=opts.seed).to_dict()


def _reward_scores(opts: EvalOptions, prompts: list[str], answers: list[str]) -> list[float]:
    """Reward of each answer under ``--reward-model`` (``rankalign.reward.model``)."""
    try:
        from rankalign.reward.model import load_reward_model, score_responses
    except ImportError:
        raise UserError("--reward-model needs rankalign.reward.model, which this installation lacks") from None
    model, tok = load_reward_model(opts.reward_model, trust_remote_code=opts.trust_remote_code)
    return [float(x) for x in score_responses(model, tok, prompts, answers, batch_size=opts.batch_size,
                                              max_length=opts.max_length, max_prompt_length=opts.max_prompt_length,
                                              show_progress=not opts.quiet)]


def _toxicity_scores(opts: EvalOptions, prompts: list[str], answers: list[str]) -> list[float]:
    """Toxic-label probability of each answer (the answer alone) under ``--toxicity-model``."""
    from rankalign.evaluation.toxicity import load_classifier, toxic_label, toxicity_scores

    model, tok = load_classifier(str(opts.toxicity_model), trust_remote_code=opts.trust_remote_code)
    label, sigmoid = toxic_label(model.config, opts.toxicity_label)
    return toxicity_scores(model, tok, answers, label=label, sigmoid=sigmoid, batch_size=opts.batch_size,
                           max_length=opts.max_length, show_progress=not opts.quiet)


# ---------------------------------------------------------------------------- ranking
def run_config(model_path: str | None) -> dict[str, Any]:
    """The ``rankalign_config.json`` of a training output folder (empty when there is none)."""
    if not model_path:
        return {}
    path = Path(model_path) / "rankalign_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); pass --ref-model explicitly or fix the file") from None
    return data if isinstance(data, dict) else {}


def ranking_reference(opts: EvalOptions, model: Any) -> tuple[str | None, bool, float, str]:
    """How the ranking scores responses: ``(reference model to load, use the LoRA base, beta, description)``.

    ``--ref-model`` when given; else, for a training output of a reference method, the run's
    ``ref_model`` or ``model`` (the policy it started from), or the base of a LoRA adapter;
    else no reference (mean token log-prob).
    """
    from rankalign.losses import get_loss_class, hyperparameters

    cfg = run_config(opts.model)
    hp = cfg.get("hparams") if isinstance(cfg.get("hparams"), dict) else {}
    beta = opts.beta if opts.beta is not None else float(hp.get("beta", hyperparameters()["beta"].default))
    if opts.ref_model:
        return opts.ref_model, False, beta, f"implicit reward, reference {opts.ref_model}"
    method = cfg.get("method")
    try:
        needs_ref = bool(method) and get_loss_class(str(method)).needs_reference
    except ValueError:
        needs_ref = False
    if not needs_ref:
        why = f"{method} is reference-free" if method else "no reference model"
        return None, False, beta, f"mean token log-prob ({why})"
    if getattr(model, "_hf_peft_config_loaded", False) or hasattr(model, "disable_adapter"):
        return None, True, beta, f"implicit reward of {method}, reference: the LoRA base (adapter disabled)"
    ref = cfg.get("ref_model") or cfg.get("model")
    return ref, False, beta, f"implicit reward of {method}, reference {ref} (the run's starting model)"


def _ranking(opts: EvalOptions, records: list[Any], model: Any, tokenizer: Any) -> Any:
    from rankalign.evaluation.ranking_accuracy import evaluate_ranking

    ref_name, adapter, beta, how = ranking_reference(opts, model)
    ref_model = None
    if ref_name is not None:
        from rankalign.training.models import load_model_and_tokenizer

        ref_model, _ = load_model_and_tokenizer(ref_name, trust_remote_code=opts.trust_remote_code)
        ref_model = ref_model.to(next(model.parameters()).device)
    print(f"ranking: {how}", file=sys.stderr)
    result = evaluate_ranking(model, tokenizer, records, ref_model=ref_model, adapter_reference=adapter, beta=beta,
                              max_length=opts.max_length, max_prompt_length=opts.max_prompt_length,
                              batch_size=opts.ranking_batch_size, show_progress=not opts.quiet,
                              n_bootstrap=opts.bootstrap, seed=opts.seed)
    result.description = how
    return result


# ---------------------------------------------------------------------------- outputs
def _settings(opts: EvalOptions, groups: list[str], n_records: int, skipped: int, ks: tuple[int, ...],
              ranking: Any) -> dict[str, Any]:
    """The run's settings, as ``metrics.json`` and ``report.md`` show them."""
    out: dict[str, Any] = {
        "model": opts.model or "SmolLM2-135M-Instruct (default)",
        "data": str(opts.data),
        "metrics": ",".join(groups),
        "records": n_records,
        "skipped_records": skipped,
    }
    if opts.from_generations:
        out["generations_from"] = str(opts.from_generations)
    elif any(g in groups for g in ("generation", "reward", "toxicity")):
        out.update(max_new_tokens=opts.max_new_tokens, num_beams=opts.num_beams)
    if "generation" in groups:
        out.update(k=list(ks), embedding_model=opts.embedding_model or "all-MiniLM-L6-v2 (default)")
    if ranking is not None:
        out["ranking_scores"] = ranking.description or ranking.kind
        out["ranking_skipped_lists"] = ranking.skipped_summary() or "none"
    if opts.reward_model:
        out["reward_model"] = opts.reward_model
    if opts.toxicity_model:
        out["toxicity_model"] = opts.toxicity_model
    out.update(bootstrap=opts.bootstrap, seed=opts.seed)
    return out


def _written(rows: dict[str, Any] | list[Any], ranking: Any) -> list[str]:
    return ["metrics.json", *(["generations.jsonl"] if rows else []), *(["ranking.jsonl"] if ranking else []),
            "report.md"]


def _write_outputs(out: Path, metrics: dict[str, Any], extra: dict[str, Any], rows: list[dict[str, Any]],
                   ranking: Any, settings: dict[str, Any], timings: dict[str, float]) -> Path:
    """Write metrics.json, generations.jsonl, ranking.jsonl and report.md into ``out`` (each atomically);
    a per-example file of an earlier run that this run did not write is removed, so that
    ``rankalign compare`` never pairs stale values."""
    from rankalign.data.io import write_jsonl
    from rankalign.evaluation.report import eval_report, write_json, write_text

    written = _written(rows, ranking)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        if rows:
            write_jsonl(rows, out / "generations.jsonl")
        if ranking is not None:
            write_jsonl(({**ex, "scores_kind": ranking.kind} for ex in ranking.examples), out / "ranking.jsonl")
        write_json({"num_examples": settings["records"], "metrics": metrics, **extra, "settings": settings,
                    "timings_s": timings}, out / "metrics.json")
        write_text(eval_report(metrics, extra=extra, settings=settings, examples=rows, timings=timings),
                   out / "report.md")
        for name in OUTPUT_FILES:
            if name not in written and (out / name).is_file():
                (out / name).unlink()
    return out


def run(args: argparse.Namespace) -> int:
    return run_eval(args)
