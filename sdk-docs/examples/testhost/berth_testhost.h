/*
 * berth_testhost.h — a header-only fake Berth host for plugin unit tests (C99 or later, single-threaded).
 *
 * It gives a plugin the same berth_host_services table berthd does, backed by memory:
 *   - a sorted in-memory key-value namespace with kv_get / kv_put / kv_delete / kv_next exactly as
 *     berth_plugin.h documents them (bytewise order, 1..1024-byte keys, values up to 16 MiB, kv_next strictly
 *     after `after`, O(log n));
 *   - transactions: bth_begin() snapshots the namespace, bth_commit() keeps the writes, bth_rollback()
 *     restores the snapshot. Like berthd, kv_* outside a transaction return BERTH_FAILED_PRECONDITION;
 *   - captured log lines and events (events emitted inside a transaction vanish on rollback);
 *   - ABI 1.2: on_complete (bth_commit() runs the transaction's after_commit callbacks in registration order,
 *     bth_rollback() its after_rollback callbacks in reverse order, each outside the transaction), kv_len,
 *     kv_count_prefix, kv_delete_prefix; bth_call_then_rollback() forces a rollback after a successful call,
 *     as berthd does when its own part of an operation fails;
 *   - an output collector that is a berth_sink, with an optional size limit (to test BERTH_OUT_OF_RANGE);
 *   - bth_call(): one operation as the host runs it (begin, call, commit on BERTH_OK else rollback and
 *     discard the output);
 *   - bth_check_descriptor(): the loader's descriptor rules (versions, struct sizes, name, groups);
 *   - a minimal test runner: BTH_EXPECT(cond, fmt, ...), BTH_RUN(fn), bth_summary().
 *
 * Usage:
 *     #include "berth_testhost.h"
 *     bth_host h; bth_init(&h);
 *     const berth_plugin_descriptor *d = berth_plugin_entry_v1(BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
 *     void *inst; char err[BERTH_ERR_CAP];
 *     bth_create(&h, d, "{\"subnet\":\"10.77.0.0/24\"}", &inst, err);
 *     bth_out out; bth_out_init(&out, 0);
 *     berth_status st = bth_call(&h, d->network->add, inst, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}", &out, err);
 *     ...; d->destroy(inst); bth_out_free(&out); bth_free(&h);
 *
 * Everything is `static`, so include it in one or more test files freely. No dependencies beyond libc.
 */
#ifndef BERTH_TESTHOST_H
#define BERTH_TESTHOST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"

#if defined(__GNUC__) || defined(__clang__)
#define BTH_UNUSED __attribute__((unused))
#else
#define BTH_UNUSED
#endif

/* ----------------------------------------------------------------------------------------------------- */
/* Types                                                                                                  */
/* ----------------------------------------------------------------------------------------------------- */

typedef struct bth_bytes {
    char *p; /* always NUL-terminated for convenience; len excludes the NUL */
    size_t len;
} bth_bytes;

typedef struct bth_entry {
    bth_bytes key, value;
} bth_entry;

typedef struct bth_event {
    char *type;
    char *json;
} bth_event;

typedef struct bth_log {
    berth_log_level level;
    char *msg;
} bth_log;

typedef struct bth_host {
    berth_host_services services; /* pass &h->services to create() */
    bth_entry *kv;                /* sorted by key, bytewise */
    size_t kv_len, kv_cap;
    bth_entry *snap; /* the snapshot bth_begin() took */
    size_t snap_len;
    int in_txn;
    size_t events_at_begin;
    bth_event *events; /* committed events (and those of the open transaction) */
    size_t nevents, events_cap;
    bth_log *logs;
    size_t nlogs, logs_cap;
    struct bth_completion { void (*commit)(void *); void (*rollback)(void *); void *arg; } *completions;
    size_t ncompletions, completions_cap; /* registered by the open transaction (ABI 1.2 on_complete) */
    int strict;      /* 1 (default): kv_* outside a transaction return BERTH_FAILED_PRECONDITION, as in berthd */
    int echo_logs;   /* 1: also print log lines to stderr */
} bth_host;

/* An output collector; `sink` is what you pass as `out`. */
typedef struct bth_out {
    berth_sink sink;
    char *p; /* NUL-terminated */
    size_t len, cap;
    size_t limit; /* 0 = unlimited; else writes beyond it return BERTH_OUT_OF_RANGE */
} bth_out;

/* ----------------------------------------------------------------------------------------------------- */
/* Small internals                                                                                        */
/* ----------------------------------------------------------------------------------------------------- */

static BTH_UNUSED void *bth__xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "berth_testhost: out of memory\n");
        abort();
    }
    return q;
}

static BTH_UNUSED bth_bytes bth__dup(const char *p, size_t n) {
    bth_bytes b;
    b.p = (char *)bth__xrealloc(NULL, n + 1);
    if (n) memcpy(b.p, p, n);
    b.p[n] = 0;
    b.len = n;
    return b;
}

/* Bytewise comparison; a proper prefix sorts first. */
static BTH_UNUSED int bth__cmp(const char *a, size_t an, const char *b, size_t bn) {
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

/* First index whose key is >= (or > when `strict`) the given bytes. */
static BTH_UNUSED size_t bth__bound(const bth_host *h, const char *k, size_t kn, int strict) {
    size_t lo = 0, hi = h->kv_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = bth__cmp(h->kv[mid].key.p, h->kv[mid].key.len, k, kn);
        if (c < 0 || (strict && c == 0)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static BTH_UNUSED void bth__free_entries(bth_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].key.p), free(e[i].value.p);
    free(e);
}

static BTH_UNUSED void bth__free_entries_range(bth_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].key.p), free(e[i].value.p);
}

static BTH_UNUSED bth_entry *bth__copy_entries(const bth_entry *e, size_t n) {
    bth_entry *c = (bth_entry *)bth__xrealloc(NULL, n * sizeof *c);
    for (size_t i = 0; i < n; i++) c[i].key = bth__dup(e[i].key.p, e[i].key.len), c[i].value = bth__dup(e[i].value.p, e[i].value.len);
    return c;
}

static BTH_UNUSED berth_status bth__emit_to(const berth_sink *s, const bth_bytes *b) {
    return s ? s->write(s->ctx, b->p, b->len) : BERTH_OK;
}

/* ----------------------------------------------------------------------------------------------------- */
/* The host services                                                                                      */
/* ----------------------------------------------------------------------------------------------------- */

static BTH_UNUSED void bth__log(void *ctx, berth_log_level level, const char *msg, size_t len) {
    bth_host *h = (bth_host *)ctx;
    if (h->nlogs == h->logs_cap) h->logs = (bth_log *)bth__xrealloc(h->logs, (h->logs_cap = h->logs_cap ? h->logs_cap * 2 : 16) * sizeof *h->logs);
    h->logs[h->nlogs].level = level;
    h->logs[h->nlogs].msg = bth__dup(msg, len).p;
    if (h->echo_logs) fprintf(stderr, "[plugin log %d] %s\n", (int)level, h->logs[h->nlogs].msg);
    h->nlogs++;
}

static BTH_UNUSED berth_status bth__kv_ok(bth_host *h, size_t key_len) {
    if (h->strict && !h->in_txn) return BERTH_FAILED_PRECONDITION;
    if (key_len < 1 || key_len > 1024) return BERTH_INVALID_ARGUMENT;
    return BERTH_OK;
}

static BTH_UNUSED berth_status bth__kv_get(void *ctx, const char *key, size_t key_len, const berth_sink *value_out) {
    bth_host *h = (bth_host *)ctx;
    berth_status st = bth__kv_ok(h, key_len);
    if (st != BERTH_OK) return st;
    size_t i = bth__bound(h, key, key_len, 0);
    if (i == h->kv_len || bth__cmp(h->kv[i].key.p, h->kv[i].key.len, key, key_len) != 0) return BERTH_NOT_FOUND;
    return bth__emit_to(value_out, &h->kv[i].value);
}

static BTH_UNUSED berth_status bth__kv_put(void *ctx, const char *key, size_t key_len, const char *value, size_t value_len) {
    bth_host *h = (bth_host *)ctx;
    berth_status st = bth__kv_ok(h, key_len);
    if (st != BERTH_OK) return st;
    if (value_len > (16u << 20)) return BERTH_INVALID_ARGUMENT;
    size_t i = bth__bound(h, key, key_len, 0);
    if (i < h->kv_len && bth__cmp(h->kv[i].key.p, h->kv[i].key.len, key, key_len) == 0) {
        free(h->kv[i].value.p);
        h->kv[i].value = bth__dup(value, value_len);
        return BERTH_OK;
    }
    if (h->kv_len == h->kv_cap) h->kv = (bth_entry *)bth__xrealloc(h->kv, (h->kv_cap = h->kv_cap ? h->kv_cap * 2 : 64) * sizeof *h->kv);
    memmove(h->kv + i + 1, h->kv + i, (h->kv_len - i) * sizeof *h->kv);
    h->kv[i].key = bth__dup(key, key_len);
    h->kv[i].value = bth__dup(value, value_len);
    h->kv_len++;
    return BERTH_OK;
}

static BTH_UNUSED berth_status bth__kv_delete(void *ctx, const char *key, size_t key_len) {
    bth_host *h = (bth_host *)ctx;
    berth_status st = bth__kv_ok(h, key_len);
    if (st != BERTH_OK) return st;
    size_t i = bth__bound(h, key, key_len, 0);
    if (i == h->kv_len || bth__cmp(h->kv[i].key.p, h->kv[i].key.len, key, key_len) != 0) return BERTH_OK;
    free(h->kv[i].key.p);
    free(h->kv[i].value.p);
    memmove(h->kv + i, h->kv + i + 1, (h->kv_len - i - 1) * sizeof *h->kv);
    h->kv_len--;
    return BERTH_OK;
}

/* The smallest key that starts with `prefix` and sorts strictly after `after` (after_len 0: from the
 * prefix). Two binary searches: O(log n). */
static BTH_UNUSED berth_status bth__kv_next(void *ctx, const char *prefix, size_t prefix_len, const char *after, size_t after_len,
                                            const berth_sink *key_out, const berth_sink *value_out) {
    bth_host *h = (bth_host *)ctx;
    if (h->strict && !h->in_txn) return BERTH_FAILED_PRECONDITION;
    size_t i = bth__bound(h, prefix, prefix_len, 0);
    if (after_len > 0) {
        size_t j = bth__bound(h, after, after_len, 1);
        if (j > i) i = j;
    }
    if (i == h->kv_len || h->kv[i].key.len < prefix_len || (prefix_len && memcmp(h->kv[i].key.p, prefix, prefix_len) != 0))
        return BERTH_NOT_FOUND;
    berth_status st = bth__emit_to(key_out, &h->kv[i].key);
    return st != BERTH_OK ? st : bth__emit_to(value_out, &h->kv[i].value);
}

static BTH_UNUSED berth_status bth__emit_event(void *ctx, const char *type, const char *json, size_t json_len) {
    bth_host *h = (bth_host *)ctx;
    if (!type || !*type) return BERTH_INVALID_ARGUMENT;
    if (json_len == 0 || json[0] != '{') return BERTH_INVALID_ARGUMENT; /* berthd parses it; we only sniff it */
    if (h->nevents == h->events_cap)
        h->events = (bth_event *)bth__xrealloc(h->events, (h->events_cap = h->events_cap ? h->events_cap * 2 : 16) * sizeof *h->events);
    h->events[h->nevents].type = bth__dup(type, strlen(type)).p;
    h->events[h->nevents].json = bth__dup(json, json_len).p;
    h->nevents++;
    return BERTH_OK;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Host lifecycle and transactions                                                                        */
/* ----------------------------------------------------------------------------------------------------- */

static BTH_UNUSED berth_status bth__on_complete(void *ctx, void (*commit)(void *), void (*rollback)(void *), void *arg) {
    bth_host *h = (bth_host *)ctx;
    if (!h->in_txn) return BERTH_FAILED_PRECONDITION;
    if (h->ncompletions == h->completions_cap) {
        h->completions_cap = h->completions_cap ? 2 * h->completions_cap : 8;
        h->completions = (struct bth_completion *)bth__xrealloc(h->completions, h->completions_cap * sizeof *h->completions);
    }
    h->completions[h->ncompletions].commit = commit;
    h->completions[h->ncompletions].rollback = rollback;
    h->completions[h->ncompletions].arg = arg;
    h->ncompletions++;
    return BERTH_OK;
}

static BTH_UNUSED berth_status bth__kv_len(void *ctx, const char *key, size_t key_len, uint64_t *len_out) {
    bth_host *h = (bth_host *)ctx;
    berth_status st = bth__kv_ok(h, key_len);
    if (st != BERTH_OK) return st;
    size_t i = bth__bound(h, key, key_len, 0);
    if (i >= h->kv_len || bth__cmp(h->kv[i].key.p, h->kv[i].key.len, key, key_len) != 0) return BERTH_NOT_FOUND;
    if (len_out) *len_out = h->kv[i].value.len;
    return BERTH_OK;
}

/* [first, last) of the keys that start with prefix. */
static BTH_UNUSED void bth__prefix_range(const bth_host *h, const char *prefix, size_t plen, size_t *first, size_t *last) {
    size_t i = plen ? bth__bound(h, prefix, plen, 0) : 0, j = i;
    while (j < h->kv_len && h->kv[j].key.len >= plen && memcmp(h->kv[j].key.p, prefix, plen) == 0) j++;
    *first = i;
    *last = j;
}

static BTH_UNUSED berth_status bth__kv_count_prefix(void *ctx, const char *prefix, size_t plen, uint64_t *count_out) {
    bth_host *h = (bth_host *)ctx;
    if (h->strict && !h->in_txn) return BERTH_FAILED_PRECONDITION;
    if (plen > 1024) return BERTH_INVALID_ARGUMENT;
    size_t a, b;
    bth__prefix_range(h, prefix, plen, &a, &b);
    if (count_out) *count_out = b - a;
    return BERTH_OK;
}

static BTH_UNUSED berth_status bth__kv_delete_prefix(void *ctx, const char *prefix, size_t plen, uint64_t *deleted_out) {
    bth_host *h = (bth_host *)ctx;
    berth_status st = bth__kv_ok(h, plen);
    if (st != BERTH_OK) return st;
    size_t a, b;
    bth__prefix_range(h, prefix, plen, &a, &b);
    bth__free_entries_range(h->kv + a, b - a);
    memmove(h->kv + a, h->kv + b, (h->kv_len - b) * sizeof *h->kv);
    h->kv_len -= b - a;
    if (deleted_out) *deleted_out = b - a;
    return BERTH_OK;
}

static BTH_UNUSED void bth_init(bth_host *h) {
    memset(h, 0, sizeof *h);
    h->strict = 1;
    h->services.struct_size = (uint32_t)sizeof(berth_host_services);
    h->services.host_abi_major = BERTH_ABI_MAJOR;
    h->services.host_abi_minor = BERTH_ABI_MINOR;
    h->services.host_ctx = h;
    h->services.log = bth__log;
    h->services.kv_get = bth__kv_get;
    h->services.kv_put = bth__kv_put;
    h->services.kv_delete = bth__kv_delete;
    h->services.kv_next = bth__kv_next;
    h->services.emit_event = bth__emit_event;
    h->services.on_complete = bth__on_complete;
    h->services.kv_len = bth__kv_len;
    h->services.kv_count_prefix = bth__kv_count_prefix;
    h->services.kv_delete_prefix = bth__kv_delete_prefix;
}

/* Pretends to be an ABI 1.0 or 1.1 host: services beyond that minor are cut off (struct_size) and NULL. */
static BTH_UNUSED void bth_set_host_minor(bth_host *h, uint16_t minor) {
    h->services.host_abi_minor = minor;
    if (minor < 2) {
        h->services.struct_size = BERTH_HOST_SERVICES_V1_0_SIZE;
        h->services.on_complete = NULL;
        h->services.kv_len = NULL;
        h->services.kv_count_prefix = NULL;
        h->services.kv_delete_prefix = NULL;
    }
}

static BTH_UNUSED void bth__truncate_events(bth_host *h, size_t n) {
    while (h->nevents > n) {
        h->nevents--;
        free(h->events[h->nevents].type);
        free(h->events[h->nevents].json);
    }
}

static BTH_UNUSED void bth_free(bth_host *h) {
    bth__free_entries(h->kv, h->kv_len);
    bth__free_entries(h->snap, h->snap_len);
    bth__truncate_events(h, 0);
    free(h->events);
    for (size_t i = 0; i < h->nlogs; i++) free(h->logs[i].msg);
    free(h->logs);
    free(h->completions);
    memset(h, 0, sizeof *h);
}

/* Opens a transaction: later kv writes and events are undone by bth_rollback(). Not nestable. */
static BTH_UNUSED void bth_begin(bth_host *h) {
    if (h->in_txn) {
        fprintf(stderr, "berth_testhost: bth_begin inside a transaction\n");
        abort();
    }
    h->snap = bth__copy_entries(h->kv, h->kv_len);
    h->snap_len = h->kv_len;
    h->events_at_begin = h->nevents;
    h->in_txn = 1;
}

static BTH_UNUSED void bth_commit(bth_host *h) {
    bth__free_entries(h->snap, h->snap_len);
    h->snap = NULL;
    h->snap_len = 0;
    h->in_txn = 0;
    size_t n = h->ncompletions;
    h->ncompletions = 0;
    for (size_t i = 0; i < n; i++)
        if (h->completions[i].commit) h->completions[i].commit(h->completions[i].arg);
}

static BTH_UNUSED void bth_rollback(bth_host *h) {
    bth__free_entries(h->kv, h->kv_len);
    h->kv = h->snap;
    h->kv_len = h->kv_cap = h->snap_len;
    h->snap = NULL;
    h->snap_len = 0;
    bth__truncate_events(h, h->events_at_begin);
    h->in_txn = 0;
    size_t n = h->ncompletions;
    h->ncompletions = 0;
    while (n-- > 0)
        if (h->completions[n].rollback) h->completions[n].rollback(h->completions[n].arg);
}

/* ----------------------------------------------------------------------------------------------------- */
/* Output collector                                                                                       */
/* ----------------------------------------------------------------------------------------------------- */

static BTH_UNUSED berth_status bth__out_write(void *ctx, const char *data, size_t len) {
    bth_out *o = (bth_out *)ctx;
    if (o->limit && o->len + len > o->limit) return BERTH_OUT_OF_RANGE;
    if (o->len + len + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + len + 1) cap *= 2;
        o->p = (char *)bth__xrealloc(o->p, cap);
        o->cap = cap;
    }
    if (len) memcpy(o->p + o->len, data, len);
    o->len += len;
    o->p[o->len] = 0;
    return BERTH_OK;
}

static BTH_UNUSED void bth_out_init(bth_out *o, size_t limit) {
    memset(o, 0, sizeof *o);
    o->limit = limit;
    o->sink.struct_size = (uint32_t)sizeof(berth_sink);
    o->sink.ctx = o;
    o->sink.write = bth__out_write;
    bth__out_write(o, "", 0);
}

static BTH_UNUSED void bth_out_reset(bth_out *o) {
    o->len = 0;
    if (o->p) o->p[0] = 0;
}

static BTH_UNUSED void bth_out_free(bth_out *o) {
    free(o->p);
    memset(o, 0, sizeof *o);
}

/* ----------------------------------------------------------------------------------------------------- */
/* Calling a plugin as berthd does                                                                        */
/* ----------------------------------------------------------------------------------------------------- */

/* Runs create() in a transaction with a NUL-terminated JSON configuration. The host would validate the
 * configuration against the plugin's schema first; do that yourself if your test depends on it. */
static BTH_UNUSED berth_status bth_create(bth_host *h, const berth_plugin_descriptor *d, const char *config, void **instance,
                                          char err[BERTH_ERR_CAP]) {
    err[0] = 0;
    *instance = NULL;
    bth_begin(h);
    berth_status st = d->create(&h->services, config, strlen(config), instance, err, BERTH_ERR_CAP);
    if (st == BERTH_OK) bth_commit(h);
    else bth_rollback(h);
    return st;
}

/* One JSON operation whose transaction is rolled back even when it returns BERTH_OK, as berthd does when its own
 * part of the operation fails afterwards: a plugin that deferred its side effects to after_commit keeps none. */
static BTH_UNUSED berth_status bth_call_then_rollback(bth_host *h, berth_json_op fn, void *instance, const char *req,
                                                      bth_out *out, char err[BERTH_ERR_CAP]) {
    err[0] = 0;
    bth_out_reset(out);
    bth_begin(h);
    berth_status st = fn(instance, req, strlen(req), &out->sink, err, BERTH_ERR_CAP);
    bth_rollback(h);
    return st;
}

/* One JSON operation (a berth_json_op such as d->network->add) in its own transaction: commit on BERTH_OK,
 * else roll back and discard the output. `out` is reset first; `err` gets the message on failure. */
static BTH_UNUSED berth_status bth_call(bth_host *h, berth_json_op fn, void *instance, const char *req, bth_out *out,
                                        char err[BERTH_ERR_CAP]) {
    err[0] = 0;
    bth_out_reset(out);
    if (!fn) {
        snprintf(err, BERTH_ERR_CAP, "the plugin does not implement this operation");
        return BERTH_UNIMPLEMENTED;
    }
    bth_begin(h);
    berth_status st = fn(instance, req, strlen(req), &out->sink, err, BERTH_ERR_CAP);
    if (st == BERTH_OK) {
        bth_commit(h);
    } else {
        bth_rollback(h);
        bth_out_reset(out);
        err[BERTH_ERR_CAP - 1] = 0;
    }
    return st;
}

/* The same for a network admin operation (d->network->admin) or the generic call (d->call). */
typedef berth_status (*bth_named_op)(void *instance, const char *name, const char *req, size_t req_len, const berth_sink *out,
                                     char *err, size_t err_cap);
static BTH_UNUSED berth_status bth_call_named(bth_host *h, bth_named_op fn, void *instance, const char *name, const char *req,
                                              bth_out *out, char err[BERTH_ERR_CAP]) {
    err[0] = 0;
    bth_out_reset(out);
    if (!fn) {
        snprintf(err, BERTH_ERR_CAP, "the plugin does not implement this operation");
        return BERTH_UNIMPLEMENTED;
    }
    bth_begin(h);
    berth_status st = fn(instance, name, req, strlen(req), &out->sink, err, BERTH_ERR_CAP);
    if (st == BERTH_OK) {
        bth_commit(h);
    } else {
        bth_rollback(h);
        bth_out_reset(out);
        err[BERTH_ERR_CAP - 1] = 0;
    }
    return st;
}

/* ----------------------------------------------------------------------------------------------------- */
/* Inspecting state                                                                                       */
/* ----------------------------------------------------------------------------------------------------- */

/* The value at a NUL-terminated key, or NULL. Works outside transactions (it is the test looking). */
static BTH_UNUSED const char *bth_kv_value(const bth_host *h, const char *key) {
    size_t n = strlen(key), i = bth__bound(h, key, n, 0);
    if (i == h->kv_len || bth__cmp(h->kv[i].key.p, h->kv[i].key.len, key, n) != 0) return NULL;
    return h->kv[i].value.p;
}

/* Seeds a key directly (outside any plugin call), e.g. to test a plugin against existing state. */
static BTH_UNUSED void bth_kv_seed(bth_host *h, const char *key, const char *value) {
    int strict = h->strict;
    h->strict = 0;
    bth__kv_put(h, key, strlen(key), value, strlen(value));
    h->strict = strict;
}

/* Number of keys that start with `prefix` ("" = all). */
static BTH_UNUSED size_t bth_kv_count(const bth_host *h, const char *prefix) {
    size_t n = strlen(prefix), c = 0;
    for (size_t i = bth__bound(h, prefix, n, 0); i < h->kv_len; i++, c++)
        if (h->kv[i].key.len < n || memcmp(h->kv[i].key.p, prefix, n) != 0) break;
    return c;
}

/* A fingerprint of the whole namespace (FNV-1a over keys and values): equal before and after = untouched. */
static BTH_UNUSED unsigned long long bth_kv_fingerprint(const bth_host *h) {
    unsigned long long x = 1469598103934665603ULL;
    for (size_t i = 0; i < h->kv_len; i++) {
        const bth_bytes *parts[2] = {&h->kv[i].key, &h->kv[i].value};
        for (int k = 0; k < 2; k++) {
            for (size_t j = 0; j < parts[k]->len; j++) x = (x ^ (unsigned char)parts[k]->p[j]) * 1099511628211ULL;
            x = (x ^ 0xFF) * 1099511628211ULL; /* separator */
        }
    }
    return x;
}

static BTH_UNUSED void bth_kv_dump(const bth_host *h, FILE *f) {
    for (size_t i = 0; i < h->kv_len; i++) fprintf(f, "  %.*s = %.*s\n", (int)h->kv[i].key.len, h->kv[i].key.p, (int)h->kv[i].value.len, h->kv[i].value.p);
}

/* Number of captured events of a type (NULL = all). */
static BTH_UNUSED size_t bth_event_count(const bth_host *h, const char *type) {
    size_t c = 0;
    for (size_t i = 0; i < h->nevents; i++) c += !type || strcmp(h->events[i].type, type) == 0;
    return c;
}

/* The last log line that contains `needle`, or NULL. */
static BTH_UNUSED const char *bth_find_log(const bth_host *h, const char *needle) {
    for (size_t i = h->nlogs; i-- > 0;)
        if (strstr(h->logs[i].msg, needle)) return h->logs[i].msg;
    return NULL;
}

/* ----------------------------------------------------------------------------------------------------- */
/* The loader's descriptor rules                                                                          */
/* ----------------------------------------------------------------------------------------------------- */

/* Returns 0 when berthd's loader would accept the descriptor; else -1 with the reason in `why`. */
static BTH_UNUSED int bth_check_descriptor(const berth_plugin_descriptor *d, uint16_t host_minor, char *why, size_t cap) {
#define BTH__FAIL(...) do { snprintf(why, cap, __VA_ARGS__); return -1; } while (0)
    if (!d) BTH__FAIL("berth_plugin_entry_v1 returned NULL");
    if (d->struct_size < 8) BTH__FAIL("descriptor struct_size %u is too small", d->struct_size);
    if (d->abi_major != BERTH_ABI_MAJOR) BTH__FAIL("ABI major %u, host speaks %d", d->abi_major, BERTH_ABI_MAJOR);
    if (d->abi_minor > host_minor) BTH__FAIL("ABI minor %u is newer than the host's %u", d->abi_minor, host_minor);
    if (d->struct_size < BERTH_DESCRIPTOR_V1_0_SIZE) BTH__FAIL("descriptor struct_size %u < ABI 1.0 size %u", d->struct_size, BERTH_DESCRIPTOR_V1_0_SIZE);
    if (!d->name || !*d->name) BTH__FAIL("name is missing");
    size_t n = strlen(d->name);
    if (n > 63) BTH__FAIL("name is longer than 63 bytes");
    for (size_t i = 0; i < n; i++) {
        char c = d->name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0))) BTH__FAIL("name \"%s\" must be [a-z0-9][a-z0-9-]*", d->name);
    }
    if (!d->version) BTH__FAIL("version is missing");
    if (!d->create || !d->destroy) BTH__FAIL("create and destroy are required");
    if (d->thread_contract > BERTH_THREADS_CONCURRENT) BTH__FAIL("unknown thread_contract %u", d->thread_contract);
    if (d->kinds & ~0x1Fu) BTH__FAIL("unknown kind bits 0x%x", d->kinds & ~0x1Fu);
    /* ABI 1.3's runtime table lies beyond the descriptor of older plugins: read it only when it is there. */
    const berth_runtime_ops *bth__rt =
        d->struct_size >= offsetof(berth_plugin_descriptor, runtime) + sizeof(void *) ? d->runtime : NULL;
#define BTH__TABLE(bit, ptr, kind, minsize)                                                                 \
    if (!!(d->kinds & (bit)) != !!(ptr)) BTH__FAIL("%s: the kind bit and the table must be set together", kind); \
    if ((ptr) && (ptr)->struct_size < (minsize)) BTH__FAIL("%s table struct_size %u < ABI 1.0 size %u", kind, (ptr)->struct_size, (minsize));
    BTH__TABLE(BERTH_KIND_NETWORK, d->network, "network", BERTH_NETWORK_OPS_V1_0_SIZE)
    BTH__TABLE(BERTH_KIND_STORAGE, d->storage, "storage", BERTH_STORAGE_OPS_V1_0_SIZE)
    BTH__TABLE(BERTH_KIND_SCHEDULER, d->scheduler, "scheduler", BERTH_SCHEDULER_OPS_V1_0_SIZE)
    BTH__TABLE(BERTH_KIND_DISCOVERY, d->discovery, "discovery", BERTH_DISCOVERY_OPS_V1_0_SIZE)
    BTH__TABLE(BERTH_KIND_RUNTIME, bth__rt, "runtime", BERTH_RUNTIME_OPS_V1_3_SIZE)
#undef BTH__TABLE
    if (d->network) {
        const berth_network_ops *o = d->network;
        if (!o->add || !o->del || !o->check || !o->gc || !o->status) BTH__FAIL("network: add, del, check, gc and status are all required");
    }
    if (d->storage) {
        const berth_storage_ops *o = d->storage;
        if (!o->create_volume || !o->delete_volume || !o->node_publish || !o->node_unpublish)
            BTH__FAIL("storage: create_volume, delete_volume, node_publish and node_unpublish are all required");
        if (!o->controller_publish != !o->controller_unpublish) BTH__FAIL("storage: controller_publish and controller_unpublish go together");
        if (!o->node_stage != !o->node_unstage) BTH__FAIL("storage: node_stage and node_unstage go together");
        if (!o->create_snapshot != !o->delete_snapshot) BTH__FAIL("storage: create_snapshot and delete_snapshot go together");
    }
    if (d->scheduler) {
        const berth_scheduler_ops *o = d->scheduler;
        if (!o->kind || !o->filter || !o->score || !o->reserve || !o->unreserve) BTH__FAIL("scheduler: kind, filter, score, reserve and unreserve are all required");
    }
    if (d->discovery && (!d->discovery->events || !d->discovery->resync)) BTH__FAIL("discovery: events and resync are both required");
    if (bth__rt && (!bth__rt->start || !bth__rt->stop || !bth__rt->state || !bth__rt->list || !bth__rt->remove))
        BTH__FAIL("runtime: start, stop, state, list and remove are all required");
    return 0;
#undef BTH__FAIL
}

/* ----------------------------------------------------------------------------------------------------- */
/* A minimal test runner                                                                                  */
/* ----------------------------------------------------------------------------------------------------- */

static int bth__passed BTH_UNUSED, bth__failed BTH_UNUSED, bth__case_failed BTH_UNUSED;

/* Checks a condition inside a test function; on failure prints where and why and marks the test failed. */
#define BTH_EXPECT(cond, ...)                                                                               \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fprintf(stdout, "    %s:%d: expected %s: ", __FILE__, __LINE__, #cond);                          \
            fprintf(stdout, __VA_ARGS__);                                                                   \
            fputc('\n', stdout);                                                                            \
            bth__case_failed = 1;                                                                           \
        }                                                                                                   \
    } while (0)

/* Runs one test function `void fn(void)` and records its result. */
#define BTH_RUN(fn)                                                                                         \
    do {                                                                                                    \
        bth__case_failed = 0;                                                                               \
        fn();                                                                                               \
        if (bth__case_failed) bth__failed++, fprintf(stdout, "FAIL  %s\n", #fn);                            \
        else bth__passed++, fprintf(stdout, "ok    %s\n", #fn);                                             \
    } while (0)

/* Prints "N passed, M failed" and returns the process exit code (0 when nothing failed). */
static BTH_UNUSED int bth_summary(void) {
    fprintf(stdout, "\n%d passed, %d failed\n", bth__passed, bth__failed);
    return bth__failed ? 1 : 0;
}

#endif /* BERTH_TESTHOST_H */
