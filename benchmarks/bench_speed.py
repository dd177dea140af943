"""Speed benchmarks of list-wise training (docs/training.md "Speed"): B1 against TRL, B2 prefix sharing,
B3 model FLOP utilisation, peak memory against M.

Model: the real default SmolLM2-135M-Instruct (float32, offline). Data: real StackExchange lists
read from ``../shared/data/stackexchange/matheducators/Posts.xml`` (questions with >= 4 answers;
prompt = title + body, responses = answer bodies as text, best = highest score), tokenised with
the model's chat template. Every figure compared is measured in the same run, in its own
subprocess, with the 1-minute load average recorded before and after (the machine is shared).

Parts:

* ``peak`` -- the CPU's float32 matmul peak: ``torch.mm`` of 2048 x 2048 matrices, best of 8.
* ``b2`` -- one list of a 300-token prompt and M responses of 100 tokens (token ids cut from the
  real texts): forward + backward of the summed response log-probs, prefix-shared (one packed row)
  against separate sequences (M rows), at M = 2, 5, 8, 16; the max |log-prob difference| of the
  two, and the peak memory of each (the process's VmHWM, reset through ``/proc/self/clear_refs``
  before each measurement, minus the resident size before it).
* ``b1`` -- seconds per list (one list of M = 4 per optimizer step, AdamW, float32, no gradient
  checkpointing, median of the steps after one warm-up) of rankalign's ``train()`` for seadpra, pro,
  dpo_bt and dpo_pl against TRL's ``DPOTrainer`` on the same lists as best-vs-other pairs
  (M - 1 = 3 pairs per step, the same texts, lr, optimizer), with and without TRL's
  ``precompute_ref_log_probs``; pair counts and tokens per step are checked and reported.
* ``b3`` -- computed from b1's seadpra step and ``peak``: 6 * N * T / step time / peak, T = the
  list's distinct tokens (prompt once + every response; ``batch/tokens`` in train_log.jsonl).

Writes ``benchmarks/results/training_speed.json`` (atomically). Run:
``python benchmarks/bench_speed.py`` (``--parts b2`` for one part; ``--quick`` for M = 2, 5 and
2 measured steps).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see rankalign.commands.threads)

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import current_rss_mb, launch_worker, load_avg, machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT.parent / "shared" / "data" / "stackexchange" / "matheducators" / "Posts.xml"
RESULT = ROOT / "benchmarks" / "results" / "training_speed.json"


# ---------------------------------------------------------------------- data
def read_lists(m: int, n: int) -> list[dict[str, Any]]:
    """The first ``n`` questions of the real dump with >= ``m`` answers, as list-wise record dicts."""
    from lxml import etree

    from rankalign.data.stackexchange.html_text import html_to_text

    questions: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[tuple[int, str]]] = {}
    for _, row in etree.iterparse(str(POSTS), tag="row"):
        a = row.attrib
        if a.get("PostTypeId") == "1":
            questions[a["Id"]] = {"title": a.get("Title", ""), "body": a.get("Body", "")}
        elif a.get("PostTypeId") == "2" and a.get("ParentId"):
            answers.setdefault(a["ParentId"], []).append((int(a.get("Score", "0")), a.get("Body", "")))
        row.clear()
    out = []
    for qid, q in questions.items():
        group = sorted(answers.get(qid, []), key=lambda x: -x[0])[:m]
        if len(group) < m:
            continue
        texts = [html_to_text(body) for _, body in group]
        if any(not t.strip() for t in texts):
            continue
        out.append({"id": f"matheducators-{qid}", "prompt": f"{q['title']}\n\n{html_to_text(q['body'])}",
                    "responses": [{"text": t} for t in texts], "scores": [float(s) for s, _ in group],
                    "ranking": list(range(m))})
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------- memory
def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM (Linux)
        f.write("5")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- part: peak
def worker_peak(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(8):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"matmul_n": n, "best_s": best, "gflops": round(2 * n**3 / best / 1e9, 1),
            "torch_num_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- part: b2
def worker_b2(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rankalign.training.logps import EncodedList, ListCollator, list_logps
    from rankalign.training.models import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer()
    model.train()
    lists = read_lists(4, 30)
    pool = [t for r in lists for t in tok("\n".join([r["prompt"], *(x["text"] for x in r["responses"])]),
                                           add_special_tokens=False)["input_ids"]]
    rows = []
    for m in args.b2_m:
        prompt = pool[:args.prompt_tokens]
        responses = [pool[args.prompt_tokens + j * args.answer_tokens:args.prompt_tokens + (j + 1) * args.answer_tokens]
                     for j in range(m)]
        item = EncodedList(prompt_ids=[prompt] * m, response_ids=responses, order=list(range(m)), psi=[0.0] * m)
        # a warm-up pass first (not timed, not measured), except at M >= 16 (the smaller M warmed up)
        reps = [False] + [True] * args.b2_repeats if m < 16 else [True]
        times: dict[str, list[float]] = {"packed": [], "separate": []}
        peaks: dict[str, float] = {}
        values: dict[str, Any] = {}
        for timed in reps:
            for mode in ("packed", "separate"):
                batch = ListCollator(tok.pad_token_id, prefix_sharing=mode == "packed")([item])
                model.zero_grad(set_to_none=True)
                rss0 = current_rss_mb() or 0.0
                reset_peak()
                t0 = time.perf_counter()
                logps, _ = list_logps(model, batch)  # [1, M]
                logps.sum().backward()
                dt = time.perf_counter() - t0
                if timed and mode not in peaks:  # the first timed pass: memory above the resident size before it
                    peaks[mode] = round(peak_mb() - rss0, 1)
                    values[mode] = logps.detach()
                if timed:
                    times[mode].append(dt)
        model.zero_grad(set_to_none=True)
        packed, separate = statistics.median(times["packed"]), statistics.median(times["separate"])
        rows.append({
            "m": m, "prompt_tokens": args.prompt_tokens, "answer_tokens": args.answer_tokens,
            "tokens_packed": args.prompt_tokens + m * args.answer_tokens,
            "tokens_separate": m * (args.prompt_tokens + args.answer_tokens),
            "packed_s": round(packed, 3), "separate_s": round(separate, 3), "speedup": round(separate / packed, 2),
            "timed_repeats": len(times["packed"]),
            "max_abs_logp_diff": float((values["packed"] - values["separate"]).abs().max()),
            "max_abs_logp": round(float(values["separate"].abs().max()), 1),
            "peak_mb_packed": peaks["packed"], "peak_mb_separate": peaks["separate"],
            "load_avg": load_avg(),
        })
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "torch_num_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- part: b1
def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self._t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.times.append(time.perf_counter() - self._t0)

    return StepTimer()


def _encoded(tok: Any, records: list[Any], args: argparse.Namespace) -> list[Any]:
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import encode_records

    cfg = ListwiseConfig(method="dpo_bt", output_dir=tempfile.mkdtemp(), max_length=args.max_length,
                         max_prompt_length=args.max_prompt_length, order_source="gold")
    return encode_records(records, tok, cfg)


def _profiler(top: int = 15) -> Any:
    """A callback profiling the second optimizer step (torch.profiler, CPU): the ops with the most self time."""
    import torch
    from transformers import TrainerCallback

    class StepProfile(TrainerCallback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.rows: list[dict[str, Any]] = []
            self.total_s = 0.0

        def on_step_begin(self, args: Any, state: Any, *a: Any, **k: Any) -> None:
            if state.global_step == 1:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if self.prof is None or self.rows:
                return
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            self.total_s = sum(e.self_cpu_time_total for e in events) / 1e6
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
                self.rows.append({"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3),
                                  "share": round(e.self_cpu_time_total / 1e6 / self.total_s, 3), "calls": e.count})

    return StepProfile()


def worker_b1_rankalign(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from rankalign.data import read_records
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    load0 = load_avg()
    timer = _step_timer()
    profile = _profiler() if args.profile else None
    config = ListwiseConfig(
        method=args.method, data=str(work / "lists.jsonl"), output_dir=str(work / f"run-{args.method}"),
        per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=1 + args.steps,
        max_length=args.max_length, max_prompt_length=args.max_prompt_length,
        learning_rate=1e-6, optim="adamw_torch", save_strategy="no", logging_steps=1, report_to="none", seed=0,
        disable_tqdm=True, dataloader_num_workers=0, train_sampling_strategy="sequential",
        gradient_checkpointing=False, bf16=False,
    )
    t0 = time.perf_counter()
    result = train(config, read_records(work / "lists.jsonl"), callbacks=[timer, *([profile] if profile else [])])
    wall = time.perf_counter() - t0
    steps = [row for row in result.log if row.get("type") == "train" and "loss" in row]
    tokens = [row["metrics"].get("batch/tokens") for row in steps]
    measured = timer.times[1:]
    return {"method": args.method, "s_per_list_median": round(statistics.median(measured), 3),
            "s_per_step_all": [round(t, 3) for t in timer.times], "distinct_tokens_per_step": tokens,
            "steps_s_total": round(sum(timer.times), 2), "train_wall_s": round(wall, 2),
            "losses": [row["loss"] for row in steps], "torch_num_threads": torch.get_num_threads(),
            "load_avg_before": load0, "load_avg_after": load_avg(),
            **({"profile_step_s": round(profile.total_s, 3), "profile_top_ops": profile.rows} if profile else {})}


def worker_b1_trl(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rankalign.data import read_records
    from rankalign.training.models import load_model_and_tokenizer

    load0 = load_avg()
    model, tok = load_model_and_tokenizer()
    records = read_records(work / "lists.jsonl")
    items = _encoded(tok, records, args)
    pairs = []
    for it in items:  # best vs each other response, texts decoded from rankalign's own (truncated) tokens
        best = it.order[0]
        prompt = tok.decode(it.prompt_ids[best], skip_special_tokens=False)
        for other in it.order[1:]:
            pairs.append({"prompt": prompt,
                          "chosen": tok.decode(it.response_ids[best], skip_special_tokens=False),
                          "rejected": tok.decode(it.response_ids[other], skip_special_tokens=False)})
    per_step = len(items[0].response_ids) - 1
    timer = _step_timer()
    cfg = DPOConfig(output_dir=str(work / f"trl-{args.trl_precompute}"), per_device_train_batch_size=per_step,
                    gradient_accumulation_steps=1, max_steps=1 + args.steps, learning_rate=1e-6, optim="adamw_torch",
                    max_length=args.max_length + 8, beta=0.1, precompute_ref_log_probs=args.trl_precompute,
                    precompute_ref_batch_size=per_step, save_strategy="no", logging_steps=1, report_to="none", seed=0,
                    disable_tqdm=True, bf16=False, gradient_checkpointing=False, use_cpu=True,
                    train_sampling_strategy="sequential", dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         callbacks=[timer])
    kept = len(trainer.train_dataset)
    # TRL's forward input per pair: prompt + chosen and prompt + rejected (the prompt twice)
    lens = [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset]
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    measured = timer.times[1:]
    return {"method": f"trl_dpo{'_precompute' if args.trl_precompute else ''}", "trl_pairs_given": len(pairs),
            "trl_pairs_kept": kept, "pairs_per_step": per_step,
            "tokens_per_step": [sum(lens[i:i + per_step]) for i in range(0, len(lens), per_step)],
            "s_per_list_median": round(statistics.median(measured), 3),
            "s_per_step_all": [round(t, 3) for t in timer.times], "train_wall_s": round(wall, 2),
            "torch_num_threads": torch.get_num_threads(), "load_avg_before": load0, "load_avg_after": load_avg()}


def prepare_b1(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from rankalign.data import ListRecord, write_records
    from rankalign.ranking import RankingConfig, rank_records

    records = [ListRecord.from_dict(d) for d in read_lists(4, 1 + args.steps)]
    rank_records(records, RankingConfig(attributes="semantic"), show_progress=False)  # SeAdpra's APDF, not timed
    write_records(records, work / "lists.jsonl")
    from rankalign.training.models import load_tokenizer

    items = _encoded(load_tokenizer(), records, args)
    return {"lists": len(records), "m": 4,
            "prompt_tokens": [len(it.prompt_ids[0]) for it in items],
            "response_tokens": [[len(r) for r in it.response_ids] for it in items]}


# ---------------------------------------------------------------------- driver
def run_worker(part: str, args: argparse.Namespace, work: Path, extra: list[str]) -> dict[str, Any]:
    return launch_worker(__file__, part, work, [
        "--steps", str(args.steps), "--max-length", str(args.max_length),
        "--max-prompt-length", str(args.max_prompt_length), "--b2-m", *map(str, args.b2_m),
        "--b2-repeats", str(args.b2_repeats), "--prompt-tokens", str(args.prompt_tokens),
        "--answer-tokens", str(args.answer_tokens), *extra])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["peak", "b2", "b1"], choices=["peak", "b2", "b1", "profile"],
                    help="profile: torch.profiler summary of one SeAdpra step (B1's shape), not in the default run")
    ap.add_argument("--quick", action="store_true", help="B2 at M = 2, 5 only; 2 measured steps")
    ap.add_argument("--steps", type=int, default=3, help="measured optimizer steps (after 1 warm-up)")
    ap.add_argument("--methods", default="seadpra,pro,dpo_bt,dpo_pl")
    ap.add_argument("--max-length", type=int, default=256, help="B1: prompt + response tokens")
    ap.add_argument("--max-prompt-length", type=int, default=160, help="B1: prompt tokens")
    ap.add_argument("--b2-m", type=int, nargs="+", default=[2, 5, 8, 16])
    ap.add_argument("--b2-repeats", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=300)
    ap.add_argument("--answer-tokens", type=int, default=100)
    ap.add_argument("--output", default=str(RESULT))
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_work", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--trl-precompute", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        work = Path(args._work)
        fn = {"peak": lambda: worker_peak(args), "b2": lambda: worker_b2(args),
              "b1": lambda: worker_b1_rankalign(args, work), "trl": lambda: worker_b1_trl(args, work)}[args._worker]
        Path(args._out).write_text(json.dumps(fn()), encoding="utf-8")
        return 0
    if not POSTS.is_file():
        raise SystemExit(f"error: the real data sample {POSTS} is missing (it lives beside the checkout)")
    if args.quick:
        args.b2_m, args.steps = [2, 5], 2

    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "training_speed", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", "benchmarks/bench_speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": "SmolLM2-135M-Instruct (offline default, float32)", "data": str(POSTS.relative_to(ROOT.parent)),
        "machine": machine_info(), "load_avg_start": load_avg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench_speed.") as tmp:
        work = Path(tmp)
        if "peak" in args.parts:
            results["peak"] = r = run_worker("peak", args, work, [])
            print(f"matmul peak: {r['gflops']} GFLOP/s", flush=True)
        if "b2" in args.parts:
            results["b2"] = run_worker("b2", args, work, [])
            for r in results["b2"]["rows"]:
                print(f"B2 M={r['m']}: packed {r['packed_s']} s, separate {r['separate_s']} s -> {r['speedup']}x; "
                      f"max |dlogp| {r['max_abs_logp_diff']:.1e}; peak MB {r['peak_mb_packed']} vs "
                      f"{r['peak_mb_separate']}", flush=True)
        if "b1" in args.parts:
            results["b1_lists"] = prepare_b1(args, work)
            rows = []
            for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
                rows.append(run_worker("b1", args, work, ["--method", method]))
                print(f"B1 {method}: {rows[-1]['s_per_list_median']} s/list", flush=True)
            for pre in (False, True):
                rows.append(run_worker("trl", args, work, ["--trl-precompute"] if pre else []))
                print(f"B1 {rows[-1]['method']}: {rows[-1]['s_per_list_median']} s/list "
                      f"(pairs kept {rows[-1]['trl_pairs_kept']}/{rows[-1]['trl_pairs_given']})", flush=True)
            trl = next(r for r in rows if r["method"] == "trl_dpo")["s_per_list_median"]
            for r in rows:
                r["ratio_to_trl"] = round(r["s_per_list_median"] / trl, 3)
            results["b1"] = rows
            sea = next((r for r in rows if r["method"] == "seadpra"), None)
            if sea is not None and "peak" in results:
                from rankalign.training.models import load_model_and_tokenizer

                n_params = sum(p.numel() for p in load_model_and_tokenizer()[0].parameters())
                toks = statistics.median(t for t in sea["distinct_tokens_per_step"][1:] if t)
                flops = 6 * n_params * toks
                results["b3"] = {"params": n_params, "distinct_tokens_median": toks, "flop_per_step": flops,
                                 "step_s": sea["s_per_list_median"],
                                 "achieved_gflops": round(flops / sea["s_per_list_median"] / 1e9, 1),
                                 "peak_gflops": results["peak"]["gflops"],
                                 "mfu": round(flops / sea["s_per_list_median"] / 1e9 / results["peak"]["gflops"], 3)}
                print(f"B3: MFU {results['b3']['mfu']:.0%} ({results['b3']['achieved_gflops']} of "
                      f"{results['peak']['gflops']} GFLOP/s)", flush=True)
        if "profile" in args.parts:
            if "b1_lists" not in results:
                results["b1_lists"] = prepare_b1(args, work)
            results["profile"] = r = run_worker("b1", args, work, ["--method", "seadpra", "--profile"])
            print("profile of a SeAdpra step (self CPU time):", flush=True)
            for row in r["profile_top_ops"]:
                print(f"  {row['share']:6.1%} {row['self_s']:7.3f} s  {row['calls']:6d}x  {row['op']}", flush=True)
    write_results(results, args.output, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
