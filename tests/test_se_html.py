"""HTML to text: the C parse and walk (rankalign.data._html_walk) against the Python code, on
hand-made cases, the real dumps' bodies and random, often malformed, tag soup."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from rankalign.data import se_html
from rankalign.data.se_html import html_to_text, html_to_texts

pytest.importorskip("lxml")

CASES = {
    "<p>Why does this fail &amp; how?</p><pre><code>if a &lt; b:\n\n\n    print(&quot;x&quot;)\n</code></pre><p>Thanks</p>":
        'Why does this fail & how?\n\n```\nif a < b:\n\n\n    print("x")\n```\n\nThanks',
    "<p>Call <code>df.head()</code> please</p>": "Call `df.head()` please",
    "<ul><li>one</li><li>two</li></ul>": "- one\n\n- two",
    "a<br>b &unknownentity; <img src='x' alt='pic'>": "a\nb &unknownentity; pic",
    "<pre>\n\nx\n\n</pre>": "```\nx\n```",
    "<pre></pre>": "```\n\n```",
    "<table><tr><td>a</td><th>b</th></tr></table>": "a b",
    "x<script>alert(1)</script>y<style>p{}</style>z<!-- c -->w": "xyzw",
    "<h2>T</h2><hr><blockquote><p>q</p></blockquote>": "T\n\n---\n\nq",
    "<p>a\n\n\n\nb</p>": "a\n\nb",
    "<p>caf\u00e9 <code>\u00fc</code> \u2192 \U0001f600</p>": "caf\u00e9 `\u00fc` \u2192 \U0001f600",
}

#: malformed or unusual pieces put into random bodies
_ODD = ["</body>", "</html>", "<body>", "</div>", "<div>", "<th>", "<caption>", "<form>", "<select><option>a",
        "<frameset>", "<noscript>", "<button>", "<dl><dt>a<dd>b", "<p><p>", "<head>", "</head>", "<html>",
        "<!DOCTYPE html>", "<?php x ?>", "<![CDATA[x]]>", '<a href="x', "<a title='y", '<b class="q>w', "<",
        "<?php", "<!DOCTYPE", "<![CDATA[", "&", '<img alt="', "</", "<a b=c", "<!--", "<img alt='a&amp;b'>",
        "<IMG ALT=up>", "<PRE>x</PRE>", "\u00e9\u4e2d", '<meta charset="latin1">',
        '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">', "\U0001f600", "\x85\xa0"]
_TAGS = ["p", "div", "pre", "code", "li", "ul", "a", "strong", "em", "blockquote", "h1", "td", "table", "span",
         "script", "textarea", "title", "br", "hr", "img", "th", "style"]


def _soup(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(0, 6)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(["x", "if a &lt; b", "  ", "\n", "\n\n\n", "&amp;", "&#39;q&#39;", "\u00e9",
                                     "&bogus;", "tab\tx", " y ", "&#x1F600;", "\u00a0", "\n\u2003\n", "\u3000",
                                     "&#x85;", "\n&nbsp;\n", "\u200b", "\r\n"]))
        elif r < 0.75 and depth < 5:
            tag = rng.choice(_TAGS)
            close = f"</{tag}>" if rng.random() < 0.8 else ""
            parts.append(f"<{tag}>{_soup(rng, depth + 1)}{close}")
        elif r < 0.9:
            parts.append(rng.choice(_ODD))
        else:
            parts.append(f"</{rng.choice(_TAGS)}>")
    return "".join(parts)


def _all_ways(monkeypatch, bodies: list[str | None]) -> tuple[list[str], list[str], list[str]]:
    """The texts: parsed and walked in C for the whole list, in C one at a time, and all in
    Python."""
    html_to_text("<p>x</p>")  # load the parser (and the C code, when built)
    if se_html._C_TEXTS is None:
        pytest.skip("the C walk is not built here (no compiler when installing); the Python walk is in use")
    fastest = html_to_texts(bodies)
    fast = [html_to_text(b) for b in bodies]
    monkeypatch.setattr(se_html, "_C_TEXTS", None)
    slow = [html_to_text(b) for b in bodies]
    return fastest, fast, slow


def test_hand_worked_cases(monkeypatch):
    for html, expected in CASES.items():
        assert html_to_text(html) == expected, html
    assert html_to_texts([*CASES, None, " \n", "a\x00b"]) == [*CASES.values(), "", "", html_to_text("a\x00b")]
    monkeypatch.setattr(se_html, "_C_TEXTS", None)
    for html, expected in CASES.items():
        assert html_to_text(html) == expected, html


def test_c_walk_equals_python_walk_on_random_tag_soup(monkeypatch):
    rng = random.Random(0)
    bodies = [_soup(rng) for _ in range(5000)]
    fastest, fast, slow = _all_ways(monkeypatch, bodies)
    for texts in (fastest, fast):
        bad = [(b, f, s) for b, f, s in zip(bodies, texts, slow, strict=True) if f != s]
        assert not bad, bad[:3]


def test_c_walk_equals_python_walk_on_real_bodies(monkeypatch, shared_data):
    bodies: list[str | None] = []
    for site in ("coffee", "ai.meta"):
        posts = shared_data / "stackexchange" / site / "Posts.xml"
        bodies += [r.get("Body") for r in ET.parse(posts).getroot().iter("row")]
    assert len(bodies) > 500
    fastest, fast, slow = _all_ways(monkeypatch, bodies)
    assert fastest == slow and fast == slow


def test_pure_python_switch(monkeypatch):
    html_to_text("<p>x</p>")
    for name in ("_PARSER", "_ETREE", "_C_TEXTS"):  # restored after the test
        monkeypatch.setattr(se_html, name, getattr(se_html, name))
    monkeypatch.setenv("RANKALIGN_PURE_PYTHON", "1")
    se_html._load()
    assert se_html._C_TEXTS is None
    assert html_to_texts(list(CASES)) == list(CASES.values())
