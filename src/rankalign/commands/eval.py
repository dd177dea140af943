"""``rankalign eval``: generate answers for test prompts and score them (metrics: docs/methods.md#metrics).

Writes ``DIR/metrics.json`` (every metric with its bootstrap CI), ``DIR/generations.jsonl``
(one row per prompt: id, prompt, generation, gold order, similarities, per-example values)
and ``DIR/report.md`` (Markdown tables, every cell escaped). Files are written atomically
once everything is computed, so a failed run leaves no partial output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rankalign.errors import UserError
from rankalign.outputs import check_output_dir, writing

#: the files ``rankalign eval`` writes into ``--output-dir``
OUTPUT_FILES = ("metrics.json", "generations.jsonl", "report.md")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="generate answers for test prompts and compute PrefHit/PrefRecall, BLEU, ROUGE-L, CoSim",
        description="Generate an answer for every test record and score it against the record's "
                    "candidates (PrefHit@k, PrefRecall@k with bootstrap CIs) and its gold best response "
                    "(BLEU, ROUGE-L, CoSim). Gold order: the record's `ranking`, else the community "
                    "order (accepted first, then votes).",
    )
    p.add_argument("--model", default=None,
                   help="model folder or hub name (default: the offline SmolLM2-135M-Instruct)")
    p.add_argument("--data", required=True, help="test records (.jsonl, .parquet or a datasets folder)")
    p.add_argument("--output-dir", required=True, help="where metrics.json, generations.jsonl and report.md go")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per answer (default 128)")
    p.add_argument("--num-beams", type=int, default=4,
                   help="beam width (beam search by default, as in SeAdpra's evaluation); 1 = greedy, faster on a CPU")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per generate call (default 4)")
    p.add_argument("--k", default="1,3", help="comma-separated k of PrefHit@k / PrefRecall@k (default 1,3)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    p.add_argument("--split", default=None,
                   help="keep only records whose meta.split equals this (e.g. test)")
    p.add_argument("--embedding-model", default=None,
                   help="sentence-embedding model for Sim(x, R_i) (default: all-MiniLM-L6-v2, offline)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="invalid records: skip and count them (default) or stop at the first")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> tuple[int, ...]:
    from rankalign.evaluation.evaluate import parse_ks

    problems = []
    for name in ("max_new_tokens", "num_beams", "batch_size", "bootstrap"):
        value = getattr(args, name)
        if value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit must be >= 1, got {args.limit}")
    try:
        ks = parse_ks(args.k)
    except ValueError as exc:
        problems.append(str(exc))
        ks = ()
    if not Path(args.data).exists():
        problems.append(f"--data {args.data}: no such file or folder")
    try:
        check_output_dir(args.output_dir, "--output-dir", OUTPUT_FILES)
    except UserError as exc:
        problems.append(str(exc))
    if problems:
        from rankalign.errors import ConfigError

        raise ConfigError(problems)
    return ks


def run_eval(args: argparse.Namespace, *, model: Any = None, tokenizer: Any = None, embed_fn: Any = None) -> int:
    """Run the evaluation described by ``args``; ``model``/``tokenizer``/``embed_fn`` override loading."""
    from rankalign.evaluation.evaluate import evaluate_model, make_embed_fn

    ks = _check_args(args)
    t0 = time.perf_counter()
    records, skipped = _load_records(args)
    if model is None or tokenizer is None:
        model, tokenizer = _load_model(args.model)
    if embed_fn is None:
        embed_fn = make_embed_fn(args.embedding_model, show_progress=not args.quiet)
    t_load = time.perf_counter()
    result = evaluate_model(
        model, tokenizer, records, embed_fn, ks=ks, max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams, batch_size=args.batch_size, show_progress=not args.quiet,
        n_bootstrap=args.bootstrap, seed=args.seed,
    )
    t_end = time.perf_counter()
    timings = {"load": t_load - t0, "generate_and_score": t_end - t_load, "total": t_end - t0}
    out = _write_outputs(Path(args.output_dir), records, result, _settings(args, len(records), skipped, ks),
                         timings)
    for name, est in result.metrics.items():
        print(f"{name:>14}: {est['mean']:.4f}  [{est['ci_low']:.4f}, {est['ci_high']:.4f}]")
    print(f"wrote {out / 'metrics.json'}, {out / 'generations.jsonl'}, {out / 'report.md'} "
          f"({timings['total']:.1f} s)")
    return 0


def _load_records(args: argparse.Namespace) -> tuple[list[Any], int]:
    """The records to evaluate (after ``--split`` and ``--limit``) and the number skipped as invalid."""
    from rankalign.data.io import LoadReport, read_records

    report = LoadReport()
    records = read_records(args.data, on_error=args.on_error, report=report)
    print(f"{args.data}: {report.summary()}", file=sys.stderr)
    if args.split is not None:
        records = [r for r in records if str(r.meta.get("split")) == args.split]
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise UserError(f"no records to evaluate in {args.data}"
                        + (f" with meta.split == {args.split!r}" if args.split is not None else ""))
    return records, report.total_skipped


def _load_model(name: str | None) -> tuple[Any, Any]:
    """The policy and its tokenizer; on the GPU where there is one."""
    import torch

    from rankalign.training.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(name)
    if torch.cuda.is_available():  # generate on the GPU where there is one
        model = model.to("cuda")
    return model, tokenizer


def _settings(args: argparse.Namespace, n_records: int, skipped: int, ks: tuple[int, ...]) -> dict[str, Any]:
    """The run's settings, as ``metrics.json`` and ``report.md`` show them."""
    return {
        "model": args.model or "SmolLM2-135M-Instruct (default)",
        "data": str(args.data),
        "records": n_records,
        "skipped_records": skipped,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "k": list(ks),
        "embedding_model": args.embedding_model or "all-MiniLM-L6-v2 (default)",
        "bootstrap": args.bootstrap,
        "seed": args.seed,
    }


def _write_outputs(out: Path, records: list[Any], result: Any, settings: dict[str, Any],
                   timings: dict[str, float]) -> Path:
    """Write generations.jsonl, metrics.json and report.md into ``out`` (each atomically)."""
    from rankalign.data.io import write_jsonl
    from rankalign.evaluation.report import eval_report, write_json, write_text

    prompts = {r.id: r.prompt for r in records}
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(({"id": ex["id"], "prompt": prompts[ex["id"]], **{k: v for k, v in ex.items() if k != "id"}}
                     for ex in result.examples), out / "generations.jsonl")
        write_json({"num_examples": len(records), "metrics": result.metrics, **result.extra,
                    "settings": settings, "timings_s": timings}, out / "metrics.json")
        write_text(eval_report(result.metrics, extra=result.extra, settings=settings, examples=result.examples,
                               timings=timings), out / "report.md")
    return out


def run(args: argparse.Namespace) -> int:
    return run_eval(args)
