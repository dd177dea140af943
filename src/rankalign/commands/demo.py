"""``rankalign demo``: the whole pipeline on the shipped CoQA sample, on a laptop CPU.

1. load ``rankalign/resources/coqa_demo.jsonl`` (48 programming questions, 3-6 answers
   each with votes/created/accepted; ``meta.split`` marks 8 held-out test questions);
2. self-supervised SeAdpra ranking of every list (semantic + popularity APDF,
   Algorithm 1) and its agreement with the community order (accepted first, then votes):
   Kendall tau and top-1;
3. generate answers to the test questions with the base SmolLM2-135M-Instruct (before);
4. SeAdpra LoRA fine-tuning on the 40 training lists through :func:`rankalign.training.train`;
5. generate again (after); PrefHit@1, PrefRecall@k, BLEU, ROUGE-L, CoSim before vs after
   with bootstrap CIs;
6. write ``DIR/metrics.json``, ``DIR/report.md``, ``DIR/generations_{before,after}.jsonl``;
   the trained model goes to ``DIR/model``.

Everything is offline: the policy and the embedder come from PyPI packages
(docs/methods.md#default-models).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankalign.errors import ConfigError

#: demo defaults (the command line shows them; run_demo takes the same values)
DEFAULT_STEPS = 40
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_LEARNING_RATE = 3e-4
DEMO_RESOURCE = "resources/coqa_demo.jsonl"
#: the files the demo writes into its output folder (the trained model goes to model/)
OUTPUT_FILES = ("metrics.json", "report.md", "generations_before.jsonl", "generations_after.jsonl")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="rank, train (SeAdpra + LoRA) and evaluate on the shipped CoQA sample (CPU, a few minutes)",
        description="The main job end to end on the shipped 48-question programming CoQA sample: "
                    "self-supervised ranking, generation before training, SeAdpra LoRA fine-tuning of "
                    "SmolLM2-135M-Instruct, generation after, PrefHit/PrefRecall before vs after.",
    )
    p.add_argument("--output-dir", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"optimizer steps, one list each (default {DEFAULT_STEPS})")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"tokens generated per answer (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--method", default="seadpra", help="training method, a registered loss name (default seadpra)")
    p.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                   help=f"LoRA learning rate (default {DEFAULT_LEARNING_RATE})")
    p.add_argument("--num-beams", type=int, default=1, help="1 = greedy (default), >1 = beam search")
    p.add_argument("--model", default=None, help="policy model (default: the offline SmolLM2-135M-Instruct)")
    p.add_argument("--embedding-model", default=None, help="sentence-embedding model (default all-MiniLM-L6-v2)")
    p.add_argument("--k", default="1,3", help="k of PrefHit@k / PrefRecall@k (default 1,3)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


@contextlib.contextmanager
def demo_data_path() -> Iterator[Path]:
    """The shipped sample as a file path (works from a wheel or a source checkout)."""
    ref = importlib.resources.files("rankalign").joinpath(DEMO_RESOURCE)
    with importlib.resources.as_file(ref) as path:
        yield Path(path)


def load_demo_records() -> list[Any]:
    """The 48 validated records of the shipped sample."""
    from rankalign.data.io import read_records

    with demo_data_path() as path:
        return read_records(path, on_error="raise")


def split_records(records: list[Any]) -> tuple[list[Any], list[Any]]:
    """``(train, test)`` by ``meta.split`` (the sample marks 8 records ``"test"``)."""
    test = [r for r in records if r.meta.get("split") == "test"]
    train = [r for r in records if r.meta.get("split") != "test"]
    return train, test


def _check(steps: int, max_new_tokens: int, method: str, num_beams: int, learning_rate: float) -> None:
    from rankalign.losses import available_losses

    problems = []
    if steps < 1:
        problems.append(f"--steps must be >= 1, got {steps}")
    if max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        problems.append(f"--num-beams must be >= 1, got {num_beams}")
    if learning_rate <= 0:
        problems.append(f"--learning-rate must be > 0, got {learning_rate}")
    if method.strip().lower().replace("-", "_") not in available_losses():
        problems.append(f"--method {method!r} is not a registered method; choose one of "
                        f"{', '.join(available_losses())}")
    if problems:
        raise ConfigError(problems)


def _loss_curve(log: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row["loss"])) for row in log
            if row.get("type") == "train" and isinstance(row.get("loss"), (int, float))]


def run_demo(
    output_dir: str | Path = "runs/demo",
    *,
    steps: int = DEFAULT_STEPS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    method: str = "seadpra",
    learning_rate: float = DEFAULT_LEARNING_RATE,
    num_beams: int = 1,
    ks: tuple[int, ...] = (1, 3),
    model_name: str | None = None,
    embedding_model: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    encoder: Any = None,
    records: list[Any] | None = None,
    max_length: int = 256,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the demo and return what ``metrics.json`` holds.

    Args:
        output_dir: where metrics.json, report.md, generations_*.jsonl and model/ go.
        steps: optimizer steps (batch of one list each).
        max_new_tokens, num_beams: generation settings.
        method: the training loss (SeAdpra by default).
        learning_rate: LoRA learning rate.
        ks: k of PrefHit@k / PrefRecall@k.
        model_name, embedding_model: names/paths to load (default: the offline defaults).
        model, tokenizer: an already loaded policy (tests inject a tiny one).
        encoder: an embedding encoder with ``encode(list[str])`` and ``model_id`` (tests inject a fake).
        records: the records to use (default: the shipped sample).
        max_length: tokens of prompt + response during training.
        show_progress: progress bars.
    """
    from rankalign.evaluation.evaluate import make_embed_fn

    _check(steps, max_new_tokens, method, num_beams, learning_rate)
    out = _check_output_dir(output_dir)
    # the training config is checked before any ranking, model load or generation
    config = _train_config(out, method=method, steps=steps, max_length=max_length, learning_rate=learning_rate,
                           show_progress=show_progress)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    _stage("1/5 loading the shipped CoQA sample")
    records, train_recs, test_recs = _load_and_split(records)
    _stage("2/5 self-supervised dynamic ranking (semantic + popularity APDF)")
    with _timed(timings, "ranking"):
        encoder = encoder if encoder is not None else _load_encoder(embedding_model)
        agreement = _rank_and_compare(records, encoder, show_progress)
    gen = {"embed_fn": make_embed_fn(encoder), "ks": ks, "max_new_tokens": max_new_tokens, "num_beams": num_beams,
           "show_progress": show_progress}
    before, result, after = _train_between_generations(config, train_recs, test_recs, (model, tokenizer),
                                                       model_name, gen, timings)
    timings["total"] = time.perf_counter() - t_start
    summary = _summary(before, after, result, n_train=len(train_recs), n_test=len(test_recs), agreement=agreement,
                       train={"method": method, "steps": steps, "learning_rate": learning_rate,
                              "max_length": max_length, "lora_r": config.lora_r},
                       generation={"max_new_tokens": max_new_tokens, "num_beams": num_beams},
                       model_name=model_name, embedding_model=embedding_model, timings=timings)
    _write_outputs(out, test_recs, before, after, summary)
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.md'}; model in {out / 'model'} "
          f"(total {timings['total']:.0f} s)", file=sys.stderr)
    return summary


def _train_between_generations(config: Any, train_recs: list[Any], test_recs: list[Any], policy: tuple[Any, Any],
                               model_name: str | None, gen: dict[str, Any], timings: dict[str, float]
                               ) -> tuple[Any, Any, Any]:
    """Stages 3-5: generate with the base policy, train it, generate again.

    Args:
        policy: ``(model, tokenizer)`` already loaded, or ``(None, None)`` to load ``model_name``.
        gen: keyword arguments of :func:`~rankalign.evaluation.evaluate.evaluate_model` (embed_fn, ks, ...).
    Returns:
        ``(before, train result, after)``; ``timings`` gets load_model, generate_before, train, generate_after.
    """
    from rankalign.evaluation.evaluate import evaluate_model
    from rankalign.training import train

    model, tokenizer = policy
    _stage(f"3/5 generating answers to {len(test_recs)} test questions with the base model")
    with _timed(timings, "load_model"):
        if model is None or tokenizer is None:
            model, tokenizer = _load_policy(model_name)
    with _timed(timings, "generate_before"):
        before = evaluate_model(model, tokenizer, test_recs, **gen)
    _stage(f"4/5 {config.method} LoRA fine-tuning: {config.max_steps} steps on {len(train_recs)} lists")
    with _timed(timings, "train"):
        result = train(config, train_recs, model=model, tokenizer=tokenizer)
    _stage("5/5 generating again with the trained model")
    with _timed(timings, "generate_after"):
        after = evaluate_model(result.model, result.tokenizer, test_recs, **gen)
    return before, result, after


def _summary(before: Any, after: Any, result: Any, *, n_train: int, n_test: int, agreement: dict[str, Any],
             train: dict[str, Any], generation: dict[str, Any], model_name: str | None,
             embedding_model: str | None, timings: dict[str, float]) -> dict[str, Any]:
    """What ``metrics.json`` holds (and :func:`demo_report` reads)."""
    return {
        "before": before.metrics,
        "after": after.metrics,
        "before_extra": before.extra,
        "after_extra": after.extra,
        "num_test_questions": n_test,
        "num_train_lists": n_train,
        "ranking_agreement": agreement,
        "train": {**train, "runtime_s": result.train_runtime_s, "loss_curve": _loss_curve(result.log),
                  "truncation": result.truncation},
        "generation": generation,
        "model": model_name or "SmolLM2-135M-Instruct (offline default)",
        "embedding_model": embedding_model or "all-MiniLM-L6-v2 (offline default)",
        "timings_s": timings,
    }


def _stage(name: str) -> None:
    print(f"\n== {name}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block took as ``timings[name]`` (when it succeeds)."""
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0


def _check_output_dir(output_dir: str | Path) -> Path:
    """The output folder, checked before any work: writable, and no output file or model/ in the way."""
    from rankalign.outputs import check_output_dir

    out = check_output_dir(output_dir, "--output-dir", OUTPUT_FILES)
    check_output_dir(out / "model", "--output-dir", ("rankalign_config.json", "train_log.jsonl"))
    return out


def _train_config(out: Path, *, method: str, steps: int, max_length: int, learning_rate: float,
                  show_progress: bool) -> Any:
    """The demo's training config: LoRA, one list per step, constant learning rate, no checkpoints."""
    from rankalign.training import load_config

    return load_config(None, {
        "method": method, "output_dir": str(out / "model"), "max_steps": steps, "use_lora": True,
        "max_length": max_length, "max_prompt_length": max_length // 2, "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1, "learning_rate": learning_rate, "warmup_steps": 0,
        "lr_scheduler_type": "constant", "logging_steps": 1, "save_strategy": "no",
        "seed": 0, "disable_tqdm": not show_progress,
    })


def _load_and_split(records: list[Any] | None) -> tuple[list[Any], list[Any], list[Any]]:
    """``(all, train, test)``: ``records`` (default: the shipped sample) split by ``meta.split``."""
    records = list(records) if records is not None else load_demo_records()
    train_recs, test_recs = split_records(records)
    if not train_recs or not test_recs:
        raise ConfigError([f"the demo needs train and test records (meta.split), got {len(train_recs)} train "
                           f"and {len(test_recs)} test"])
    print(f"{len(records)} lists: {len(train_recs)} train, {len(test_recs)} test "
          f"({sum(r.num_responses for r in records)} answers)", file=sys.stderr)
    return records, train_recs, test_recs


def _load_encoder(embedding_model: str | None) -> Any:
    from rankalign.ranking.embeddings import load_embedder

    return load_embedder(embedding_model)


def _load_policy(model_name: str | None) -> tuple[Any, Any]:
    from rankalign.training.models import load_model_and_tokenizer

    return load_model_and_tokenizer(model_name)


def _rank_and_compare(records: list[Any], encoder: Any, show_progress: bool) -> dict[str, Any]:
    """Write the SeAdpra dynamic ranking into ``records`` and compare it with the community order.

    Returns:
        ``{"dynamic_vs_community": ..., "input_order_vs_community": ...}`` (Kendall tau, top-1;
        the input order is the reference a ranking has to beat).
    """
    from rankalign.evaluation.metrics import order_agreement
    from rankalign.ranking.rank import RankingConfig, rank_records

    rank_records(records, RankingConfig(attributes=("semantic", "popularity")), encoder=encoder,
                 show_progress=show_progress)
    community = [r.community_order() for r in records]
    agreement = order_agreement([r.dynamic_ranking for r in records], community)
    inputs = order_agreement([list(range(r.num_responses)) for r in records], community)
    print(f"agreement with the community order over {agreement['lists']} lists: Kendall tau "
          f"{agreement['kendall_tau']:.3f}, top-1 {agreement['top1']:.3f} (input order: tau "
          f"{inputs['kendall_tau']:.3f}, top-1 {inputs['top1']:.3f})", file=sys.stderr)
    return {"dynamic_vs_community": agreement, "input_order_vs_community": inputs}


def _write_outputs(out: Path, test_recs: list[Any], before: Any, after: Any, summary: dict[str, Any]) -> None:
    """generations_{before,after}.jsonl, metrics.json and report.md, each written atomically."""
    from rankalign.data.io import write_jsonl
    from rankalign.evaluation.report import write_json, write_text
    from rankalign.outputs import writing

    prompts = {r.id: r.prompt for r in test_recs}
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for name, res in (("before", before), ("after", after)):
            write_jsonl(({"id": ex["id"], "prompt": prompts[ex["id"]],
                          **{k: v for k, v in ex.items() if k != "id"}} for ex in res.examples),
                        out / f"generations_{name}.jsonl")
        write_json(summary, out / "metrics.json")
        write_text(demo_report(summary), out / "report.md")


def demo_report(summary: dict[str, Any]) -> str:
    """The short Markdown report of a demo run."""
    tr = summary["train"]
    lines = [
        f"# rankalign demo: {tr['method']} on the shipped CoQA sample",
        *_report_setup(summary),
        *_report_ranking(summary["ranking_agreement"]),
        *_report_results(summary),
        *_report_loss(tr["loss_curve"]),
        *_report_timings_and_caveat(summary),
    ]
    return "\n".join(lines) + "\n"


def _report_setup(summary: dict[str, Any]) -> list[str]:
    from rankalign.evaluation.report import markdown_table

    tr = summary["train"]
    return ["", "## Setup", "", markdown_table(["item", "value"], [
        ("data", f"rankalign/resources/coqa_demo.jsonl: {summary['num_train_lists']} training lists, "
                 f"{summary['num_test_questions']} held-out test questions (meta.split)"),
        ("policy", summary["model"]),
        ("embedder", summary["embedding_model"]),
        ("training", f"{tr['method']}, LoRA r={tr['lora_r']}, {tr['steps']} steps of one list, "
                     f"lr {tr['learning_rate']}, max_length {tr['max_length']}"),
        ("generation", f"max_new_tokens {summary['generation']['max_new_tokens']}, "
                       f"num_beams {summary['generation']['num_beams']}"),
    ])]


def _report_ranking(agreement: dict[str, Any]) -> list[str]:
    from rankalign.evaluation.report import fmt_number, markdown_table

    agr, inp = agreement["dynamic_vs_community"], agreement["input_order_vs_community"]
    return ["", "## Self-supervised ranking vs the community order", "",
            markdown_table(["order", "lists", "Kendall tau (mean)", "top-1 agreement"], [
                ("SeAdpra dynamic ranking (semantic + popularity)", agr["lists"], fmt_number(agr["kendall_tau"], 3),
                 fmt_number(agr["top1"], 3)),
                ("input order (reference)", inp["lists"], fmt_number(inp["kendall_tau"], 3),
                 fmt_number(inp["top1"], 3)),
            ])]


def _report_results(summary: dict[str, Any]) -> list[str]:
    from rankalign.evaluation.report import comparison_table, fmt_number

    return ["", "## Before vs after training (test questions)", "",
            comparison_table(summary["before"], summary["after"]), "",
            f"Corpus BLEU: before {fmt_number(summary['before_extra'].get('corpus_BLEU'))}, "
            f"after {fmt_number(summary['after_extra'].get('corpus_BLEU'))}."]


def _report_loss(curve: list[tuple[int, float]]) -> list[str]:
    from rankalign.evaluation.report import markdown_table

    lines = ["", "## Training loss", ""]
    if not curve:
        return [*lines, "(no loss was logged)"]
    first = curve[: min(5, len(curve))]
    last = curve[-min(5, len(curve)):]
    mean_first = sum(v for _, v in first) / len(first)
    mean_last = sum(v for _, v in last) / len(last)
    step = max(1, len(curve) // 10)
    return [*lines,
            f"{len(curve)} logged steps; mean loss of the first {len(first)}: {mean_first:.4f}, "
            f"of the last {len(last)}: {mean_last:.4f}.", "",
            markdown_table(["step", "loss"], [(s, f"{v:.4f}") for s, v in curve[::step]])]


def _report_timings_and_caveat(summary: dict[str, Any]) -> list[str]:
    from rankalign.evaluation.report import markdown_table

    tr = summary["train"]
    return [
        "",
        "## Timings (seconds)",
        "",
        markdown_table(["stage", "seconds"], [(k, f"{v:.1f}") for k, v in summary["timings_s"].items()]),
        "",
        "## Caveat",
        "",
        f"This is a smoke-scale run: {tr['steps']} LoRA steps on {summary['num_train_lists']} lists, evaluated "
        f"on {summary['num_test_questions']} questions. The confidence intervals are wide and a difference "
        "between before and after of this size is not evidence either way; the paper's experiments use "
        "thousands of lists and a 7B model. The run shows that every stage works end to end.",
    ]


def run(args: argparse.Namespace) -> int:
    from rankalign.evaluation.evaluate import parse_ks

    run_demo(args.output_dir, steps=args.steps, max_new_tokens=args.max_new_tokens, method=args.method,
             learning_rate=args.learning_rate, num_beams=args.num_beams, ks=parse_ks(args.k),
             model_name=args.model, embedding_model=args.embedding_model, show_progress=not args.quiet)
    return 0
