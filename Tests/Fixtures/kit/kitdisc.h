/*
 * The base of the conformance kit's discovery fixtures: a small, correct discovery plugin. It keeps one key per
 * instance in its namespace, "i/<kind>/<app>/<ordinal>" -> "<rev> <state> <ip>", applies an event only when its
 * rev is newer than the one recorded for that instance (so "gone" stays as a tombstone and an older event cannot
 * resurrect it), ignores event types other than instance.*, and on resync replaces everything with the snapshot.
 * Each fixture defines FIXTURE_NAME and one KIT_* macro that breaks exactly one rule of sdk-docs/kinds/discovery.md:
 *
 *   KIT_DISC_COUNTS       counts its deliveries in the namespace: a repeated batch changes the state
 *   KIT_DISC_IGNORES_REV  applies every event whatever its rev: an older batch resurrects a gone instance
 *   KIT_DISC_SEGV_HUGE    copies each event into a fixed buffer: a crash (SIGSEGV) on a request over 1 MiB
 *   KIT_DISC_RESYNC_MERGES merges a resync into what it knows instead of replacing it: instances the snapshot no
 *                         longer has survive, so the state after a resync depends on the history before it
 *
 * The JSON handling is just enough for the kit's requests (events split at "rev", instances at "kind").
 */
#include "berth_plugin.h"

struct fx { const berth_host_services *host; };

#include "kitcommon.h"

/* Laxer than sfield, as this base has always read its records: the value may be the first string of a list
 * ("ips": ["10.0.0.2"]), an empty string counts, and a value cut at cap - 1 is still written to out (but answers 0). */
static int sfield_lax(const char *json, size_t len, const char *name, char *out, size_t cap) {
    size_t j = value_at(json, len, name, 1);
    if (j >= len || json[j] != '"') return 0;
    j++;
    size_t n = 0;
    while (j < len && json[j] != '"' && n + 1 < cap) out[n++] = json[j++];
    out[n] = 0;
    return j < len && json[j] == '"';
}

static berth_status put(struct fx *f, const char *k, const char *v) { return f->host->kv_put(f->host->host_ctx, k, strlen(k), v, strlen(v)); }

/* One record (an event's data or a resync instance) at `rev` into the namespace. */
static berth_status apply(struct fx *f, const char *s, size_t len, long rev, int check_rev) {
#ifdef KIT_DISC_SEGV_HUGE
    if (len > (1u << 20)) crash();
#endif
    char kind[64], app[128], state[32], ip[64] = "-", key[256], val[256];
    long ord = nfield(s, len, "ordinal");
    if (!sfield_lax(s, len, "kind", kind, sizeof kind) || !sfield_lax(s, len, "app", app, sizeof app) || ord < 0 ||
        !sfield_lax(s, len, "state", state, sizeof state))
        return BERTH_OK; /* not an instance record: ignored */
    sfield_lax(s, len, "ips", ip, sizeof ip);
    snprintf(key, sizeof key, "i/%s/%s/%ld", kind, app, ord);
#ifndef KIT_DISC_IGNORES_REV
    if (check_rev) {
        struct buf b = {{0}, 0};
        berth_sink sink = {sizeof sink, &b, buf_write};
        if (f->host->kv_get(f->host->host_ctx, key, strlen(key), &sink) == BERTH_OK && strtol(b.data, NULL, 10) >= rev) return BERTH_OK;
    }
#else
    (void)check_rev;
#endif
    snprintf(val, sizeof val, "%ld %s %s", rev, state, ip);
    return put(f, key, val);
}

static berth_status fx_events(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    struct fx *f = inst;
    if (!is_object(req, len)) { BERTH_SET_ERR(err, cap, "request is not a JSON object"); return BERTH_INVALID_ARGUMENT; }
    const char *p = find(req, len, "\"events\"");
    if (!p) { BERTH_SET_ERR(err, cap, "\"events\" is required"); return BERTH_INVALID_ARGUMENT; }
    const char *end = req + len;
    p = find(p, (size_t)(end - p), "\"rev\"");
    while (p) {
        const char *next = find(p + 5, (size_t)(end - p - 5), "\"rev\"");
        size_t n = (size_t)((next ? next : end) - p);
        long rev = nfield(p, n, "rev");
        char type[64] = "";
        sfield_lax(p, n, "type", type, sizeof type);
        if (rev >= 0 && strncmp(type, "instance.", 9) == 0) {
            const char *d = find(p, n, "\"data\"");
            if (d) {
                berth_status st = apply(f, d, n - (size_t)(d - p), rev, 1);
                if (st != BERTH_OK) return st;
            }
        }
        p = next;
    }
#ifdef KIT_DISC_COUNTS
    struct buf b = {{0}, 0};
    berth_sink sink = {sizeof sink, &b, buf_write};
    long count = f->host->kv_get(f->host->host_ctx, "deliveries", 10, &sink) == BERTH_OK ? strtol(b.data, NULL, 10) : 0;
    char text[32];
    snprintf(text, sizeof text, "%ld", count + 1);
    return put(f, "deliveries", text);
#else
    return BERTH_OK;
#endif
}

static berth_status fx_resync(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    struct fx *f = inst;
    if (!is_object(req, len)) { BERTH_SET_ERR(err, cap, "request is not a JSON object"); return BERTH_INVALID_ARGUMENT; }
    long rev = nfield(req, len, "rev");
    const char *p = find(req, len, "\"instances\"");
    if (rev < 0 || !p) { BERTH_SET_ERR(err, cap, "\"rev\" and \"instances\" are required"); return BERTH_INVALID_ARGUMENT; }
    /* Everything known so far goes; the snapshot is authoritative. */
#ifndef KIT_DISC_RESYNC_MERGES
    for (;;) {
        struct buf k = {{0}, 0};
        berth_sink ks = {sizeof ks, &k, buf_write};
        if (f->host->kv_next(f->host->host_ctx, "i/", 2, "", 0, &ks, NULL) != BERTH_OK) break;
        berth_status st = f->host->kv_delete(f->host->host_ctx, k.data, k.len);
        if (st != BERTH_OK) return st;
    }
#endif
    const char *end = req + len;
    p = find(p, (size_t)(end - p), "\"kind\"");
    while (p) {
        const char *next = find(p + 6, (size_t)(end - p - 6), "\"kind\"");
        berth_status st = apply(f, p, (size_t)((next ? next : end) - p), rev, 0);
        if (st != BERTH_OK) return st;
        p = next;
    }
    return BERTH_OK;
}

static const berth_discovery_ops DISC = {
    .struct_size = sizeof(berth_discovery_ops),
    .events = fx_events,
    .resync = fx_resync,
};

KIT_PLUGIN(.kinds = BERTH_KIND_DISCOVERY, .discovery = &DISC)
