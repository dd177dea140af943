"""Build the StaCoCoQA outputs of a fixed set of runs on the shared StackExchange samples, and
compare them with another build or with the recorded hashes.

Each run is ``build_stacocoqa(dump, out, StackExchangeOptions(**options))`` (the public API,
the same in every version of the pipeline). Compared per run: ``train.jsonl``, ``test.jsonl``
and ``stats.csv`` byte for byte; ``stats.md`` byte for byte but for the source named in its
two table headings (``(cf. ... Table 7)``: the rewrite cites the paper there); and
``summary.json`` as JSON without its timings (``seconds``), the library versions
(``versions``) and the option keys that a later version added (only the keys of
:data:`OPTION_KEYS` are compared), with the data folder and the output folder written as
``<data>`` and ``<out>``.

Usage::

    python benchmarks/compare_stackexchange_outputs.py build /tmp/se_new      # every run, + manifest.json
    python benchmarks/compare_stackexchange_outputs.py compare /tmp/se_ref /tmp/se_new
    python benchmarks/compare_stackexchange_outputs.py check /tmp/se_new      # against the recorded hashes
    python benchmarks/compare_stackexchange_outputs.py record /tmp/se_ref     # write the recorded hashes

The recorded hashes (``benchmarks/results/stackexchange_outputs.json``) were taken from the
pipeline before its rewrite in pure Python (with its C extensions).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "stackexchange"
GOLDEN = HERE / "results" / "stackexchange_outputs.json"
FILES = ("train.jsonl", "test.jsonl", "stats.csv", "stats.md")
#: the options of the pipeline when the reference outputs were recorded (newer keys are not compared)
OPTION_KEYS = ("votes", "code_filter", "start", "end", "min_answers", "max_answers", "min_vote_spread",
               "min_answer_votes", "max_question_tokens", "max_answer_tokens", "tokenizer", "sample", "seed",
               "test_fraction", "workers", "strict", "chunk_rows", "duckdb_memory", "work_dir", "progress")
SITES = ("ai", "ai.meta", "coffee", "cstheory.meta", "datascience.meta", "genai", "matheducators", "music.meta",
         "robotics.meta")


def runs(data: Path, scratch: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every run: name -> (dump, options). ``scratch`` receives derived inputs (a .gz copy)."""
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for site in SITES:
        out[f"{site}-no-code"] = (data / site, {"code_filter": False, "workers": 1})
        out[f"{site}-code"] = (data / site, {"workers": 2})
    out["all-no-code"] = (data, {"code_filter": False, "workers": 2})
    out["all-code-small-chunks"] = (data, {"workers": 1, "chunk_rows": 500})
    out["all-filters-sample"] = (data, {
        "code_filter": False, "workers": 2, "sample": 150, "seed": 7, "test_fraction": 0.2, "min_vote_spread": 1,
        "min_answer_votes": 0, "max_answer_tokens": 400, "max_question_tokens": 600, "start": "2017-01-01",
        "end": "2024-01-01"})
    out["all-max-answers"] = (data, {"code_filter": False, "workers": 2, "max_answers": 4, "min_answers": 3,
                                     "sample": 10_000})
    out["ai.meta-votes-file"] = (data / "ai.meta" / "Posts.xml", {
        "code_filter": False, "workers": 1, "votes": str(data / "ai.meta" / "Votes.xml"), "test_fraction": 0.3})
    gz = scratch / "matheducators" / "Posts.xml.gz"
    if not gz.exists():
        gz.parent.mkdir(parents=True, exist_ok=True)
        gz.write_bytes(gzip.compress((data / "matheducators" / "Posts.xml").read_bytes(), mtime=0))
    out["matheducators-gz"] = (gz, {"code_filter": False, "workers": 1, "sample": 300, "seed": 1})
    return out


def build(root: Path, data: Path) -> None:
    from rankalign.data.stackexchange import StackExchangeOptions, build_stacocoqa

    root.mkdir(parents=True, exist_ok=True)
    scratch = root / "_inputs"
    for name, (dump, options) in runs(data, scratch).items():
        out = root / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        build_stacocoqa(dump, out, StackExchangeOptions(progress=False, **options))
        print(f"{name}: {time.perf_counter() - t0:.1f}s", flush=True)
    manifest = {name: digests(root / name, data, root) for name in runs(data, scratch)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def file_bytes(path: Path) -> bytes:
    """The bytes compared: ``stats.md`` with its headings' citation reduced to the table number."""
    data = path.read_bytes()
    if path.name == "stats.md":
        data = re.sub(rb"\(cf\. [^)\n]*?Table (\d)[^)\n]*\)", rb"(cf. Table \1)", data)
    return data


def normalized_summary(folder: Path, data: Path, root: Path) -> dict[str, Any]:
    text = (folder / "summary.json").read_text(encoding="utf-8")
    text = text.replace(str(root), "<out>").replace(str(data), "<data>")
    summary = json.loads(text)
    summary.pop("seconds", None)
    summary.pop("versions", None)
    summary["options"] = {k: summary["options"].get(k) for k in OPTION_KEYS}
    return summary


def digests(folder: Path, data: Path, root: Path) -> dict[str, str]:
    out = {name: hashlib.sha256(file_bytes(folder / name)).hexdigest() for name in FILES}
    summary = normalized_summary(folder, data, root)
    out["summary.json"] = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()
    return out


def compare(ref: Path, new: Path, data: Path) -> int:
    bad = 0
    names = sorted(p.name for p in ref.iterdir() if p.is_dir() and not p.name.startswith("_"))
    for name in names:
        problems = [f for f in FILES if file_bytes(ref / name / f) != file_bytes(new / name / f)]
        a, b = normalized_summary(ref / name, data, ref), normalized_summary(new / name, data, new)
        if a != b:
            problems.append("summary.json: " + ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)))
        print(f"{name}: {'identical' if not problems else 'DIFFERENT ' + '; '.join(problems)}")
        bad += bool(problems)
    print(f"{len(names) - bad} of {len(names)} runs identical")
    return 1 if bad else 0


def check(new: Path, data: Path) -> int:
    golden = json.loads(GOLDEN.read_text())["runs"]
    bad = 0
    for name, expected in sorted(golden.items()):
        got = digests(new / name, data, new)
        problems = [f for f in expected if expected[f] != got.get(f)]
        print(f"{name}: {'identical' if not problems else 'DIFFERENT ' + ', '.join(problems)}")
        bad += bool(problems)
    print(f"{len(golden) - bad} of {len(golden)} runs identical to the recorded hashes")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("build", "compare", "check", "record"))
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the site folders (default: %(default)s)")
    args = ap.parse_args()
    data = args.data.resolve()
    if not data.is_dir():
        print(f"no StackExchange samples at {data}; give --data", file=sys.stderr)
        return 2
    if args.action == "build":
        build(args.folders[0].resolve(), data)
        return 0
    if args.action == "compare":
        return compare(args.folders[0].resolve(), args.folders[1].resolve(), data)
    if args.action == "check":
        return check(args.folders[0].resolve(), data)
    root = args.folders[0].resolve()
    GOLDEN.write_text(json.dumps({
        "note": "sha256 of each run's outputs (summary.json normalized: see compare_stackexchange_outputs.py)",
        "runs": {n: digests(root / n, data, root) for n in runs(data, root / "_inputs")}}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
