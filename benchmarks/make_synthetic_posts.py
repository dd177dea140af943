"""Write a synthetic StackExchange ``Posts.xml`` of a given size (for bench_stackexchange.py).

Rows look like a programming site's dump: a byte-order mark, ``&#xA;`` newlines inside
attributes, HTML bodies with paragraphs, inline ``<code>`` and ``<pre><code>`` blocks,
entities (``&amp;lt;``...), tags, negative scores; about 38% questions (half with an
accepted answer, two thirds with a code block), 60% answers (0-8 per question), 2%
tag-wiki rows. Deterministic for a seed.

Usage::

    python benchmarks/make_synthetic_posts.py --size-mb 1024 --out /tmp/se_bench/Posts.xml
"""

from __future__ import annotations

import argparse
import random
from datetime import datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

WORDS = ("the of to and a in is it you that for on with as this was but are have not be or what "
         "function value array list string error python java query table index server client "
         "return null object class method loop file data type list dict map key thread lock").split()
TAGS = ("python javascript java c# php android jquery css sql r arrays c reactjs node.js regex pandas "
        "swift django typescript bash linux numpy").split()
CODE_LINES = (
    "for (int i = 0; i &lt; n; i++) {", "    total += a[i] * 2;", "}", "if x &gt; 0 and y &lt; 3:",
    "    print(&quot;ok&quot;)", "SELECT * FROM t WHERE a &lt;&gt; 'b';", "const f = () =&gt; x &amp;&amp; y;",
    "", "def f(a, b):", "    return a + b",
)


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _body(rng: random.Random, code: bool) -> str:
    parts = [f"<p>{_sentence(rng, rng.randint(10, 60))} &amp; <code>{rng.choice(WORDS)}()</code> "
             f"{_sentence(rng, rng.randint(5, 30))}.</p>"]
    if code:
        lines = "\n".join(rng.choice(CODE_LINES) for _ in range(rng.randint(3, 25)))
        parts.append(f"<pre><code>{lines}\n</code></pre>")
    for _ in range(rng.randint(0, 3)):
        parts.append(f"<p>{_sentence(rng, rng.randint(10, 80))}</p>")
    if rng.random() < 0.2:
        parts.append("<ul>" + "".join(f"<li>{_sentence(rng, 6)}</li>" for _ in range(3)) + "</ul>")
    return "\n\n".join(parts) + "\n"


def _attr(value: str) -> str:
    return quoteattr(value).replace("&#10;", "&#xA;")


def write_posts(out: Path, size_bytes: int, seed: int = 0) -> int:
    """Write rows until the file reaches ``size_bytes``; returns the number of rows."""
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2012, 1, 1)
    post_id = 0
    rows = 0
    written = 0
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        head = '\ufeff<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
        fh.write(head)
        written += len(head.encode())
        while written < size_bytes:
            post_id += 1
            qid = post_id
            created = t0 + timedelta(minutes=qid * 3)
            n_answers = rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 5, 8))
            answer_ids = [qid + k + 1 for k in range(n_answers)]
            accepted = rng.choice(answer_ids) if answer_ids and rng.random() < 0.6 else None
            tags = "".join(f"&lt;{t}&gt;" for t in rng.sample(TAGS, rng.randint(1, 4)))
            acc = f' AcceptedAnswerId="{accepted}"' if accepted else ""
            line = (f'  <row Id="{qid}" PostTypeId="1"{acc} CreationDate="{created.isoformat(timespec="milliseconds")}" '
                    f'Score="{rng.randint(-3, 200)}" ViewCount="{rng.randint(10, 99999)}" '
                    f'Body={_attr(_body(rng, rng.random() < 0.67))} OwnerUserId="{rng.randint(1, 10**6)}" '
                    f'Title={_attr(_sentence(rng, rng.randint(4, 12)).capitalize() + "?")} Tags="{tags}" '
                    f'AnswerCount="{n_answers}" CommentCount="{rng.randint(0, 9)}" />\n')
            for aid in answer_ids:
                ac = created + timedelta(hours=rng.randint(1, 5000))
                line += (f'  <row Id="{aid}" PostTypeId="2" ParentId="{qid}" CreationDate="{ac.isoformat(timespec="milliseconds")}" '
                         f'Score="{rng.randint(-5, 300)}" Body={_attr(_body(rng, rng.random() < 0.5))} '
                         f'OwnerUserId="{rng.randint(1, 10**6)}" CommentCount="{rng.randint(0, 5)}" />\n')
            post_id += n_answers
            rows += 1 + n_answers
            if rng.random() < 0.03:
                post_id += 1
                line += f'  <row Id="{post_id}" PostTypeId="5" CreationDate="2012-01-01T00:00:00.000" Score="0" Body="&lt;p&gt;wiki&lt;/p&gt;" />\n'
                rows += 1
            fh.write(line)
            written += len(line.encode())
        fh.write("</posts>\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = write_posts(args.out, int(args.size_mb * 1024 * 1024), args.seed)
    print(f"wrote {n} rows to {args.out} ({args.out.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
