"""Benchmark: APDF + multi-APDF + dynamic ranking for many lists (gains given, no embedding).

Default workload: 10,000 lists of M = 10 responses, two attributes (semantic-like and
popularity-like gains, with ties), ARank from a third score. Times the array path
(``apdf`` x 2 -> ``multi_apdf`` -> ``arank_from_scores`` -> ``dynamic_ranking``) and the
record path (``rank_records`` with precomputed phi: gains from record attributes, writing
``dynamic_ranking``/``apdf`` back). Optionally (``--oasst1``) ranks the real OASST1 sample with
the real all-MiniLM-L6-v2 and reports the agreement with the human rankings.

Writes ``benchmarks/results/ranking.json``. Run: ``python benchmarks/bench_ranking.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from rankalign.data.record import ListRecord
from rankalign.ranking import (
    RankingConfig,
    apdf,
    arank_from_scores,
    dynamic_ranking,
    multi_apdf,
    rank_records,
    ranking_agreement,
)

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        import psutil

        info["cpu_count_physical"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except ImportError:
        pass
    return info


def array_path(n_lists: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g_se = np.exp2(rng.uniform(-0.2, 0.9, size=(n_lists, m))) - 1.0
    g_po = np.log10(rng.integers(0, 200, size=(n_lists, m)) + 1.0)  # integer votes -> ties
    phi = rng.uniform(-0.2, 0.9, size=(n_lists, m))
    return g_se, g_po, phi


def time_array_path(g_se: np.ndarray, g_po: np.ndarray, phi: np.ndarray, repeats: int) -> tuple[list[float], np.ndarray]:
    times = []
    out = np.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = multi_apdf([apdf(g_se), apdf(g_po)])  # [B, M, M]
        out = dynamic_ranking(d, arank_from_scores(phi))  # [B, M]
        times.append(time.perf_counter() - t0)
    return times, out


def time_record_path(n_lists: int, m: int, seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(seed + 1)
    recs, phis = [], []
    for k in range(n_lists):
        votes = rng.integers(-2, 200, size=m)
        days = rng.integers(0, 2000, size=m)
        recs.append(ListRecord.from_dict({
            "id": str(k), "prompt": f"question {k}",
            "responses": [{"text": f"answer {i}", "attributes": {
                "votes": int(votes[i]),
                "created": str(np.datetime64("2015-01-01") + np.timedelta64(int(days[i]), "D"))}}
                for i in range(m)],
        }))
        phis.append(rng.uniform(-0.2, 0.9, size=m))
    t0 = time.perf_counter()
    rank_records(recs, RankingConfig(), phi=phis, show_progress=False)
    return time.perf_counter() - t0, sum(r.dynamic_ranking is not None for r in recs)


def oasst1_agreement() -> dict[str, Any] | None:
    data = ROOT.parent / "shared" / "data" / "oasst1" / "en_100_tree.jsonl"
    try:
        from rankalign.data.loaders import load_oasst1
    except ImportError:
        return None
    if not data.is_file():
        return None
    import tempfile

    from rankalign.ranking import compute_phi

    recs = load_oasst1(data)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        phi = compute_phi(recs, None, cache_dir=cache, show_progress=False)
        t_embed = time.perf_counter() - t0
    out: dict[str, Any] = {"lists": len(recs), "embed_s": round(t_embed, 2)}
    for attrs in (("semantic",), ("semantic", "thumbs_up")):
        try:
            rank_records(recs, RankingConfig(attributes=attrs), phi=phi, show_progress=False)
        except ValueError as exc:  # e.g. a list without thumbs (RecordError is a ValueError)
            out["+".join(attrs)] = f"not computed: {exc}"
            continue
        out["+".join(attrs)] = ranking_agreement(recs)
    out["semantic_only_order"] = ranking_agreement(recs, [arank_from_scores(p).tolist() for p in phi])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lists", type=int, default=10_000)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oasst1", action="store_true", help="also rank the real OASST1 sample with MiniLM")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ranking.json"))
    args = ap.parse_args()

    g_se, g_po, phi = array_path(args.lists, args.m, args.seed)
    times, order = time_array_path(g_se, g_po, phi, args.repeats)
    assert (np.sort(order, axis=1) == np.arange(args.m)).all(), "output is not a permutation"
    best, median = min(times), float(np.median(times))
    rec_s, n_ranked = time_record_path(args.lists, args.m, args.seed)
    result: dict[str, Any] = {
        "workload": {"lists": args.lists, "m": args.m, "attributes": 2, "repeats": args.repeats,
                     "what": "apdf x2 + multi_apdf + arank + dynamic_ranking, gains given (no embedding)"},
        "array_path": {"best_s": round(best, 4), "median_s": round(median, 4),
                       "lists_per_s_best": round(args.lists / best), "target_s": 1.0,
                       "meets_target": best < 1.0},
        "record_path": {"rank_records_s": round(rec_s, 3), "lists_per_s": round(n_ranked / rec_s),
                        "what": "rank_records with precomputed phi: gains from votes/created, results written back"},
        "machine": machine_info(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.oasst1:
        result["oasst1_real_minilm"] = oasst1_agreement()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
