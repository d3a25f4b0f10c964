/*
 * The base of the conformance kit's scheduler fixtures: a small, correct scheduler plugin (kind "KitApp").
 * filter keeps nodes with free CPU (UNSCHEDULABLE otherwise), score prefers the fullest node, reserve records
 * "r/<app>/<ordinal>" -> node in the namespace, bind moves it to "b/<app>/<ordinal>", unreserve drops the
 * reservation (and, with "final": true, the binding) and always returns OK. Each fixture defines FIXTURE_NAME and
 * one KIT_* macro that breaks exactly one rule of sdk-docs/kinds/scheduler.md, then includes this file:
 *
 *   KIT_SCORES_OUT_OF_RANGE      score writes 150 for every node
 *   KIT_SCORES_NONDETERMINISTIC  score adds a per-call counter: the same batch scores differently each time
 *   KIT_FILTER_NONDETERMINISTIC  filter rejects a different node each call
 *   KIT_FILTER_POSITIONAL        filter rejects every third position of the batch, whatever node sits there
 *   KIT_UNRESERVE_LEAKS          unreserve deletes the wrong key: the reservation stays
 *   KIT_UNRESERVE_NOT_IDEMPOTENT unreserve of a reservation that is not there returns NOT_FOUND
 *   KIT_SEGV_RESERVE             reserve dereferences NULL on a request that is not a JSON object
 *   KIT_SEGV_HUGE                reserve and unreserve copy the app name into a fixed buffer: a crash over 1 MiB
 *   KIT_SEGV_LARGE_BATCH         filter keeps a fixed table of 4096 nodes and crashes on a larger batch
 *   KIT_RESERVE_NEEDS_UID        reserve requires a "uid" field, which berthd never sends: every reserve fails
 *   KIT_RESERVE_NOT_IDEMPOTENT   reserve of an ordinal that is already reserved returns ALREADY_EXISTS
 *   KIT_BIND_WRONG_KEY           bind looks for the reservation under the wrong key and returns NOT_FOUND
 *   KIT_ACCEPTS_INVALID          reserve and bind take requests they cannot read and record them under "?"
 *   KIT_SEGV_UNRESERVE           unreserve dereferences NULL on a request that is not a JSON object
 */
#include "berth_plugin.h"

#define NODE_AT(b, i) ((const berth_node_view *)((const char *)(b)->nodes + (size_t)(i) * (b)->node_size))

struct fx {
    const berth_host_services *host;
    unsigned long calls;
};

#ifdef KIT_SEGV_HUGE
/* "names are short": sfield's copy of a value over 1 MiB overruns its buffer */
#define KIT_SFIELD_TOO_LONG(len) do { if ((len) > (1u << 20)) crash(); } while (0)
#endif

#include "kitcommon.h"

/* {kind, app, ordinal, node[, final]}: INVALID_ARGUMENT naming the field when something is missing. */
static berth_status parse(const char *req, size_t len, char *key, size_t kcap, char *node, size_t ncap, int *final,
                          char *err, size_t cap) {
    char app[128];
#ifdef KIT_ACCEPTS_INVALID
    if (!is_object(req, len) || !sfield(req, len, "app", app, sizeof app) || nfield(req, len, "ordinal") < 0) {
        snprintf(key, kcap, "/?");
        snprintf(node, ncap, "?");
        *final = 0;
        return BERTH_OK;
    }
#endif
    if (!is_object(req, len)) { BERTH_SET_ERR(err, cap, "request is not a JSON object"); return BERTH_INVALID_ARGUMENT; }
    if (!sfield(req, len, "app", app, sizeof app)) { BERTH_SET_ERR(err, cap, "\"app\" is required (a string of at most 127 bytes)"); return BERTH_INVALID_ARGUMENT; }
    long ordinal = nfield(req, len, "ordinal");
    if (ordinal < 0) { BERTH_SET_ERR(err, cap, "\"ordinal\" is required (a non-negative integer)"); return BERTH_INVALID_ARGUMENT; }
    node[0] = 0;
    sfield(req, len, "node", node, ncap);
    *final = contains(req, len, "\"final\":true") || contains(req, len, "\"final\": true");
    snprintf(key, kcap, "/%s/%ld", app, ordinal);
    return BERTH_OK;
}

static berth_status put(struct fx *f, char kind, const char *key, const char *v) {
    char k[200];
    snprintf(k, sizeof k, "%c%s", kind, key);
    return f->host->kv_put(f->host->host_ctx, k, strlen(k), v, strlen(v));
}

static berth_status del(struct fx *f, char kind, const char *key) {
    char k[200];
    snprintf(k, sizeof k, "%c%s", kind, key);
    return f->host->kv_delete(f->host->host_ctx, k, strlen(k));
}

__attribute__((unused)) static berth_status get(struct fx *f, char kind, const char *key) {
    char k[200];
    struct buf b = {{0}, 0};
    berth_sink s = {sizeof s, &b, buf_write};
    snprintf(k, sizeof k, "%c%s", kind, key);
    return f->host->kv_get(f->host->host_ctx, k, strlen(k), &s);
}

static berth_status fx_filter(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes, uint8_t *codes,
                              char *err, size_t cap) {
    struct fx *f = instance;
    (void)inst; (void)err; (void)cap;
    f->calls++;
#ifdef KIT_SEGV_LARGE_BATCH
    static uint32_t table[4096];
    uint32_t *t = nodes->count <= 4096 ? table : NULL; /* "no site has more than 4096 nodes" */
    if (!t) crash();
#endif
    for (size_t i = 0; i < nodes->count; i++) {
        const berth_node_view *n = NODE_AT(nodes, i);
        codes[i] = n->cpu_free_milli >= 0 ? BERTH_SCHED_SUCCESS : BERTH_SCHED_UNSCHEDULABLE;
#ifdef KIT_FILTER_NONDETERMINISTIC
        if ((n->index + f->calls) % 4 == 0) codes[i] = BERTH_SCHED_UNSCHEDULABLE;
#endif
#ifdef KIT_FILTER_POSITIONAL
        codes[i] = i % 3 == 0 ? BERTH_SCHED_UNSCHEDULABLE : BERTH_SCHED_SUCCESS;
#endif
#ifdef KIT_SEGV_LARGE_BATCH
        t[i] = n->index;
#endif
    }
    return BERTH_OK;
}

static berth_status fx_score(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes, int64_t *scores,
                             char *err, size_t cap) {
    struct fx *f = instance;
    (void)inst; (void)err; (void)cap;
    f->calls++;
    for (size_t i = 0; i < nodes->count; i++) {
        int64_t free_cpu = NODE_AT(nodes, i)->cpu_free_milli;
        scores[i] = free_cpu <= 0 ? 100 : free_cpu >= 100000 ? 0 : 100 - free_cpu / 1000;
#ifdef KIT_SCORES_OUT_OF_RANGE
        scores[i] = 150;
#endif
#ifdef KIT_SCORES_NONDETERMINISTIC
        scores[i] = (scores[i] + (int64_t)f->calls) % 101;
#endif
    }
    return BERTH_OK;
}

static berth_status fx_reserve(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    char key[160], node[128];
    int final;
#ifdef KIT_SEGV_RESERVE
    if (!is_object(req, len)) crash();
#endif
    berth_status st = parse(req, len, key, sizeof key, node, sizeof node, &final, err, cap);
    if (st != BERTH_OK) return st;
    if (!node[0]) { BERTH_SET_ERR(err, cap, "\"node\" is required to reserve"); return BERTH_INVALID_ARGUMENT; }
#ifdef KIT_RESERVE_NEEDS_UID
    if (!contains(req, len, "\"uid\"")) { BERTH_SET_ERR(err, cap, "\"uid\" is required to reserve"); return BERTH_INVALID_ARGUMENT; }
#endif
#ifdef KIT_RESERVE_NOT_IDEMPOTENT
    if (get(instance, 'r', key) == BERTH_OK) { BERTH_SET_ERR(err, cap, "%s is already reserved", key); return BERTH_ALREADY_EXISTS; }
#endif
    return put(instance, 'r', key, node);
}

static berth_status fx_bind(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    char key[160], node[128];
    int final;
    berth_status st = parse(req, len, key, sizeof key, node, sizeof node, &final, err, cap);
    if (st != BERTH_OK) return st;
    if (!node[0]) { BERTH_SET_ERR(err, cap, "\"node\" is required to bind"); return BERTH_INVALID_ARGUMENT; }
#ifdef KIT_BIND_WRONG_KEY
    if (get(instance, 'r', node) != BERTH_OK) { BERTH_SET_ERR(err, cap, "bind of %s without a reservation", key); return BERTH_NOT_FOUND; }
#endif
    if ((st = put(instance, 'b', key, node)) != BERTH_OK) return st;
    return del(instance, 'r', key);
}

static berth_status fx_unreserve(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    char key[160], node[128];
    int final;
#ifdef KIT_SEGV_UNRESERVE
    if (!is_object(req, len)) crash();
#endif
    if (parse(req, len, key, sizeof key, node, sizeof node, &final, err, cap) != BERTH_OK) return BERTH_OK;
#ifdef KIT_UNRESERVE_NOT_IDEMPOTENT
    if (get(instance, 'r', key) == BERTH_NOT_FOUND && !(final && get(instance, 'b', key) == BERTH_OK)) {
        BERTH_SET_ERR(err, cap, "no reservation for %s", key);
        return BERTH_NOT_FOUND;
    }
#endif
#ifdef KIT_UNRESERVE_LEAKS
    del(instance, 'x', key);
#else
    del(instance, 'r', key);
#endif
    if (final) del(instance, 'b', key);
    return BERTH_OK;
}

static const berth_scheduler_ops SCHED = {
    .struct_size = sizeof(berth_scheduler_ops),
    .kind = "KitApp",
    .filter = fx_filter, .score = fx_score, .reserve = fx_reserve, .unreserve = fx_unreserve, .bind = fx_bind,
};

KIT_PLUGIN(.kinds = BERTH_KIND_SCHEDULER, .scheduler = &SCHED)
