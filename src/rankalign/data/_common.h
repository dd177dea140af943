/* Shared by the C extensions of rankalign.data: a growable byte buffer, and the lookup of
   the libxml2 functions inside lxml's already loaded library. */
#ifndef RANKALIGN_COMMON_H
#define RANKALIGN_COMMON_H

#include <Python.h>
#include <dlfcn.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

/* append n bytes of s; -1 with MemoryError set when memory runs out */
static int buf_add(buf_t *b, const void *s, size_t n) {
    if (n == 0) return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *p = PyMem_Realloc(b->data, cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

/* append a NUL-terminated string (without its NUL) */
static inline int buf_str(buf_t *b, const char *s) { return buf_add(b, s, strlen(s)); }

static inline void buf_free(buf_t *b) {
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* look up n functions by name in the already loaded shared library at path (a str:
   lxml.etree.__file__) into out: 1 when all are there, 0 when not (out untouched), -1 with
   an exception set when path is not a str */
static int bind_symbols(PyObject *path, const char *const *names, void **out, int n) {
    const char *p = PyUnicode_AsUTF8(path);
    if (p == NULL) return -1;
    void *lib = dlopen(p, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) return 0;
    void *found[16];
    if (n > 16) return 0;
    for (int i = 0; i < n; i++) {
        found[i] = dlsym(lib, names[i]);
        if (found[i] == NULL) return 0;
    }
    memcpy(out, found, sizeof(void *) * (size_t)n);
    return 1;
}

#endif
