/*
 * berth_json.h — a header-only JSON helper for C plugins (no allocation, no dependencies beyond libc).
 *
 * READER: over a BORROWED buffer (the request the host passed; valid for the call only). A value is a span of that
 * buffer (bj_val); nothing is copied until you ask (bj_string copies and unescapes into your buffer). Integers are
 * exact: bj_u64 / bj_i64 read the digits themselves (no double in between), so 2^62 and 2^53 + 1 arrive intact,
 * and refuse fractions, exponents and overflow. Every function checks bounds; malformed input gives BJ_ERR (never
 * a read outside the buffer). Nesting deeper than BJ_MAX_DEPTH is refused.
 *
 *     bj_val req;
 *     if (bj_parse(json, len, &req) != BJ_OK || req.type != BJ_OBJECT) -> INVALID_ARGUMENT "request is not a JSON object"
 *     bj_val name; char buf[256]; size_t n;
 *     if (bj_get(req, "name", &name) != BJ_OK || bj_string(name, buf, sizeof buf, &n) != BJ_OK) -> "name: a string"
 *     uint64_t size; bj_val v;
 *     if (bj_get(req, "capacityBytes", &v) == BJ_OK && bj_u64(v, &size) != BJ_OK) -> "capacityBytes: a non-negative integer"
 *     size_t pos = 0; bj_val item;                               // arrays (bj_next_member for objects)
 *     while (bj_next(arr, &pos, &item) == BJ_OK) { ... }
 *
 * WRITER: into the host's output sink (berth_sink), with string escaping, commas and nesting handled for you.
 * The first failure (the sink's BERTH_OUT_OF_RANGE, nesting too deep) sticks: check bjw_finish() once at the end.
 *
 *     bj_writer w; bjw_init(&w, out);
 *     bjw_begin_object(&w); bjw_key(&w, "volumeId"); bjw_string(&w, id, strlen(id));
 *     bjw_key(&w, "capacityBytes"); bjw_u64(&w, size); bjw_end_object(&w);
 *     return bjw_finish(&w);                                    // BERTH_OK or the sink's status
 *
 * Strings are UTF-8. bj_string refuses \u0000 (the host never sends it) and decodes surrogate pairs; the writer
 * escapes '"', '\\' and control characters and passes other bytes through.
 */
#ifndef BERTH_JSON_H
#define BERTH_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "berth_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BJ_OK 0
#define BJ_ERR (-1)      /* malformed, wrong type, or out of range */
#define BJ_MISSING (-2)  /* bj_get: no such member; bj_next / bj_next_member: no more items */
#define BJ_TOO_LONG (-3) /* bj_string: the buffer is too small (the copy is truncated and NUL-terminated) */

#ifndef BJ_MAX_DEPTH
#define BJ_MAX_DEPTH 64
#endif

typedef enum bj_type { BJ_NULL, BJ_BOOL, BJ_NUMBER, BJ_STRING, BJ_ARRAY, BJ_OBJECT } bj_type;

/** One JSON value: `p[0..n)` is its text inside the borrowed buffer (for a string, including the quotes). */
typedef struct bj_val {
    const char *p;
    size_t n;
    bj_type type;
} bj_val;

/* ---- reader internals ------------------------------------------------------------------------------------- */

static inline size_t bj__ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static inline int bj__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Skips a string starting at s[i] == '"'; returns the index after the closing quote, or (size_t)-1. */
static inline size_t bj__skip_string(const char *s, size_t n, size_t i) {
    i++;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') return i + 1;
        if (c < 0x20) return (size_t)-1;
        if (c == '\\') {
            if (i + 1 >= n) return (size_t)-1;
            char e = s[i + 1];
            if (e == 'u') {
                if (i + 5 >= n) return (size_t)-1;
                for (int k = 2; k < 6; k++)
                    if (bj__hex(s[i + k]) < 0) return (size_t)-1;
                i += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0) return (size_t)-1;
            i += 2;
            continue;
        }
        i++;
    }
    return (size_t)-1;
}

static inline size_t bj__skip_number(const char *s, size_t n, size_t i) {
    if (i < n && s[i] == '-') i++;
    if (i >= n) return (size_t)-1;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') { while (i < n && s[i] >= '0' && s[i] <= '9') i++; }
    else return (size_t)-1;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return (size_t)-1;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return (size_t)-1;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    return i;
}

/* Skips one value at s[i] (no leading whitespace); returns the index after it, or (size_t)-1. */
static inline size_t bj__skip(const char *s, size_t n, size_t i, int depth, bj_type *type) {
    if (i >= n) return (size_t)-1;
    char c = s[i];
    if (c == '"') { *type = BJ_STRING; return bj__skip_string(s, n, i); }
    if (c == '-' || (c >= '0' && c <= '9')) { *type = BJ_NUMBER; return bj__skip_number(s, n, i); }
    if (c == 't' && n - i >= 4 && memcmp(s + i, "true", 4) == 0) { *type = BJ_BOOL; return i + 4; }
    if (c == 'f' && n - i >= 5 && memcmp(s + i, "false", 5) == 0) { *type = BJ_BOOL; return i + 5; }
    if (c == 'n' && n - i >= 4 && memcmp(s + i, "null", 4) == 0) { *type = BJ_NULL; return i + 4; }
    if (c != '[' && c != '{') return (size_t)-1;
    if (depth >= BJ_MAX_DEPTH) return (size_t)-1;
    int obj = c == '{';
    *type = obj ? BJ_OBJECT : BJ_ARRAY;
    char close = obj ? '}' : ']';
    i = bj__ws(s, n, i + 1);
    if (i < n && s[i] == close) return i + 1;
    for (;;) {
        bj_type t;
        if (obj) {
            if (i >= n || s[i] != '"') return (size_t)-1;
            i = bj__skip_string(s, n, i);
            if (i == (size_t)-1) return i;
            i = bj__ws(s, n, i);
            if (i >= n || s[i] != ':') return (size_t)-1;
            i = bj__ws(s, n, i + 1);
        }
        i = bj__skip(s, n, i, depth + 1, &t);
        if (i == (size_t)-1) return i;
        i = bj__ws(s, n, i);
        if (i >= n) return (size_t)-1;
        if (s[i] == close) return i + 1;
        if (s[i] != ',') return (size_t)-1;
        i = bj__ws(s, n, i + 1);
    }
}

/* ---- reader ----------------------------------------------------------------------------------------------- */

/** Parses (validates) a whole document: one value, optional surrounding whitespace, nothing else. */
static inline int bj_parse(const char *json, size_t len, bj_val *out) {
    if (!json && len) return BJ_ERR;
    size_t i = bj__ws(json, len, 0);
    bj_type t = BJ_NULL;
    size_t e = bj__skip(json, len, i, 0, &t);
    if (e == (size_t)-1 || bj__ws(json, len, e) != len) return BJ_ERR;
    out->p = json + i;
    out->n = e - i;
    out->type = t;
    return BJ_OK;
}

/** The next element of an array: start with *pos = 0. BJ_MISSING after the last one. */
static inline int bj_next(bj_val arr, size_t *pos, bj_val *item) {
    if (arr.type != BJ_ARRAY) return BJ_ERR;
    size_t i = *pos == 0 ? 1 : *pos;
    i = bj__ws(arr.p, arr.n, i);
    if (i < arr.n && arr.p[i] == ',') i = bj__ws(arr.p, arr.n, i + 1);
    if (i >= arr.n || arr.p[i] == ']') return BJ_MISSING;
    bj_type t;
    size_t e = bj__skip(arr.p, arr.n, i, 1, &t);
    if (e == (size_t)-1) return BJ_ERR;
    item->p = arr.p + i;
    item->n = e - i;
    item->type = t;
    *pos = e;
    return BJ_OK;
}

/** The next member of an object: its key (a string value, quotes included) and value. Start with *pos = 0. */
static inline int bj_next_member(bj_val obj, size_t *pos, bj_val *key, bj_val *val) {
    if (obj.type != BJ_OBJECT) return BJ_ERR;
    size_t i = *pos == 0 ? 1 : *pos;
    i = bj__ws(obj.p, obj.n, i);
    if (i < obj.n && obj.p[i] == ',') i = bj__ws(obj.p, obj.n, i + 1);
    if (i >= obj.n || obj.p[i] == '}') return BJ_MISSING;
    size_t ke = bj__skip_string(obj.p, obj.n, i);
    if (ke == (size_t)-1) return BJ_ERR;
    key->p = obj.p + i;
    key->n = ke - i;
    key->type = BJ_STRING;
    size_t v = bj__ws(obj.p, obj.n, ke);
    if (v >= obj.n || obj.p[v] != ':') return BJ_ERR;
    v = bj__ws(obj.p, obj.n, v + 1);
    bj_type t;
    size_t e = bj__skip(obj.p, obj.n, v, 1, &t);
    if (e == (size_t)-1) return BJ_ERR;
    val->p = obj.p + v;
    val->n = e - v;
    val->type = t;
    *pos = e;
    return BJ_OK;
}

/** Copies a string value, unescaped, into buf (always NUL-terminated when cap > 0); *len_out (may be NULL) gets
 *  the full decoded length. BJ_TOO_LONG when it does not fit; BJ_ERR for a non-string or \u0000. */
static inline int bj_string(bj_val v, char *buf, size_t cap, size_t *len_out) {
    if (v.type != BJ_STRING || v.n < 2) return BJ_ERR;
    size_t o = 0;
    int rc = BJ_OK;
#define BJ__PUT(ch)                                                                                                \
    do {                                                                                                           \
        if (o + 1 < cap) buf[o] = (char)(ch); else rc = BJ_TOO_LONG;                                               \
        o++;                                                                                                       \
    } while (0)
    for (size_t i = 1; i + 1 < v.n;) {
        char c = v.p[i];
        if (c != '\\') { BJ__PUT(c); i++; continue; }
        char e = v.p[i + 1];
        i += 2;
        switch (e) {
        case 'b': BJ__PUT('\b'); break;
        case 'f': BJ__PUT('\f'); break;
        case 'n': BJ__PUT('\n'); break;
        case 'r': BJ__PUT('\r'); break;
        case 't': BJ__PUT('\t'); break;
        case 'u': {
            if (i + 4 > v.n - 1) return BJ_ERR;
            uint32_t cp = 0;
            for (int k = 0; k < 4; k++) cp = cp << 4 | (uint32_t)bj__hex(v.p[i + k]);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 6 > v.n - 1 || v.p[i] != '\\' || v.p[i + 1] != 'u') return BJ_ERR;
                uint32_t lo = 0;
                for (int k = 2; k < 6; k++) lo = lo << 4 | (uint32_t)bj__hex(v.p[i + k]);
                if (lo < 0xDC00 || lo > 0xDFFF) return BJ_ERR;
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return BJ_ERR;
            }
            if (cp == 0) return BJ_ERR;
            if (cp < 0x80) BJ__PUT(cp);
            else if (cp < 0x800) { BJ__PUT(0xC0 | cp >> 6); BJ__PUT(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) { BJ__PUT(0xE0 | cp >> 12); BJ__PUT(0x80 | (cp >> 6 & 0x3F)); BJ__PUT(0x80 | (cp & 0x3F)); }
            else { BJ__PUT(0xF0 | cp >> 18); BJ__PUT(0x80 | (cp >> 12 & 0x3F)); BJ__PUT(0x80 | (cp >> 6 & 0x3F)); BJ__PUT(0x80 | (cp & 0x3F)); }
            break;
        }
        default: BJ__PUT(e); break; /* '"', '\\', '/' (validated by the parser) */
        }
    }
#undef BJ__PUT
    if (cap > 0) buf[o < cap ? o : cap - 1] = 0;
    if (len_out) *len_out = o;
    return rc;
}

/** True when the string value equals `s` (after unescaping; compares without copying when there are no escapes). */
static inline int bj_string_eq(bj_val v, const char *s) {
    if (v.type != BJ_STRING || v.n < 2) return 0;
    size_t n = strlen(s);
    if (!memchr(v.p, '\\', v.n)) return v.n - 2 == n && memcmp(v.p + 1, s, n) == 0;
    char buf[1024];
    size_t len;
    return n < sizeof buf && bj_string(v, buf, sizeof buf, &len) == BJ_OK && len == n && memcmp(buf, s, n) == 0;
}

/** A member of an object by key (the first one with that key). BJ_MISSING when absent, BJ_ERR for a non-object. */
static inline int bj_get(bj_val obj, const char *key, bj_val *out) {
    size_t pos = 0;
    bj_val k, v;
    int rc;
    while ((rc = bj_next_member(obj, &pos, &k, &v)) == BJ_OK)
        if (bj_string_eq(k, key)) { *out = v; return BJ_OK; }
    return rc;
}

/** An exact non-negative integer (digits only: no sign, fraction or exponent), at most 2^64 - 1. */
static inline int bj_u64(bj_val v, uint64_t *out) {
    if (v.type != BJ_NUMBER || v.n == 0 || v.p[0] == '-') return BJ_ERR;
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (c < '0' || c > '9') return BJ_ERR;
        uint64_t d = (uint64_t)(c - '0');
        if (x > (UINT64_MAX - d) / 10) return BJ_ERR;
        x = x * 10 + d;
    }
    *out = x;
    return BJ_OK;
}

/** An exact signed integer in [-2^63, 2^63 - 1]. */
static inline int bj_i64(bj_val v, int64_t *out) {
    if (v.type != BJ_NUMBER || v.n == 0) return BJ_ERR;
    int neg = v.p[0] == '-';
    bj_val m = {v.p + neg, v.n - (size_t)neg, BJ_NUMBER};
    uint64_t x;
    if (m.n == 0 || m.p[0] == '-' || bj_u64(m, &x) != BJ_OK) return BJ_ERR;
    if (neg ? x > (uint64_t)INT64_MAX + 1 : x > (uint64_t)INT64_MAX) return BJ_ERR;
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return BJ_OK;
}

static inline int bj_bool(bj_val v, int *out) {
    if (v.type != BJ_BOOL) return BJ_ERR;
    *out = v.p[0] == 't';
    return BJ_OK;
}

/* ---- writer ----------------------------------------------------------------------------------------------- */

typedef struct bj_writer {
    const berth_sink *sink;
    berth_status status;   /* the first failure; BERTH_OK while all is well */
    int depth;
    unsigned char need_comma[BJ_MAX_DEPTH + 1];
    int after_key;
    size_t used;
    char buf[512];         /* small pieces are gathered here and written to the sink in one call */
} bj_writer;

static inline void bjw_init(bj_writer *w, const berth_sink *sink) {
    w->sink = sink;
    w->status = BERTH_OK;
    w->depth = 0;
    w->need_comma[0] = 0;
    w->after_key = 0;
    w->used = 0;
}

static inline void bjw__flush(bj_writer *w) {
    if (w->used && w->status == BERTH_OK) w->status = w->sink->write(w->sink->ctx, w->buf, w->used);
    w->used = 0;
}

static inline void bjw__raw(bj_writer *w, const char *p, size_t n) {
    if (w->status != BERTH_OK) return;
    if (n > sizeof w->buf - w->used) {
        bjw__flush(w);
        if (n > sizeof w->buf) {
            if (w->status == BERTH_OK) w->status = w->sink->write(w->sink->ctx, p, n);
            return;
        }
    }
    memcpy(w->buf + w->used, p, n);
    w->used += n;
}

/* A comma before a value when needed (not after a key). */
static inline void bjw__value(bj_writer *w) {
    if (w->after_key) { w->after_key = 0; return; }
    if (w->need_comma[w->depth]) bjw__raw(w, ",", 1);
    w->need_comma[w->depth] = 1;
}

static inline void bjw__quoted(bj_writer *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    bjw__raw(w, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        bjw__raw(w, s + start, i - start);
        start = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"': bjw__raw(w, "\\\"", 2); break;
        case '\\': bjw__raw(w, "\\\\", 2); break;
        case '\n': bjw__raw(w, "\\n", 2); break;
        case '\r': bjw__raw(w, "\\r", 2); break;
        case '\t': bjw__raw(w, "\\t", 2); break;
        default: bjw__raw(w, esc, 6); break;
        }
    }
    bjw__raw(w, s + start, n - start);
    bjw__raw(w, "\"", 1);
}

static inline void bjw__open(bj_writer *w, char c) {
    bjw__value(w);
    if (w->depth >= BJ_MAX_DEPTH) { if (w->status == BERTH_OK) w->status = BERTH_INTERNAL; return; }
    bjw__raw(w, &c, 1);
    w->need_comma[++w->depth] = 0;
}

static inline void bjw__close(bj_writer *w, char c) {
    if (w->depth <= 0) { if (w->status == BERTH_OK) w->status = BERTH_INTERNAL; return; }
    w->depth--;
    bjw__raw(w, &c, 1);
}

static inline void bjw_begin_object(bj_writer *w) { bjw__open(w, '{'); }
static inline void bjw_end_object(bj_writer *w) { bjw__close(w, '}'); }
static inline void bjw_begin_array(bj_writer *w) { bjw__open(w, '['); }
static inline void bjw_end_array(bj_writer *w) { bjw__close(w, ']'); }

/** A member name inside an object; the next value written is its value. */
static inline void bjw_key(bj_writer *w, const char *key) {
    bjw__value(w);
    bjw__quoted(w, key, strlen(key));
    bjw__raw(w, ":", 1);
    w->after_key = 1;
}

static inline void bjw_string(bj_writer *w, const char *s, size_t n) { bjw__value(w); bjw__quoted(w, s, n); }
static inline void bjw_cstring(bj_writer *w, const char *s) { bjw_string(w, s, strlen(s)); }

static inline void bjw_u64(bj_writer *w, uint64_t v) {
    char tmp[24];
    size_t i = sizeof tmp;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    bjw__value(w);
    bjw__raw(w, tmp + i, sizeof tmp - i);
}

static inline void bjw_i64(bj_writer *w, int64_t v) {
    if (v >= 0) { bjw_u64(w, (uint64_t)v); return; }
    uint64_t m = 0 - (uint64_t)v;
    char tmp[24];
    size_t i = sizeof tmp;
    do { tmp[--i] = (char)('0' + m % 10); m /= 10; } while (m);
    tmp[--i] = '-';
    bjw__value(w);
    bjw__raw(w, tmp + i, sizeof tmp - i);
}

static inline void bjw_bool(bj_writer *w, int b) { bjw__value(w); bjw__raw(w, b ? "true" : "false", b ? 4 : 5); }
static inline void bjw_null(bj_writer *w) { bjw__value(w); bjw__raw(w, "null", 4); }

/** A value that is already JSON text (for example a bj_val you read: v.p, v.n). Not validated. */
static inline void bjw_raw(bj_writer *w, const char *json, size_t n) { bjw__value(w); bjw__raw(w, json, n); }

/** Flushes; returns BERTH_OK, or the first failure (return it from your operation). */
static inline berth_status bjw_finish(bj_writer *w) {
    bjw__flush(w);
    if (w->status == BERTH_OK && w->depth != 0) w->status = BERTH_INTERNAL;
    return w->status;
}

#ifdef __cplusplus
}
#endif
#endif /* BERTH_JSON_H */
