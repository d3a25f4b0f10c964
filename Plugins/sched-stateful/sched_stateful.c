/*
 * sched-stateful — the reference scheduler plugin, in C. It owns the kind `StatefulApp`:
 *
 *   - stable ordinals name-0..N-1 (the host creates the instances; `reservedOrdinals` are skipped);
 *   - podManagementPolicy OrderedReady (ordinal N waits until N-1 is running) or Parallel;
 *   - an ordinal sticks to its previous node when that node is feasible (score 100);
 *   - an ordinal whose local volume lives on a node is placed only there (UNRESOLVABLE elsewhere);
 *   - spread across the zone label (fewer peers in a node's zone = higher score);
 *   - neverMigrate: an ordinal that ran on a node is placed only there, and stays pending while it is down.
 *
 * The host passes its facts in state_json (previousNode, previousNodeState, volumeNode, volumeNodeState,
 * predecessor {ordinal, state}, peers, zoneCounts {zoneId: n}). The plugin's own state is its memory of where
 * each ordinal was bound, kept in its key-value namespace (`b/<app>/<ordinal>` = node), plus the reservation in
 * flight (`r/<app>/<ordinal>`), so an ordinal that was scaled away and comes back finds its node again even
 * when the host no longer has a record of it. All of it commits with the host's transaction.
 *
 * Build by hand: cc -shared -fPIC -O2 -I PluginABI/include Plugins/sched-stateful/ *.c -o libberth-sched-stateful.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"
#include "span_json.h"

#define NAME_MAX_LEN 256
#define MAX_ZONES 256

typedef struct plugin {
    const berth_host_services *host;
} plugin;

#define CONFIG_SCHEMA "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{}}"

/* The kind's schema. The host validates the fields it interprets itself (resources, ports, network, volumes,
 * nodeSelector, constraints, run) in detail; this schema names them and owns the StatefulApp-specific ones. */
#define KIND_SCHEMA                                                                                          \
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"replicas\"],\"properties\":{"       \
    "\"replicas\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100000},"                                  \
    "\"podManagementPolicy\":{\"enum\":[\"OrderedReady\",\"Parallel\"]},"                                    \
    "\"reservedOrdinals\":{\"type\":\"array\",\"maxItems\":1000,\"items\":{\"type\":\"integer\",\"minimum\":0}}," \
    "\"neverMigrate\":{\"type\":\"boolean\"},"                                                               \
    "\"resources\":{\"type\":\"object\"},\"ports\":{\"type\":\"array\"},\"network\":{\"type\":\"object\"},"  \
    "\"volumes\":{\"type\":\"array\"},\"nodeSelector\":{\"type\":\"object\"},\"constraints\":{\"type\":\"array\"},\"run\":{\"type\":\"object\"}," \
    "\"description\":{\"type\":\"string\"}}}"

/* ---- host key-value helpers ------------------------------------------------------------------------- */

typedef struct strbuf {
    char data[NAME_MAX_LEN];
    size_t len;
    int overflow;
} strbuf;

static berth_status strbuf_write(void *ctx, const char *data, size_t len) {
    strbuf *b = ctx;
    if (b->len + len >= sizeof b->data) {
        b->overflow = 1;
        return BERTH_OUT_OF_RANGE;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return BERTH_OK;
}

static int make_key(char *key, size_t cap, char kind, const char *app, int64_t ordinal) {
    int n = snprintf(key, cap, "%c/%s/%lld", kind, app, (long long)ordinal);
    return (n > 0 && (size_t)n < cap) ? n : -1;
}

/* Reads the node remembered under key kind/app/ordinal into out; 1 when found. */
static int kv_node(plugin *pl, char kind, const char *app, int64_t ordinal, char *out, size_t cap) {
    char key[NAME_MAX_LEN + 32];
    int kl = make_key(key, sizeof key, kind, app, ordinal);
    if (kl < 0) return 0;
    strbuf b = {{0}, 0, 0};
    berth_sink sink = {sizeof(berth_sink), &b, strbuf_write};
    if (pl->host->kv_get(pl->host->host_ctx, key, (size_t)kl, &sink) != BERTH_OK || b.overflow || b.len >= cap) return 0;
    memcpy(out, b.data, b.len + 1);
    return 1;
}

/* ---- the instance being placed, read from spec_json and state_json --------------------------------- */

typedef struct facts {
    int ordered;                /* podManagementPolicy OrderedReady (the default) */
    int never_migrate;
    int reserved;               /* this ordinal is in reservedOrdinals */
    char previous[NAME_MAX_LEN];
    char previous_state[32];
    char volume_node[NAME_MAX_LEN];
    char volume_state[32];
    int has_predecessor;
    int64_t predecessor;
    char predecessor_state[32];
    int64_t peers;
    int zone_count;
    uint32_t zone_ids[MAX_ZONES];
    int64_t zone_peers[MAX_ZONES];
} facts;

static void read_facts(plugin *pl, const char *app, int64_t ordinal, span spec, span state, facts *f) {
    memset(f, 0, sizeof *f);
    f->ordered = 1;
    span v;
    if (js_get(spec, "podManagementPolicy", &v) && js_str_eq(v, "Parallel")) f->ordered = 0;
    if (js_get(spec, "neverMigrate", &v) && js_bool(v) == 1) f->never_migrate = 1;
    if (js_get(spec, "reservedOrdinals", &v)) {
        size_t pos = 0;
        span e;
        int64_t x;
        while (js_array_next(v, &pos, &e))
            if (js_int(e, &x) && x == ordinal) f->reserved = 1;
    }
    if (js_get(state, "previousNode", &v)) js_str(v, f->previous, sizeof f->previous);
    if (js_get(state, "previousNodeState", &v)) js_str(v, f->previous_state, sizeof f->previous_state);
    if (js_get(state, "volumeNode", &v)) js_str(v, f->volume_node, sizeof f->volume_node);
    if (js_get(state, "volumeNodeState", &v)) js_str(v, f->volume_state, sizeof f->volume_state);
    if (js_get(state, "predecessor", &v)) {
        span o, s;
        if (js_get(v, "ordinal", &o) && js_int(o, &f->predecessor)) {
            f->has_predecessor = 1;
            if (js_get(v, "state", &s)) js_str(s, f->predecessor_state, sizeof f->predecessor_state);
        }
    }
    if (js_get(state, "peers", &v)) js_int(v, &f->peers);
    if (js_get(state, "zoneCounts", &v)) {
        size_t pos = 0;
        span k, c;
        while (f->zone_count < MAX_ZONES && js_object_next(v, &pos, &k, &c)) {
            int64_t id = 0, n = 0;
            for (size_t i = 0; i < k.n && k.p[i] >= '0' && k.p[i] <= '9'; i++) id = id * 10 + (k.p[i] - '0');
            if (!js_int(c, &n)) continue;
            f->zone_ids[f->zone_count] = (uint32_t)id;
            f->zone_peers[f->zone_count] = n;
            f->zone_count++;
        }
    }
    /* The host's record of the previous node wins; the plugin's own memory covers ordinals the host forgot
     * (scaled down and up again). */
    if (!f->previous[0] && pl && app) kv_node(pl, 'b', app, ordinal, f->previous, sizeof f->previous);
}

static int64_t zone_peers(const facts *f, uint32_t zone) {
    for (int i = 0; i < f->zone_count; i++)
        if (f->zone_ids[i] == zone) return f->zone_peers[i];
    return 0;
}

/* Why nothing can be placed, in words; NULL when the facts do not restrict the nodes. */
static int explain(const facts *f, int64_t ordinal, char *out, size_t cap) {
    if (f->reserved)
        return snprintf(out, cap, "ordinal %lld is listed in reservedOrdinals and is never placed", (long long)ordinal);
    if (f->ordered && f->has_predecessor && strcmp(f->predecessor_state, "running") != 0)
        return snprintf(out, cap, "OrderedReady: waiting for ordinal %lld to be running (it is %s)", (long long)f->predecessor,
                        f->predecessor_state[0] ? f->predecessor_state : "missing");
    if (f->volume_node[0])
        return snprintf(out, cap, "its local volume lives on node %s, which is %s; ordinal %lld can only run there",
                        f->volume_node, f->volume_state[0] ? f->volume_state : "not available", (long long)ordinal);
    if (f->never_migrate && f->previous[0])
        return snprintf(out, cap, "neverMigrate: ordinal %lld stays with node %s, which is %s", (long long)ordinal,
                        f->previous, f->previous_state[0] ? f->previous_state : "not available");
    return 0;
}

/* ---- scheduler operations ---------------------------------------------------------------------------- */

#define NODE_AT(b, i) ((const berth_node_view *)((const char *)(b)->nodes + (size_t)(i) * (b)->node_size))

static berth_status ss_filter(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                              uint8_t *codes, char *err, size_t err_cap) {
    (void)err; (void)err_cap;
    facts f;
    read_facts(instance, inst->app, inst->ordinal, js_cstr(inst->spec_json), js_cstr(inst->state_json), &f);
    uint8_t all = BERTH_SCHED_SUCCESS;
    const char *only = NULL;
    if (f.reserved) all = BERTH_SCHED_UNRESOLVABLE;
    else if (f.ordered && f.has_predecessor && strcmp(f.predecessor_state, "running") != 0) all = BERTH_SCHED_WAIT;
    else if (f.volume_node[0]) only = f.volume_node;
    else if (f.never_migrate && f.previous[0]) only = f.previous;
    for (size_t i = 0; i < nodes->count; i++) {
        if (all != BERTH_SCHED_SUCCESS) codes[i] = all;
        else if (only) codes[i] = strcmp(NODE_AT(nodes, i)->name, only) == 0 ? BERTH_SCHED_SUCCESS : BERTH_SCHED_UNRESOLVABLE;
        else codes[i] = BERTH_SCHED_SUCCESS;
    }
    return BERTH_OK;
}

static berth_status ss_score(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                             int64_t *scores, char *err, size_t err_cap) {
    (void)err; (void)err_cap;
    facts f;
    read_facts(instance, inst->app, inst->ordinal, js_cstr(inst->spec_json), js_cstr(inst->state_json), &f);
    for (size_t i = 0; i < nodes->count; i++) {
        const berth_node_view *n = NODE_AT(nodes, i);
        if (f.previous[0] && strcmp(n->name, f.previous) == 0) {
            scores[i] = 100; /* sticky */
        } else if (n->zone == 0) {
            scores[i] = 45; /* no zone label: neutral */
        } else {
            scores[i] = 90 - 90 * zone_peers(&f, n->zone) / (f.peers + 1); /* spread: fewer peers in the zone wins */
        }
    }
    return BERTH_OK;
}

/* Parses {kind, app, ordinal, node[, final]} of reserve/unreserve/bind. */
static berth_status parse_binding(const char *req, size_t len, char *app, char *node, int64_t *ordinal, int *final,
                                  char *err, size_t err_cap) {
    span r = {req, len}, v;
    if (!js_get(r, "app", &v) || !js_str(v, app, NAME_MAX_LEN) || !app[0]) {
        BERTH_SET_ERR(err, err_cap, "\"app\" is required (a string of at most %d bytes)", NAME_MAX_LEN - 1);
        return BERTH_INVALID_ARGUMENT;
    }
    if (!js_get(r, "ordinal", &v) || !js_int(v, ordinal) || *ordinal < 0) {
        BERTH_SET_ERR(err, err_cap, "\"ordinal\" is required (a non-negative integer)");
        return BERTH_INVALID_ARGUMENT;
    }
    node[0] = 0;
    if (js_get(r, "node", &v)) js_str(v, node, NAME_MAX_LEN);
    *final = js_get(r, "final", &v) && js_bool(v) == 1;
    return BERTH_OK;
}

static berth_status put_node(plugin *pl, char kind, const char *app, int64_t ordinal, const char *node) {
    char key[NAME_MAX_LEN + 32];
    int kl = make_key(key, sizeof key, kind, app, ordinal);
    if (kl < 0) return BERTH_INVALID_ARGUMENT;
    return pl->host->kv_put(pl->host->host_ctx, key, (size_t)kl, node, strlen(node));
}

static berth_status del_key(plugin *pl, char kind, const char *app, int64_t ordinal) {
    char key[NAME_MAX_LEN + 32];
    int kl = make_key(key, sizeof key, kind, app, ordinal);
    if (kl < 0) return BERTH_INVALID_ARGUMENT;
    return pl->host->kv_delete(pl->host->host_ctx, key, (size_t)kl);
}

static berth_status ss_reserve(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    char app[NAME_MAX_LEN], node[NAME_MAX_LEN];
    int64_t ordinal;
    int final;
    berth_status st = parse_binding(req, len, app, node, &ordinal, &final, err, err_cap);
    if (st != BERTH_OK) return st;
    if (!node[0]) {
        BERTH_SET_ERR(err, err_cap, "\"node\" is required to reserve");
        return BERTH_INVALID_ARGUMENT;
    }
    st = put_node(instance, 'r', app, ordinal, node);
    if (st != BERTH_OK) BERTH_SET_ERR(err, err_cap, "cannot record the reservation of %s-%lld (status %d)", app, (long long)ordinal, st);
    return st;
}

/* Idempotent and never fails: drops the reservation (and, when final, the memory of the ordinal's node). */
static berth_status ss_unreserve(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    char app[NAME_MAX_LEN], node[NAME_MAX_LEN];
    int64_t ordinal;
    int final;
    if (parse_binding(req, len, app, node, &ordinal, &final, err, err_cap) != BERTH_OK) return BERTH_OK;
    del_key(instance, 'r', app, ordinal);
    if (final) del_key(instance, 'b', app, ordinal);
    return BERTH_OK;
}

static berth_status ss_bind(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    char app[NAME_MAX_LEN], node[NAME_MAX_LEN];
    int64_t ordinal;
    int final;
    berth_status st = parse_binding(req, len, app, node, &ordinal, &final, err, err_cap);
    if (st != BERTH_OK) return st;
    if (!node[0]) {
        BERTH_SET_ERR(err, err_cap, "\"node\" is required to bind");
        return BERTH_INVALID_ARGUMENT;
    }
    st = put_node(instance, 'b', app, ordinal, node);
    if (st == BERTH_OK) st = del_key(instance, 'r', app, ordinal);
    if (st != BERTH_OK) BERTH_SET_ERR(err, err_cap, "cannot record the binding of %s-%lld (status %d)", app, (long long)ordinal, st);
    return st;
}

/* ---- generic call: explain, remembered, info ------------------------------------------------------- */

static berth_status ss_call(void *instance, const char *method, const char *req, size_t req_len, const berth_sink *out,
                            char *err, size_t err_cap) {
    plugin *pl = instance;
    span r = {req, req_len}, v;
    if (strcmp(method, "info") == 0)
        return berth_sink_puts(out, "{\"kind\":\"StatefulApp\",\"explains\":true}");
    char app[NAME_MAX_LEN] = "";
    int64_t ordinal = -1;
    if (js_get(r, "app", &v)) js_str(v, app, sizeof app);
    if (js_get(r, "ordinal", &v)) js_int(v, &ordinal);
    if (strcmp(method, "explain") == 0) {
        /* {app, ordinal, spec, state} -> {"reason": "..."} (empty when the plugin's own rules allow any node) */
        span spec = {"{}", 2}, state = {"{}", 2};
        js_get(r, "spec", &spec);
        js_get(r, "state", &state);
        facts f;
        read_facts(pl, app[0] ? app : NULL, ordinal, spec, state, &f);
        char why[768], quoted[1024];
        why[0] = 0;
        explain(&f, ordinal, why, sizeof why);
        if (js_quote(why, quoted, sizeof quoted) < 0) strcpy(quoted, "\"\"");
        berth_status st = berth_sink_puts(out, "{\"reason\":");
        if (st == BERTH_OK) st = berth_sink_puts(out, quoted);
        if (st == BERTH_OK) st = berth_sink_puts(out, "}");
        return st;
    }
    if (strcmp(method, "remembered") == 0) {
        /* {app, ordinal} -> {"node": "..."} : the plugin's memory of where the ordinal was bound */
        char node[NAME_MAX_LEN], quoted[NAME_MAX_LEN * 2 + 8];
        if (!app[0] || ordinal < 0) {
            BERTH_SET_ERR(err, err_cap, "remembered needs {\"app\": ..., \"ordinal\": ...}");
            return BERTH_INVALID_ARGUMENT;
        }
        if (!kv_node(pl, 'b', app, ordinal, node, sizeof node)) return berth_sink_puts(out, "{\"node\":null}");
        if (js_quote(node, quoted, sizeof quoted) < 0) return BERTH_INTERNAL;
        berth_status st = berth_sink_puts(out, "{\"node\":");
        if (st == BERTH_OK) st = berth_sink_puts(out, quoted);
        if (st == BERTH_OK) st = berth_sink_puts(out, "}");
        return st;
    }
    BERTH_SET_ERR(err, err_cap, "unknown method \"%s\" (sched-stateful knows explain, remembered, info)", method);
    return BERTH_UNIMPLEMENTED;
}

/* ---- lifecycle --------------------------------------------------------------------------------------- */

static berth_status ss_create(const berth_host_services *host, const char *config, size_t config_len, void **instance_out,
                              char *err, size_t err_cap) {
    (void)config; (void)config_len;
    plugin *pl = calloc(1, sizeof *pl);
    if (!pl) {
        BERTH_SET_ERR(err, err_cap, "out of memory");
        return BERTH_INTERNAL;
    }
    pl->host = host;
    *instance_out = pl;
    return BERTH_OK;
}

static void ss_destroy(void *instance) { free(instance); }

static const berth_scheduler_ops SCHED = {
    .struct_size = sizeof(berth_scheduler_ops),
    .kind = "StatefulApp",
    .kind_schema = KIND_SCHEMA,
    .filter = ss_filter,
    .score = ss_score,
    .reserve = ss_reserve,
    .unreserve = ss_unreserve,
    .bind = ss_bind,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "sched-stateful",
    .version = "1.0.0",
    .description = "StatefulApp: stable ordinals, ordered start, sticky nodes, local volumes, zone spread, neverMigrate",
    .kinds = BERTH_KIND_SCHEDULER,
    .thread_contract = BERTH_THREADS_CONCURRENT, /* no mutable state outside the host's key-value namespace */
    .config_schema = CONFIG_SCHEMA,
    .create = ss_create,
    .destroy = ss_destroy,
    .reconfigure = NULL,
    .scheduler = &SCHED,
    .call = ss_call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    if (host_major != BERTH_ABI_MAJOR) return NULL;
    return &DESCRIPTOR;
}
