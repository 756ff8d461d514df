/* memtape's compiled text core: the per-character passes of dedupe and compression for ASCII text (sentence ends,
 * hard wraps, token counts, word weights, MinHash shingles and signatures, the content-hash normal form), and the
 * greedy sentence selection of compression.
 *
 * Each text function here does, in one C loop, what a regex or string pass in memtape.transforms.tokens,
 * .compress, .dedupe or memtape.schemas.records does, and returns exactly what that Python code returns for
 * the same ASCII text (tests/test_textcore.py holds them equal on generated text and real mail). The Python
 * code stays the definition and serves all other text. Character classes follow Python's `re` on str: \w is
 * [A-Za-z0-9_], \s is str.isspace (\t\n\v\f\r, \x1c-\x1f and space), a mark is any other character.
 * greedy_cover takes any text's weights; the test holds it to the Python formulation it replaced.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

static inline int is_word(Py_UCS1 c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static inline int is_space(Py_UCS1 c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static inline int is_mark(Py_UCS1 c) { return !is_word(c) && !is_space(c); }

static inline int is_digit(Py_UCS1 c) { return c >= '0' && c <= '9'; }

static inline int is_alpha(Py_UCS1 c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static inline Py_UCS1 lower(Py_UCS1 c) { return (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c; }

/* The characters of an ASCII str, or NULL with ValueError set. */
static const Py_UCS1 *ascii_chars(PyObject *text, Py_ssize_t *n) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "_textcore takes ASCII str only");
        return NULL;
    }
    *n = PyUnicode_GET_LENGTH(text);
    return PyUnicode_1BYTE_DATA(text);
}

/* The ASCII text in args[0] and `count` integers after it, or NULL with an error set (TypeError quoting `usage`). */
static const Py_UCS1 *text_and_sizes(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t count, const char *usage,
                                     Py_ssize_t *n, Py_ssize_t *sizes) {
    if (nargs != count + 1) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        sizes[i] = PyLong_AsSsize_t(args[i + 1]);
        if (sizes[i] == -1 && PyErr_Occurred()) return NULL;
    }
    return ascii_chars(args[0], n);
}

static PyObject *ascii_str(const Py_UCS1 *chars, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL) memcpy(PyUnicode_1BYTE_DATA(out), chars, (size_t)n);
    return out;
}

static PyObject *lowered_str(const Py_UCS1 *chars, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(n, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *dst = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = lower(chars[i]);
    return out;
}

/* A byte buffer, allocated once for the most its pass can write (no pass here lengthens its text). */
typedef struct {
    Py_UCS1 *data;
    Py_ssize_t len;
} Buffer;

static int buf_init(Buffer *b, Py_ssize_t cap) {
    b->len = 0;
    b->data = PyMem_Malloc((size_t)cap + 1);
    if (b->data == NULL) PyErr_NoMemory();
    return b->data == NULL ? -1 : 0;
}

static void buf_free(Buffer *b) { PyMem_Free(b->data); }

/* Append c to out, after a single space when whitespace came since the last character written (never at the start):
 * how " ".join(text.split()) rebuilds a text, one character at a time. */
static inline void put_spaced(Buffer *out, int *gap, Py_UCS1 c) {
    if (*gap) out->data[out->len++] = ' ';
    *gap = 0;
    out->data[out->len++] = c;
}

/* tokens.count_tokens: words (\w+) plus marks. */
static PyObject *count_tokens(PyObject *self, PyObject *text) {
    Py_ssize_t n;
    const Py_UCS1 *s = ascii_chars(text, &n);
    if (s == NULL) return NULL;
    Py_ssize_t count = 0;
    int prev_word = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int word = is_word(s[i]);
        count += word ? !prev_word : is_mark(s[i]);
        prev_word = word;
    }
    return PyLong_FromSsize_t(count);
}

static int append_span(PyObject *spans, Py_ssize_t a, Py_ssize_t b) {
    PyObject *span = Py_BuildValue("(nn)", a, b);
    if (span == NULL) return -1;
    int rc = PyList_Append(spans, span);
    Py_DECREF(span);
    return rc;
}

/* Whether `word` (n letters) lowered is one of the space-separated words of `list`. */
static int in_word_list(const Py_UCS1 *word, Py_ssize_t n, const char *list) {
    for (const char *p = list; *p;) {
        Py_ssize_t len = (Py_ssize_t)strcspn(p, " ");
        if (len == n) {
            Py_ssize_t k = 0;
            while (k < n && lower(word[k]) == (Py_UCS1)p[k]) k++;
            if (k == n) return 1;
        }
        p += len;
        while (*p == ' ') p++;
    }
    return 0;
}

/* tokens._TITLES and tokens._ABBREVIATIONS. */
static const char *const TITLES = "mr mrs ms messrs dr prof sr st mt rev hon gen col capt lt sgt gov sen rep vs cf";
static const char *const ABBREVIATIONS =
    "etc approx incl dept est no nos vol fig ext tel inc corp co ltd jan feb mar apr jun jul aug sep sept oct nov dec";

/* tokens._closes_abbreviation: the period at s[dot], followed by the whitespace run s[dot+1:next], closes an
 * abbreviation rather than a sentence. */
static int closes_abbreviation(const Py_UCS1 *s, Py_ssize_t dot, Py_ssize_t next, Py_ssize_t end) {
    if (memchr(s + dot + 1, '\n', (size_t)(next - dot - 1)) != NULL) return 0;
    Py_ssize_t first = dot;
    while (first > 0 && (s[first - 1] == '.' || is_alpha(s[first - 1]))) first--;
    if (first > 0 && is_word(s[first - 1])) return 0;
    while (first < dot && s[first] == '.') first++;
    Py_ssize_t n = dot - first;
    Py_UCS1 following = next < end ? s[next] : 0;
    if (in_word_list(s + first, n, TITLES)) return 1;
    if (n == 1 && s[first] >= 'A' && s[first] <= 'Z' && s[first] != 'I') return following >= 'A' && following <= 'Z';
    int dotted = memchr(s + first, '.', (size_t)n) != NULL;
    return n > 0 && (dotted || in_word_list(s + first, n, ABBREVIATIONS)) &&
           ((following >= 'a' && following <= 'z') || is_digit(following));
}

/* tokens.sentence_spans: a sentence ends at . ! ? (and one closing quote or bracket) followed by whitespace, unless
 * the period closes an abbreviation, or at a line break; each end swallows its whitespace run; spans exclude the
 * text's outer whitespace. */
static PyObject *sentence_spans(PyObject *self, PyObject *text) {
    Py_ssize_t n;
    const Py_UCS1 *s = ascii_chars(text, &n);
    if (s == NULL) return NULL;
    Py_ssize_t start = 0, end = n;
    while (start < n && is_space(s[start])) start++;
    while (end > start && is_space(s[end - 1])) end--;
    PyObject *spans = PyList_New(0);
    if (spans == NULL) return NULL;
    Py_ssize_t i = start;
    while (i < end) {
        Py_UCS1 c = s[i];
        Py_ssize_t stop = -1, next = i;
        if (c == '\n') {
            next = i + 1;
            while (next < end && is_space(s[next])) next++;
            stop = i;
            while (is_space(s[stop - 1])) stop--;
        } else if (c == '.' || c == '!' || c == '?') {
            Py_ssize_t j = i + 1;
            if (j < end && (s[j] == '"' || s[j] == '\'' || s[j] == ')' || s[j] == ']')) j++;
            if (j < end && is_space(s[j])) {
                stop = j;
                next = j;
                while (next < end && is_space(s[next])) next++;
                if (c == '.' && j == i + 1 && closes_abbreviation(s, i, next, end)) {
                    i = next;
                    continue;
                }
            }
        }
        if (stop < 0) {
            i++;
            continue;
        }
        if (append_span(spans, start, stop) < 0) goto fail;
        start = i = next;
    }
    if (start < end && append_span(spans, start, end) < 0) goto fail;
    return spans;
fail:
    Py_DECREF(spans);
    return NULL;
}

/* tokens._LIST_ITEM_RE at the start of s[0:n]: ^\s*(?:[-*>]|\d+[.)]|[A-Za-z][.)]\s) for ASCII. */
static int is_list_item(const Py_UCS1 *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n && is_space(s[i])) i++;
    if (i >= n) return 0;
    if (s[i] == '-' || s[i] == '*' || s[i] == '>') return 1;
    if (is_digit(s[i])) {
        while (i < n && is_digit(s[i])) i++;
        return i < n && (s[i] == '.' || s[i] == ')');
    }
    return is_alpha(s[i]) && i + 2 < n && (s[i + 1] == '.' || s[i + 1] == ')') && is_space(s[i + 2]);
}

/* tokens.unwrap: a line of at least `wrap` characters (also when stripped) continues on the next non-blank line that
 * does not open a list item. */
static PyObject *unwrap(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n, wrap;
    const Py_UCS1 *s = text_and_sizes(args, nargs, 1, "unwrap(text, wrap_min_chars)", &n, &wrap);
    if (s == NULL) return NULL;
    if (memchr(s, '\n', (size_t)n) == NULL) return Py_NewRef(args[0]);
    Buffer out;
    if (buf_init(&out, n + 1) < 0) return NULL;
    Py_ssize_t line_start = 0, current = 0;  /* current: where the last output line starts in `out` */
    int first = 1;
    while (line_start <= n) {
        const Py_UCS1 *nl = memchr(s + line_start, '\n', (size_t)(n - line_start));
        Py_ssize_t line_end = nl ? nl - s : n;
        const Py_UCS1 *line = s + line_start;
        Py_ssize_t len = line_end - line_start;
        if (first) {
            memcpy(out.data, line, (size_t)len);
            out.len = len;
            first = 0;
        } else {
            Py_ssize_t a = 0, b = len;  /* the line stripped */
            while (a < b && is_space(line[a])) a++;
            while (b > a && is_space(line[b - 1])) b--;
            int joins = 0;
            Py_ssize_t prev_len = out.len - current;
            if (prev_len >= wrap && b > a && !is_list_item(line, len)) {
                Py_ssize_t pb = out.len, pa = current;  /* prev.rstrip() ends at pb; prev.strip() is [pa, pb) */
                while (pb > current && is_space(out.data[pb - 1])) pb--;
                while (pa < pb && is_space(out.data[pa])) pa++;
                if (pb - pa >= wrap) {
                    out.len = pb;  /* prev.rstrip() + " " + line.strip() */
                    out.data[out.len++] = ' ';
                    memcpy(out.data + out.len, line + a, (size_t)(b - a));
                    out.len += b - a;
                    joins = 1;
                }
            }
            if (!joins) {
                out.data[out.len++] = '\n';
                current = out.len;
                memcpy(out.data + out.len, line, (size_t)len);
                out.len += len;
            }
        }
        line_start = line_end + 1;
    }
    PyObject *result = ascii_str(out.data, out.len);
    buf_free(&out);
    return result;
}

/* A frozenset of ASCII words as an open-addressing hash table, so a lookup needs no str object. Tables are built once
 * per frozenset and hold a reference to it, so the object they describe stays alive and unchanged. */
typedef struct {
    PyObject *source;
    Py_ssize_t max_len;
    size_t mask;
    const char **slots;  /* each a NUL-free word, copied; NULL where empty */
    Py_ssize_t *lens;
} WordTable;

#define WORD_TABLES 8
static WordTable tables[WORD_TABLES];

/* FNV-1a of s[0:n] lower-cased, the form every lookup compares (a set word with a capital letter matches nothing,
 * as in Python). */
static inline size_t fnv1a(const Py_UCS1 *s, Py_ssize_t n) {
    size_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ lower(s[i])) * 1099511628211ULL;
    return h;
}

static WordTable *table_of(PyObject *words) {
    for (int t = 0; t < WORD_TABLES; t++)
        if (tables[t].source == words) return &tables[t];
    int t = 0;
    while (t < WORD_TABLES && tables[t].source != NULL) t++;
    if (t == WORD_TABLES) return NULL;  /* full: the caller looks words up in the set itself */
    Py_ssize_t size = PySet_GET_SIZE(words);
    size_t cap = 16;
    while (cap < (size_t)size * 4) cap <<= 1;
    WordTable table = {words, 0, cap - 1, PyMem_Calloc(cap, sizeof(char *)), PyMem_Calloc(cap, sizeof(Py_ssize_t))};
    if (table.slots == NULL || table.lens == NULL) goto fail;
    PyObject *iter = PyObject_GetIter(words), *item;
    if (iter == NULL) goto fail;
    while ((item = PyIter_Next(iter)) != NULL) {
        if (!PyUnicode_Check(item) || !PyUnicode_IS_ASCII(item)) {  /* never equal to an ASCII run */
            Py_DECREF(item);
            continue;
        }
        const Py_UCS1 *w = PyUnicode_1BYTE_DATA(item);
        Py_ssize_t n = PyUnicode_GET_LENGTH(item);
        char *copy = PyMem_Malloc((size_t)n + 1);
        if (copy == NULL) {
            Py_DECREF(item);
            PyErr_NoMemory();
            break;
        }
        memcpy(copy, w, (size_t)n);
        size_t slot = fnv1a(w, n) & table.mask;
        Py_DECREF(item);
        while (table.slots[slot] != NULL) slot = (slot + 1) & table.mask;
        table.slots[slot] = copy;
        table.lens[slot] = n;
        if (n > table.max_len) table.max_len = n;
    }
    Py_DECREF(iter);
    if (PyErr_Occurred()) goto fail;
    Py_INCREF(words);
    tables[t] = table;
    return &tables[t];
fail:
    if (table.slots != NULL)
        for (size_t i = 0; i <= table.mask; i++) PyMem_Free((void *)table.slots[i]);
    PyMem_Free(table.slots);
    PyMem_Free(table.lens);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return NULL;
}

static int table_has(const WordTable *table, const Py_UCS1 *s, Py_ssize_t n) {
    if (n > table->max_len) return 0;
    for (size_t slot = fnv1a(s, n) & table->mask; table->slots[slot] != NULL; slot = (slot + 1) & table->mask) {
        if (table->lens[slot] != n) continue;
        const char *w = table->slots[slot];
        Py_ssize_t i = 0;
        while (i < n && (Py_UCS1)w[i] == lower(s[i])) i++;
        if (i == n) return 1;
    }
    return 0;
}

/* Whether s[0:n] lower-cased is a word of `words`, a set of str: 1, 0, or -1 with an error set. */
static int in_set(PyObject *words, const Py_UCS1 *s, Py_ssize_t n) {
    if (PyFrozenSet_CheckExact(words)) {
        WordTable *table = table_of(words);
        if (table != NULL) return table_has(table, s, n);
        if (PyErr_Occurred()) return -1;
    }
    PyObject *word = lowered_str(s, n);
    if (word == NULL) return -1;
    int found = PySet_Contains(words, word);
    Py_DECREF(word);
    return found;
}

static Py_ssize_t word_end(const Py_UCS1 *s, Py_ssize_t i, Py_ssize_t n) {
    while (i < n && is_word(s[i])) i++;
    return i;
}

static PyObject *one;  /* the float 1.0, the weight of most words, made once */

/* compress._word_weights: each content word's weight, lower-cased, in first-seen order. */
static PyObject *word_weights(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "word_weights(text, known, stopwords, generic, generic_weight, name_weight)");
        return NULL;
    }
    Py_ssize_t n;
    const Py_UCS1 *s = ascii_chars(args[0], &n);
    if (s == NULL) return NULL;
    PyObject *known = args[1], *stopwords = args[2], *generic = args[3];
    if (!PyAnySet_Check(known) || !PyAnySet_Check(stopwords) || !PyAnySet_Check(generic)) {
        PyErr_SetString(PyExc_TypeError, "word_weights: known, stopwords and generic must be sets");
        return NULL;
    }
    double generic_weight = PyFloat_AsDouble(args[4]);
    if (generic_weight == -1.0 && PyErr_Occurred()) return NULL;
    double name_weight = PyFloat_AsDouble(args[5]);
    if (name_weight == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *weights = PyDict_New();
    if (weights == NULL) return NULL;
    Py_ssize_t index = 0;
    for (Py_ssize_t i = 0; i < n;) {
        if (!is_word(s[i])) {
            i++;
            continue;
        }
        Py_ssize_t b = word_end(s, i, n), len = b - i;
        const Py_UCS1 *raw = s + i;
        int opening = index++ == 0;
        i = b;
        if (len < 2 && !is_digit(raw[0])) continue;
        int stop = in_set(stopwords, raw, len);
        if (stop != 0) {
            if (stop < 0) goto fail;
            continue;
        }
        int is_generic = in_set(generic, raw, len);
        if (is_generic < 0) goto fail;
        PyObject *w = lowered_str(raw, len);
        if (w == NULL) goto fail;
        double weight;
        int is_known = PySet_GET_SIZE(known) ? PySet_Contains(known, w) : 0;
        if (is_known < 0) {
            Py_DECREF(w);
            goto fail;
        }
        int alpha = 1;
        for (Py_ssize_t j = 0; j < len && alpha; j++) alpha = is_alpha(raw[j]);
        if (is_known || is_generic) weight = generic_weight;
        else if (!alpha) weight = name_weight;
        else if (raw[0] >= 'A' && raw[0] <= 'Z' && !opening) weight = name_weight;
        else weight = 1.0;
        PyObject *old = PyDict_GetItemWithError(weights, w);
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(w);
            goto fail;
        }
        if ((old != NULL ? PyFloat_AsDouble(old) : 0.0) < weight) {  /* weights.get(w, 0.0) < weight */
            PyObject *value = weight == 1.0 ? Py_NewRef(one) : PyFloat_FromDouble(weight);
            int rc = value == NULL ? -1 : PyDict_SetItem(weights, w, value);
            Py_XDECREF(value);
            if (rc < 0) {
                Py_DECREF(w);
                goto fail;
            }
        }
        Py_DECREF(w);
    }
    return weights;
fail:
    Py_DECREF(weights);
    return NULL;
}

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static inline uint32_t crc_update(uint32_t crc, const Py_UCS1 *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) crc = crc_table[(crc ^ lower(s[i])) & 0xFF] ^ (crc >> 8);
    return crc;
}

/* dedupe.minhash's shingle hashes: zlib.crc32 of each run of `shingle` consecutive lower-cased words (joined by
 * spaces) among the first `max_words` words of text; returns (word count, hashes as native uint64 bytes). */
static PyObject *shingle_hashes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n, sizes[2];
    const Py_UCS1 *s = text_and_sizes(args, nargs, 2, "shingle_hashes(text, max_words, shingle)", &n, sizes);
    if (s == NULL) return NULL;
    Py_ssize_t max_words = sizes[0], shingle = sizes[1];
    if (shingle < 1 || max_words < 0) {
        PyErr_SetString(PyExc_ValueError, "shingle must be positive and max_words not negative");
        return NULL;
    }
    if (max_words > n / 2 + 1) max_words = n / 2 + 1;  /* n characters hold at most that many words */
    Py_ssize_t *starts = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(max_words + 1) * 2);
    if (starts == NULL) return PyErr_NoMemory();
    Py_ssize_t *ends = starts + max_words + 1, count = 0;
    for (Py_ssize_t i = 0; i < n && count < max_words;) {
        if (!is_word(s[i])) {
            i++;
            continue;
        }
        starts[count] = i;
        i = word_end(s, i, n);
        ends[count++] = i;
    }
    Py_ssize_t rows = count >= shingle ? count - shingle + 1 : 0;
    PyObject *hashes = PyBytes_FromStringAndSize(NULL, rows * (Py_ssize_t)sizeof(uint64_t));
    if (hashes != NULL) {
        uint64_t *out = (uint64_t *)PyBytes_AS_STRING(hashes);
        static const Py_UCS1 space = ' ';
        for (Py_ssize_t r = 0; r < rows; r++) {
            uint32_t crc = 0xFFFFFFFFu;
            for (Py_ssize_t w = r; w < r + shingle; w++) {
                if (w > r) crc = crc_update(crc, &space, 1);
                crc = crc_update(crc, s + starts[w], ends[w] - starts[w]);
            }
            out[r] = crc ^ 0xFFFFFFFFu;
        }
    }
    PyMem_Free(starts);
    if (hashes == NULL) return NULL;
    return Py_BuildValue("(nN)", count, hashes);
}

/* least[k] = min over r of xs[r] * as[k] + bs[k] (uint64, wrapping). The inner loop runs across permutations, so
 * the compiler vectorises it; a clone for AVX-512 and one for AVX2 are picked at load time where the CPU has them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
static void fold_min_hashes(const uint64_t *restrict xs, Py_ssize_t rows, const uint64_t *restrict as,
                            const uint64_t *restrict bs, Py_ssize_t perms, uint64_t *restrict least) {
    for (Py_ssize_t k = 0; k < perms; k++) least[k] = UINT64_MAX;
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint64_t x = xs[r];
        for (Py_ssize_t k = 0; k < perms; k++) {
            uint64_t h = x * as[k] + bs[k];
            least[k] = h < least[k] ? h : least[k];
        }
    }
}

/* dedupe.minhash's signature: for each permutation k, the high 32 bits of min over shingle hashes x of
 * (x * a[k] + b[k]) mod 2**64 (multiply-shift hashing; the shift is monotonic, so it follows the minimum). */
static PyObject *min_hashes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer x, a, b;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "min_hashes(hashes, perm_a, perm_b)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &x, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &a, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &b, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&a);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t rows = x.len / 8, perms = a.len / 8;
    if (x.len % 8 || a.len % 8 || b.len != a.len || rows == 0 ||
        ((uintptr_t)x.buf | (uintptr_t)a.buf | (uintptr_t)b.buf) % sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError,
                        "min_hashes takes aligned uint64 buffers: hashes (not empty), and perm_a and perm_b of one length");
    } else if ((out = PyBytes_FromStringAndSize(NULL, perms * 4)) != NULL) {
        uint32_t *sig = (uint32_t *)PyBytes_AS_STRING(out);
        uint64_t *least = PyMem_Malloc(sizeof(uint64_t) * (size_t)perms);
        if (least == NULL) {
            Py_CLEAR(out);
            PyErr_NoMemory();
        } else {
            fold_min_hashes(x.buf, rows, a.buf, b.buf, perms, least);
            for (Py_ssize_t k = 0; k < perms; k++) sig[k] = (uint32_t)(least[k] >> 32);
            PyMem_Free(least);
        }
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return out;
}

/* records.normalized's encoding for ASCII text[a:b]: lower-cased, whitespace runs made single spaces, ends trimmed. */
static PyObject *spaced_lower(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n, span[2];
    const Py_UCS1 *s = text_and_sizes(args, nargs, 2, "spaced_lower(text, start, end)", &n, span);
    if (s == NULL) return NULL;
    Py_ssize_t a = span[0], b = span[1];
    if (a < 0 || b > n || a > b) {
        PyErr_SetString(PyExc_IndexError, "span out of range");
        return NULL;
    }
    Buffer spaced;
    if (buf_init(&spaced, b - a) < 0) return NULL;
    int gap = 0;
    for (Py_ssize_t i = a; i < b; i++) {
        if (is_space(s[i])) gap = spaced.len > 0;
        else put_spaced(&spaced, &gap, lower(s[i]));
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)spaced.data, spaced.len);
    buf_free(&spaced);
    return out;
}

/* A max-heap of (score, index) entries, ordered as Python's heapq orders (-score, index): highest score first, then
 * lowest index. Indexes are distinct, so the order is total and the pops come in one sequence whatever the layout. */
typedef struct {
    double score;
    Py_ssize_t index;
} Entry;

static inline int before(Entry a, Entry b) { return a.score > b.score || (a.score == b.score && a.index < b.index); }

static void sift_down(Entry *heap, Py_ssize_t size, Py_ssize_t at) {
    for (;;) {
        Py_ssize_t best = at, left = 2 * at + 1, right = left + 1;
        if (left < size && before(heap[left], heap[best])) best = left;
        if (right < size && before(heap[right], heap[best])) best = right;
        if (best == at) return;
        Entry tmp = heap[at];
        heap[at] = heap[best];
        heap[best] = tmp;
        at = best;
    }
}

static void sift_up(Entry *heap, Py_ssize_t at) {
    while (at > 0 && before(heap[at], heap[(at - 1) / 2])) {
        Entry tmp = heap[at];
        heap[at] = heap[(at - 1) / 2];
        heap[(at - 1) / 2] = tmp;
        at = (at - 1) / 2;
    }
}

/* The sum of `weights` values (in insertion order, one double added after another, as Python 3.11's sum() adds
 * floats) whose key is not in `covered` (NULL: none is). -1.0 with an error set on failure. */
static double uncovered_weight(PyObject *weights, PyObject *covered) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    double total = 0.0;
    while (PyDict_Next(weights, &pos, &key, &value)) {
        Py_INCREF(key);  /* a key's __eq__ or __hash__ may run Python code that changes the dict */
        Py_INCREF(value);
        int seen = covered ? PySet_Contains(covered, key) : 0;
        double weight = seen == 0 ? PyFloat_AsDouble(value) : 0.0;
        Py_DECREF(key);
        Py_DECREF(value);
        if (seen < 0 || PyErr_Occurred()) return -1.0;
        total += weight;
    }
    return total;
}

/* Add every item of `items` (a dict's keys or a set) to the set `into`; -1 with an error set on failure. */
static int add_all(PyObject *into, PyObject *items) {
    PyObject *iter = PyObject_GetIter(items), *item;
    if (iter == NULL) return -1;
    while ((item = PyIter_Next(iter)) != NULL) {
        int rc = PySet_Add(into, item);
        Py_DECREF(item);
        if (rc < 0) break;
    }
    Py_DECREF(iter);
    return PyErr_Occurred() ? -1 : 0;
}

#define MAX_COST (PY_SSIZE_T_MAX / 4)  /* token counts above this are refused, so no sum of two overflows */

/* A list of token counts as an array, each within [0, MAX_COST]; NULL with an error set otherwise. */
static Py_ssize_t *token_counts(PyObject *counts, Py_ssize_t n) {
    Py_ssize_t *out = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (out == NULL) return (Py_ssize_t *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(counts, i));
        if (out[i] == -1 && PyErr_Occurred()) break;
        if (out[i] < 0 || out[i] > MAX_COST) {
            PyErr_SetString(PyExc_ValueError, "greedy_cover: a token count is negative or too large");
            break;
        }
    }
    if (!PyErr_Occurred()) return out;
    PyMem_Free(out);
    return NULL;
}

/* compress.select_sentences' lazy greedy budgeted coverage: (the indexes of the sentences it takes, in the order it
 * takes them, and the tokens they spend). Sentence i has a weights dict, a token count and a unit; a unit's label
 * costs label_cost[unit] until one of its sentences is taken. The sequences are copied into tuples first, so no
 * Python code the loop runs can change them. */
static PyObject *greedy_cover(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "greedy_cover(weights, tokens, units, label_cost, budget, cost_exponent)");
        return NULL;
    }
    PyObject *seq[4] = {NULL}, *covered = NULL, *chosen = NULL, *result = NULL;
    Entry *heap = NULL;
    Py_ssize_t *costs = NULL, *units = NULL, *labels = NULL;
    char *opened = NULL;
    for (int k = 0; k < 4; k++)
        if ((seq[k] = PySequence_Tuple(args[k])) == NULL) goto done;
    PyObject *weights = seq[0];
    Py_ssize_t n = PyTuple_GET_SIZE(weights), n_units = PyTuple_GET_SIZE(seq[3]);
    Py_ssize_t budget = PyLong_AsSsize_t(args[4]);
    if (budget == -1 && PyErr_Occurred()) goto done;
    double exponent = PyFloat_AsDouble(args[5]);
    if (exponent == -1.0 && PyErr_Occurred()) goto done;
    for (int k = 1; k < 3; k++)
        if (PyTuple_GET_SIZE(seq[k]) != n) {
            PyErr_SetString(PyExc_ValueError, "greedy_cover: the three per-sentence sequences differ in length");
            goto done;
        }
    if ((costs = token_counts(seq[1], n)) == NULL || (units = token_counts(seq[2], n)) == NULL ||
        (labels = token_counts(seq[3], n_units)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        if (units[i] >= n_units || !PyDict_Check(PyTuple_GET_ITEM(weights, i))) {
            PyErr_SetString(PyExc_TypeError, "greedy_cover: a unit without a label cost, or weights not a dict");
            goto done;
        }
    heap = PyMem_Malloc(sizeof(Entry) * (size_t)(n + 1));
    opened = PyMem_Calloc((size_t)n_units + 1, 1);
    if (heap == NULL || opened == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((covered = PySet_New(NULL)) == NULL || (chosen = PyList_New(0)) == NULL) goto done;
#define COST(i) (costs[i] + (opened[units[i]] ? 0 : labels[units[i]]))
#define PER_TOKEN(cost) pow((double)((cost) > 1 ? (cost) : 1), exponent)
    for (Py_ssize_t i = 0; i < n; i++) {  /* nothing is covered yet: each first score counts all weights */
        double weight = uncovered_weight(PyTuple_GET_ITEM(weights, i), NULL);
        if (PyErr_Occurred()) goto done;
        heap[i] = (Entry){weight / PER_TOKEN(COST(i)), i};
    }
    for (Py_ssize_t at = n / 2 - 1; at >= 0; at--) sift_down(heap, n, at);
    Py_ssize_t size = n, spent = 0;
    while (size > 0) {
        Py_ssize_t i = heap[0].index;
        heap[0] = heap[--size];
        sift_down(heap, size, 0);
        Py_ssize_t cost = COST(i);
        double weight = uncovered_weight(PyTuple_GET_ITEM(weights, i), covered);
        if (PyErr_Occurred()) goto done;
        double current = weight / PER_TOKEN(cost);
        if (current <= 0) continue;
        if (size > 0 && current < heap[0].score) {
            heap[size] = (Entry){current, i};
            sift_up(heap, size++);
            continue;
        }
        if (cost > budget - spent) continue;  /* spent + cost > budget, without overflow */
        spent += cost;
        opened[units[i]] = 1;
        PyObject *index = PyLong_FromSsize_t(i);
        int rc = index == NULL ? -1 : PyList_Append(chosen, index);
        Py_XDECREF(index);
        if (rc < 0 || add_all(covered, PyTuple_GET_ITEM(weights, i)) < 0) goto done;
    }
#undef COST
#undef PER_TOKEN
    result = Py_BuildValue("(On)", chosen, spent);
done:
    for (int k = 0; k < 4; k++) Py_XDECREF(seq[k]);
    Py_XDECREF(covered);
    Py_XDECREF(chosen);
    PyMem_Free(heap);
    PyMem_Free(costs);
    PyMem_Free(units);
    PyMem_Free(labels);
    PyMem_Free(opened);
    return result;
}

static PyMethodDef methods[] = {
    {"count_tokens", count_tokens, METH_O, "Words plus punctuation marks of an ASCII str."},
    {"sentence_spans", sentence_spans, METH_O, "(start, end) spans of the sentences of an ASCII str."},
    {"unwrap", (PyCFunction)(void (*)(void))unwrap, METH_FASTCALL, "unwrap(text, wrap_min_chars): hard-wrapped lines joined."},
    {"word_weights", (PyCFunction)(void (*)(void))word_weights, METH_FASTCALL,
     "word_weights(text, known, stopwords, generic, generic_weight, name_weight): content word weights."},
    {"shingle_hashes", (PyCFunction)(void (*)(void))shingle_hashes, METH_FASTCALL,
     "shingle_hashes(text, max_words, shingle): (word count, CRC-32 of each word shingle as uint64 bytes)."},
    {"min_hashes", (PyCFunction)(void (*)(void))min_hashes, METH_FASTCALL,
     "min_hashes(hashes, perm_a, perm_b): MinHash signature (uint32 bytes) of uint64 shingle hashes."},
    {"greedy_cover", (PyCFunction)(void (*)(void))greedy_cover, METH_FASTCALL,
     "greedy_cover(weights, tokens, units, label_cost, budget, cost_exponent): "
     "(indexes of the sentences lazy greedy budgeted coverage takes, in the order it takes them, tokens spent)."},
    {"spaced_lower", (PyCFunction)(void (*)(void))spaced_lower, METH_FASTCALL,
     "spaced_lower(text, start, end): text[start:end] lower-cased and single-spaced, as bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_textcore", "memtape's compiled text passes for ASCII text.", -1, methods};

PyMODINIT_FUNC PyInit__textcore(void) {
    crc_init();
    if (one == NULL && (one = PyFloat_FromDouble(1.0)) == NULL) return NULL;
    return PyModule_Create(&module);
}
