"""The report as a list of blocks, rendered twice: Markdown (figures as PNG files beside it)
and one self-contained HTML page (figures as base64 ``data:`` URIs, inline CSS, no script,
no external URL).

Every string that may come from data, generations, configs or file names is escaped where it
is rendered: :func:`rankalign.evaluation.report.escape_cell` in Markdown tables,
``html.escape`` in HTML — a response holding ``<script>`` shows as text in both.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rankalign.evaluation.report import escape_cell, markdown_table


@dataclass
class Para:
    """A paragraph of plain text (escaped when rendered)."""

    text: str


@dataclass
class Table:
    """A table; cells are rendered as text (escaped)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass
class Figure:
    """A PNG figure: ``name`` is its file name under ``figures/`` in the Markdown version."""

    name: str
    png: bytes
    caption: str
    alt: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Para | Table | Figure] = field(default_factory=list)
    anchor: str = ""


def _md_text(text: str) -> str:
    """Plain text for Markdown prose: HTML-escaped so no tag from data is ever rendered."""
    return html.escape(str(text), quote=False)


def render_markdown(title: str, sections: Sequence[Section], figure_dir: str = "figures") -> str:
    """The Markdown report; figures are referenced as ``figures/NAME`` (written by the caller)."""
    lines = [f"# {_md_text(title)}", ""]
    for sec in sections:
        lines += [f"## {_md_text(sec.title)}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                lines += [_md_text(b.text), ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"*{_md_text(b.caption)}*", ""]
                lines += [markdown_table(list(b.headers), [list(r) for r in b.rows]), ""]
            else:
                alt = escape_cell(b.alt or b.caption).replace("[", "(").replace("]", ")")
                lines += [f"![{alt}]({figure_dir}/{b.name})", "", f"*{_md_text(b.caption)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{border-bottom:2px solid #333;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #bbb;padding:.25em .55em;text-align:left;vertical-align:top;white-space:pre-wrap;
max-width:38em;overflow-wrap:anywhere}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:.3em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-style:italic;font-size:.9em;color:#444}nav ul{columns:2}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(title: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page: inline CSS, figures as ``data:image/png;base64`` URIs, no script."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>", "<nav><ul>"]
    anchors = [sec.anchor or f"s{i}" for i, sec in enumerate(sections)]
    out += [f'<li><a href="#{_esc(a)}">{_esc(s.title)}</a></li>' for a, s in zip(anchors, sections)]
    out.append("</ul></nav>")
    for anchor, sec in zip(anchors, sections):
        out.append(f'<section id="{_esc(anchor)}"><h2>{_esc(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Para):
                out.append(f"<p>{_esc(b.text)}</p>")
            elif isinstance(b, Table):
                out.append("<table>")
                if b.caption:
                    out.append(f"<caption>{_esc(b.caption)}</caption>")
                out.append("<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in b.headers) + "</tr></thead>")
                out.append("<tbody>")
                out += ["<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in b.rows]
                out.append("</tbody></table>")
            else:
                data = base64.b64encode(b.png).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(b.alt or b.caption)}">'
                           f"<figcaption>{_esc(b.caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
