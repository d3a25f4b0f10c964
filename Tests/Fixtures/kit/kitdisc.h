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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"

struct fx { const berth_host_services *host; };

static const char *find(const char *s, size_t len, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) if (memcmp(s + i, pat, pl) == 0) return s + i;
    return NULL;
}

static int sfield(const char *json, size_t len, const char *name, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = find(json, len, pat);
    if (!p) return 0;
    size_t j = (size_t)(p - json) + strlen(pat);
    while (j < len && (json[j] == ' ' || json[j] == ':' || json[j] == '[')) j++;
    if (j >= len || json[j] != '"') return 0;
    j++;
    size_t n = 0;
    while (j < len && json[j] != '"' && n + 1 < cap) out[n++] = json[j++];
    out[n] = 0;
    return j < len && json[j] == '"';
}

static long nfield(const char *json, size_t len, const char *name) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = find(json, len, pat);
    if (!p) return -1;
    size_t j = (size_t)(p - json) + strlen(pat);
    while (j < len && (json[j] == ' ' || json[j] == ':')) j++;
    if (j >= len || json[j] < '0' || json[j] > '9') return -1;
    long v = 0;
    while (j < len && json[j] >= '0' && json[j] <= '9' && v < 1000000000) v = v * 10 + (json[j++] - '0');
    return v;
}

static int is_object(const char *s, size_t len) {
    size_t a = 0, b = len;
    while (a < b && (s[a] == ' ' || s[a] == '\n')) a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\n')) b--;
    return b - a >= 2 && s[a] == '{' && s[b - 1] == '}';
}

struct small { char data[256]; size_t len; };
static berth_status small_write(void *ctx, const char *d, size_t n) {
    struct small *b = ctx;
    if (b->len + n >= sizeof b->data) return BERTH_OUT_OF_RANGE;
    memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = 0;
    return BERTH_OK;
}

static berth_status put(struct fx *f, const char *k, const char *v) { return f->host->kv_put(f->host->host_ctx, k, strlen(k), v, strlen(v)); }

static berth_status fx_create(const berth_host_services *host, const char *config, size_t len, void **out, char *err, size_t cap) {
    (void)config; (void)len;
    struct fx *f = calloc(1, sizeof *f);
    if (!f) { BERTH_SET_ERR(err, cap, "out of memory"); return BERTH_INTERNAL; }
    f->host = host;
    *out = f;
    return BERTH_OK;
}

static void fx_destroy(void *inst) { free(inst); }

/* One record (an event's data or a resync instance) at `rev` into the namespace. */
static berth_status apply(struct fx *f, const char *s, size_t len, long rev, int check_rev) {
#ifdef KIT_DISC_SEGV_HUGE
    if (len > (1u << 20)) *(volatile int *)0 = 1;
#endif
    char kind[64], app[128], state[32], ip[64] = "-", key[256], val[256];
    long ord = nfield(s, len, "ordinal");
    if (!sfield(s, len, "kind", kind, sizeof kind) || !sfield(s, len, "app", app, sizeof app) || ord < 0 ||
        !sfield(s, len, "state", state, sizeof state))
        return BERTH_OK; /* not an instance record: ignored */
    sfield(s, len, "ips", ip, sizeof ip);
    snprintf(key, sizeof key, "i/%s/%s/%ld", kind, app, ord);
#ifndef KIT_DISC_IGNORES_REV
    if (check_rev) {
        struct small b = {{0}, 0};
        berth_sink sink = {sizeof sink, &b, small_write};
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
        sfield(p, n, "type", type, sizeof type);
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
    struct small b = {{0}, 0};
    berth_sink sink = {sizeof sink, &b, small_write};
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
        struct small k = {{0}, 0};
        berth_sink ks = {sizeof ks, &k, small_write};
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

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = FIXTURE_NAME,
    .version = "0.1.0",
    .description = "conformance-kit fixture: " FIXTURE_NAME,
    .kinds = BERTH_KIND_DISCOVERY,
    .thread_contract = BERTH_THREADS_SERIAL,
    .create = fx_create,
    .destroy = fx_destroy,
    .discovery = &DISC,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {
    (void)minor;
    return major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
