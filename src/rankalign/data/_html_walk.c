/*
 * rankalign.data._html_walk: HTML to text of rankalign.data.se_html in C.
 *
 * texts_of(bodies) parses each body, wrapped as se_html wraps it, with the libxml2 inside
 * lxml (bind() looks its HTML parser up in lxml.etree's shared library, which exports it;
 * nothing is linked), with the call, buffer, encoding and options of lxml's HTMLParser, so
 * the tree is the one lxml builds. It then does what the Python code of se_html does with
 * that tree: the walk (which tag does what, see se_html._walk), reading libxml2's node
 * structs (headers from lxml), and the clean-up (blank-line runs outside code collapsed
 * with Python's notion of whitespace, the text stripped, code blocks put in). Tests compare
 * the two on real and random bodies.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <libxml/tree.h>
#include <libxml/HTMLparser.h>


#include "_common.h"

enum { K_INLINE, K_PRE, K_CODE, K_BR, K_HR, K_IMG, K_LI, K_CELL, K_SKIP, K_BLOCK };

static const char *BLOCK_TAGS[] = {
    "p", "div", "blockquote", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
    "dl", "dt", "dd", "section", "article", "details", "summary", "thead", "tbody", NULL,
};

static int kind_of(const xmlChar *name) {
    const char *n = (const char *)name;
    if (n == NULL) return K_INLINE;
    if (!strcmp(n, "pre")) return K_PRE;
    if (!strcmp(n, "code")) return K_CODE;
    if (!strcmp(n, "br")) return K_BR;
    if (!strcmp(n, "hr")) return K_HR;
    if (!strcmp(n, "img")) return K_IMG;
    if (!strcmp(n, "li")) return K_LI;
    if (!strcmp(n, "td") || !strcmp(n, "th")) return K_CELL;
    if (!strcmp(n, "script") || !strcmp(n, "style")) return K_SKIP;
    for (const char **t = BLOCK_TAGS; *t; t++) {
        if (!strcmp(n, *t)) return K_BLOCK;
    }
    return K_INLINE;
}

static int is_text(const xmlNode *n) {
    return n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE;
}

/* lxml's element children: elements, comments, processing instructions, entity references */
static int is_child(const xmlNode *n) {
    return n->type == XML_ELEMENT_NODE || n->type == XML_COMMENT_NODE || n->type == XML_PI_NODE ||
           n->type == XML_ENTITY_REF_NODE;
}

static int add_text(buf_t *b, const xmlNode *n) {
    return n->content ? buf_str(b, (const char *)n->content) : 0;
}

/* itertext(): every text node under `el`, in document order (not el's tail) */
static int itertext(buf_t *b, const xmlNode *el, int depth) {
    if (depth > 10000) return 0;
    for (const xmlNode *c = el->children; c != NULL; c = c->next) {
        if (is_text(c)) {
            if (add_text(b, c) < 0) return -1;
        } else if (c->type == XML_ELEMENT_NODE) {
            if (itertext(b, c, depth + 1) < 0) return -1;
        }
    }
    return 0;
}

static int walk(buf_t *out, PyObject *codes, const xmlNode *el, int depth);

/* one child element of a walked element (its content and what it adds around it) */
static int child(buf_t *out, PyObject *codes, const xmlNode *c, int depth) {
    if (c->type != XML_ELEMENT_NODE) return 0; /* comment, PI, entity ref: dropped, tail kept */
    switch (kind_of(c->name)) {
    case K_INLINE:
        return walk(out, codes, c, depth + 1);
    case K_BLOCK:
        if (buf_add(out, "\n\n", 2) < 0 || walk(out, codes, c, depth + 1) < 0) return -1;
        return buf_add(out, "\n\n", 2);
    case K_CODE:
        if (buf_add(out, "`", 1) < 0 || itertext(out, c, depth + 1) < 0) return -1;
        return buf_add(out, "`", 1);
    case K_PRE: {
        buf_t code = {0};
        buf_t fence = {0};
        int rc = -1;
        char ph[32];
        if (itertext(&code, c, depth + 1) < 0) goto pre_done;
        size_t start = 0, end = code.len;
        while (start < end && code.data[start] == '\n') start++;
        while (end > start && code.data[end - 1] == '\n') end--;
        if (buf_add(&fence, "```\n", 4) < 0 || buf_add(&fence, code.data ? code.data + start : "", end - start) < 0 ||
            buf_add(&fence, "\n```", 4) < 0)
            goto pre_done;
        PyObject *s = PyUnicode_DecodeUTF8(fence.data, (Py_ssize_t)fence.len, "replace");
        if (s == NULL) goto pre_done;
        if (PyList_Append(codes, s) < 0) {
            Py_DECREF(s);
            goto pre_done;
        }
        Py_DECREF(s);
        int n = snprintf(ph, sizeof ph, "\n\n%c%zd%c\n\n", 0, PyList_GET_SIZE(codes) - 1, 0);
        rc = buf_add(out, ph, (size_t)n);
    pre_done:
        PyMem_Free(code.data);
        PyMem_Free(fence.data);
        return rc;
    }
    case K_LI:
        if (buf_add(out, "\n- ", 3) < 0 || walk(out, codes, c, depth + 1) < 0) return -1;
        return buf_add(out, "\n", 1);
    case K_BR:
        return buf_add(out, "\n", 1);
    case K_HR:
        return buf_add(out, "\n\n---\n\n", 7);
    case K_IMG:
        for (const xmlAttr *a = c->properties; a != NULL; a = a->next) {
            if (a->ns == NULL && a->name && !strcmp((const char *)a->name, "alt")) {
                for (const xmlNode *t = a->children; t != NULL; t = t->next) {
                    if (is_text(t) && add_text(out, t) < 0) return -1;
                }
                break;
            }
        }
        return 0;
    case K_CELL:
        if (walk(out, codes, c, depth + 1) < 0) return -1;
        return buf_add(out, " ", 1);
    default: /* K_SKIP: script, style */
        return 0;
    }
}

/* the content of `el` (its text, then each child and the child's tail), not el's own tail */
static int walk(buf_t *out, PyObject *codes, const xmlNode *el, int depth) {
    if (depth > 10000) {
        PyErr_SetString(PyExc_RecursionError, "HTML nested too deeply");
        return -1;
    }
    for (const xmlNode *c = el->children; c != NULL; c = c->next) {
        if (is_text(c)) {
            if (add_text(out, c) < 0) return -1;
        } else if (is_child(c)) {
            if (child(out, codes, c, depth) < 0) return -1;
        }
    }
    return 0;
}

/* byte length of the whitespace character at p (Python's str.isspace / re's \s), else 0 */
static size_t ws_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
    if (c == 0xc2 && p + 1 < end && (p[1] == 0x85 || p[1] == 0xa0)) return 2;
    if (p + 2 >= end) return 0;
    if (c == 0xe1 && p[1] == 0x9a && p[2] == 0x80) return 3;                       /* U+1680 */
    if (c == 0xe2 && p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 ||
                                      p[2] == 0xaf)) return 3;                     /* U+2000-200A, 2028, 2029, 202F */
    if (c == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) return 3;                       /* U+205F */
    if (c == 0xe3 && p[1] == 0x80 && p[2] == 0x80) return 3;                       /* U+3000 */
    return 0;
}

/* byte length of the whitespace character that ends just before `end`, else 0 */
static size_t ws_len_back(const unsigned char *start, const unsigned char *end) {
    for (size_t k = 1; k <= 3 && end - k >= start; k++) {
        const unsigned char *p = end - k;
        if ((*p & 0xc0) != 0x80) return ws_len(p, end) == k ? k : 0; /* the character's first byte */
    }
    return 0;
}

/* The Python walk's clean-up, on the walked text: blank-line runs (\n\s*\n) become "\n\n",
   the text is stripped, and each "\0<i>\0" placeholder becomes code block i. */
static PyObject *finish(const buf_t *in, PyObject *codes) {
    const unsigned char *p = (const unsigned char *)in->data, *end = p + in->len;
    buf_t out = {0};
    if (p == NULL) return PyUnicode_FromStringAndSize("", 0);
    while (p < end) { /* strip: leading and trailing whitespace */
        size_t k = ws_len(p, end);
        if (!k) break;
        p += k;
    }
    while (end > p) {
        size_t k = ws_len_back(p, end);
        if (!k) break;
        end -= k;
    }
    while (p < end) {
        if (*p == '\n') {
            const unsigned char *q = p + 1, *last = NULL;
            size_t k;
            while (q < end && (k = ws_len(q, end)) != 0) {
                if (*q == '\n') last = q;
                q += k;
            }
            if (last != NULL) {
                if (buf_add(&out, "\n\n", 2) < 0) goto fail;
                p = last + 1;
                continue;
            }
            if (buf_add(&out, "\n", 1) < 0) goto fail;
            p++;
        } else if (*p == 0) {
            Py_ssize_t i = 0;
            p++;
            while (p < end && *p != 0) i = i * 10 + (*p++ - '0');
            p++;
            Py_ssize_t n;
            if (i < 0 || i >= PyList_GET_SIZE(codes)) {
                PyErr_SetString(PyExc_RuntimeError, "bad code placeholder");
                goto fail;
            }
            const char *code = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(codes, i), &n);
            if (code == NULL || buf_add(&out, code, (size_t)n) < 0) goto fail;
        } else {
            const unsigned char *q = p + 1;
            while (q < end && *q != '\n' && *q != 0) q++;
            if (buf_add(&out, (const char *)p, (size_t)(q - p)) < 0) goto fail;
            p = q;
        }
    }
    PyObject *text = PyUnicode_DecodeUTF8(out.data ? out.data : "", (Py_ssize_t)out.len, "replace");
    PyMem_Free(out.data);
    return text;
fail:
    PyMem_Free(out.data);
    return NULL;
}

/* the walk and the clean-up of one <body>: its text as a new str */
static PyObject *text_of_node(const xmlNode *node) {
    PyObject *codes = PyList_New(0);
    if (codes == NULL) return NULL;
    buf_t out = {0};
    PyObject *text = NULL;
    if (walk(&out, codes, node, 0) == 0) text = finish(&out, codes);
    PyMem_Free(out.data);
    Py_DECREF(codes);
    return text;
}


/* ---- texts_of(): the parse too, for a list of bodies, with the libxml2 inside lxml ---- */
typedef htmlParserCtxtPtr (*new_ctxt_fn)(void);
typedef htmlDocPtr (*read_memory_fn)(htmlParserCtxtPtr, const char *, int, const char *, const char *, int);
typedef void (*free_doc_fn)(xmlDocPtr);
static new_ctxt_fn x_new_ctxt;
static read_memory_fn x_read_memory;
static free_doc_fn x_free_doc;
static htmlParserCtxtPtr html_ctxt;
/* lxml's HTMLParser defaults (parser.pxi: RECOVER | NONET | COMPACT); errors not reported
   (lxml collects them, we have no use for them) */
static const int HTML_OPTIONS = HTML_PARSE_RECOVER | HTML_PARSE_NONET | HTML_PARSE_COMPACT | HTML_PARSE_NOERROR |
                                HTML_PARSE_NOWARNING;
static PyObject *WRAP_HEAD, *WRAP_TAIL;

static PyObject *py_bind(PyObject *self, PyObject *arg) {
    (void)self;
    static const char *const names[] = {"htmlNewParserCtxt", "htmlCtxtReadMemory", "xmlFreeDoc"};
    void *fns[3];
    int found = bind_symbols(arg, names, fns, 3);
    if (found <= 0) {
        if (found < 0) return NULL;
        Py_RETURN_FALSE;
    }
    x_new_ctxt = (new_ctxt_fn)fns[0];
    x_read_memory = (read_memory_fn)fns[1];
    x_free_doc = (free_doc_fn)fns[2];
    if (html_ctxt == NULL) html_ctxt = x_new_ctxt();
    if (html_ctxt == NULL) {
        x_read_memory = NULL;
        Py_RETURN_FALSE;
    }
    if (WRAP_HEAD == NULL) WRAP_HEAD = PyUnicode_InternFromString("<html><body><div>");
    if (WRAP_TAIL == NULL) WRAP_TAIL = PyUnicode_InternFromString("</div></body></html>");
    if (WRAP_HEAD == NULL || WRAP_TAIL == NULL) return NULL;
    Py_RETURN_TRUE;
}

static const xmlNode *first_element(const xmlNode *n, const char *name) {
    for (; n != NULL; n = n->next) {
        if (n->type == XML_ELEMENT_NODE && (name == NULL || (n->name && !strcmp((const char *)n->name, name))))
            return n;
    }
    return NULL;
}

/* one body: its text (new ref), "" for a blank one, or None (new ref) when the caller must
   use the Python way (a NUL character, no document or no body, nesting too deep) */
static PyObject *text_of_body(PyObject *html) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(html);
    int kind = PyUnicode_KIND(html);
    const void *d = PyUnicode_DATA(html);
    Py_ssize_t i = 0;
    while (i < n && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, d, i))) i++;
    if (i == n) return PyUnicode_FromStringAndSize("", 0); /* html.strip() is empty */
    for (Py_ssize_t j = i; j < n; j++) {
        if (PyUnicode_READ(kind, d, j) == 0) Py_RETURN_NONE;
    }
    PyObject *head = PyUnicode_Concat(WRAP_HEAD, html);
    if (head == NULL) return NULL;
    PyObject *doc_text = PyUnicode_Concat(head, WRAP_TAIL);
    Py_DECREF(head);
    if (doc_text == NULL) return NULL;
    /* the str's own buffer and encoding, as lxml's _parseUnicodeDoc passes them */
    Py_ssize_t len = PyUnicode_GET_LENGTH(doc_text);
    const char *enc;
    switch (PyUnicode_KIND(doc_text)) {
    case PyUnicode_1BYTE_KIND:
        enc = PyUnicode_MAX_CHAR_VALUE(doc_text) <= 127 ? "UTF-8" : "ISO-8859-1";
        break;
    case PyUnicode_2BYTE_KIND:
        len *= 2;
        enc = PY_BIG_ENDIAN ? "UTF-16BE" : "UTF-16LE";
        break;
    default:
        len *= 4;
        enc = PY_BIG_ENDIAN ? "UTF-32BE" : "UTF-32LE";
    }
    if (len > INT_MAX) {
        Py_DECREF(doc_text);
        Py_RETURN_NONE;
    }
    htmlDocPtr doc = x_read_memory(html_ctxt, (const char *)PyUnicode_DATA(doc_text), (int)len, NULL, enc,
                                   HTML_OPTIONS);
    Py_DECREF(doc_text);
    if (doc == NULL) Py_RETURN_NONE;
    const xmlNode *root = first_element(doc->children, NULL);
    const xmlNode *body = root ? first_element(root->children, "body") : NULL;
    PyObject *text;
    if (body == NULL) {
        Py_INCREF(Py_None);
        text = Py_None;
    } else {
        text = text_of_node(body);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            text = Py_None;
        }
    }
    x_free_doc(doc);
    return text;
}

/* texts_of(bodies: list) -> list: text_of_body of each (None for the Python way) */
static PyObject *py_texts_of(PyObject *self, PyObject *arg) {
    (void)self;
    if (x_read_memory == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() first");
        return NULL;
    }
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a list of str is needed");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *html = PyList_GET_ITEM(arg, i), *text;
        if (html == Py_None) text = PyUnicode_FromStringAndSize("", 0);
        else if (!PyUnicode_Check(html)) {
            Py_INCREF(Py_None);
            text = Py_None;
        } else text = text_of_body(html);
        if (text == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, text);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"bind", py_bind, METH_O, "bind(path of lxml.etree's library) -> True when its HTML parser can be used"},
    {"texts_of", py_texts_of, METH_O, "texts_of(list of HTML bodies) -> their texts (None: use the Python way)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_html_walk", "The tree walk of rankalign.data.se_html in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__html_walk(void) { return PyModule_Create(&module); }
