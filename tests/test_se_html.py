"""HTML to text (rankalign.data.stackexchange.html_text): hand-made cases, and the texts of
random, often malformed, tag soup and of the real dumps' bodies against hashes recorded from
the pipeline before its rewrite in pure Python (its C walk and its Python walk gave the
same texts)."""

from __future__ import annotations

import hashlib
import json
import random
import xml.etree.ElementTree as ET

import pytest

from rankalign.data.stackexchange.html_text import html_to_text, html_to_texts

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


def _digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


def test_hand_worked_cases():
    for html, expected in CASES.items():
        assert html_to_text(html) == expected, html
    assert html_to_texts([*CASES, None, " \n", "a\x00b"]) == [*CASES.values(), "", "", html_to_text("a\x00b")]


def test_random_tag_soup_gives_the_recorded_texts():
    rng = random.Random(0)
    bodies = [_soup(rng) for _ in range(5000)]
    texts = html_to_texts(bodies)
    assert _digest(texts) == "2cfd1c39b1b7c46735d7ccba53d61efc1accaa203997136a6c5737d061a53ac5"
    for text in texts:  # outside code, no run of 3+ newlines; always stripped
        assert text == text.strip() and ("\n\n\n" not in text or "```" in text)


def test_real_bodies_give_the_recorded_texts(shared_data):
    bodies: list[str | None] = []
    for site in ("coffee", "ai.meta"):
        posts = shared_data / "stackexchange" / site / "Posts.xml"
        bodies += [r.get("Body") for r in ET.parse(posts).getroot().iter("row")]
    assert len(bodies) == 985
    assert _digest(html_to_texts(bodies)) == "be9e581cb03d6426f00f09a2ba1d7f4599dcf594d016611ee106b7d3e7336d1a"


def test_the_old_module_name_still_imports():
    from rankalign.data import se_html

    assert se_html.html_to_text is html_to_text
