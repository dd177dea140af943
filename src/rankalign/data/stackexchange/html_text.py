"""HTML of StackExchange posts to plain text (StaCoCoQA step 3: Yang, Zhao, Hu, Li,
arXiv:2502.12189, §3.1).

The paper cleans every HTML tag with BeautifulSoup; we do the same cleaning with lxml's
HTML parser (libxml2, the parser BeautifulSoup calls with ``features="lxml"``, without
BeautifulSoup's tree wrapper, many times faster) and keep what matters for programming QA:

- ``<pre>`` blocks (``<pre><code>...</code></pre>``) become fenced Markdown code::

      ```
      code exactly as written, blank lines kept
      ```

- inline ``<code>x</code>`` becomes `` `x` ``;
- paragraphs, headings, block quotes, lists and tables are separated by a blank line,
  ``<li>`` items start with ``- ``, ``<br>`` is a newline, ``<img>`` keeps its alt text;
- HTML entities (``&lt;``, ``&amp;``, ``&#39;``...) are unescaped; an unknown entity
  (``&foo;``) is left as written;
- outside code, runs of three or more newlines collapse to one blank line.

Only lxml is needed (imported on first use).
"""

from __future__ import annotations

import re
from typing import Any

_BLOCK_TAGS = frozenset({
    "p", "div", "blockquote", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
    "dl", "dt", "dd", "section", "article", "details", "summary", "thead", "tbody",
})
_CODE_RE = re.compile(r"<code[\s>]", re.IGNORECASE)
_MANY_NEWLINES = re.compile(r"\n\s*\n")  # starts at a newline: fast to scan
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_FENCE = "\x00{}\x00"
# what each tag becomes (libxml2's HTML parser lowercases tag names); anything else is inline
_PRE, _CODE, _BR, _HR, _IMG, _LI, _CELL, _SKIP, _BLOCK = range(1, 10)
_KIND = {"pre": _PRE, "code": _CODE, "br": _BR, "hr": _HR, "img": _IMG, "li": _LI, "td": _CELL, "th": _CELL,
         "script": _SKIP, "style": _SKIP, **dict.fromkeys(_BLOCK_TAGS, _BLOCK)}
_PARSER: Any = None
_ETREE: Any = None


def has_code_block(html: str | None) -> bool:
    """True when the raw post HTML holds a code element (``<pre><code>`` or ``<code>``).

    StaCoCoQA step 2 (arXiv:2502.12189, §3.1): the question includes at least one code block.
    """
    if not html or "<code" not in html:
        return False
    return _CODE_RE.search(html) is not None


def html_to_texts(bodies: list[str | None]) -> list[str]:
    """:func:`html_to_text` of each body."""
    return [html_to_text(b) for b in bodies]


def html_to_text(html: str | None) -> str:
    """Convert a post body (HTML) to text with fenced code blocks; see the module docstring.

    Args:
        html: the ``Body`` attribute of a ``Posts.xml`` row (already XML-unescaped).
    Returns:
        The text, stripped; ``""`` for an empty or whitespace-only body.
    """
    if html is None or not html.strip():
        return ""
    if _PARSER is None:
        _load()
    etree = _ETREE
    try:
        doc = etree.fromstring(f"<html><body><div>{html}</div></body></html>", _PARSER)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return html.strip()
    if doc is None:
        return html.strip()
    # the body is the html element's first child (a direct index is 4x cheaper than find())
    root = doc[0] if len(doc) and doc[0].tag == "body" else doc.find("body")
    if root is None:
        return html.strip()
    parts: list[str] = []
    codes: list[str] = []
    try:
        _walk(root, parts, codes)
    except RecursionError:  # absurdly nested HTML: fall back to the bare text
        return " ".join("".join(root.itertext()).split())
    text = _MANY_NEWLINES.sub("\n\n", "".join(parts)).strip()
    if codes:  # code blocks were set aside so that the newline clean-up leaves them as written
        text = _PLACEHOLDER.sub(lambda m: codes[int(m.group(1))], text)
    return text


def _load() -> None:
    """Make the HTML parser: a plain one, without lxml.html's element classes (3x faster)."""
    global _PARSER, _ETREE
    from lxml import etree

    _ETREE = etree
    _PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True)


def _walk(el: Any, out: list[str], codes: list[str]) -> None:
    """Append the text of ``el``'s content (not its tail) to ``out``; ``<pre>`` blocks go to
    ``codes`` and leave a placeholder."""
    append = out.append
    if el.text:
        append(el.text)
    for child in el:
        tag = child.tag
        kind = _KIND.get(tag)
        if kind is None:
            if isinstance(tag, str):  # a, strong, em, span, kbd, sup, ...: inline, keep the text
                if len(child):
                    _walk(child, out, codes)
                elif (text := child.text) is not None:  # a leaf: its text, without a call
                    append(text)
            # else: comment or processing instruction: drop it, keep its tail
        elif kind == _BLOCK:
            append("\n\n")
            if len(child):
                _walk(child, out, codes)
            elif (text := child.text) is not None:
                append(text)
            append("\n\n")
        elif kind == _CODE:  # a leaf's text is its itertext(), without the iterator's cost
            append("`" + ((child.text or "") if not len(child) else "".join(child.itertext())) + "`")
        elif kind == _PRE:
            code = ((child.text or "") if not len(child) else "".join(child.itertext())).strip("\n")
            codes.append(f"```\n{code}\n```")
            append("\n\n" + _FENCE.format(len(codes) - 1) + "\n\n")
        elif kind == _LI:
            append("\n- ")
            _walk(child, out, codes)
            append("\n")
        elif kind == _BR:
            append("\n")
        elif kind == _HR:
            append("\n\n---\n\n")
        elif kind == _IMG:
            alt = child.get("alt")
            if alt:
                append(alt)
        elif kind == _CELL:
            _walk(child, out, codes)
            append(" ")
        # _SKIP (script, style): nothing
        tail = child.tail
        if tail:
            append(tail)
