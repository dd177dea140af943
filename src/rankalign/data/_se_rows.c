/*
 * rankalign.data._se_rows: the hot parts of rankalign.data.stackexchange in C.
 *
 * PostsParser parses a Posts.xml stream into Arrow column buffers (see its section), and
 * records() writes the JSON lines of a conversion chunk. Each does what the Python code of
 * the module does, and hands anything out of the ordinary back to it; tests compare both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include <stdint.h>
#include <string.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include "_common.h"

/* ======================================================================================
 * PostsParser: the whole parse of a Posts.xml stream in C, with the libxml2 inside lxml
 * (bind() looks the push-parser functions up in lxml.etree's shared library, which exports
 * them). A SAX2 start-element callback reads the nine attributes that parse_posts uses
 * straight from libxml2's buffers (entities already decoded) and, for a well-formed
 * question or answer, writes the eleven column values into Arrow buffers: no Python object
 * per row. A row whose values are not plainly valid (an int that is not [-]digits, a date
 * not YYYY-MM-DDTHH:MM:SS[.fff[fff]], a missing field...) goes to the Python checks as a
 * dict of those nine attributes, so the result is parse_posts' by construction. Options are
 * lxml's for XMLParser(huge_tree=True); the first error is kept as lxml reports it.
 * ==================================================================================== */
typedef xmlParserCtxtPtr (*push_ctxt_fn)(xmlSAXHandlerPtr, void *, const char *, int, const char *);
typedef int (*parse_chunk_fn)(xmlParserCtxtPtr, const char *, int, int);
typedef void (*free_ctxt_fn)(xmlParserCtxtPtr);
typedef int (*use_options_fn)(xmlParserCtxtPtr, int);
static push_ctxt_fn x_push_ctxt;
static parse_chunk_fn x_parse_chunk;
static free_ctxt_fn x_free_ctxt;
static use_options_fn x_use_options;

static PyObject *py_bind(PyObject *self, PyObject *arg) {
    (void)self;
    static const char *const names[] = {"xmlCreatePushParserCtxt", "xmlParseChunk", "xmlFreeParserCtxt",
                                        "xmlCtxtUseOptions"};
    void *fns[4];
    int found = bind_symbols(arg, names, fns, 4);
    if (found <= 0) {
        if (found < 0) return NULL;
        Py_RETURN_FALSE;
    }
    x_push_ctxt = (push_ctxt_fn)fns[0];
    x_parse_chunk = (parse_chunk_fn)fns[1];
    x_free_ctxt = (free_ctxt_fn)fns[2];
    x_use_options = (use_options_fn)fns[3];
    Py_RETURN_TRUE;
}

/* one column: values (int64 / int8 / uint8 / string bytes), string offsets, validity bits */
typedef struct {
    buf_t values, offsets, valid;
    int64_t nulls;
} column_t;

enum { P_SEQ, P_ID, P_TYPE, P_PARENT, P_ACC, P_CREATED, P_SCORE, P_TITLE, P_TAGS, P_BODY, P_CODE, P_NCOLS };
enum { A_TYPE, A_ID, A_PARENT, A_ACC, A_DATE, A_SCORE, A_TITLE, A_TAGS, A_BODY, A_N };
static const char *ATTR_NAMES[A_N] = {"PostTypeId", "Id", "ParentId", "AcceptedAnswerId", "CreationDate",
                                      "Score", "Title", "Tags", "Body"};

typedef struct {
    PyObject_HEAD
    xmlParserCtxtPtr ctxt;
    xmlSAXHandler sax;
    column_t cols[P_NCOLS];
    int64_t rows;               /* fast rows in the buffers */
    PyObject *slow;             /* [(row number, {name: value})] */
    long long base, n, body_bytes, questions, answers, other;
    int failed;                 /* a Python error inside a callback: stop */
    int have_error;
    int err_line, err_col;
    PyObject *err_message;
} Parser;

static void col_free(column_t *c) {
    PyMem_Free(c->values.data);
    PyMem_Free(c->offsets.data);
    PyMem_Free(c->valid.data);
    memset(c, 0, sizeof *c);
}

static int col_valid(column_t *c, int64_t row, int valid) {
    if (row % 8 == 0) {
        unsigned char z = 0;
        if (buf_add(&c->valid, &z, 1) < 0) return -1;
    }
    if (valid) c->valid.data[row / 8] |= (unsigned char)(1u << (row % 8));
    else c->nulls++;
    return 0;
}

static int col_int64(column_t *c, int64_t row, int64_t v, int valid) {
    if (buf_add(&c->values, &v, 8) < 0) return -1;
    return col_valid(c, row, valid);
}

static int col_str(column_t *c, int64_t row, const xmlChar *s, size_t n, int valid) {
    if (c->offsets.len == 0) {
        int32_t zero = 0;
        if (buf_add(&c->offsets, &zero, 4) < 0) return -1;
    }
    if (c->values.len + n > INT32_MAX) return -2; /* too much for one chunk: Python row */
    if (valid && buf_add(&c->values, s, n) < 0) return -1;
    int32_t end = (int32_t)c->values.len;
    if (buf_add(&c->offsets, &end, 4) < 0) return -1;
    return col_valid(c, row, valid);
}

/* [-]digits, at most 18 of them: the int; else 0 and *ok = 0 (Python decides) */
static int64_t plain_int(const xmlChar *s, size_t n, int *ok) {
    size_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 18) {
        *ok = 0;
        return 0;
    }
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            *ok = 0;
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *ok = 1;
    return neg ? -v : v;
}

static int digits(const xmlChar *s, int n, int *v) {
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 1;
}

/* YYYY-MM-DDTHH:MM:SS with optional .fff or .ffffff, a valid date and time: what
   datetime.fromisoformat surely accepts (anything else is left to it) */
static int plain_date(const xmlChar *s, size_t n) {
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se, f;
    if (n != 19 && n != 23 && n != 26) return 0;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
        !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
        return 0;
    if (n > 19 && (s[19] != '.' || !digits(s + 20, (int)n - 20, &f))) return 0;
    if (y < 1 || mo < 1 || mo > 12 || h > 23 || mi > 59 || se > 59 || d < 1) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= dim[mo - 1] + (mo == 2 && leap);
}

/* Python's \s (str.isspace) at p: 1 if it is whitespace, else 0 */
static int is_space_at(const xmlChar *p, const xmlChar *end) {
    unsigned char c = p[0];
    if (c < 0x80) return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
    if (c == 0xc2 && p + 1 < end) return p[1] == 0x85 || p[1] == 0xa0;
    if (p + 2 < end) {
        if (c == 0xe1) return p[1] == 0x9a && p[2] == 0x80;
        if (c == 0xe2)
            return (p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf)) ||
                   (p[1] == 0x81 && p[2] == 0x9f);
        if (c == 0xe3) return p[1] == 0x80 && p[2] == 0x80;
    }
    return 0;
}

/* has_code_block: '"<code" in html and re.search(r"<code[\s>]", html, re.IGNORECASE)' */
static int has_code(const xmlChar *s, size_t n) {
    const xmlChar *end = s + n;
    if (n < 6 || memmem(s, n, "<code", 5) == NULL) return 0;
    for (const xmlChar *p = s; p + 5 < end; p++) {
        if (p[0] != '<' || (p[1] | 0x20) != 'c' || (p[2] | 0x20) != 'o' || (p[3] | 0x20) != 'd' || (p[4] | 0x20) != 'e')
            continue;
        if (p[5] == '>' || is_space_at(p + 5, end)) return 1;
    }
    return 0;
}

static int slow_row(Parser *self, const xmlChar **val, const size_t *len) {
    PyObject *d = PyDict_New();
    if (d == NULL) return -1;
    for (int k = 0; k < A_N; k++) {
        if (val[k] == NULL) continue;
        PyObject *v = PyUnicode_DecodeUTF8((const char *)val[k], (Py_ssize_t)len[k], "strict");
        if (v == NULL || PyDict_SetItemString(d, ATTR_NAMES[k], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return -1;
        }
        Py_DECREF(v);
    }
    PyObject *item = Py_BuildValue("(LN)", self->n, d);
    if (item == NULL) return -1;
    int rc = PyList_Append(self->slow, item);
    Py_DECREF(item);
    return rc;
}

static int eq(const xmlChar *s, size_t n, const char *lit) { return n == strlen(lit) && !memcmp(s, lit, n); }

/* the row, from its attribute values: 1 taken, 0 for Python, -1 error */
static int take_row(Parser *self, const xmlChar **val, const size_t *len) {
    if (val[A_TYPE] == NULL || val[A_ID] == NULL) return 0;
    int question = eq(val[A_TYPE], len[A_TYPE], "1");
    int answer = eq(val[A_TYPE], len[A_TYPE], "2");
    if (!question && !answer) {
        self->other++;
        return 1;
    }
    int ok_id, ok_score, ok_parent = 1, ok_acc = 1;
    if (val[A_BODY] == NULL || val[A_DATE] == NULL || val[A_SCORE] == NULL) return 0;
    int64_t id = plain_int(val[A_ID], len[A_ID], &ok_id);
    int64_t score = plain_int(val[A_SCORE], len[A_SCORE], &ok_score);
    if (!ok_id || !ok_score || !plain_date(val[A_DATE], len[A_DATE])) return 0;
    int64_t parent = 0, acc = 0;
    int has_acc = 0, code = 0;
    if (question) {
        if (val[A_TITLE] == NULL) return 0;
        if (val[A_ACC] != NULL && len[A_ACC] > 0) {
            acc = plain_int(val[A_ACC], len[A_ACC], &ok_acc);
            has_acc = 1;
        }
        if (!ok_acc) return 0;
        code = has_code(val[A_BODY], len[A_BODY]);
    } else {
        if (val[A_PARENT] == NULL) return 0;
        parent = plain_int(val[A_PARENT], len[A_PARENT], &ok_parent);
        if (!ok_parent) return 0;
    }
    /* the body must be valid UTF-8 for Arrow: libxml2 only hands out valid UTF-8 */
    int64_t r = self->rows;
    column_t *c = self->cols;
    unsigned char type = question ? 1 : 2, codeb = (unsigned char)code;
    if (c[P_BODY].values.len + len[A_BODY] > INT32_MAX / 2) return 0;
    int rc = 0;
    rc |= col_int64(&c[P_SEQ], r, self->base + self->n, 1);
    rc |= col_int64(&c[P_ID], r, id, 1);
    rc |= buf_add(&c[P_TYPE].values, &type, 1);
    rc |= col_int64(&c[P_PARENT], r, parent, answer);
    rc |= col_int64(&c[P_ACC], r, acc, has_acc);
    rc |= col_str(&c[P_CREATED], r, val[A_DATE], len[A_DATE], 1);
    rc |= col_int64(&c[P_SCORE], r, score, 1);
    rc |= col_str(&c[P_TITLE], r, val[A_TITLE], question ? len[A_TITLE] : 0, question);
    rc |= col_str(&c[P_TAGS], r, val[A_TAGS], (question && val[A_TAGS]) ? len[A_TAGS] : 0,
                  question && val[A_TAGS] != NULL);
    rc |= col_str(&c[P_BODY], r, val[A_BODY], len[A_BODY], 1);
    rc |= buf_add(&c[P_CODE].values, &codeb, 1);
    if (rc) {
        PyErr_NoMemory();
        return -1;
    }
    self->rows++;
    self->body_bytes += (long long)len[A_BODY];
    if (question) self->questions++; else self->answers++;
    return 1;
}

/* the index of an attribute name in ATTR_NAMES, or -1 (most rows have ~15 attributes: the
   first letter settles all but two cases) */
static int attr_index(const char *name) {
    int a, b = -1;
    switch (name[0]) {
    case 'P': a = A_TYPE; b = A_PARENT; break;
    case 'I': a = A_ID; break;
    case 'A': a = A_ACC; break;
    case 'C': a = A_DATE; break;
    case 'S': a = A_SCORE; break;
    case 'T': a = A_TITLE; b = A_TAGS; break;
    case 'B': a = A_BODY; break;
    default: return -1;
    }
    if (!strcmp(name, ATTR_NAMES[a])) return a;
    if (b >= 0 && !strcmp(name, ATTR_NAMES[b])) return b;
    return -1;
}

static void on_start(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *URI,
                     int nb_namespaces, const xmlChar **namespaces, int nb_attributes, int nb_defaulted,
                     const xmlChar **attributes) {
    (void)nb_namespaces; (void)namespaces; (void)nb_defaulted; (void)URI;
    Parser *self = (Parser *)ctx;
    if (self->failed || prefix != NULL || localname == NULL || strcmp((const char *)localname, "row") != 0) return;
    self->n++;
    const xmlChar *val[A_N] = {0};
    size_t len[A_N] = {0};
    for (int i = 0; i < nb_attributes; i++) {
        const xmlChar **a = attributes + 5 * i; /* localname, prefix, URI, value, end */
        if (a[1] != NULL) continue;
        int k = attr_index((const char *)a[0]);
        if (k >= 0) {
            val[k] = a[3];
            len[k] = (size_t)(a[4] - a[3]);
        }
    }
    int rc = take_row(self, val, len);
    if (rc == 0) rc = slow_row(self, val, len);
    if (rc < 0) self->failed = 1;
}

static void on_error(void *ctx, const xmlError *e) {
    Parser *self = (Parser *)ctx;
    if (self->have_error || e == NULL || e->level < XML_ERR_ERROR) return;
    const char *m = e->message ? e->message : "";
    size_t n = strlen(m);
    if (n && m[n - 1] == '\n') n--; /* as lxml: the end of line stripped */
    self->err_message = PyUnicode_DecodeUTF8(m, (Py_ssize_t)n, "replace");
    if (self->err_message == NULL) PyErr_Clear();
    self->err_line = e->line;
    self->err_col = e->int2;
    self->have_error = 1;
}

static void parser_reset_columns(Parser *self) {
    for (int i = 0; i < P_NCOLS; i++) col_free(&self->cols[i]);
    self->rows = 0;
    self->body_bytes = 0;
}

static int Parser_init(Parser *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"base", NULL};
    long long base;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L", kwlist, &base)) return -1;
    if (x_push_ctxt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() did not succeed");
        return -1;
    }
    PyObject *slow = PyList_New(0);
    if (slow == NULL) return -1;
    Py_XSETREF(self->slow, slow);
    self->base = base;
    memset(&self->sax, 0, sizeof self->sax);
    self->sax.initialized = XML_SAX2_MAGIC;
    self->sax.startElementNs = on_start;
    self->sax.serror = on_error;
    if (self->ctxt) x_free_ctxt(self->ctxt);
    self->ctxt = x_push_ctxt(&self->sax, self, NULL, 0, NULL);
    if (self->ctxt == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* lxml's XMLParser(huge_tree=True) for a document without a DTD (the caller leaves one with
       a DOCTYPE to lxml): NONET, BIG_LINES, HUGE; NOENT so that the attribute values reach the
       callback fully decoded (without it libxml2 hands "&amp;" over as "&#38;" for a tree
       builder to decode) - with no DTD there is no other entity to substitute */
    x_use_options(self->ctxt, XML_PARSE_NONET | XML_PARSE_BIG_LINES | XML_PARSE_HUGE | XML_PARSE_NOENT);
    return 0;
}

static void Parser_dealloc(Parser *self) {
    if (self->ctxt) x_free_ctxt(self->ctxt);
    parser_reset_columns(self);
    Py_XDECREF(self->slow);
    Py_XDECREF(self->err_message);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* feed(data: bytes, last: bool) -> None; the first error is in .error afterwards */
static PyObject *Parser_feed(Parser *self, PyObject *args) {
    Py_buffer buf;
    int last = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &buf, &last)) return NULL;
    if (buf.len > INT_MAX) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "feed at most 2 GB at a time");
        return NULL;
    }
    if (!self->have_error) x_parse_chunk(self->ctxt, (const char *)buf.buf, (int)buf.len, last);
    PyBuffer_Release(&buf);
    if (self->failed) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "row callback failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *bytes_of(buf_t *b) { return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len); }

/* take() -> (rows, [per column: (values, offsets or None, validity or None, nulls)], slow, body bytes) */
static PyObject *Parser_take(Parser *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *cols = PyList_New(P_NCOLS);
    if (cols == NULL) return NULL;
    for (int i = 0; i < P_NCOLS; i++) {
        column_t *c = &self->cols[i];
        PyObject *offs, *valid;
        if (c->offsets.len) offs = bytes_of(&c->offsets);
        else if (i == P_CREATED || i == P_TITLE || i == P_TAGS || i == P_BODY) {
            int32_t zero = 0;
            offs = PyBytes_FromStringAndSize((const char *)&zero, 4);
        } else {
            Py_INCREF(Py_None);
            offs = Py_None;
        }
        if (c->valid.len) valid = bytes_of(&c->valid);
        else {
            Py_INCREF(Py_None);
            valid = Py_None;
        }
        PyObject *t = Py_BuildValue("(NNNL)", bytes_of(&c->values), offs, valid, (long long)c->nulls);
        if (t == NULL) {
            Py_DECREF(cols);
            return NULL;
        }
        PyList_SET_ITEM(cols, i, t);
    }
    PyObject *out = Py_BuildValue("(LNOL)", (long long)self->rows, cols, self->slow, self->body_bytes);
    if (out == NULL) return NULL;
    PyObject *slow = PyList_New(0);
    if (slow == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    Py_SETREF(self->slow, slow);
    parser_reset_columns(self);
    return out;
}

static PyObject *Parser_size(Parser *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(self->rows + PyList_GET_SIZE(self->slow));
}

static PyObject *Parser_error(Parser *self, void *Py_UNUSED(closure)) {
    if (!self->have_error) Py_RETURN_NONE;
    return Py_BuildValue("(iiO)", self->err_line, self->err_col, self->err_message ? self->err_message : Py_None);
}

static PyMethodDef Parser_methods[] = {
    {"feed", (PyCFunction)Parser_feed, METH_VARARGS, "feed(data, last=False): parse the next bytes"},
    {"take", (PyCFunction)Parser_take, METH_NOARGS, "take the buffered rows (see the source) and start anew"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Parser_members[] = {
    {"n", T_LONGLONG, offsetof(Parser, n), READONLY, "rows seen"},
    {"body_bytes", T_LONGLONG, offsetof(Parser, body_bytes), READONLY, "body bytes buffered"},
    {"questions", T_LONGLONG, offsetof(Parser, questions), READONLY, "questions taken"},
    {"answers", T_LONGLONG, offsetof(Parser, answers), READONLY, "answers taken"},
    {"other", T_LONGLONG, offsetof(Parser, other), READONLY, "rows of other post types"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Parser_getset[] = {
    {"size", (getter)Parser_size, NULL, "rows buffered (fast and slow)", NULL},
    {"error", (getter)Parser_error, NULL, "(line, column, message) of the first error, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rankalign.data._se_rows.PostsParser",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Parses a Posts.xml stream with the libxml2 inside lxml (see the source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Parser_init,
    .tp_dealloc = (destructor)Parser_dealloc,
    .tp_methods = Parser_methods,
    .tp_members = Parser_members,
    .tp_getset = Parser_getset,
};

static PyObject *py_records(PyObject *self, PyObject *args);

static PyMethodDef module_methods[] = {
    {"bind", py_bind, METH_O, "bind(path of lxml.etree's library) -> True when its push parser can be used"},
    {"records", py_records, METH_VARARGS, "the JSON lines of a conversion chunk (see the source)"},
    {NULL, NULL, 0, NULL},
};


/* ======================================================================================
 * records(): the records of a conversion chunk, as JSON lines, for the default options (no
 * token limits, no pool maximum, no vote spread: the caller checks), with exactly the
 * rules of stackexchange._finish_question and the bytes orjson writes for its dicts.
 * ==================================================================================== */
/* a JSON string as orjson writes it: ", \ and control characters escaped, UTF-8 as is */
static int ostr(buf_t *o, PyObject *str) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL) return -1;
    if (buf_add(o, "\"", 1) < 0) return -1;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (buf_add(o, s + start, (size_t)(i - start)) < 0) return -1;
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            e = esc;
        }
        if (buf_str(o, e) < 0) return -1;
        start = i + 1;
    }
    if (buf_add(o, s + start, (size_t)(n - start)) < 0) return -1;
    return buf_add(o, "\"", 1);
}

/* a JSON value for a str, an int (64 bits), a bool or None */
static int oval(buf_t *o, PyObject *v) {
    if (v == Py_None) return buf_str(o, "null");
    if (v == Py_True) return buf_str(o, "true");
    if (v == Py_False) return buf_str(o, "false");
    if (PyUnicode_Check(v)) return ostr(o, v);
    if (PyLong_Check(v)) {
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred()) return -1;
        char num[32];
        int k = snprintf(num, sizeof num, "%lld", x);
        return buf_add(o, num, (size_t)k);
    }
    PyErr_SetString(PyExc_TypeError, "records(): unexpected value type");
    return -1;
}

/* a JSON string of str(v) */
static int ostr_of(buf_t *o, PyObject *v) {
    PyObject *s = PyObject_Str(v);
    if (s == NULL) return -1;
    int rc = ostr(o, s);
    Py_DECREF(s);
    return rc;
}

static int bump(PyObject *counter, const char *key) {
    PyObject *k = PyUnicode_FromString(key);
    if (k == NULL) return -1;
    PyObject *old = PyDict_GetItemWithError(counter, k);
    long v = old ? PyLong_AsLong(old) : 0;
    PyObject *nv = PyLong_FromLong(v + 1);
    int rc = nv ? PyDict_SetItem(counter, k, nv) : -1;
    Py_XDECREF(nv);
    Py_DECREF(k);
    return rc;
}

enum { S_QID, S_KIND, S_ID, S_TITLE, S_TAGS, S_BODY, S_CREATED, S_SCORE, S_ACC, S_UP, S_DOWN, S_NCOLS };

/* records(columns, texts, min_answers, has_votes, site, id_prefix, split_tags)
     -> (jsonl bytes, line lengths as uint32 bytes, [(created, responses, tags)], dropped, answers dropped, questions) */
static PyObject *py_records(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cols, *texts, *site, *prefix, *split_tags;
    int min_answers, has_votes;
    if (!PyArg_ParseTuple(args, "O!O!ipUUO", &PyTuple_Type, &cols, &PyList_Type, &texts, &min_answers, &has_votes,
                          &site, &prefix, &split_tags))
        return NULL;
    if (PyTuple_GET_SIZE(cols) != S_NCOLS) {
        PyErr_SetString(PyExc_ValueError, "records(): 11 columns are needed");
        return NULL;
    }
    PyObject *c[S_NCOLS];
    Py_ssize_t n = PyList_GET_SIZE(texts);
    for (int k = 0; k < S_NCOLS; k++) {
        c[k] = PyTuple_GET_ITEM(cols, k);
        if (!PyList_Check(c[k]) || PyList_GET_SIZE(c[k]) != n) {
            PyErr_SetString(PyExc_ValueError, "records(): columns and texts of different lengths");
            return NULL;
        }
    }
    buf_t o = {0}, lens = {0};
    PyObject *stats = PyList_New(0), *dropped = PyDict_New(), *adropped = PyDict_New();
    PyObject *result = NULL, *resp_pos = NULL;
    long questions = 0;
    if (stats == NULL || dropped == NULL || adropped == NULL) goto done;
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t end = i + 1; /* a question's rows: the same qid */
        while (end < n) {
            int same = PyObject_RichCompareBool(PyList_GET_ITEM(c[S_QID], end), PyList_GET_ITEM(c[S_QID], i), Py_EQ);
            if (same < 0) goto done;
            if (!same) break;
            end++;
        }
        questions++;
        PyObject *acc = PyList_GET_ITEM(c[S_ACC], i);
        PyObject *qtext = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_Check(qtext)) {
            PyErr_SetString(PyExc_TypeError, "records(): texts must be str");
            goto done;
        }
        /* answers: which ones stay (a non-empty text), and whether the accepted one went */
        int acc_dropped = 0;
        Py_ssize_t kept = 0;
        for (Py_ssize_t j = i + 1; j < end; j++) {
            PyObject *t = PyList_GET_ITEM(texts, j);
            if (!PyUnicode_Check(t)) {
                PyErr_SetString(PyExc_TypeError, "records(): texts must be str");
                goto done;
            }
            if (PyUnicode_GET_LENGTH(t) == 0) {
                if (bump(adropped, "empty answer body") < 0) goto done;
                int is_acc = PyObject_RichCompareBool(PyList_GET_ITEM(c[S_ID], j), acc, Py_EQ);
                if (is_acc < 0) goto done;
                acc_dropped |= is_acc;
            } else kept++;
        }
        const char *reason = NULL;
        if (acc_dropped) reason = "accepted answer filtered";
        else if (kept < min_answers) reason = "pool too small";
        else if (PyUnicode_GET_LENGTH(qtext) == 0) reason = "empty body";
        if (reason != NULL) {
            if (bump(dropped, reason) < 0) goto done;
            i = end;
            continue;
        }
        size_t start_len = o.len;
        PyObject *title = PyList_GET_ITEM(c[S_TITLE], i);
        PyObject *tstrip = title == Py_None ? PyUnicode_FromString("") : PyObject_CallMethod(title, "strip", NULL);
        if (tstrip == NULL) goto done;
        PyObject *tags = PyObject_CallOneArg(split_tags, PyList_GET_ITEM(c[S_TAGS], i));
        if (tags == NULL || !PyList_Check(tags)) {
            Py_DECREF(tstrip);
            Py_XDECREF(tags);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "records(): split_tags must return a list");
            goto done;
        }
        int rc = 0;
        rc |= buf_str(&o, "{\"id\":\"");
        {   /* id_prefix + str(q_id), as one JSON string */
            PyObject *qs = PyObject_Str(PyList_GET_ITEM(c[S_ID], i));
            PyObject *full = qs ? PyUnicode_Concat(prefix, qs) : NULL;
            Py_XDECREF(qs);
            if (full == NULL) rc = -1;
            else {
                o.len -= 1; /* ostr writes its own opening quote */
                rc |= ostr(&o, full);
                Py_DECREF(full);
            }
        }
        rc |= buf_str(&o, ",\"prompt\":");
        {
            PyObject *prompt = PyUnicode_FromFormat("%U\n\n%U", tstrip, qtext);
            if (prompt == NULL) rc = -1;
            else {
                rc |= ostr(&o, prompt);
                Py_DECREF(prompt);
            }
        }
        rc |= buf_str(&o, ",\"responses\":[");
        int first = 1;
        for (Py_ssize_t j = i + 1; j < end && rc == 0; j++) {
            PyObject *t = PyList_GET_ITEM(texts, j);
            if (PyUnicode_GET_LENGTH(t) == 0) continue;
            PyObject *aid = PyList_GET_ITEM(c[S_ID], j);
            int is_acc = PyObject_RichCompareBool(aid, acc, Py_EQ);
            if (is_acc < 0) {
                rc = -1;
                break;
            }
            rc |= buf_str(&o, first ? "{\"text\":" : ",{\"text\":");
            first = 0;
            rc |= ostr(&o, t);
            rc |= buf_str(&o, ",\"attributes\":{\"votes\":");
            rc |= oval(&o, PyList_GET_ITEM(c[S_SCORE], j));
            rc |= buf_str(&o, ",\"created\":");
            rc |= oval(&o, PyList_GET_ITEM(c[S_CREATED], j));
            rc |= buf_str(&o, is_acc ? ",\"accepted\":true,\"post_id\":" : ",\"accepted\":false,\"post_id\":");
            rc |= ostr_of(&o, aid);
            if (has_votes) {
                rc |= buf_str(&o, ",\"up\":");
                rc |= oval(&o, PyList_GET_ITEM(c[S_UP], j));
                rc |= buf_str(&o, ",\"down\":");
                rc |= oval(&o, PyList_GET_ITEM(c[S_DOWN], j));
            }
            rc |= buf_str(&o, "}}");
        }
        rc |= buf_str(&o, "],\"meta\":{\"title\":");
        rc |= ostr(&o, tstrip);
        rc |= buf_str(&o, ",\"tags\":[");
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(tags) && rc == 0; k++) {
            if (k) rc |= buf_str(&o, ",");
            rc |= oval(&o, PyList_GET_ITEM(tags, k));
        }
        rc |= buf_str(&o, "],\"accepted_answer_id\":");
        rc |= ostr_of(&o, acc);
        rc |= buf_str(&o, ",\"created\":");
        rc |= oval(&o, PyList_GET_ITEM(c[S_CREATED], i));
        rc |= buf_str(&o, ",\"score\":");
        rc |= oval(&o, PyList_GET_ITEM(c[S_SCORE], i));
        rc |= buf_str(&o, ",\"site\":");
        rc |= ostr(&o, site);
        rc |= buf_str(&o, ",\"source\":\"stackexchange\",\"question_id\":");
        rc |= ostr_of(&o, PyList_GET_ITEM(c[S_ID], i));
        if (has_votes) {
            rc |= buf_str(&o, ",\"up\":");
            rc |= oval(&o, PyList_GET_ITEM(c[S_UP], i));
            rc |= buf_str(&o, ",\"down\":");
            rc |= oval(&o, PyList_GET_ITEM(c[S_DOWN], i));
        }
        rc |= buf_str(&o, "}}\n");
        uint32_t line = (uint32_t)(o.len - start_len);
        if (rc == 0) rc = buf_add(&lens, (const char *)&line, 4);
        if (rc == 0) {
            PyObject *st = Py_BuildValue("(OnN)", PyList_GET_ITEM(c[S_CREATED], i), kept, tags);
            tags = NULL; /* the tuple has it */
            rc = st ? PyList_Append(stats, st) : -1;
            Py_XDECREF(st);
        }
        Py_XDECREF(tags);
        Py_DECREF(tstrip);
        if (rc) goto done;
        i = end;
    }
    result = Py_BuildValue("(NNOOOl)", PyBytes_FromStringAndSize(o.data ? o.data : "", (Py_ssize_t)o.len),
                           PyBytes_FromStringAndSize(lens.data ? lens.data : "", (Py_ssize_t)lens.len), stats,
                           dropped, adropped, questions);
done:
    (void)resp_pos;
    buf_free(&o);
    buf_free(&lens);
    Py_XDECREF(stats);
    Py_XDECREF(dropped);
    Py_XDECREF(adropped);
    return result;
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_se_rows", "The hot parts of the StackExchange pipeline in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__se_rows(void) {
    if (PyType_Ready(&ParserType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ParserType);
    if (PyModule_AddObject(m, "PostsParser", (PyObject *)&ParserType) < 0) {
        Py_DECREF(&ParserType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
