"""HTML of StackExchange posts to plain text (StaCoCoQA step 3, seed 000 §3.1).

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

The parse and walk run in C (``rankalign.data._html_walk``, built with the package when a
compiler is at hand, with the libxml2 inside lxml; about twice as fast) or, without it,
in Python with the same result; ``RANKALIGN_PURE_PYTHON=1`` forces the Python code. Only lxml is needed (imported inside
the functions).
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
_PARSER: Any = None
_ETREE: Any = None
#: the C parse-and-walk of a list of bodies (rankalign.data._html_walk, built when a
#: compiler was at hand, with lxml's libxml2), or None
_C_TEXTS: Any = None
_FENCE = "\x00{}\x00"


def has_code_block(html: str | None) -> bool:
    """True when the raw post HTML holds a code element (``<pre><code>`` or ``<code>``).

    StaCoCoQA step 2 (seed 000 §3.1): "the question includes at least one code block".
    """
    if not html or "<code" not in html:
        return False
    return _CODE_RE.search(html) is not None


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
    if _C_TEXTS is not None:
        text = _C_TEXTS([html])[0]
        if text is not None:
            return text
    return _lxml_text(html)


def _lxml_text(html: str) -> str:
    """:func:`html_to_text` of a non-blank body, all in Python (lxml's parser, :func:`_walk`)."""
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
    try:
        return _py_text(root)
    except RecursionError:  # absurdly nested HTML: fall back to the bare text
        return " ".join("".join(root.itertext()).split())


# what each tag becomes (libxml2's HTML parser lowercases tag names); anything else is inline
_PRE, _CODE, _BR, _HR, _IMG, _LI, _CELL, _SKIP, _BLOCK = range(1, 10)
_KIND = {"pre": _PRE, "code": _CODE, "br": _BR, "hr": _HR, "img": _IMG, "li": _LI, "td": _CELL, "th": _CELL,
         "script": _SKIP, "style": _SKIP, **dict.fromkeys(_BLOCK_TAGS, _BLOCK)}
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")


def _py_text(root: Any) -> str:
    """The walk and its clean-up in Python (what ``_html_walk.texts_of`` does in C)."""
    parts: list[str] = []
    codes: list[str] = []
    _walk(root, parts, codes)
    text = _MANY_NEWLINES.sub("\n\n", "".join(parts)).strip()
    if codes:
        text = _PLACEHOLDER.sub(lambda m: codes[int(m.group(1))], text)
    return text


_SELF_TEST = ("<p>a &amp; <code>b</code></p><pre><code>\nx &lt; 1\n\n</code></pre><ul><li>c<br>d</li></ul>"
              "<img alt='e'><table><tr><td>f</td></tr></table><script>g</script><hr>h \u00a0\n\u2003\n\u00e9 ")


def html_to_texts(bodies: list[str | None]) -> list[str]:
    """:func:`html_to_text` of each body: one call into C for the whole list when the C
    module is built and bound to lxml's libxml2 (the same texts, ~25% faster per body)."""
    if _PARSER is None:
        _load()
    if _C_TEXTS is None:
        return [html_to_text(b) for b in bodies]
    texts = _C_TEXTS(bodies if isinstance(bodies, list) else list(bodies))
    for i, text in enumerate(texts):
        if text is None:  # a NUL character, no document or body, too deep: the Python way
            texts[i] = _lxml_text(bodies[i])  # type: ignore[arg-type]
    return texts


def _load() -> None:
    """Make the HTML parser, and pick up the C code when it is built, works with this lxml
    and gives the Python result on a sample that uses every rule (else it is not used)."""
    global _PARSER, _ETREE, _C_TEXTS
    import os

    from lxml import etree

    _ETREE = etree
    # a plain HTML parser: no lxml.html element classes (3x faster)
    _PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True)
    _C_TEXTS = None
    if os.environ.get("RANKALIGN_PURE_PYTHON"):
        return
    try:
        from rankalign.data import _html_walk
    except ImportError:
        return
    doc = etree.fromstring(f"<html><body><div>{_SELF_TEST}</div></body></html>", _PARSER)
    expected = _py_text(doc[0])
    try:
        if _html_walk.bind(etree.__file__) and _html_walk.texts_of([_SELF_TEST, "  ", None]) == [expected, "", ""]:
            _C_TEXTS = _html_walk.texts_of
    except Exception:  # any failure means: do not use it
        pass


def _walk(el: Any, out: list[str], codes: list[str]) -> None:
    """Append the text of ``el``'s content (not its tail) to ``out``."""
    append = out.append
    if el.text:
        append(el.text)
    for child in el:
        tag = child.tag
        kind = _KIND.get(tag)
        if kind is None:
            if isinstance(tag, str):  # a, strong, em, span, kbd, sup, ...: inline, keep the text
                _walk(child, out, codes)
            # else: comment or processing instruction: drop it, keep its tail
        elif kind == _BLOCK:
            append("\n\n")
            _walk(child, out, codes)
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
