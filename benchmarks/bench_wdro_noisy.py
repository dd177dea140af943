"""Wasserstein-robust DPO against plain DPO on StackExchange lists with flipped orders.

Builds nothing itself: give it the folders written by ``rankalign data stackexchange`` (each with
``train.jsonl`` and ``test.jsonl``). All their lists are pooled and split again (seeded) into a
training part and a held-out part. Every list's gold order is its community order (accepted
answer first, then votes; docs/methods.md#orders). In the training part a seeded ``--flip``
share of the lists gets ``ranking`` = that order reversed (noise on purpose), the rest
``ranking`` = the order itself; the held-out lists keep the true order.

Each method trains SmolLM2-135M-Instruct (offline default) with LoRA for ``--steps`` steps on the
same noisy lists and seed; then the held-out pairwise ranking accuracy (and Kendall tau, top-1)
of the implicit reward beta * (logp_policy - logp_base), with 95% bootstrap CIs, comes from
``rankalign.evaluation.ranking_accuracy.evaluate_ranking`` (the code of
``rankalign eval --metrics ranking``). The paired difference of the two methods' per-list
pairwise accuracies gets its own bootstrap CI.

    for s in matheducators cstheory.meta music.meta; do
      rankalign data stackexchange ../shared/data/stackexchange/$s --out data/se/$s --no-code-filter; done
    python benchmarks/bench_wdro_noisy.py data/se/matheducators data/se/cstheory.meta data/se/music.meta
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np


def noisy_split(folders: list[str], heldout: int, flip: float, seed: int, n_train: int | None = None
                ) -> tuple[list, list, int]:
    """(training records with flipped orders, held-out records, number flipped); at most
    ``n_train`` training lists (the run sees each once)."""
    from rankalign.data.io import read_records

    pool = []
    for f in folders:
        for name in ("train.jsonl", "test.jsonl"):
            pool += read_records(str(Path(f) / name))
    rng = random.Random(seed)
    rng.shuffle(pool)
    test, train = pool[:heldout], pool[heldout:]
    train = train[:n_train] if n_train else train
    flipped = set(rng.sample(range(len(train)), round(flip * len(train))))
    for i, rec in enumerate(train):
        order = rec.community_order()
        rec.ranking = order[::-1] if i in flipped else order
    for rec in test:
        rec.ranking = rec.community_order()
    return train, test, len(flipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders written by `rankalign data stackexchange`")
    parser.add_argument("--heldout", type=int, default=100, help="lists held out for evaluation")
    parser.add_argument("--flip", type=float, default=0.2, help="share of training lists whose order is reversed")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--train-lists", type=int, default=None,
                        help="training lists used (default: steps * 2, one epoch of micro-batches of 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.05, help="dpo_wdro's wdro_epsilon")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--methods", default="dpo_bt,dpo_wdro")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared, oversubscribed machine)")
    parser.add_argument("--out", default="benchmarks/results/wdro_noisy_stackexchange.json")
    parser.add_argument("--work", default="runs/bench_wdro", help="where the runs' folders go")
    args = parser.parse_args(argv)

    import torch

    from rankalign.evaluation.metrics import estimate
    from rankalign.evaluation.ranking_accuracy import PAIRWISE, evaluate_ranking
    from rankalign.outputs import atomic_path
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.models import load_model_and_tokenizer
    from rankalign.training.trainer import train

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_recs, test_recs, n_flipped = noisy_split(args.folders, args.heldout, args.flip, args.seed,
                                                    args.train_lists or 2 * args.steps)
    print(f"{len(train_recs)} training lists ({n_flipped} flipped), {len(test_recs)} held out", flush=True)
    base, _ = load_model_and_tokenizer(ListwiseConfig.__dataclass_fields__["model"].default)
    common = dict(use_lora=True, max_steps=args.steps, per_device_train_batch_size=2, max_length=args.max_length,
                  max_prompt_length=args.max_length // 2, max_list_size=3, learning_rate=1e-4, logging_steps=5,
                  save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=args.seed)
    import os
    import platform

    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                                 "threads": args.threads},
                     "lists_train": len(train_recs), "lists_flipped": n_flipped, "lists_heldout": len(test_recs),
                     "settings": {**common, "flip": args.flip, "epsilon": args.epsilon, "folders": args.folders},
                     "methods": {}}
    per_list: dict[str, list[float]] = {}
    for method in args.methods.split(","):
        hparams = {"wdro_epsilon": args.epsilon} if method == "dpo_wdro" else {}
        config = ListwiseConfig(method=method, output_dir=f"{args.work}/{method}", hparams=hparams, **common)
        t0 = time.perf_counter()
        result = train(config, [r for r in train_recs])
        train_s = time.perf_counter() - t0
        rank = evaluate_ranking(result.model, result.tokenizer, test_recs, ref_model=base, beta=0.1,
                                max_length=args.max_length, max_prompt_length=args.max_length // 2, batch_size=4)
        per_list[method] = [ex[PAIRWISE] for ex in rank.examples]
        steps = [r for r in result.log if r.get("type") == "train"]
        solve = [r["metrics"]["wdro/solve_ms"] for r in steps if "wdro/solve_ms" in r.get("metrics", {})]
        results["methods"][method] = {
            "heldout": rank.metrics, "skipped": rank.skipped, "train_s": round(train_s, 1),
            "final_loss": steps[-1]["loss"] if steps else None,
            **({"wdro_solve_ms_mean": round(float(np.mean(solve)), 2)} if solve else {}),
        }
        print(method, json.dumps(results["methods"][method]["heldout"].get(PAIRWISE)), flush=True)
        del result
    names = list(per_list)
    if len(names) == 2:
        diff = [b - a for a, b in zip(per_list[names[0]], per_list[names[1]])]
        results["paired_difference"] = {f"{names[1]} - {names[0]} (pairwise)": estimate(diff, seed=0).to_dict()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
