/* nearstate._core: the compiled core of the store's read path.
 *
 * The pure-Python modules (encoding.py, index.py, read_state.py, fsst.py) are the reference;
 * this file does the same work without the interpreter in the loop:
 *
 *   Col      one field's column: decodes the value at an ordinal (narrow ints, scaled and
 *            plain floats, bools, plain or symbol-table (FSST) compressed string pools,
 *            references and nested records, lists, sets and dicts), nulls included.
 *   PkIndex  the primary-key table probe for int and str keys (CRC-32 of the canonical
 *            bytes, linear probing; the same table the producer writes).
 *   Record   the base of every record view: two slots (_ts, _ord) and a native to_dict.
 *   Field    a descriptor reading one field of a view through its Col.
 *   Maker    cls(ts, ordinal) without the interpreter; Getter: key -> view or default.
 *   fsst_encode  greedy longest-match encoding of values with a trained symbol table.
 *
 * Every read is bounds-checked against the section it reads: a damaged blob loaded without
 * verification raises nearstate's FormatError naming the column, never reads out of
 * bounds. The module holds no global mutable state apart from the error class it is given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_TPFLAGS_HAVE_VECTORCALL
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

static PyObject *FormatError = NULL; /* nearstate.errors.FormatError, set by set_errors() */
#define MALFORMED (FormatError ? FormatError : PyExc_ValueError) /* ValueError until set */

static PyObject *
format_error(PyObject *name, const char *what, Py_ssize_t o)
{
    PyErr_Format(MALFORMED, "column %R is malformed: %s (record %zd)", name, what, o);
    return NULL;
}

/* --- CRC-32 (IEEE 802.3, as zlib.crc32) ----------------------------------------------- */

static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t
crc32_of(const uint8_t *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* --- arrays over buffers --------------------------------------------------------------- */

typedef struct {
    Py_buffer *view; /* held while the column lives; allocated only when there is one, so
                        a column with few sections stays small (hundreds of columns a state) */
    const uint8_t *p;
    Py_ssize_t n; /* items */
    int w;        /* bytes per item: 1, 2, 4 or 8 */
    int has;
} Arr;

static int
arr_init(Arr *a, PyObject *obj, const char *what)
{
    memset(a, 0, sizeof *a);
    if (obj == NULL || obj == Py_None)
        return 0;
    a->view = (Py_buffer *)PyMem_Malloc(sizeof(Py_buffer));
    if (!a->view) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyObject_GetBuffer(obj, a->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyMem_Free(a->view);
        a->view = NULL;
        return -1;
    }
    a->has = 1;
    a->p = (const uint8_t *)a->view->buf;
    int w = (int)a->view->itemsize;
    if (w != 1 && w != 2 && w != 4 && w != 8) {
        PyErr_Format(PyExc_ValueError, "%s: item width %d is not 1, 2, 4 or 8", what, w);
        return -1;
    }
    a->w = w;
    if (a->view->len % w) {
        PyErr_Format(MALFORMED,
                     "%s: %zd bytes is not a whole number of %d-byte items", what,
                     a->view->len, w);
        return -1;
    }
    a->n = a->view->len / w;
    return 0;
}

static void
arr_release(Arr *a)
{
    if (a->has) {
        PyBuffer_Release(a->view);
        a->has = 0;
    }
    PyMem_Free(a->view);
    a->view = NULL;
}

static inline uint64_t
arr_u(const Arr *a, Py_ssize_t i)
{
    const uint8_t *p = a->p + i * a->w;
    switch (a->w) {
    case 1:
        return p[0];
    case 2: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

/* A sequence of unsigned ints: plain (narrow), or blocked frame of reference: value i is
 * blk[i >> 4] + rel[i], the block's base plus a narrow offset within the block. */
#define BLOCK_SHIFT 4

typedef struct {
    Arr rel;
    Arr blk;
} Seq;

static int
seq_init(Seq *q, PyObject *rel, PyObject *blk, const char *what)
{
    if (arr_init(&q->rel, rel, what) < 0 || arr_init(&q->blk, blk, what) < 0)
        return -1;
    if (q->blk.has && (q->blk.n << BLOCK_SHIFT) < q->rel.n) {
        PyErr_Format(MALFORMED,
                     "%s: %zd block bases for %zd values", what, q->blk.n, q->rel.n);
        return -1;
    }
    return 0;
}

static void
seq_release(Seq *q)
{
    arr_release(&q->rel);
    arr_release(&q->blk);
}

static inline uint64_t
seq_u(const Seq *q, Py_ssize_t i)
{
    uint64_t v = arr_u(&q->rel, i);
    if (q->blk.has)
        v += arr_u(&q->blk, i >> BLOCK_SHIFT);
    return v;
}

/* A str column with at most this many distinct values (a dictionary pool: countries, time
 * zones, kinds) keeps one str object per entry once read, as a dict of records would share
 * them: reading it is then an id lookup and a reference. At most ~64 kB per column. */
#define STR_CACHE_MAX 1024

/* --- Col ------------------------------------------------------------------------------- */

enum {
    K_INT = 0,
    K_FLOAT_SCALED = 1,
    K_FLOAT = 2,
    K_BOOL = 3,
    K_STR = 4,
    K_BYTES = 5,
    K_REF = 6,
    K_LIST = 7,
    K_SET = 8,
    K_DICT = 9,
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    Py_ssize_t n;
    Seq vals; /* ints, floats, bools, ordinals */
    int64_t base;
    int64_t scale;
    PyObject *scale_obj;
    Arr pool;
    Seq poffs, ids; /* string pools */
    int fsst;
    int nsym;
    uint64_t *sym; /* the symbol table (compressed pools only): 255 x 8 bytes */
    uint8_t *slen;
    Seq offs;              /* collections */
    PyObject *item, *key;  /* element columns (Col or any callable ordinal -> value) */
    PyObject *resolve, *target, *factory; /* references: resolve(target) -> factory */
    Arr nulls;
    Arr nrank;          /* sparse: nulls before each block of 64 records */
    PyObject **cache;   /* small dictionary pools: each entry's str, made on first read */
    Py_ssize_t ncache;
    Py_ssize_t n_vals;  /* values stored (fewer than records when sparse) */
    PyObject *name;
} ColObject;

static PyTypeObject ColType;
static PyTypeObject MakerType;

static PyObject *
cleared(void)
{
    PyErr_SetString(PyExc_ReferenceError, "nearstate: this object's state was released");
    return NULL;
}
static PyTypeObject RecordType;
static PyObject *call_get(PyObject *g, Py_ssize_t i);
static PyObject *maker_make(PyObject *maker, Py_ssize_t o);

#define Col_Check(o) (Py_TYPE(o) == &ColType)

/* The bytes of pool entry ``i`` (plain pools only). */
static int
pool_span(ColObject *c, Py_ssize_t i, const uint8_t **p, Py_ssize_t *len, Py_ssize_t o)
{
    if (i < 0 || i >= c->poffs.rel.n - 1) { /* not i + 1: an id of 2**63 - 1 overflows */
        format_error(c->name, "pool id out of range", o);
        return -1;
    }
    uint64_t s = seq_u(&c->poffs, i), e = seq_u(&c->poffs, i + 1);
    if (s > e || e > (uint64_t)c->pool.n) {
        format_error(c->name, "pool offsets out of order or past the pool", o);
        return -1;
    }
    *p = c->pool.p + s;
    *len = (Py_ssize_t)(e - s);
    return 0;
}

/* Decode FSST codes into out (room for 8 * n + 8 bytes); returns the length or -1. */
static Py_ssize_t
fsst_decode(ColObject *c, const uint8_t *codes, Py_ssize_t n, uint8_t *out, Py_ssize_t o)
{
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned k = codes[i];
        if (k == 255) {
            if (++i >= n) {
                format_error(c->name, "symbol-table escape at the end of a value", o);
                return -1;
            }
            out[w++] = codes[i];
        }
        else {
            if ((int)k >= c->nsym) {
                format_error(c->name, "code beyond the symbol table", o);
                return -1;
            }
            memcpy(out + w, &c->sym[k], 8);
            w += c->slen[k];
        }
    }
    return w;
}

/* The stored bytes of the value at ordinal o of a str/bytes column, decoded from the
 * symbol table if it has one. *tmp is set when the bytes live in a PyMem buffer. */
static int
str_bytes(ColObject *c, Py_ssize_t o, const uint8_t **p, Py_ssize_t *len, uint8_t *stack,
          Py_ssize_t stack_size, uint8_t **tmp)
{
    Py_ssize_t i = o;
    *tmp = NULL;
    if (c->ids.rel.has) {
        i = (Py_ssize_t)seq_u(&c->ids, o);
    }
    const uint8_t *q;
    Py_ssize_t n;
    if (pool_span(c, i, &q, &n, o) < 0)
        return -1;
    if (!c->fsst) {
        *p = q;
        *len = n;
        return 0;
    }
    Py_ssize_t need = 8 * n + 8;
    uint8_t *out = stack;
    if (need > stack_size) {
        out = *tmp = (uint8_t *)PyMem_Malloc(need);
        if (!out) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_ssize_t w = fsst_decode(c, q, n, out, o);
    if (w < 0) {
        if (*tmp) {
            PyMem_Free(*tmp);
            *tmp = NULL;
        }
        return -1;
    }
    *p = out;
    *len = w;
    return 0;
}

static int
int_at(ColObject *c, Py_ssize_t o, int64_t *v)
{
    *v = (int64_t)(seq_u(&c->vals, o) + (uint64_t)c->base);
    return 0;
}

static PyObject *
col_get(ColObject *c, Py_ssize_t o)
{
    if (o < 0 || o >= c->n) {
        PyErr_Format(PyExc_IndexError, "%U: ordinal %zd out of range 0..%zd", c->name, o,
                     c->n - 1);
        return NULL;
    }
    if (c->nulls.has) {
        Py_ssize_t b = o >> 3;
        if (b >= c->nulls.n)
            return format_error(c->name, "null bitmap shorter than the column", o);
        if ((c->nulls.p[b] >> (o & 7)) & 1)
            Py_RETURN_NONE;
        if (c->nrank.has) { /* sparse: the value's index is o less the nulls before it */
            Py_ssize_t start = (o >> 6) << 3, avail = c->nulls.n - start;
            uint64_t word = 0;
            memcpy(&word, c->nulls.p + start, avail < 8 ? (size_t)avail : 8);
            unsigned bits = (unsigned)(o & 63);
            word &= bits ? ((UINT64_C(1) << bits) - 1) : 0;
            uint64_t before = arr_u(&c->nrank, o >> 6) + (uint64_t)__builtin_popcountll(word);
            if (before > (uint64_t)o)
                return format_error(c->name, "null rank larger than the ordinal", o);
            o -= (Py_ssize_t)before;
            if (o >= c->n_vals) {
                PyErr_Format(PyExc_IndexError, "%U: ordinal out of range", c->name);
                return NULL;
            }
        }
    }
    switch (c->kind) {
    case K_INT: {
        int64_t v;
        int_at(c, o, &v);
        return PyLong_FromLongLong(v);
    }
    case K_FLOAT_SCALED: {
        int64_t v;
        int_at(c, o, &v);
        if (v > -(INT64_C(1) << 53) && v < (INT64_C(1) << 53))
            return PyFloat_FromDouble(c->scale == 1 ? (double)v : (double)v / (double)c->scale);
        /* beyond 2**53: let Python round exactly as the reference does */
        PyObject *i = PyLong_FromLongLong(v);
        if (!i)
            return NULL;
        PyObject *r = c->scale == 1 ? PyNumber_Float(i) : PyNumber_TrueDivide(i, c->scale_obj);
        Py_DECREF(i);
        return r;
    }
    case K_FLOAT: {
        const uint8_t *p = c->vals.rel.p + o * c->vals.rel.w;
        if (c->vals.rel.w == 4) {
            float f;
            memcpy(&f, p, 4);
            return PyFloat_FromDouble((double)f);
        }
        double d;
        memcpy(&d, p, 8);
        return PyFloat_FromDouble(d);
    }
    case K_BOOL:
        return PyBool_FromLong(c->vals.rel.p[o] != 0);
    case K_STR:
    case K_BYTES: {
        PyObject **slot = NULL;
        if (c->ncache) { /* a few distinct values: hand out one str object per entry */
            uint64_t i = seq_u(&c->ids, o);
            if (i < (uint64_t)c->ncache) {
                if (!c->cache) {
                    c->cache = (PyObject **)PyMem_Calloc((size_t)c->ncache, sizeof(PyObject *));
                    if (!c->cache)
                        return PyErr_NoMemory();
                }
                slot = &c->cache[i];
                if (*slot)
                    return Py_NewRef(*slot);
            }
        }
        uint8_t stack[512];
        uint8_t *tmp;
        const uint8_t *p;
        Py_ssize_t len;
        if (str_bytes(c, o, &p, &len, stack, sizeof stack, &tmp) < 0)
            return NULL;
        PyObject *r = c->kind == K_STR
                          ? PyUnicode_DecodeUTF8((const char *)p, len, "surrogatepass")
                          : PyBytes_FromStringAndSize((const char *)p, len);
        if (tmp)
            PyMem_Free(tmp);
        if (!r && c->kind == K_STR && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return format_error(c->name, "a value is not UTF-8", o);
        }
        if (r && slot)
            *slot = Py_NewRef(r);
        return r;
    }
    case K_REF: {
        int64_t v;
        int_at(c, o, &v);
        if (c->factory == NULL) {
            if (c->resolve == NULL)
                return cleared();
            PyObject *f = PyObject_CallOneArg(c->resolve, c->target);
            if (!f)
                return NULL;
            Py_XSETREF(c->factory, f);
        }
        if (Py_TYPE(c->factory) == &MakerType)
            return maker_make(c->factory, (Py_ssize_t)v);
        PyObject *ord = PyLong_FromLongLong(v);
        if (!ord)
            return NULL;
        PyObject *r = PyObject_CallOneArg(c->factory, ord);
        Py_DECREF(ord);
        return r;
    }
    case K_LIST:
    case K_SET:
    case K_DICT: {
        if (c->item == NULL || (c->kind == K_DICT && c->key == NULL))
            return cleared();
        uint64_t s = seq_u(&c->offs, o), e = seq_u(&c->offs, o + 1);
        if (s > e || e > (uint64_t)PY_SSIZE_T_MAX)
            return format_error(c->name, "collection offsets out of order", o);
        Py_ssize_t a = (Py_ssize_t)s, b = (Py_ssize_t)e;
        /* damaged offsets: refuse elements past a native element column before allocating */
        if (b > a && ((Col_Check(c->item) && b > ((ColObject *)c->item)->n) ||
                      (c->kind == K_DICT && Col_Check(c->key) && b > ((ColObject *)c->key)->n)))
            return format_error(c->name, "collection offsets past its elements", o);
        if (Py_EnterRecursiveCall(" while decoding a nested value"))
            return NULL;
        PyObject *r = NULL;
        if (c->kind == K_LIST) {
            /* slots up front only when a native element column bounds b - a; another
             * getter (long text, datetimes) may be asked for a huge damaged range */
            int pre = Col_Check(c->item);
            r = PyList_New(pre ? b - a : 0);
            if (r) {
                for (Py_ssize_t i = a; i < b; i++) {
                    PyObject *x = call_get(c->item, i);
                    if (!x) {
                        Py_CLEAR(r);
                        break;
                    }
                    if (pre) {
                        PyList_SET_ITEM(r, i - a, x);
                    }
                    else {
                        int rc = PyList_Append(r, x);
                        Py_DECREF(x);
                        if (rc < 0) {
                            Py_CLEAR(r);
                            break;
                        }
                    }
                }
            }
        }
        else if (c->kind == K_SET) {
            r = PySet_New(NULL);
            for (Py_ssize_t i = a; r && i < b; i++) {
                PyObject *x = call_get(c->item, i);
                if (!x || PySet_Add(r, x) < 0) {
                    Py_XDECREF(x);
                    Py_CLEAR(r);
                    break;
                }
                Py_DECREF(x);
            }
        }
        else {
            r = PyDict_New();
            for (Py_ssize_t i = a; r && i < b; i++) {
                PyObject *k = call_get(c->key, i);
                PyObject *x = k ? call_get(c->item, i) : NULL;
                if (!x || PyDict_SetItem(r, k, x) < 0) {
                    Py_XDECREF(k);
                    Py_XDECREF(x);
                    Py_CLEAR(r);
                    break;
                }
                Py_DECREF(k);
                Py_DECREF(x);
            }
        }
        Py_LeaveRecursiveCall();
        return r;
    }
    }
    PyErr_SetString(PyExc_SystemError, "nearstate._core: unknown column kind");
    return NULL;
}

static PyObject *
call_get(PyObject *g, Py_ssize_t i)
{
    if (g == NULL) /* cleared by the garbage collector while a cycle was torn down */
        return cleared();
    if (Col_Check(g))
        return col_get((ColObject *)g, i);
    PyObject *o = PyLong_FromSsize_t(i);
    if (!o)
        return NULL;
    PyObject *r = PyObject_CallOneArg(g, o);
    Py_DECREF(o);
    return r;
}

static inline int
ordinal_arg(PyObject *arg, Py_ssize_t *o)
{
    if (PyLong_CheckExact(arg)) {
        *o = PyLong_AsSsize_t(arg);
    }
    else {
        *o = PyNumber_AsSsize_t(arg, PyExc_IndexError);
    }
    if (*o == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

static PyObject *
col_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a column takes one ordinal");
        return NULL;
    }
    Py_ssize_t o;
    if (ordinal_arg(args[0], &o) < 0)
        return NULL;
    return col_get((ColObject *)self, o);
}

static int
load_symbols(ColObject *c, PyObject *fsym, PyObject *flen)
{
    Py_buffer s, l;
    if (PyObject_GetBuffer(fsym, &s, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(flen, &l, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&s);
        return -1;
    }
    int rc = -1;
    Py_ssize_t n = l.len;
    if (n > 255 || s.len != 8 * n) {
        PyErr_Format(MALFORMED, "column %R: its symbol table is damaged (%zd symbols, %zd bytes)",
                     c->name, n, s.len);
        goto done;
    }
    c->sym = (uint64_t *)PyMem_Calloc(255, sizeof(uint64_t));
    c->slen = (uint8_t *)PyMem_Calloc(255, 1);
    if (!c->sym || !c->slen) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t L = ((const uint8_t *)l.buf)[i];
        if (L < 1 || L > 8) {
            PyErr_Format(MALFORMED,
                         "column %R: its symbol table is damaged (symbol %zd has length %d)",
                         c->name, i, (int)L);
            goto done;
        }
        c->slen[i] = L;
        memcpy(&c->sym[i], (const uint8_t *)s.buf + 8 * i, 8);
    }
    c->nsym = (int)n;
    c->fsst = 1;
    rc = 0;
done:
    PyBuffer_Release(&s);
    PyBuffer_Release(&l);
    return rc;
}

static PyObject *
col_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"kind", "name", "vals", "vals_blk", "base", "scale", "pool",
                             "poffs", "poffs_blk", "ids", "ids_blk", "fsym", "flen", "offs",
                             "offs_blk", "item", "key", "resolve", "target", "nulls", "nrank",
                             NULL};
    int kind;
    long long base = 0, scale = 1;
    PyObject *name, *vals = NULL, *vals_blk = NULL, *pool = NULL, *poffs = NULL,
                    *poffs_blk = NULL, *ids = NULL, *ids_blk = NULL, *fsym = NULL, *flen = NULL,
                    *offs = NULL, *offs_blk = NULL, *item = NULL, *key = NULL, *resolve = NULL,
                    *target = NULL, *nulls = NULL, *nrank = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iU|$OOLLOOOOOOOOOOOOOOO", kwlist, &kind, &name,
                                     &vals, &vals_blk, &base, &scale, &pool, &poffs,
                                     &poffs_blk, &ids, &ids_blk, &fsym, &flen, &offs, &offs_blk,
                                     &item, &key, &resolve, &target, &nulls, &nrank))
        return NULL;
    ColObject *c = (ColObject *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->vectorcall = col_vectorcall;
    c->kind = kind;
    c->name = Py_NewRef(name);
    c->base = base;
    c->scale = scale;
    if (kind == K_FLOAT_SCALED) {
        if (scale <= 0) {
            PyErr_Format(MALFORMED, "column %R: scale %lld is not positive", name, scale);
            goto fail;
        }
        c->scale_obj = PyLong_FromLongLong(scale);
        if (!c->scale_obj)
            goto fail;
    }
    if (arr_init(&c->nulls, nulls, "nulls") < 0)
        goto fail;
    switch (kind) {
    case K_INT:
    case K_FLOAT_SCALED:
    case K_FLOAT:
    case K_BOOL:
    case K_REF:
        if (seq_init(&c->vals, vals, vals_blk, "values") < 0)
            goto fail;
        if (!c->vals.rel.has) {
            PyErr_SetString(PyExc_TypeError, "this column needs vals");
            goto fail;
        }
        if ((kind == K_FLOAT || kind == K_BOOL) && c->vals.blk.has) {
            PyErr_SetString(PyExc_ValueError, "float and bool columns are never blocked");
            goto fail;
        }
        if (kind == K_FLOAT && c->vals.rel.w != 4 && c->vals.rel.w != 8) {
            PyErr_SetString(PyExc_ValueError, "a float column is 4 or 8 bytes wide");
            goto fail;
        }
        if (kind == K_BOOL && c->vals.rel.w != 1) {
            PyErr_SetString(PyExc_ValueError, "a bool column is 1 byte wide");
            goto fail;
        }
        c->n = c->vals.rel.n;
        if (kind == K_REF) {
            if (!resolve || !target) {
                PyErr_SetString(PyExc_TypeError, "a reference column needs resolve and target");
                goto fail;
            }
            c->resolve = Py_NewRef(resolve);
            c->target = Py_NewRef(target);
        }
        break;
    case K_STR:
    case K_BYTES:
        if (arr_init(&c->pool, pool, "pool") < 0 ||
            seq_init(&c->poffs, poffs, poffs_blk, "pool offsets") < 0 ||
            seq_init(&c->ids, ids, ids_blk, "pool ids") < 0)
            goto fail;
        if (!c->pool.has || !c->poffs.rel.has) {
            PyErr_SetString(PyExc_TypeError, "a string column needs pool and poffs");
            goto fail;
        }
        c->n = c->ids.rel.has ? c->ids.rel.n : c->poffs.rel.n - 1;
        if (kind == K_STR && c->ids.rel.has && c->poffs.rel.n - 1 <= STR_CACHE_MAX)
            c->ncache = c->poffs.rel.n - 1 > 0 ? c->poffs.rel.n - 1 : 0;
        if (c->n < 0)
            c->n = 0;
        if (fsym && fsym != Py_None) {
            if (!flen || flen == Py_None) {
                PyErr_SetString(PyExc_TypeError, "a symbol table needs fsym and flen");
                goto fail;
            }
            if (load_symbols(c, fsym, flen) < 0)
                goto fail;
        }
        break;
    case K_LIST:
    case K_SET:
    case K_DICT:
        if (seq_init(&c->offs, offs, offs_blk, "offsets") < 0)
            goto fail;
        if (!c->offs.rel.has || !item || (kind == K_DICT && !key)) {
            PyErr_SetString(PyExc_TypeError, "a collection column needs offs and item (and key)");
            goto fail;
        }
        c->n = c->offs.rel.n - 1;
        if (c->n < 0)
            c->n = 0;
        c->item = Py_NewRef(item);
        c->key = Py_XNewRef(key);
        break;
    default:
        PyErr_Format(PyExc_ValueError, "unknown column kind %d", kind);
        goto fail;
    }
    c->n_vals = c->n;
    if (arr_init(&c->nrank, nrank, "null rank") < 0)
        goto fail;
    if (c->nrank.has) {
        if (!c->nulls.has) {
            PyErr_SetString(PyExc_TypeError, "a sparse column needs its null bitmap");
            goto fail;
        }
        c->n = c->nulls.n * 8; /* records: an upper bound (the bitmap's last byte is padded) */
        if (c->nrank.n * 64 < c->n) { /* nrank[o >> 6] for every o < n */
            PyErr_Format(MALFORMED, "column %R: its null rank is shorter than its bitmap", name);
            goto fail;
        }
    }
    return (PyObject *)c;
fail:
    Py_DECREF(c);
    return NULL;
}

static int
col_traverse(ColObject *c, visitproc visit, void *arg)
{
    Py_VISIT(c->item);
    Py_VISIT(c->key);
    Py_VISIT(c->resolve);
    Py_VISIT(c->factory);
    return 0;
}

static int
col_clear(ColObject *c)
{
    Py_CLEAR(c->item);
    Py_CLEAR(c->key);
    Py_CLEAR(c->resolve);
    Py_CLEAR(c->factory);
    return 0;
}

static void
col_dealloc(ColObject *c)
{
    PyObject_GC_UnTrack(c);
    col_clear(c);
    Py_CLEAR(c->target);
    Py_CLEAR(c->name);
    Py_CLEAR(c->scale_obj);
    seq_release(&c->vals);
    arr_release(&c->pool);
    seq_release(&c->poffs);
    seq_release(&c->ids);
    seq_release(&c->offs);
    arr_release(&c->nulls);
    arr_release(&c->nrank);
    PyMem_Free(c->sym);
    PyMem_Free(c->slen);
    if (c->cache) {
        for (Py_ssize_t i = 0; i < c->ncache; i++)
            Py_XDECREF(c->cache[i]);
        PyMem_Free(c->cache);
        c->cache = NULL;
    }
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static Py_ssize_t
col_len(ColObject *c)
{
    return c->n;
}

static PySequenceMethods col_as_seq = {.sq_length = (lenfunc)col_len};

static PyMemberDef col_members[] = {
    {"name", T_OBJECT, offsetof(ColObject, name), READONLY, "the column's name"},
    {"fsst", T_INT, offsetof(ColObject, fsst), READONLY, "1 if compressed with a symbol table"},
    {NULL},
};

static PyTypeObject ColType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.Col",
    .tp_doc = "One field's column: col(ordinal) decodes the value stored there.",
    .tp_basicsize = sizeof(ColObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ColObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = col_new,
    .tp_dealloc = (destructor)col_dealloc,
    .tp_traverse = (traverseproc)col_traverse,
    .tp_clear = (inquiry)col_clear,
    .tp_as_sequence = &col_as_seq,
    .tp_members = col_members,
};

/* --- PkIndex --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Arr slots;
    Arr tags; /* optional: the top byte of each slot's key's CRC */
    ColObject *keycol;
    int is_str;
} PkObject;

static PyTypeObject PkType;

static Py_ssize_t
format_i64(int64_t v, char *buf) /* decimal digits of v into buf[0..24); returns length */
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    Py_ssize_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    return len;
}

/* The ordinal of key, -1 if absent, -2 on error. */
static Py_ssize_t
pk_probe(PkObject *pk, PyObject *key)
{
    Py_ssize_t size = pk->slots.n;
    ColObject *kc = pk->keycol;
    if (kc == NULL) {
        cleared();
        return -2;
    }
    if (size == 0)
        return -1;
    if (!pk->is_str) {
        if (!PyLong_Check(key) || PyBool_Check(key))
            return -1;
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -2;
        if (overflow)
            return -1; /* a stored int64 never equals it */
        char buf[24];
        Py_ssize_t len = format_i64(v, buf);
        uint32_t crc = crc32_of((const uint8_t *)buf, len);
        uint8_t tag = (uint8_t)(crc >> 24);
        Py_ssize_t h = (Py_ssize_t)(crc % (uint64_t)size);
        for (Py_ssize_t step = 0; step < size; step++) {
            uint64_t s = arr_u(&pk->slots, h);
            if (!s)
                return -1;
            if (pk->tags.has && pk->tags.p[h] != tag) {
                h = h + 1 < size ? h + 1 : 0;
                continue;
            }
            Py_ssize_t o = (Py_ssize_t)(s - 1);
            if (s - 1 >= (uint64_t)kc->n) { /* unsigned: a slot over 2**63 is no negative o */
                format_error(kc->name, "primary-key table points past the column", o);
                return -2;
            }
            int64_t stored;
            int_at(kc, o, &stored);
            if (stored == v)
                return o;
            h = h + 1 < size ? h + 1 : 0;
        }
        return -1;
    }
    if (!PyUnicode_Check(key))
        return -1;
    Py_ssize_t klen;
    PyObject *enc = NULL;
    const char *kb = PyUnicode_AsUTF8AndSize(key, &klen);
    if (!kb) { /* lone surrogates: the reference encodes them with surrogatepass */
        PyErr_Clear();
        enc = PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
        if (!enc)
            return -2;
        kb = PyBytes_AS_STRING(enc);
        klen = PyBytes_GET_SIZE(enc);
    }
    Py_ssize_t result = -1;
    uint32_t crc = crc32_of((const uint8_t *)kb, klen);
    uint8_t tag = (uint8_t)(crc >> 24);
    Py_ssize_t h = (Py_ssize_t)(crc % (uint64_t)size);
    for (Py_ssize_t step = 0; step < size; step++) {
        uint64_t s = arr_u(&pk->slots, h);
        if (!s)
            break;
        if (pk->tags.has && pk->tags.p[h] != tag) {
            h = h + 1 < size ? h + 1 : 0;
            continue;
        }
        Py_ssize_t o = (Py_ssize_t)(s - 1);
        if (s - 1 >= (uint64_t)kc->n) { /* unsigned: a slot over 2**63 is no negative o */
            format_error(kc->name, "primary-key table points past the column", o);
            result = -2;
            break;
        }
        uint8_t stack[512];
        uint8_t *tmp;
        const uint8_t *p;
        Py_ssize_t len;
        if (str_bytes(kc, o, &p, &len, stack, sizeof stack, &tmp) < 0) {
            result = -2;
            break;
        }
        int eq = len == klen && memcmp(p, kb, klen) == 0;
        if (tmp)
            PyMem_Free(tmp);
        if (eq) {
            result = o;
            break;
        }
        h = h + 1 < size ? h + 1 : 0;
    }
    Py_XDECREF(enc);
    return result;
}

static PyObject *
pk_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a primary-key index takes one key");
        return NULL;
    }
    Py_ssize_t o = pk_probe((PkObject *)self, args[0]);
    if (o == -2)
        return NULL;
    return PyLong_FromSsize_t(o);
}

static PyObject *
pk_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"table", "keycol", "tags", NULL};
    PyObject *table, *keycol, *tags = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!|O", kwlist, &table, &ColType, &keycol,
                                     &tags))
        return NULL;
    ColObject *kc = (ColObject *)keycol;
    if (kc->nulls.has || !(kc->kind == K_INT || kc->kind == K_STR)) {
        PyErr_SetString(PyExc_ValueError, "a native key column is a non-null int or str column");
        return NULL;
    }
    PkObject *pk = (PkObject *)type->tp_alloc(type, 0);
    if (!pk)
        return NULL;
    pk->vectorcall = pk_vectorcall;
    if (arr_init(&pk->slots, table, "primary-key table") < 0) {
        Py_DECREF(pk);
        return NULL;
    }
    if (arr_init(&pk->tags, tags, "primary-key tags") < 0) {
        Py_DECREF(pk);
        return NULL;
    }
    if (pk->tags.has && (pk->tags.w != 1 || pk->tags.n != pk->slots.n)) {
        PyErr_Format(MALFORMED, "primary-key tags: %zd for %zd slots", pk->tags.n, pk->slots.n);
        Py_DECREF(pk);
        return NULL;
    }
    pk->keycol = (ColObject *)Py_NewRef(keycol);
    pk->is_str = kc->kind == K_STR;
    return (PyObject *)pk;
}

static int
pk_traverse(PkObject *pk, visitproc visit, void *arg)
{
    Py_VISIT(pk->keycol);
    return 0;
}

static int
pk_clear(PkObject *pk)
{
    Py_CLEAR(pk->keycol);
    return 0;
}

static void
pk_dealloc(PkObject *pk)
{
    PyObject_GC_UnTrack(pk);
    pk_clear(pk);
    arr_release(&pk->slots);
    arr_release(&pk->tags);
    Py_TYPE(pk)->tp_free((PyObject *)pk);
}

static PyTypeObject PkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.PkIndex",
    .tp_doc = "The stored primary-key table: index(key) -> ordinal, or -1.",
    .tp_basicsize = sizeof(PkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(PkObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = pk_new,
    .tp_dealloc = (destructor)pk_dealloc,
    .tp_traverse = (traverseproc)pk_traverse,
    .tp_clear = (inquiry)pk_clear,
};

/* --- Record ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *ts;
    Py_ssize_t ord;
} RecordObject;

static int
record_init(RecordObject *self, PyObject *args, PyObject *kw)
{
    PyObject *ts;
    Py_ssize_t ord;
    static char *kwlist[] = {"ts", "ordinal", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "On", kwlist, &ts, &ord))
        return -1;
    Py_XSETREF(self->ts, Py_NewRef(ts));
    self->ord = ord;
    return 0;
}

static void
record_dealloc(RecordObject *self)
{
    Py_CLEAR(self->ts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *plain(PyObject *v);

static PyObject *
record_to_dict(RecordObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->ts) { /* never initialised, or its _ts deleted */
        PyErr_SetString(PyExc_AttributeError, "the view has no _ts");
        return NULL;
    }
    PyObject *cols = PyObject_GetAttrString(self->ts, "_columns");
    if (!cols)
        return NULL;
    if (!PyDict_Check(cols)) {
        Py_DECREF(cols);
        PyErr_SetString(PyExc_TypeError, "_columns is not a dict");
        return NULL;
    }
    if (!PyDict_CheckExact(cols)) { /* columns made on first use: make them all, in order */
        PyObject *r = PyObject_CallMethod(cols, "_fill", NULL);
        if (!r) {
            Py_DECREF(cols);
            return NULL;
        }
        Py_DECREF(r);
    }
    if (Py_EnterRecursiveCall(" in to_dict")) {
        Py_DECREF(cols);
        return NULL;
    }
    PyObject *out = PyDict_New();
    Py_ssize_t pos = 0;
    PyObject *name, *col;
    while (out && PyDict_Next(cols, &pos, &name, &col)) {
        Py_INCREF(name); /* borrowed from cols, which a getter (Python code) may change */
        PyObject *g = PyObject_GetAttrString(col, "get");
        PyObject *v = g ? call_get(g, self->ord) : NULL;
        Py_XDECREF(g);
        PyObject *p = v ? plain(v) : NULL;
        Py_XDECREF(v);
        if (!p || PyDict_SetItem(out, name, p) < 0) {
            Py_DECREF(name);
            Py_XDECREF(p);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(name);
        Py_DECREF(p);
    }
    Py_LeaveRecursiveCall();
    Py_DECREF(cols);
    return out;
}

/* A record's plain form: referenced records become keys, nested ones dicts. */
static PyObject *
plain(PyObject *v)
{
    if (PyObject_TypeCheck(v, &RecordType)) {
        RecordObject *r = (RecordObject *)v;
        if (!r->ts)
            return record_to_dict(r, NULL); /* raises */
        PyObject *td = PyObject_GetAttrString(r->ts, "typedef");
        if (!td)
            return NULL;
        PyObject *key = PyObject_GetAttrString(td, "key");
        Py_DECREF(td);
        if (!key)
            return NULL;
        int keyed = key != Py_None;
        Py_DECREF(key);
        if (!keyed)
            return record_to_dict(r, NULL);
        PyObject *ka = PyObject_GetAttrString(r->ts, "_key_at");
        if (!ka)
            return NULL;
        PyObject *res = call_get(ka, r->ord);
        Py_DECREF(ka);
        return res;
    }
    if (PyList_CheckExact(v)) {
        Py_ssize_t n = PyList_GET_SIZE(v);
        PyObject *out = PyList_New(n);
        for (Py_ssize_t i = 0; out && i < n; i++) {
            PyObject *x = plain(PyList_GET_ITEM(v, i));
            if (!x) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, x);
        }
        return out;
    }
    if (PySet_CheckExact(v)) {
        PyObject *out = PySet_New(NULL);
        PyObject *it = out ? PyObject_GetIter(v) : NULL, *x;
        if (!it) {
            Py_XDECREF(out);
            return NULL;
        }
        while ((x = PyIter_Next(it))) {
            PyObject *p = plain(x);
            Py_DECREF(x);
            if (!p || PySet_Add(out, p) < 0) {
                Py_XDECREF(p);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(p);
        }
        Py_DECREF(it);
        if (out && PyErr_Occurred())
            Py_CLEAR(out);
        return out;
    }
    if (PyDict_CheckExact(v)) {
        PyObject *out = PyDict_New(), *k, *x;
        Py_ssize_t pos = 0;
        while (out && PyDict_Next(v, &pos, &k, &x)) {
            PyObject *p = plain(x);
            if (!p || PyDict_SetItem(out, k, p) < 0) {
                Py_XDECREF(p);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(p);
        }
        return out;
    }
    return Py_NewRef(v);
}

static PyMethodDef record_methods[] = {
    {"to_dict", (PyCFunction)record_to_dict, METH_NOARGS,
     "The record as plain Python values; nested records become dicts, references keys."},
    {NULL},
};

static PyMemberDef record_members[] = {
    {"_ts", T_OBJECT_EX, offsetof(RecordObject, ts), 0, "the TypeState read"},
    {"_ord", T_PYSSIZET, offsetof(RecordObject, ord), 0, "the ordinal"},
    {NULL},
};

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.RecordBase",
    .tp_doc = "A view of one record: (TypeState, ordinal).",
    .tp_basicsize = sizeof(RecordObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)record_init,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_methods = record_methods,
    .tp_members = record_members,
};

/* --- Field: a descriptor reading one field of a view ----------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *getter;
    PyObject *doc;
} FieldObject;

static PyObject *
field_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *getter;
    if (!PyArg_ParseTuple(args, "O:Field", &getter))
        return NULL;
    FieldObject *f = (FieldObject *)type->tp_alloc(type, 0);
    if (f)
        f->getter = Py_NewRef(getter);
    return (PyObject *)f;
}

static PyObject *
field_get(FieldObject *f, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(f);
    if (!PyObject_TypeCheck(obj, &RecordType)) {
        PyErr_SetString(PyExc_TypeError, "a field descriptor reads record views only");
        return NULL;
    }
    return call_get(f->getter, ((RecordObject *)obj)->ord);
}

static int
field_set(FieldObject *f, PyObject *obj, PyObject *value)
{
    PyErr_SetString(PyExc_AttributeError, "records are read-only");
    return -1;
}

static int
field_traverse(FieldObject *f, visitproc visit, void *arg)
{
    Py_VISIT(f->getter);
    return 0;
}

static int
field_clear(FieldObject *f)
{
    Py_CLEAR(f->getter);
    return 0;
}

static void
field_dealloc(FieldObject *f)
{
    PyObject_GC_UnTrack(f);
    field_clear(f);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyMemberDef field_members[] = {
    {"getter", T_OBJECT, offsetof(FieldObject, getter), READONLY, "ordinal -> value"},
    {NULL},
};

static PyTypeObject FieldType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.Field",
    .tp_doc = "A descriptor: view.field reads getter(view._ord).",
    .tp_basicsize = sizeof(FieldObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = field_new,
    .tp_dealloc = (destructor)field_dealloc,
    .tp_traverse = (traverseproc)field_traverse,
    .tp_clear = (inquiry)field_clear,
    .tp_descr_get = (descrgetfunc)field_get,
    .tp_descr_set = (descrsetfunc)field_set,
    .tp_members = field_members,
};

/* --- Maker and Getter -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *ts;
} MakerObject;

static PyObject *
maker_make(PyObject *self, Py_ssize_t o)
{
    MakerObject *m = (MakerObject *)self;
    if (m->cls == NULL || m->ts == NULL)
        return cleared();
    RecordObject *r = (RecordObject *)m->cls->tp_alloc(m->cls, 0);
    if (!r)
        return NULL;
    r->ts = Py_NewRef(m->ts);
    r->ord = o;
    return (PyObject *)r;
}

static PyObject *
maker_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a maker takes one ordinal");
        return NULL;
    }
    Py_ssize_t o;
    if (ordinal_arg(args[0], &o) < 0)
        return NULL;
    return maker_make(self, o);
}

static PyObject *
maker_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *cls, *ts;
    if (!PyArg_ParseTuple(args, "O!O:Maker", &PyType_Type, &cls, &ts))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)cls, &RecordType)) {
        PyErr_SetString(PyExc_TypeError, "a maker makes subclasses of RecordBase");
        return NULL;
    }
    MakerObject *m = (MakerObject *)type->tp_alloc(type, 0);
    if (!m)
        return NULL;
    m->vectorcall = maker_vectorcall;
    m->cls = (PyTypeObject *)Py_NewRef(cls);
    m->ts = Py_NewRef(ts);
    return (PyObject *)m;
}

static PyObject *
maker_many(MakerObject *m, PyObject *arg)
{
    /* views of every ordinal in a buffer of uint32 (an index's group) */
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = b.len / 4;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        uint32_t o;
        memcpy(&o, (const uint8_t *)b.buf + 4 * i, 4);
        PyObject *r = maker_make((PyObject *)m, (Py_ssize_t)o);
        if (!r) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, r);
    }
    PyBuffer_Release(&b);
    return out;
}

static int
maker_traverse(MakerObject *m, visitproc visit, void *arg)
{
    Py_VISIT(m->cls);
    Py_VISIT(m->ts);
    return 0;
}

static int
maker_clear(MakerObject *m)
{
    Py_CLEAR(m->cls);
    Py_CLEAR(m->ts);
    return 0;
}

static void
maker_dealloc(MakerObject *m)
{
    PyObject_GC_UnTrack(m);
    maker_clear(m);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyMethodDef maker_methods[] = {
    {"many", (PyCFunction)maker_many, METH_O, "Views of the ordinals in a uint32 buffer."},
    {NULL},
};

static PyTypeObject MakerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.Maker",
    .tp_doc = "Maker(cls, ts)(ordinal) is cls(ts, ordinal), made without the interpreter.",
    .tp_basicsize = sizeof(MakerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(MakerObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = maker_new,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_traverse = (traverseproc)maker_traverse,
    .tp_clear = (inquiry)maker_clear,
    .tp_methods = maker_methods,
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *lookup; /* PkIndex or a callable key -> ordinal */
    PyObject *maker;  /* Maker */
} GetterObject;

static PyObject *
getter_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    GetterObject *g = (GetterObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *dflt = Py_None;
    if (nargs < 1 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    if (nkw) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "default") != 0) {
            PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
            return NULL;
        }
        dflt = args[1];
    }
    else if (nargs == 2) {
        dflt = args[1];
    }
    Py_ssize_t o;
    if (g->lookup == NULL || g->maker == NULL)
        return cleared();
    if (Py_TYPE(g->lookup) == &PkType) {
        o = pk_probe((PkObject *)g->lookup, args[0]);
        if (o == -2)
            return NULL;
    }
    else {
        PyObject *r = PyObject_CallOneArg(g->lookup, args[0]);
        if (!r)
            return NULL;
        o = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        if (o == -1 && PyErr_Occurred())
            return NULL;
    }
    if (o < 0)
        return Py_NewRef(dflt);
    return maker_make(g->maker, o);
}

static PyObject *
getter_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *lookup, *maker;
    if (!PyArg_ParseTuple(args, "OO!:Getter", &lookup, &MakerType, &maker))
        return NULL;
    GetterObject *g = (GetterObject *)type->tp_alloc(type, 0);
    if (!g)
        return NULL;
    g->vectorcall = getter_vectorcall;
    g->lookup = Py_NewRef(lookup);
    g->maker = Py_NewRef(maker);
    return (PyObject *)g;
}

static int
getter_traverse(GetterObject *g, visitproc visit, void *arg)
{
    Py_VISIT(g->lookup);
    Py_VISIT(g->maker);
    return 0;
}

static int
getter_clear(GetterObject *g)
{
    Py_CLEAR(g->lookup);
    Py_CLEAR(g->maker);
    return 0;
}

static void
getter_dealloc(GetterObject *g)
{
    PyObject_GC_UnTrack(g);
    getter_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nearstate._core.Getter",
    .tp_doc = "get(key, default=None): the view of the record with this key, or default.",
    .tp_basicsize = sizeof(GetterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(GetterObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = getter_new,
    .tp_dealloc = (destructor)getter_dealloc,
    .tp_traverse = (traverseproc)getter_traverse,
    .tp_clear = (inquiry)getter_clear,
};

/* --- FSST encoding ------------------------------------------------------------------------ */

/* fsst_encode(fsym: bytes, flen: bytes, values: list[bytes]) -> (codes: bytes, ends: bytes)
 * ends holds one uint64 per value: the end offset of its codes. Greedy longest match, the
 * same tokenisation as the reference in fsst.py. */
static PyObject *
fsst_encode(PyObject *mod, PyObject *args)
{
    Py_buffer s, l;
    PyObject *values;
    if (!PyArg_ParseTuple(args, "y*y*O!:fsst_encode", &s, &l, &PyList_Type, &values))
        return NULL;
    PyObject *result = NULL;
    uint8_t *out = NULL;
    uint64_t *ends = NULL;
    int16_t *short2 = NULL;
    int32_t *lstart = NULL;
    Py_ssize_t nsym = l.len;
    if (nsym > 255 || s.len != 8 * nsym) {
        PyErr_SetString(PyExc_ValueError, "fsst_encode: a table of at most 255 8-byte symbols");
        goto done;
    }
    uint64_t sym[255];
    uint8_t slen[255];
    for (Py_ssize_t i = 0; i < nsym; i++) {
        slen[i] = ((const uint8_t *)l.buf)[i];
        if (slen[i] < 1 || slen[i] > 8) {
            PyErr_SetString(PyExc_ValueError, "fsst_encode: symbol lengths are 1..8");
            goto done;
        }
        memcpy(&sym[i], (const uint8_t *)s.buf + 8 * i, 8);
    }
    /* Lookup tables, so a position costs a few probes whatever the table holds: symbols of
     * three bytes or more bucketed by their first two bytes (longest first, then by index),
     * and the first symbol of each two-byte and one-byte value. The greedy longest match
     * is the same as the reference's: a longer symbol that matches shares the two bytes. */
    int16_t short1[256];
    for (int b = 0; b < 256; b++)
        short1[b] = -1;
    for (Py_ssize_t i = nsym - 1; i >= 0; i--)
        if (slen[i] == 1)
            short1[sym[i] & 0xFF] = (int16_t)i;
    short2 = PyMem_Malloc(sizeof(int16_t) * 65536);
    lstart = PyMem_Calloc(65537, sizeof(int32_t));
    int16_t lorder[255];
    if (!short2 || !lstart) {
        PyErr_NoMemory();
        goto done;
    }
    memset(short2, 0xFF, sizeof(int16_t) * 65536); /* -1 */
    for (Py_ssize_t i = nsym - 1; i >= 0; i--)
        if (slen[i] == 2)
            short2[sym[i] & 0xFFFF] = (int16_t)i;
    for (Py_ssize_t i = 0; i < nsym; i++)
        if (slen[i] >= 3)
            lstart[(sym[i] & 0xFFFF) + 1]++;
    for (int k = 0; k < 65536; k++)
        lstart[k + 1] += lstart[k];
    {
        /* fill each bucket longest first: a symbol goes after those of its bucket placed
         * before it (at most 255 symbols, so counting them is cheap) */
        int32_t placed[255];
        Py_ssize_t np_ = 0;
        for (int L = 8; L >= 3; L--)
            for (Py_ssize_t i = 0; i < nsym; i++)
                if (slen[i] == L) {
                    int32_t at = lstart[sym[i] & 0xFFFF], before = 0;
                    for (Py_ssize_t q = 0; q < np_; q++)
                        before += placed[q] == at;
                    placed[np_++] = at;
                    lorder[at + before] = (int16_t)i;
                }
    }
    Py_ssize_t nv = PyList_GET_SIZE(values), total = 0;
    for (Py_ssize_t i = 0; i < nv; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (!PyBytes_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "fsst_encode: values are bytes");
            goto done;
        }
        total += PyBytes_GET_SIZE(v);
    }
    out = PyMem_Malloc(2 * total + 1);
    ends = PyMem_Malloc(sizeof(uint64_t) * (nv + 1));
    if (!out || !ends) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < nv; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(v);
        Py_ssize_t n = PyBytes_GET_SIZE(v), j = 0;
        while (j < n) {
            Py_ssize_t rest = n - j;
            uint64_t word = 0;
            memcpy(&word, p + j, rest < 8 ? (size_t)rest : 8);
            int hit = -1;
            if (rest >= 2) {
                uint32_t key = (uint32_t)(word & 0xFFFF);
                for (int32_t k = lstart[key]; k < lstart[key + 1]; k++) {
                    int c = lorder[k];
                    int L = slen[c];
                    if (L > rest)
                        continue;
                    uint64_t mask = L == 8 ? ~UINT64_C(0) : ((UINT64_C(1) << (8 * L)) - 1);
                    if ((word & mask) == (sym[c] & mask)) {
                        hit = c;
                        break;
                    }
                }
                if (hit < 0)
                    hit = short2[key];
            }
            if (hit < 0)
                hit = short1[p[j]];
            if (hit >= 0) {
                out[w++] = (uint8_t)hit;
                j += slen[hit];
            }
            else {
                out[w++] = 255;
                out[w++] = p[j++];
            }
        }
        ends[i] = (uint64_t)w;
    }
    {
        PyObject *codes = PyBytes_FromStringAndSize((const char *)out, w);
        PyObject *e = PyBytes_FromStringAndSize((const char *)ends, sizeof(uint64_t) * nv);
        if (codes && e)
            result = PyTuple_Pack(2, codes, e);
        Py_XDECREF(codes);
        Py_XDECREF(e);
    }
done:
    PyMem_Free(short2);
    PyMem_Free(lstart);
    PyMem_Free(out);
    PyMem_Free(ends);
    PyBuffer_Release(&s);
    PyBuffer_Release(&l);
    return result;
}

/* --- staging helpers (nearstate.write_state, nearstate.encoding) -------------------------
 * Both return None where the caller's Python path must decide (a value of another type, a
 * string with no UTF-8 form, a mapping that is not a plain dict): that path is the
 * reference and gives the exact error. */

static uint64_t fnv1a(const uint8_t *p, int64_t n);

/* str_pool(values: list) -> (ids as uint32 bytes, uniques: list[bytes], total bytes)
 * Every value's UTF-8 bytes de-duplicated in first-seen order: ids[i] is the position of
 * values[i]'s bytes in uniques; total is the bytes of all values. */
static PyObject *
str_pool(PyObject *mod, PyObject *values)
{
    if (!PyList_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "str_pool: a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (n >= (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "str_pool: at most 2**32 - 1 values");
        return NULL;
    }
    PyObject *result = NULL, *ids = NULL, *uniques = NULL;
    int64_t *slots = NULL;
    const char **uptr = NULL;
    Py_ssize_t *ulen = NULL;
    Py_ssize_t size = 16;
    while (size < 2 * n)
        size <<= 1;
    slots = PyMem_Malloc(sizeof(int64_t) * (size_t)size);
    uptr = PyMem_Malloc(sizeof(char *) * (size_t)(n ? n : 1));
    ulen = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    ids = PyBytes_FromStringAndSize(NULL, 4 * n);
    uniques = PyList_New(0);
    if (!slots || !uptr || !ulen || !ids || !uniques) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < size; i++)
        slots[i] = -1;
    uint32_t *id = (uint32_t *)PyBytes_AS_STRING(ids);
    uint64_t mask = (uint64_t)size - 1;
    Py_ssize_t nu = 0, total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (!PyUnicode_CheckExact(v)) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(v, &len);
        if (!p) { /* a lone surrogate: the Python path escapes it */
            PyErr_Clear();
            result = Py_NewRef(Py_None);
            goto done;
        }
        total += len;
        uint64_t h = fnv1a((const uint8_t *)p, len) & mask;
        for (;;) {
            int64_t u = slots[h];
            if (u < 0) {
                PyObject *b = PyBytes_FromStringAndSize(p, len);
                if (!b || PyList_Append(uniques, b) < 0) {
                    Py_XDECREF(b);
                    goto done;
                }
                Py_DECREF(b);
                slots[h] = nu;
                uptr[nu] = p;
                ulen[nu] = len;
                id[i] = (uint32_t)nu++;
                break;
            }
            if (ulen[u] == len && memcmp(uptr[u], p, (size_t)len) == 0) {
                id[i] = (uint32_t)u;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    result = Py_BuildValue("(OOn)", ids, uniques, total);
done:
    PyMem_Free(slots);
    PyMem_Free(uptr);
    PyMem_Free(ulen);
    Py_XDECREF(ids);
    Py_XDECREF(uniques);
    return result;
}

/* gather(records: list, names: tuple[str], absent) -> (columns: list[list], bad: int)
 * columns[f][i] is records[i][names[f]], or ``absent`` where the record has no such key;
 * bad is the index of the first record holding a key not in names (-1: none). None when
 * some record is not exactly a dict. */
static PyObject *
gather(PyObject *mod, PyObject *args)
{
    PyObject *records, *names, *absent;
    if (!PyArg_ParseTuple(args, "O!O!O:gather", &PyList_Type, &records, &PyTuple_Type, &names,
                          &absent))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records), nf = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyDict_CheckExact(PyList_GET_ITEM(records, i)))
            Py_RETURN_NONE;
    PyObject *cols = PyList_New(nf);
    if (!cols)
        return NULL;
    for (Py_ssize_t f = 0; f < nf; f++) {
        PyObject *c = PyList_New(n);
        if (!c) {
            Py_DECREF(cols);
            return NULL;
        }
        PyList_SET_ITEM(cols, f, c);
    }
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(records, i);
        Py_ssize_t present = 0;
        for (Py_ssize_t f = 0; f < nf; f++) {
            PyObject *v = PyDict_GetItemWithError(r, PyTuple_GET_ITEM(names, f));
            if (!v) {
                if (PyErr_Occurred()) {
                    Py_DECREF(cols);
                    return NULL;
                }
                v = absent;
            }
            else
                present++;
            PyList_SET_ITEM(PyList_GET_ITEM(cols, f), i, Py_NewRef(v));
        }
        if (bad < 0 && present != PyDict_GET_SIZE(r))
            bad = i;
    }
    PyObject *out = Py_BuildValue("(Nn)", cols, bad);
    return out;
}

static PyObject *
set_errors(PyObject *mod, PyObject *cls)
{
    Py_XSETREF(FormatError, Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* --- bulk helpers for merging columns (nearstate.merge) ---------------------------------
 * Each takes contiguous buffers (uint8 data, int64 offsets or indexes), checks every offset
 * and index against the buffers before reading, and runs without the GIL. */

static int
offs_check(const int64_t *offs, Py_ssize_t n, Py_ssize_t datalen, const char *fn)
{
    /* offs holds n + 1 values, non-decreasing, within 0..datalen */
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "%s: offsets need at least one value", fn);
        return -1;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (offs[i] < 0 || offs[i] > datalen || (i && offs[i] < offs[i - 1])) {
            PyErr_Format(MALFORMED, "%s: offset %zd (%lld) is out of order or past the data",
                         fn, i, (long long)offs[i]);
            return -1;
        }
    }
    return 0;
}

static PyObject *
gather_slices(PyObject *mod, PyObject *args)
{
    Py_buffer d, o, x;
    if (!PyArg_ParseTuple(args, "y*y*y*:gather_slices", &d, &o, &x))
        return NULL;
    PyObject *out = NULL, *noffs = NULL, *result = NULL;
    const int64_t *offs = (const int64_t *)o.buf, *idx = (const int64_t *)x.buf;
    Py_ssize_t n = o.len / 8 - 1, k = x.len / 8;
    if (o.len % 8 || x.len % 8 || offs_check(offs, n, d.len, "gather_slices") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "gather_slices: int64 offsets and indexes");
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (idx[i] < 0 || idx[i] >= n) {
            PyErr_Format(PyExc_IndexError, "gather_slices: index %lld of %zd slices",
                         (long long)idx[i], n);
            goto done;
        }
        total += offs[idx[i] + 1] - offs[idx[i]];
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    noffs = PyBytes_FromStringAndSize(NULL, 8 * (k + 1));
    if (!out || !noffs)
        goto done;
    {
        uint8_t *w = (uint8_t *)PyBytes_AS_STRING(out);
        int64_t *no = (int64_t *)PyBytes_AS_STRING(noffs);
        const uint8_t *src = (const uint8_t *)d.buf;
        Py_BEGIN_ALLOW_THREADS
        int64_t at = 0;
        no[0] = 0;
        for (Py_ssize_t i = 0; i < k; i++) {
            int64_t a = offs[idx[i]], len = offs[idx[i] + 1] - a;
            memcpy(w + at, src + a, (size_t)len);
            at += len;
            no[i + 1] = at;
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_BuildValue("(OO)", out, noffs);
done:
    Py_XDECREF(out);
    Py_XDECREF(noffs);
    PyBuffer_Release(&d);
    PyBuffer_Release(&o);
    PyBuffer_Release(&x);
    return result;
}

static PyObject *
crc32_slices(PyObject *mod, PyObject *args)
{
    Py_buffer d, o;
    if (!PyArg_ParseTuple(args, "y*y*:crc32_slices", &d, &o))
        return NULL;
    PyObject *out = NULL;
    const int64_t *offs = (const int64_t *)o.buf;
    Py_ssize_t n = o.len / 8 - 1;
    if (o.len % 8 || offs_check(offs, n, d.len, "crc32_slices") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "crc32_slices: int64 offsets");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, 4 * n);
    if (!out)
        goto done;
    {
        uint32_t *h = (uint32_t *)PyBytes_AS_STRING(out);
        const uint8_t *src = (const uint8_t *)d.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++)
            h[i] = crc32_of(src + offs[i], (Py_ssize_t)(offs[i + 1] - offs[i]));
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&d);
    PyBuffer_Release(&o);
    return out;
}

static PyObject *
crc32_ints(PyObject *mod, PyObject *arg)
{
    Py_buffer a;
    if (PyObject_GetBuffer(arg, &a, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    if (a.len % 8) {
        PyErr_SetString(PyExc_ValueError, "crc32_ints: int64 values");
        goto done;
    }
    Py_ssize_t n = a.len / 8;
    out = PyBytes_FromStringAndSize(NULL, 4 * n);
    if (!out)
        goto done;
    {
        uint32_t *h = (uint32_t *)PyBytes_AS_STRING(out);
        const int64_t *v = (const int64_t *)a.buf;
        Py_BEGIN_ALLOW_THREADS
        char buf[32];
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t len = format_i64(v[i], buf);
            h[i] = crc32_of((const uint8_t *)buf, len);
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&a);
    return out;
}

/* fsst_decode_slices(data, offs, fsym, flen) -> (plain bytes, int64 offsets as bytes):
 * every slice of codes decoded with the symbol table. */
static PyObject *
fsst_decode_slices(PyObject *mod, PyObject *args)
{
    Py_buffer d, o, s, l;
    if (!PyArg_ParseTuple(args, "y*y*y*y*:fsst_decode_slices", &d, &o, &s, &l))
        return NULL;
    PyObject *out = NULL, *noffs = NULL, *result = NULL;
    uint8_t *buf = NULL;
    const int64_t *offs = (const int64_t *)o.buf;
    Py_ssize_t n = o.len / 8 - 1, nsym = l.len;
    uint64_t sym[255];
    uint8_t slen[255];
    if (o.len % 8 || offs_check(offs, n, d.len, "fsst_decode_slices") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fsst_decode_slices: int64 offsets");
        goto done;
    }
    if (nsym > 255 || s.len != 8 * nsym) {
        PyErr_SetString(MALFORMED, "fsst_decode_slices: a damaged symbol table");
        goto done;
    }
    for (Py_ssize_t i = 0; i < nsym; i++) {
        slen[i] = ((const uint8_t *)l.buf)[i];
        if (slen[i] < 1 || slen[i] > 8) {
            PyErr_SetString(MALFORMED, "fsst_decode_slices: symbol lengths are 1..8");
            goto done;
        }
        memcpy(&sym[i], (const uint8_t *)s.buf + 8 * i, 8);
    }
    noffs = PyBytes_FromStringAndSize(NULL, 8 * (n + 1));
    buf = PyMem_Malloc(8 * (size_t)d.len + 8);
    if (!noffs || !buf) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    {
        int64_t *no = (int64_t *)PyBytes_AS_STRING(noffs);
        const uint8_t *c = (const uint8_t *)d.buf;
        Py_ssize_t bad = -1;
        int64_t w = 0;
        Py_BEGIN_ALLOW_THREADS
        no[0] = 0;
        for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
            for (int64_t j = offs[i]; j < offs[i + 1]; j++) {
                unsigned k = c[j];
                if (k == 255) {
                    if (++j >= offs[i + 1]) {
                        bad = i;
                        break;
                    }
                    buf[w++] = c[j];
                }
                else if ((Py_ssize_t)k >= nsym) {
                    bad = i;
                    break;
                }
                else {
                    memcpy(buf + w, &sym[k], 8);
                    w += slen[k];
                }
            }
            no[i + 1] = w;
        }
        Py_END_ALLOW_THREADS
        if (bad >= 0) {
            PyErr_Format(MALFORMED, "fsst_decode_slices: entry %zd has a bad code", bad);
            goto done;
        }
        out = PyBytes_FromStringAndSize((const char *)buf, w);
    }
    if (out)
        result = Py_BuildValue("(OO)", out, noffs);
done:
    PyMem_Free(buf);
    Py_XDECREF(out);
    Py_XDECREF(noffs);
    PyBuffer_Release(&d);
    PyBuffer_Release(&o);
    PyBuffer_Release(&s);
    PyBuffer_Release(&l);
    return result;
}

/* dedupe_slices(data, offs) -> int64 per slice, as bytes: the index of the first slice
 * with the same bytes (itself when it is the first). An open-addressing table of 64-bit
 * hashes (FNV-1a), bytes compared on every hash match. */
static uint64_t
fnv1a(const uint8_t *p, int64_t n)
{
    /* eight bytes a step (multiply and fold), the tail byte by byte */
    uint64_t h = UINT64_C(1469598103934665603) ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * UINT64_C(0x9E3779B97F4A7C15);
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    for (int64_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    return h ^ (h >> 29);
}

/* pk_slots(hashes as uint32 bytes, size) -> uint64 slot table as bytes: slot s holds
 * ordinal + 1 (0: empty). Linear probing in rounds, as index.build_pk_tables does it: each
 * round every key still waiting tries its slot in ordinal order, the first to find it
 * empty takes it, the others move one slot on. */
static PyObject *
pk_slots(PyObject *mod, PyObject *args)
{
    Py_buffer h;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n:pk_slots", &h, &size))
        return NULL;
    PyObject *out = NULL;
    int64_t *pending = NULL, *pos = NULL;
    Py_ssize_t n = h.len / 4;
    if (h.len % 4 || size < n + 1) {
        PyErr_SetString(PyExc_ValueError, "pk_slots: uint32 hashes and more slots than keys");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, 8 * size);
    pending = PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    pos = PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!out || !pending || !pos) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    {
        uint64_t *table = (uint64_t *)PyBytes_AS_STRING(out);
        const uint32_t *hs = (const uint32_t *)h.buf;
        Py_BEGIN_ALLOW_THREADS
        memset(table, 0, 8 * (size_t)size);
        Py_ssize_t np_ = n;
        for (Py_ssize_t i = 0; i < n; i++) {
            pending[i] = i;
            pos[i] = (int64_t)(hs[i] % (uint64_t)size);
        }
        while (np_) {
            Py_ssize_t w = 0;
            for (Py_ssize_t j = 0; j < np_; j++) {
                int64_t i = pending[j];
                int64_t s = pos[i];
                if (!table[s])
                    table[s] = (uint64_t)i + 1;
                else {
                    pos[i] = s + 1 < size ? s + 1 : 0;
                    pending[w++] = i;
                }
            }
            np_ = w;
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyMem_Free(pending);
    PyMem_Free(pos);
    PyBuffer_Release(&h);
    return out;
}

static PyObject *
dedupe_slices(PyObject *mod, PyObject *args)
{
    Py_buffer d, o;
    if (!PyArg_ParseTuple(args, "y*y*:dedupe_slices", &d, &o))
        return NULL;
    PyObject *out = NULL;
    int64_t *slots = NULL;
    const int64_t *offs = (const int64_t *)o.buf;
    Py_ssize_t n = o.len / 8 - 1;
    if (o.len % 8 || offs_check(offs, n, d.len, "dedupe_slices") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "dedupe_slices: int64 offsets");
        goto done;
    }
    Py_ssize_t size = 16;
    while (size < 2 * n)
        size <<= 1;
    slots = PyMem_Malloc(sizeof(int64_t) * (size_t)size);
    out = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (!slots || !out) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    {
        int64_t *first = (int64_t *)PyBytes_AS_STRING(out);
        const uint8_t *src = (const uint8_t *)d.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < size; i++)
            slots[i] = -1;
        uint64_t mask = (uint64_t)size - 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint8_t *p = src + offs[i];
            int64_t len = offs[i + 1] - offs[i];
            uint64_t h = fnv1a(p, len) & mask;
            for (;;) {
                int64_t s = slots[h];
                if (s < 0) {
                    slots[h] = i;
                    first[i] = i;
                    break;
                }
                if (offs[s + 1] - offs[s] == len && memcmp(src + offs[s], p, (size_t)len) == 0) {
                    first[i] = s;
                    break;
                }
                h = (h + 1) & mask;
            }
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyMem_Free(slots);
    PyBuffer_Release(&d);
    PyBuffer_Release(&o);
    return out;
}

static PyMethodDef module_methods[] = {
    {"pk_slots", pk_slots, METH_VARARGS,
     "pk_slots(uint32 hashes, size) -> the primary-key slot table (uint64) as bytes"},
    {"dedupe_slices", dedupe_slices, METH_VARARGS,
     "dedupe_slices(data, offs) -> int64 index of each slice's first equal slice, as bytes"},
    {"gather_slices", gather_slices, METH_VARARGS,
     "gather_slices(data, offs, idx) -> (bytes, int64 offsets as bytes)"},
    {"crc32_slices", crc32_slices, METH_VARARGS,
     "crc32_slices(data, offs) -> uint32 CRC-32 of each slice, as bytes"},
    {"crc32_ints", crc32_ints, METH_O, "crc32_ints(int64 values) -> uint32 CRC-32 of each "
     "value's decimal digits, as bytes"},
    {"fsst_decode_slices", fsst_decode_slices, METH_VARARGS,
     "fsst_decode_slices(codes, offs, fsym, flen) -> (bytes, int64 offsets as bytes)"},
    {"fsst_encode", fsst_encode, METH_VARARGS,
     "fsst_encode(fsym, flen, values) -> (codes, ends as uint64 bytes)"},
    {"str_pool", str_pool, METH_O,
     "str_pool(values) -> (uint32 ids as bytes, unique UTF-8 values, total bytes) or None"},
    {"gather", gather, METH_VARARGS,
     "gather(records, names, absent) -> (columns, first record with another key) or None"},
    {"set_errors", set_errors, METH_O, "Set the class raised for malformed columns."},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "nearstate._core",
    "nearstate's compiled core (the pure-Python modules are its reference).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    crc_init();
    PyTypeObject *types[] = {&ColType, &PkType, &RecordType, &FieldType, &MakerType,
                             &GetterType};
    const char *names[] = {"Col", "PkIndex", "RecordBase", "Field", "Maker", "Getter"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    const char *kinds[] = {"INT", "FLOAT_SCALED", "FLOAT", "BOOL", "STR",
                           "BYTES", "REF", "LIST", "SET", "DICT"};
    for (int i = 0; i < 10; i++)
        PyModule_AddIntConstant(m, kinds[i], i);
    return m;
}
