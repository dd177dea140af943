"""SPA: Spread Preference Annotation (Kim, Lee, Shin, Kim, arXiv:2406.04412, Algorithm 1).

From a small labelled seed set D_0 and an initial policy pi_init:

1. round 0: DPO on D_0 from pi_init -> pi_0 (the paper: 3 epochs);
2. rounds t = 1..T, each on its own new prompts X_t (disjoint):
   a. sample N responses per prompt from pi_{t-1} (temperature 0.7; N = 2 in the paper)
      (:func:`rankalign.iterative.generation.sample_responses`, resumable);
   b. judge them by the implicit reward beta * (logp_{pi_{t-1}} - logp_{pi_init}) (eq. 7-8):
      the better one is the chosen response (N > 2: the list ranked by that reward);
   c. train pi_t from pi_{t-1}, which is also the reference, with the self-refinement loss
      (``spa``, eq. 9-12; lambda per round, 1/2, 1/4, 1/8 by default) — or, for N > 2, the
      list-wise SPA of this project: a list-wise loss (PRO, DPO-PL, SeAdpra) on the lists
      ranked by the implicit reward.

Run folder (``output_dir``): ``round-0/`` (pi_0), ``round-t/`` holding ``samples.jsonl``
(the generation store), ``data.jsonl`` (prompts, samples, implicit rewards as ``scores``,
the judged ``ranking``, the judge's ``confidence`` in ``meta``), the trained model,
``checkpoint-N/`` folders and ``train_log.jsonl``; ``round-t/done.json`` marks a finished
round (written last, atomically). ``spa_summary.json`` sums the run up. Every stage
resumes: a finished round is skipped, the store continues its sampling, the data file is
rewritten from the store, and training resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import ConfigError, UserError
from rankalign.iterative.generation import SamplingOptions

LIST_METHODS = ("pro", "dpo_pl", "seadpra")
DONE = "done.json"
SUMMARY = "spa_summary.json"


def _f(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text, "group": "spa"})


@dataclass
class SPAOptions(SamplingOptions):
    """What ``rankalign spa`` adds to the training config (docs/iterative.md).

    The training config's own keys (``model`` = pi_init, ``data`` = the labelled seed set,
    ``output_dir`` = the run folder, learning rate, batch sizes, LoRA, lengths, ``beta``,
    ``spa_alpha``, ``spa_k``, ``spa_warmup``) are given beside these.
    """

    prompts: str | None = _f(None, "New prompts for the rounds: a .txt file (one per line) or .jsonl rows with a "
                                   "'prompt' (and optional 'id'); split into `rounds` disjoint sets.")
    rounds: int = _f(3, "Number of SPA rounds T after the seed DPO (the paper: 3).")
    prompts_per_round: int | None = _f(None, "Prompts per round (default: all prompts split evenly over the rounds).")
    spa_lambdas: str = _f("0.5,0.25,0.125", "De-coupled noise detection lambda per round, comma-separated (SPA "
                                            "§5.1: 1/2, 1/4, 1/8); the last value repeats for later rounds.")
    spa_list_size: int = _f(2, "Samples per prompt N: 2 is the paper's pairwise SPA; > 2 is list-wise SPA (the "
                               "samples ranked by implicit reward, trained with spa_list_method).")
    spa_list_method: str = _f("pro", "List-wise loss of list-wise SPA (spa_list_size > 2): pro, dpo_pl or seadpra.")
    seed_epochs: float = _f(3.0, "Epochs of DPO on the seed set (round 0; the paper: 3).")
    round_epochs: float = _f(1.0, "Epochs of each refinement round (the paper: 1).")
    judge_data: str | None = _f(None, "Held-out gold-labelled lists: after every round, how often the implicit-"
                                      "reward judge beta*(logp_t - logp_init) agrees with their gold order.")
    confidence_window: int = _f(256, "Recent pairs whose confidences set SPA's K-th percentile threshold.")

    def lambdas(self) -> list[float]:
        """lambda of rounds 1..T."""
        values = [float(v) for v in str(self.spa_lambdas).split(",") if v.strip()]
        return [values[min(t, len(values) - 1)] for t in range(self.rounds)]

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.prompts:
            out.append("prompts: missing; pass --prompts FILE with the new prompts of the rounds")
        elif not Path(self.prompts).is_file():
            out.append(f"prompts: no such file: {self.prompts}")
        if self.rounds < 1:
            out.append(f"rounds: {self.rounds} must be >= 1")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            out.append(f"prompts_per_round: {self.prompts_per_round} must be >= 1 or unset")
        try:
            lams = [float(v) for v in str(self.spa_lambdas).split(",") if v.strip()]
            if not lams or any(not (math.isfinite(v) and v >= 0) for v in lams):
                out.append(f"spa_lambdas: {self.spa_lambdas!r} must be one or more numbers >= 0")
        except ValueError:
            out.append(f"spa_lambdas: {self.spa_lambdas!r} is not a comma-separated list of numbers")
        if self.spa_list_size < 2:
            out.append(f"spa_list_size: {self.spa_list_size} must be >= 2")
        if self.spa_list_method not in LIST_METHODS:
            out.append(f"spa_list_method: {self.spa_list_method!r} must be one of {', '.join(LIST_METHODS)}")
        if not self.seed_epochs > 0 or not self.round_epochs > 0:
            out.append("seed_epochs, round_epochs: must be > 0")
        if self.judge_data and not Path(self.judge_data).exists():
            out.append(f"judge_data: no such file or folder: {self.judge_data}")
        if self.confidence_window < 0:
            out.append(f"confidence_window: {self.confidence_window} must be >= 0")
        return out


def spa_option_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SPAOptions)}


# ---------------------------------------------------------------------- config
@dataclass
class SPARun:
    """A checked SPA run: its options and the training keys every phase starts from."""

    options: SPAOptions
    train_values: dict[str, Any]
    base: Any  # the ListwiseConfig of the refinement rounds, validated

    @property
    def output_dir(self) -> Path:
        return Path(self.base.output_dir)

    def round_method(self) -> str:
        return "spa" if self.options.spa_list_size == 2 else self.options.spa_list_method

    def phase_config(self, method: str, **values: Any) -> Any:
        """The ListwiseConfig of one phase: the run's training keys, the phase's own values,
        and only the hyper-parameters ``method`` takes."""
        from rankalign.losses import hyperparameters
        from rankalign.training.config import load_config

        known = hyperparameters()
        kept = {k: v for k, v in self.train_values.items()
                if k not in known or method in known[k].methods}
        return load_config(None, {**kept, "method": method, **values})


def check_keys(values: dict[str, Any], options_cls: type, method: str, *, also: tuple[str, ...] = (),
               reserved: dict[str, str] | None = None) -> tuple[Any, dict[str, Any], Any]:
    """Split flat keys into the options of an iterative command and training keys; check all at once.

    Args:
        values: flat key -> value (YAML and flags).
        options_cls: the command's options dataclass (with a ``problems()`` method).
        method: the loss of the training rounds; the training keys are checked as its config.
        also: other methods the command trains with (their hyper-parameters are accepted).
        reserved: keys the command sets itself -> what to use instead.
    Returns:
        ``(options, training keys, the rounds' ListwiseConfig)``.
    Raises:
        ConfigError: every problem (options, training keys, hyper-parameters out of range or
            of another method), before any data or model is read.
    """
    from rankalign.cli_fields import coerce_fields
    from rankalign.losses import hyperparameters
    from rankalign.training.config import load_config

    own = {f.name for f in dataclasses.fields(options_cls)}
    option_values = {k: v for k, v in values.items() if k in own}
    train_values = {k: v for k, v in values.items() if k not in own}
    problems: list[str] = []
    for key, instead in (reserved or {}).items():
        if key in train_values:
            problems.append(f"{key}: set by the command itself; {instead}")
            train_values.pop(key)
    n_before = len(problems)
    kwargs = coerce_fields(options_cls, option_values, problems=problems)
    options = options_cls(**kwargs) if len(problems) == n_before else options_cls()
    problems += options.problems()
    known = hyperparameters()
    base = None
    try:  # the keys of the training rounds, checked as the loss of those rounds takes them
        base = load_config(None, {**{k: v for k, v in train_values.items()
                                     if k not in known or method in known[k].methods}, "method": method})
    except ConfigError as exc:
        problems += exc.problems
    stray = [k for k in train_values if k in known and not {method, *also} & set(known[k].methods)]
    problems += [f"{k}: a hyper-parameter of {', '.join(known[k].methods)}; this run trains with "
                 f"{' and '.join((method, *also))}; remove it" for k in stray]
    if base is not None and not base.data:
        problems.append("data: missing; pass --data FILE")
    if problems:
        raise ConfigError(problems)
    return options, train_values, base


def build_run(values: dict[str, Any]) -> SPARun:
    """The checked SPA run of flat keys (:func:`check_keys`)."""
    size = values.get("spa_list_size", 2)
    method = "spa" if str(size).strip() in ("2", "") else str(values.get("spa_list_method", "pro"))
    if method not in ("spa", *LIST_METHODS):
        method = "spa"  # SPAOptions.problems() names the bad spa_list_method
    options, train_values, base = check_keys(
        values, SPAOptions, method, also=("dpo_bt",),
        reserved={"method": "use spa_list_size / spa_list_method",
                  "spa_lambda": "use spa_lambdas (one value per round)"})
    return SPARun(options=options, train_values=train_values, base=base)


# ---------------------------------------------------------------------- inputs
def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """``(id, prompt)`` pairs from a .txt (one prompt per line) or a .jsonl file (``prompt``, optional ``id``).

    Raises:
        UserError: a JSON line without a ``prompt`` string (file and line named), or no prompt at all.
    """
    p = Path(path)
    out: list[tuple[str, str]] = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            if p.suffix == ".txt":
                out.append((f"p{n}", text))
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                raise UserError(f"{p} line {n}: not JSON; give one JSON object per line with a 'prompt', "
                                "or a .txt file with one prompt per line") from None
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"{p} line {n}: field 'prompt' missing or empty; every row needs a prompt text")
            out.append((str(row.get("id", f"p{n}")), prompt))
    if not out:
        raise UserError(f"{p}: empty prompt set; give at least one prompt per round")
    return out


def split_prompts(prompts: list[tuple[str, str]], rounds: int, per_round: int | None) -> list[list[tuple[str, str]]]:
    """Disjoint prompt sets X_1..X_T (SPA: X_i ∩ X_j = ∅), in file order.

    Raises:
        UserError: fewer prompts than rounds need.
    """
    size = per_round or len(prompts) // rounds
    if size < 1 or size * rounds > len(prompts):
        raise UserError(f"prompts: {len(prompts)} prompt(s) cannot give {rounds} round(s) of "
                        f"{per_round or 'at least 1'} prompt(s) each; add prompts or lower rounds/prompts_per_round")
    return [prompts[t * size:(t + 1) * size] for t in range(rounds)]


# ---------------------------------------------------------------------- the run
def run_spa(run: SPARun, *, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) SPA; returns the summary also written to ``spa_summary.json``."""
    from rankalign.data.io import read_records
    from rankalign.outputs import atomic_path, check_output_dir
    from rankalign.training.trainer import load_data

    opts, out = run.options, run.output_dir
    check_output_dir(out, "output_dir", (SUMMARY,))
    # every input is read and checked before a model is loaded
    load_data(run.base.data, run.base, "data (seed set)")  # no valid pair: a UserError naming the file
    rounds = split_prompts(read_prompts(opts.prompts or ""), opts.rounds, opts.prompts_per_round)
    judge_records = read_records(opts.judge_data, on_error="skip") if opts.judge_data else []
    if opts.judge_data and not judge_records:
        raise UserError(f"judge_data {opts.judge_data}: no valid lists")

    summary: dict[str, Any] = {"method": run.round_method(), "rounds": []}
    prev = out / "round-0"
    summary["round_0"] = _seed_round(run, prev, judge_records)
    for t, prompts in enumerate(rounds, start=1):
        info = _refine_round(run, t, prompts, prev, out / f"round-{t}", judge_records, show_progress=show_progress)
        summary["rounds"].append(info)
        prev = out / f"round-{t}"
    with atomic_path(out / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


#: keys that may differ between runs of one folder without changing a finished round: more
#: ``rounds`` extend a run; the rest only steer saving, logging, speed or the judge's report
SETTINGS_IGNORED = frozenset({
    "rounds", "bootstrap_rounds", "output_dir", "resume_from_checkpoint", "save_steps", "save_total_limit", "save_strategy",
    "logging_steps", "disable_tqdm", "report_to", "use_cpu", "generation_batch_size", "use_vllm", "judge_data",
    "dataloader_num_workers", "ref_logps_dir",
})


def run_settings(run: Any) -> dict[str, Any]:
    """What a finished round was made with (``done.json``'s ``settings``): every option and
    training key given, but :data:`SETTINGS_IGNORED`, as JSON values. ``run``: a run with
    ``options`` (a dataclass) and ``train_values`` (SPA's and PRO self-bootstrapping's)."""
    values = {**run.train_values, **dataclasses.asdict(run.options)}
    return json.loads(json.dumps({k: values[k] for k in sorted(values) if k not in SETTINGS_IGNORED}, default=str))


def prompt_digest(prompts: list[tuple[str, str]]) -> str:
    """A short hash of a round's prompts (ids and texts): a round reused with other prompts (say,
    ``rounds`` changed while ``prompts_per_round`` is unset) is refused."""
    import hashlib

    h = hashlib.sha256()
    for pid, text in prompts:
        h.update(f"{pid}\x00{text}\x01".encode())
    return h.hexdigest()[:16]


def _finished(folder: Path, settings: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A finished round's ``done.json``, or ``None``.

    Raises:
        UserError: the round was finished with other settings (each changed key named); a
            ``done.json`` without settings (an older run) is taken as it is.
    """
    done = folder / DONE
    if not done.is_file():
        return None
    info = json.loads(done.read_text(encoding="utf-8"))
    old = info.get("settings")
    if settings is not None and isinstance(old, dict) and old != settings:
        changed = [f"{k}: {old.get(k, '(unset)')!r} -> {settings.get(k, '(unset)')!r}"
                   for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        raise UserError(f"{folder} was finished with other settings ({'; '.join(changed)}); use a new "
                        "output_dir for the new settings, or give the old values to resume this run")
    return info


def _mark_done(folder: Path, info: dict[str, Any], settings: dict[str, Any]) -> None:
    from rankalign.outputs import atomic_path

    with atomic_path(folder / DONE) as tmp:
        tmp.write_text(json.dumps({**info, "settings": settings}, indent=2), encoding="utf-8")


def _seed_round(run: SPARun, folder: Path, judge_records: list[Any]) -> dict[str, Any]:
    """Round 0: DPO on the seed set from pi_init -> pi_0 (SPA §4, "initial stage")."""
    from rankalign.training.trainer import train

    settings = run_settings(run)
    done = _finished(folder, settings)
    if done is not None:
        return done
    config = run.phase_config("dpo_bt", output_dir=str(folder), num_train_epochs=run.options.seed_epochs,
                              resume_from_checkpoint="latest")
    result = train(config)
    info: dict[str, Any] = {"round": 0, "method": "dpo_bt", "steps": _steps(result.log)}
    if judge_records:
        info["judge"] = _judge(run, folder, judge_records)
    _mark_done(folder, info, settings)
    return info


def _refine_round(run: SPARun, t: int, prompts: list[tuple[str, str]], prev: Path, folder: Path,
                  judge_records: list[Any], *, show_progress: bool) -> dict[str, Any]:
    """One SPA round: sample from pi_{t-1}, judge against pi_init, refine-train pi_t from pi_{t-1}."""
    settings = {**run_settings(run), "round_prompts": prompt_digest(prompts)}
    done = _finished(folder, settings)
    if done is not None:
        return done
    from rankalign.iterative.generation import sample_responses
    from rankalign.iterative.spa_trainer import SPATrainer
    from rankalign.training.models import load_model_and_tokenizer
    from rankalign.training.trainer import train

    opts, base = run.options, run.base
    lam = opts.lambdas()[t - 1]
    policy, tokenizer = load_model_and_tokenizer(str(prev), trust_remote_code=base.trust_remote_code, dtype=base.dtype)
    samples = sample_responses(policy, tokenizer, prompts, n=opts.spa_list_size, seed=base.seed, round_index=t,
                               options=opts, store_path=folder / "samples.jsonl",
                               max_prompt_length=base.max_prompt_length, model_path=str(prev),
                               show_progress=show_progress)
    data_path = folder / "data.jsonl"
    stats = _label_round(run, policy, tokenizer, prompts, samples, data_path)
    del policy
    config = run.phase_config(run.round_method(), data=str(data_path), model=str(prev), output_dir=str(folder),
                              num_train_epochs=opts.round_epochs, order_source="scores",
                              resume_from_checkpoint="latest",
                              **({"spa_lambda": lam} if run.round_method() == "spa" else {}))
    result = train(config, trainer_class=SPATrainer, trainer_kwargs={"confidence_window": opts.confidence_window})
    info = {"round": t, "method": run.round_method(), "lambda": lam if run.round_method() == "spa" else None,
            "prompts": len(prompts), "samples_per_prompt": opts.spa_list_size, **stats,
            "steps": _steps(result.log), "flagged": _mean_metric(result.log, "spa/flagged")}
    if judge_records:
        info["judge"] = _judge(run, folder, judge_records)
    _mark_done(folder, info, settings)
    return info


def _label_round(run: SPARun, policy: Any, tokenizer: Any, prompts: list[tuple[str, str]],
                 samples: dict[str, list[str]], data_path: Path) -> dict[str, Any]:
    """Judge the samples by beta * (logp_{pi_{t-1}} - logp_{pi_init}) (SPA eq. 7-8) and write the round's data."""
    from rankalign.data.io import write_jsonl
    from rankalign.iterative.judge import implicit_rewards
    from rankalign.training.models import load_model_and_tokenizer

    base = run.base
    beta = float(base.hparam("beta"))
    init, _ = load_model_and_tokenizer(base.model, trust_remote_code=base.trust_remote_code, dtype=base.dtype)
    keep = [(i, p) for i, p in prompts if len({s.strip() for s in samples[i] if s.strip()}) == len(samples[i])]
    rewards = implicit_rewards(policy, init, tokenizer, [p for _, p in keep], [samples[i] for i, _ in keep],
                               beta=beta, max_length=base.max_length, max_prompt_length=base.max_prompt_length,
                               batch_size=max(1, base.per_device_train_batch_size))
    del init
    rows, gaps = [], []
    for (pid, prompt), rw in zip(keep, rewards):
        ranking = sorted(range(len(rw)), key=lambda j: -rw[j])
        confidence = 1 / (1 + math.exp(-(rw[ranking[0]] - rw[ranking[1]])))  # eq. 7 for the top pair
        gaps.append(confidence)
        rows.append({"id": pid, "prompt": prompt, "responses": [{"text": s} for s in samples[pid]],
                     "scores": rw, "ranking": ranking, "meta": {"judge": "implicit reward vs pi_init",
                                                                "confidence": confidence}})
    if not rows:
        raise UserError(f"{data_path.parent}: every prompt's samples were empty or identical; nothing to train on "
                        "(raise temperature or max_new_tokens)")
    write_jsonl(rows, data_path)
    return {"lists": len(rows), "skipped_degenerate": len(prompts) - len(rows),
            "mean_confidence": sum(gaps) / len(gaps)}


def _judge(run: SPARun, model_dir: Path, records: list[Any]) -> dict[str, Any]:
    from rankalign.iterative.judge import judge_agreement
    from rankalign.training.models import load_model_and_tokenizer

    base = run.base
    policy, tokenizer = load_model_and_tokenizer(str(model_dir), trust_remote_code=base.trust_remote_code,
                                                 dtype=base.dtype)
    init, _ = load_model_and_tokenizer(base.model, trust_remote_code=base.trust_remote_code, dtype=base.dtype)
    return judge_agreement(policy, init, tokenizer, records, beta=float(base.hparam("beta")),
                           max_length=base.max_length, max_prompt_length=base.max_prompt_length)


def _steps(log: list[dict[str, Any]]) -> int:
    steps = [r.get("step", 0) for r in log if r.get("type") == "train"]
    return int(max(steps)) if steps else 0


def _mean_metric(log: list[dict[str, Any]], key: str) -> float | None:
    vals = [r["metrics"][key] for r in log if r.get("type") == "train" and key in r.get("metrics", {})]
    return sum(vals) / len(vals) if vals else None
