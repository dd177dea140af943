"""Benchmark: list log-probs (batched vs per-candidate) and training steps on the real SmolLM2.

Data: the real lists of the shipped sample ``src/rankalign/resources/coqa_demo.jsonl``
(read with ``rankalign.data.read_records``), the lists with >= M responses cut to their
first M. The shipped answers are short (~30-120 tokens per sequence), so each response is
lengthened towards ``--target-tokens`` (prompt + response, chat template included) by
appending whole real answers of the same file after it (the next ones in file order),
stopping before the target is passed: sequences then hold ~180-256 tokens and differ in
length, so the batched path really pads. ``--target-tokens 0`` keeps the texts as shipped.
The SeAdpra dynamic ranking/APDF of these lists is computed once (``rank_records``, the
real all-MiniLM-L6-v2) before anything is timed.

Parts (each in its own subprocess, so peak RSS is per part; ``OMP_WAIT_POLICY=PASSIVE`` is
set before torch loads, as the CLI does):

1. ``logps`` -- log-probs of micro-batches of B lists x M responses under ``torch.no_grad``:
   rankalign's ``list_logps`` (ONE forward over the B*M padded sequences) vs a naive loop
   (one unpadded forward per response, the full ``log_softmax`` then ``gather``, as
   per-rank-position code does). Wall time per list (median over repeats, after a warm-up)
   and the max abs difference of the ``[B, M]`` summed log-probs.
2. ``train`` -- ``rankalign.training.train()`` (``ListwiseTrainer``) for seadpra and dpo_pl,
   full fine-tuning and LoRA, batch 1 list, ``max_length`` 256: seconds per optimizer step
   (median of the steps after a warm-up step, timed by a callback from step begin to step
   end) and the worker's peak RSS (``getrusage``; includes the model load, the frozen
   reference copy of full-FT dpo_pl, AdamW states and the final save).

Writes ``benchmarks/results/training.json`` (atomically). Run:
``python benchmarks/bench_training.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see rankalign.commands.threads)

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "rankalign" / "resources" / "coqa_demo.jsonl"
RESULT = ROOT / "benchmarks" / "results" / "training.json"


def peak_rss_mb() -> float:
    """This process's peak resident set size, MB (Linux ``ru_maxrss`` is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float | None:
    """This process's resident set size now, MB (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def write_results(results: dict[str, Any], output: str | Path, t_start: float) -> None:
    """Add the end load and total wall time, write ``output`` atomically, say so."""
    from rankalign.outputs import atomic_path

    results["load_avg_end"] = load_avg()
    results["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    with atomic_path(output) as tmp_path:
        tmp_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output} ({results['total_wall_s']} s)")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------------- data
def build_lists(m: int, target_tokens: int, max_prompt_length: int) -> list[Any]:
    """Real lists of M responses, each response lengthened with later real answers (see module doc)."""
    from transformers import AutoTokenizer

    from rankalign.data import ListRecord, read_records
    from rankalign.training.logps import split_texts
    from rankalign.training.models import materialise_default_model

    tok = AutoTokenizer.from_pretrained(str(materialise_default_model()))
    records = [r for r in read_records(DATA) if r.num_responses >= m]
    pool = [resp.text for r in records for resp in r.responses]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in pool]
    out, k = [], 0
    for rec in records:
        d = rec.to_dict()
        d["responses"] = d["responses"][:m]
        for resp in d["responses"]:
            text = resp["text"]
            if target_tokens > 0:
                head, tail = split_texts(tok, rec.prompt, text)
                used = min(len(tok(head, add_special_tokens=False)["input_ids"]), max_prompt_length) \
                    + len(tok(tail, add_special_tokens=False)["input_ids"])
                src = (k + 1) % len(pool)
                while used + lengths[src] + 2 <= target_tokens:
                    text += "\n\n" + pool[src]
                    used += lengths[src] + 2
                    src = (src + 1) % len(pool)
            resp["text"] = text
            k += 1
        out.append(ListRecord.from_dict(d, where=f"{DATA}:{rec.id}"))
    return out


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from rankalign.data import write_records
    from rankalign.ranking import RankingConfig, rank_records

    t0 = time.perf_counter()
    records = build_lists(args.m, args.target_tokens, args.max_prompt_length)
    rank_records(records, RankingConfig(), show_progress=False)  # SeAdpra's D^R + APDF, not timed below
    write_records(records, work / "lists.jsonl")
    return {"lists": len(records), "m": args.m, "prepare_s": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------- part 1: log-probs
def naive_logps(model: Any, item: Any) -> tuple[list[float], list[float], float]:
    """One unpadded forward per response; full log_softmax, gather, sum over response tokens.

    Returns:
        ``(float64 reductions, float32 reductions, seconds)``: the first is the reference
        (the float32 logits reduced in float64, so only the forward differs from the batched
        path); the second (float32 ``log_softmax`` over the 49k vocabulary + float32 sum, as
        naive code does) shows what float32 reductions alone move a sum; ``seconds`` times
        the forwards + float32 reductions only (the float64 reference is not timed).
    """
    import torch

    out64, out32, elapsed = [], [], 0.0
    for p, r in zip(item.prompt_ids, item.response_ids):
        t0 = time.perf_counter()
        ids = torch.tensor([p + r])  # [1, T]
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # [T-1, V]
        tgt = ids[0, 1:, None]  # [T-1, 1]; token t+1 is predicted at position t
        first = len(p) - 1  # position predicting the first response token
        out32.append(float(logits.log_softmax(-1).gather(-1, tgt).squeeze(-1)[first:].sum()))
        elapsed += time.perf_counter() - t0
        out64.append(float(logits.double().log_softmax(-1).gather(-1, tgt).squeeze(-1)[first:].sum()))
    return out64, out32, elapsed


def worker_logps(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from rankalign.data import read_records
    from rankalign.training.logps import EncodedList, ListCollator, encode_list, list_logps
    from rankalign.training.models import load_model_and_tokenizer

    torch.manual_seed(0)
    load0 = load_avg()
    model, tok = load_model_and_tokenizer()
    model.eval()
    records = read_records(work / "lists.jsonl")[: args.b * args.batches]
    items = []
    for rec in records:
        prompts, responses = encode_list(tok, rec.prompt, [r.text for r in rec.responses],
                                            max_length=args.max_length, max_prompt_length=args.max_prompt_length)
        m = len(responses)
        items.append(EncodedList(prompt_ids=prompts, response_ids=responses, order=list(range(m)),
                                 psi=[float(m - i) for i in range(m)]))
    collate = ListCollator(tok.pad_token_id)
    batches = [items[i:i + args.b] for i in range(0, len(items), args.b)]
    seq_tokens = [len(p) + len(r) for it in items for p, r in zip(it.prompt_ids, it.response_ids)]
    t_batched: list[float] = []
    t_naive: list[float] = []
    max_diff = max_rel = max_diff32 = max_sum = 0.0
    with torch.no_grad():
        for rep in range(args.repeats + 1):  # rep 0 = warm-up, not timed
            for group in batches:
                batch = collate(group)
                t0 = time.perf_counter()
                fast, _ = list_logps(model, batch)  # [B, M]
                t1 = time.perf_counter()
                slow = [naive_logps(model, it) for it in group]
                if rep:
                    t_batched.append((t1 - t0) / len(group))
                    t_naive.append(sum(x[2] for x in slow) / len(group))
                for i, (row64, row32, _) in enumerate(slow):
                    for j, (v, v32) in enumerate(zip(row64, row32)):
                        d = abs(float(fast[i, j]) - v)
                        max_diff = max(max_diff, d)
                        max_rel = max(max_rel, d / max(abs(v), 1e-12))
                        max_diff32 = max(max_diff32, abs(v32 - v))
                        max_sum = max(max_sum, abs(v))
    batched, naive = statistics.median(t_batched), statistics.median(t_naive)
    return {
        "lists_per_micro_batch": args.b, "m": args.m, "micro_batches": len(batches), "repeats": args.repeats,
        "seq_tokens_min_mean_max": [min(seq_tokens), round(statistics.mean(seq_tokens), 1), max(seq_tokens)],
        "batched_s_per_list": round(batched, 3), "naive_s_per_list": round(naive, 3),
        "speedup": round(naive / batched, 2),
        "max_abs_diff": max_diff, "max_rel_diff": max_rel, "max_abs_logp_sum": round(max_sum, 2),
        "naive_fp32_reduction_vs_fp64_max_abs": max_diff32,
        "torch_num_threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
        "load_avg_before": load0, "load_avg_after": load_avg(),
    }


# ---------------------------------------------------------------------- part 2: training steps
def worker_train(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback

    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0
            self.rss_at_train_begin: float | None = None

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.rss_at_train_begin = current_rss_mb()  # models (+ reference copy) loaded, no step yet

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self._t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.times.append(time.perf_counter() - self._t0)

    load0 = load_avg()
    timer = StepTimer()
    out_dir = work / f"run-{args.method}-{'lora' if args.lora else 'full'}"
    config = ListwiseConfig(
        method=args.method, data=str(work / "lists.jsonl"), output_dir=str(out_dir),
        per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=1 + args.steps,
        max_length=args.max_length, max_prompt_length=args.max_prompt_length, use_lora=args.lora,
        save_strategy="no", logging_steps=1, report_to="none", seed=0, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    result = train(config, callbacks=[timer])
    measured = timer.times[1:]
    losses = [row["loss"] for row in result.log if row.get("type") == "train" and "loss" in row]
    return {
        "method": args.method, "lora": args.lora, "learning_rate": config.learning_rate,
        "warmup_step_s": round(timer.times[0], 2), "steps_measured": len(measured),
        "s_per_step_median": round(statistics.median(measured), 2),
        "s_per_step_all": [round(t, 2) for t in timer.times],
        "losses": losses, "truncation": result.truncation,
        "torch_num_threads": torch.get_num_threads(), "rss_at_train_begin_mb": timer.rss_at_train_begin,
        "peak_rss_mb": peak_rss_mb(), "load_avg_before": load0, "load_avg_after": load_avg(),
    }


# ---------------------------------------------------------------------- driver
def launch_worker(script: str, part: str, work: Path, options: list[str]) -> dict[str, Any]:
    """Run ``script --_worker PART`` in a fresh process (its own peak memory, no warm caches) and
    return the JSON it writes, with the process's wall time; a failed worker ends the benchmark."""
    out = work / f"{part}-{len(list(work.glob('*.out.json')))}.out.json"
    cmd = [sys.executable, script, "--_worker", part, "--_work", str(work), "--_out", str(out), *options]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"error: worker {part} {' '.join(options)} failed (exit {proc.returncode})")
    res = json.loads(out.read_text(encoding="utf-8"))
    res["process_wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def run_worker(part: str, args: argparse.Namespace, work: Path, extra: list[str]) -> dict[str, Any]:
    return launch_worker(__file__, part, work, [
        "--m", str(args.m), "--b", str(args.b), "--batches", str(args.batches), "--repeats", str(args.repeats),
        "--steps", str(args.steps), "--max-length", str(args.max_length),
        "--max-prompt-length", str(args.max_prompt_length), *extra])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller run (1 micro-batch, 2 measured steps, dpo_pl only)")
    ap.add_argument("--m", type=int, default=4, help="responses per list")
    ap.add_argument("--b", type=int, default=2, help="lists per micro-batch in the log-prob part")
    ap.add_argument("--batches", type=int, default=2, help="micro-batches in the log-prob part")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats of the log-prob part (after a warm-up)")
    ap.add_argument("--steps", type=int, default=3, help="measured optimizer steps per training run (after 1 warm-up)")
    ap.add_argument("--methods", default="seadpra,dpo_pl", help="comma-separated training methods")
    ap.add_argument("--target-tokens", type=int, default=256, help="lengthen sequences towards this (0: as shipped)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-prompt-length", type=int, default=128)
    ap.add_argument("--skip-logps", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--output", default=str(RESULT))
    ap.add_argument("--_worker", choices=["logps", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--_work", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        work = Path(args._work)
        res = worker_logps(args, work) if args._worker == "logps" else worker_train(args, work)
        Path(args._out).write_text(json.dumps(res), encoding="utf-8")
        return 0

    if args.quick:
        args.b, args.batches, args.repeats, args.steps = 1, 1, 1, 2
        args.methods = "dpo_pl"

    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "training", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", "benchmarks/bench_training.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": "SmolLM2-135M-Instruct (offline default, float32)",
        "data": "coqa_demo.jsonl real lists, first M responses, each lengthened with later real answers "
                f"towards {args.target_tokens} tokens" if args.target_tokens else "coqa_demo.jsonl as shipped",
        "machine": machine_info(), "load_avg_start": load_avg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench_training.") as tmp:
        work = Path(tmp)
        print("preparing lists (tokenizer + SeAdpra ranking) ...", flush=True)
        results["lists"] = prepare(args, work)
        if not args.skip_logps:
            print(f"log-probs: {args.batches} micro-batch(es) of {args.b} list(s) x M={args.m} ...", flush=True)
            results["logps"] = r = run_worker("logps", args, work, [])
            print(f"  batched {r['batched_s_per_list']} s/list, naive {r['naive_s_per_list']} s/list, "
                  f"max |diff| {r['max_abs_diff']:.2e}", flush=True)
        results["train"] = []
        if not args.skip_train:
            for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
                for lora in (False, True):
                    print(f"train {method} {'LoRA' if lora else 'full'} ...", flush=True)
                    r = run_worker("train", args, work, ["--method", method, *(["--lora"] if lora else [])])
                    results["train"].append(r)
                    print(f"  {r['s_per_step_median']} s/step, peak RSS {r['peak_rss_mb']} MB", flush=True)
    write_results(results, args.output, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
