/*
 * rankalign.data._se_rows: the per-row work of parse_posts (rankalign.data.stackexchange)
 * in C, as the start(tag, attrib) callback of an lxml parser target.
 *
 * RowCollector(base, fromisoformat, has_code_block).start(tag, attrib) is called by lxml
 * for each start tag with the attributes in a dict. For a <row> it does what the Python
 * loop of parse_posts does for a well-formed question or answer: int() of Id, Score,
 * ParentId and AcceptedAnswerId (PyLong_FromUnicodeObject, which is what int() calls),
 * datetime.fromisoformat() of CreationDate, has_code_block() of a question's Body, and
 * appends the values to the eleven columns. Rows of other post types are only counted.
 * Every other row (a missing or invalid field, a missing PostTypeId or Id) is kept as
 * (row number, attrib) for the Python code, which reports it exactly as before: so the
 * result is the Python loop's by construction, only faster for the common case.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"

enum { C_SEQ, C_ID, C_TYPE, C_PARENT, C_ACCEPTED, C_CREATED, C_SCORE, C_TITLE, C_TAGS, C_BODY, C_CODE, N_COLS };

typedef struct {
    PyObject_HEAD
    PyObject *cols[N_COLS];
    PyObject *slow;         /* [(row number, attrib), ...] for the Python code */
    PyObject *fromiso;
    PyObject *has_code;
    long long base;         /* seq = base + row number */
    long long n;            /* rows seen */
    long long body_chars;   /* characters of the bodies in the columns */
    long long questions, answers, other;
} Collector;

static PyObject *K_ROW, *K_TYPE, *K_ID, *K_BODY, *K_DATE, *K_SCORE, *K_TITLE, *K_ACC, *K_TAGS, *K_PARENT;
static PyObject *S_ONE, *S_TWO;

static int new_columns(Collector *self) {
    for (int i = 0; i < N_COLS; i++) {
        PyObject *l = PyList_New(0);
        if (l == NULL) return -1;
        Py_XSETREF(self->cols[i], l);
    }
    PyObject *s = PyList_New(0);
    if (s == NULL) return -1;
    Py_XSETREF(self->slow, s);
    self->body_chars = 0;
    return 0;
}

static int Collector_init(Collector *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"base", "fromisoformat", "has_code_block", NULL};
    long long base;
    PyObject *fromiso, *has_code;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LOO", kwlist, &base, &fromiso, &has_code)) return -1;
    Py_INCREF(fromiso);
    Py_XSETREF(self->fromiso, fromiso);
    Py_INCREF(has_code);
    Py_XSETREF(self->has_code, has_code);
    self->base = base;
    self->n = self->questions = self->answers = self->other = 0;
    return new_columns(self);
}

static void Collector_dealloc(Collector *self) {
    for (int i = 0; i < N_COLS; i++) Py_XDECREF(self->cols[i]);
    Py_XDECREF(self->slow);
    Py_XDECREF(self->fromiso);
    Py_XDECREF(self->has_code);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* a new int from a str value, or NULL with no error set when it is not an int */
static PyObject *to_int(PyObject *s) {
    if (s == NULL || !PyUnicode_Check(s)) return NULL;
    PyObject *v = PyLong_FromUnicodeObject(s, 10);
    if (v == NULL) PyErr_Clear();
    return v;
}

static int append_new(PyObject *list, PyObject *v) { /* steals v */
    if (v == NULL) return -1;
    int rc = PyList_Append(list, v);
    Py_DECREF(v);
    return rc;
}

/* the fast path; returns 1 when the row was handled, 0 when it goes to the slow list, -1 on error */
static int fast_row(Collector *self, PyObject *a) {
    PyObject *ptype = PyDict_GetItemWithError(a, K_TYPE);
    if (ptype == NULL) return PyErr_Occurred() ? -1 : 0;
    PyObject *id_s = PyDict_GetItemWithError(a, K_ID);
    if (id_s == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(ptype)) return 0;
    int question = PyUnicode_Compare(ptype, S_ONE) == 0;
    int answer = !question && PyUnicode_Compare(ptype, S_TWO) == 0;
    if (PyErr_Occurred()) return -1;
    if (!question && !answer) {
        self->other++;
        return 1;
    }
    PyObject *body = PyDict_GetItemWithError(a, K_BODY);
    PyObject *date = PyDict_GetItemWithError(a, K_DATE);
    PyObject *score_s = PyDict_GetItemWithError(a, K_SCORE);
    if (PyErr_Occurred()) return -1;
    if (body == NULL || date == NULL || score_s == NULL || !PyUnicode_Check(body) || !PyUnicode_Check(date)) return 0;
    PyObject *title = NULL, *tags = NULL, *acc = NULL, *parent = NULL, *code = NULL;
    PyObject *id = to_int(id_s), *score = to_int(score_s);
    int rc = 0;
    if (id == NULL || score == NULL) goto done;
    PyObject *d = PyObject_CallOneArg(self->fromiso, date);
    if (d == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
            rc = -1;
            goto done;
        }
        PyErr_Clear();
        goto done;
    }
    Py_DECREF(d);
    if (question) {
        title = PyDict_GetItemWithError(a, K_TITLE);
        if (title == NULL) {
            rc = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
        PyObject *acc_s = PyDict_GetItemWithError(a, K_ACC);
        if (acc_s == NULL && PyErr_Occurred()) {
            rc = -1;
            goto done;
        }
        if (acc_s != NULL && !(PyUnicode_Check(acc_s) && PyUnicode_GET_LENGTH(acc_s) == 0)) {
            acc = to_int(acc_s); /* int(value) if value else None */
            if (acc == NULL) goto done;
        }
        tags = PyDict_GetItemWithError(a, K_TAGS);
        if (tags == NULL && PyErr_Occurred()) {
            rc = -1;
            goto done;
        }
        code = PyObject_CallOneArg(self->has_code, body);
        if (code == NULL) {
            rc = -1;
            goto done;
        }
    } else {
        parent = to_int(PyDict_GetItemWithError(a, K_PARENT));
        if (parent == NULL) {
            rc = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
    }
    /* all valid: append the row (the Python loop's order of columns) */
    if (append_new(self->cols[C_TYPE], PyLong_FromLong(question ? 1 : 2)) < 0 ||
        PyList_Append(self->cols[C_PARENT], parent ? parent : Py_None) < 0 ||
        PyList_Append(self->cols[C_ACCEPTED], acc ? acc : Py_None) < 0 ||
        PyList_Append(self->cols[C_TITLE], question ? title : Py_None) < 0 ||
        PyList_Append(self->cols[C_TAGS], tags ? tags : Py_None) < 0 ||
        PyList_Append(self->cols[C_CODE], question ? code : Py_False) < 0 ||
        append_new(self->cols[C_SEQ], PyLong_FromLongLong(self->base + self->n)) < 0 ||
        PyList_Append(self->cols[C_ID], id) < 0 || PyList_Append(self->cols[C_CREATED], date) < 0 ||
        PyList_Append(self->cols[C_SCORE], score) < 0 || PyList_Append(self->cols[C_BODY], body) < 0) {
        rc = -1;
        goto done;
    }
    self->body_chars += PyUnicode_GET_LENGTH(body);
    if (question) self->questions++; else self->answers++;
    rc = 1;
done:
    Py_XDECREF(id);
    Py_XDECREF(score);
    Py_XDECREF(acc);
    Py_XDECREF(parent);
    Py_XDECREF(code);
    return rc;
}

static PyObject *Collector_start(Collector *self, PyObject *args) {
    PyObject *tag, *attrib;
    if (!PyArg_ParseTuple(args, "OO", &tag, &attrib)) return NULL;
    if (!PyUnicode_Check(tag) || PyUnicode_Compare(tag, K_ROW) != 0) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    self->n++;
    int rc = PyDict_Check(attrib) ? fast_row(self, attrib) : 0;
    if (rc < 0) return NULL;
    if (rc == 0) {
        PyObject *item = Py_BuildValue("(LO)", self->n, attrib);
        if (append_new(self->slow, item) < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Collector_take(Collector *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *cols = PyTuple_New(N_COLS);
    if (cols == NULL) return NULL;
    for (int i = 0; i < N_COLS; i++) {
        Py_INCREF(self->cols[i]);
        PyTuple_SET_ITEM(cols, i, self->cols[i]);
    }
    PyObject *out = Py_BuildValue("(NOL)", cols, self->slow, self->body_chars);
    if (out == NULL || new_columns(self) < 0) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *Collector_size(Collector *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(PyList_GET_SIZE(self->cols[C_ID]) + PyList_GET_SIZE(self->slow));
}

static PyMethodDef Collector_methods[] = {
    {"start", (PyCFunction)Collector_start, METH_VARARGS, "lxml target callback: start(tag, attrib)"},
    {"take", (PyCFunction)Collector_take, METH_NOARGS,
     "take() -> (11 column lists, [(row number, attrib)] for Python, body characters); starts anew"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Collector_members[] = {
    {"n", T_LONGLONG, offsetof(Collector, n), READONLY, "rows seen"},
    {"body_chars", T_LONGLONG, offsetof(Collector, body_chars), READONLY, "body characters buffered"},
    {"questions", T_LONGLONG, offsetof(Collector, questions), READONLY, "questions taken"},
    {"answers", T_LONGLONG, offsetof(Collector, answers), READONLY, "answers taken"},
    {"other", T_LONGLONG, offsetof(Collector, other), READONLY, "rows of other post types"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Collector_getset[] = {
    {"size", (getter)Collector_size, NULL, "rows buffered (fast and slow)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rankalign.data._se_rows.RowCollector",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Collects the rows of a Posts.xml from lxml's target callbacks (see the module doc).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Collector_init,
    .tp_dealloc = (destructor)Collector_dealloc,
    .tp_methods = Collector_methods,
    .tp_members = Collector_members,
    .tp_getset = Collector_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_se_rows", "The per-row work of the StackExchange parse in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__se_rows(void) {
    if (PyType_Ready(&CollectorType) < 0) return NULL;
#define INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return NULL
    INTERN(K_ROW, "row");
    INTERN(K_TYPE, "PostTypeId");
    INTERN(K_ID, "Id");
    INTERN(K_BODY, "Body");
    INTERN(K_DATE, "CreationDate");
    INTERN(K_SCORE, "Score");
    INTERN(K_TITLE, "Title");
    INTERN(K_ACC, "AcceptedAnswerId");
    INTERN(K_TAGS, "Tags");
    INTERN(K_PARENT, "ParentId");
    INTERN(S_ONE, "1");
    INTERN(S_TWO, "2");
#undef INTERN
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CollectorType);
    if (PyModule_AddObject(m, "RowCollector", (PyObject *)&CollectorType) < 0) {
        Py_DECREF(&CollectorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
