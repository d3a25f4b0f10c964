/*
 * discplug — a small Berth discovery plugin in C: keeps the platform's instances and writes a hosts file.
 *
 *   resync  the full state at revision N: replaces every instance record (kv_delete_prefix on 1.2 hosts) and
 *           remembers N as the floor; events at or below the floor are ignored from then on
 *   events  applies instance.* events in any order, each at most once: a record keeps the revision it was last
 *           changed at, and an event no newer than that is ignored; a "gone" instance leaves a tombstone with its
 *           revision, so an older event delivered late does not bring it back. Other event types are ignored.
 *
 * The hosts file ("hostsFile" in the configuration, optional) is a side effect outside the namespace, so it is
 * written only AFTER the operation commits (ABI 1.2 on_complete): the operation computes the file's new text from
 * the namespace (which it can read, including its own writes) and hands it to an after_commit callback, which
 * writes it atomically (temporary file + rename). Callbacks run in commit order, so the file always shows the
 * latest committed state; a rolled-back operation frees the text and the file keeps the committed state. This
 * is the "mirror fed to a writer" pattern without ever showing uncommitted state.
 *
 * Keys:  floor                  the revision of the last resync, decimal
 *        inst/<kind>/<app>/<ordinal>   {"rev":N,"state":"...","node":"...","ips":[...]} (state "gone": a tombstone)
 *
 * Build:  cc -shared -fPIC -O2 -I PluginABI/include sdk-docs/examples/c-discovery/discplug.c -o /tmp/libberth-discplug.so
 * Check:  .build/debug/berth plugin check /tmp/libberth-discplug.so --config sdk-docs/examples/c-discovery/config.json
 */
#define _GNU_SOURCE /* nftw, strndup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "berth_json.h"
#include "berth_plugin.h"

typedef struct instance {
    const berth_host_services *host;
    char hosts_file[1024]; /* "" = none */
} instance;

#define FAIL(st, ...)                                                                                              \
    do {                                                                                                           \
        BERTH_SET_ERR(err, err_cap, __VA_ARGS__);                                                                  \
        return (st);                                                                                               \
    } while (0)

/* A growable byte buffer that is also a berth_sink. */
typedef struct dbuf {
    char *p;
    size_t n, cap;
} dbuf;

static berth_status dbuf_write(void *ctx, const char *d, size_t n) {
    dbuf *b = (dbuf *)ctx;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return BERTH_OUT_OF_RANGE;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return BERTH_OK;
}

static berth_sink dbuf_sink(dbuf *b) {
    b->n = 0;
    berth_sink s = {sizeof(berth_sink), b, dbuf_write};
    return s;
}

static int has_v12(const instance *in) {
    return in->host->host_abi_minor >= 2 && in->host->struct_size > offsetof(berth_host_services, kv_delete_prefix);
}

/* ---- create / destroy --------------------------------------------------------------------------------------- */

static berth_status create(const berth_host_services *host, const char *config, size_t len, void **out, char *err,
                           size_t err_cap) {
    bj_val c, v;
    if (bj_parse(config, len, &c) != BJ_OK || c.type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "configuration: not a JSON object");
    instance *in = calloc(1, sizeof *in);
    if (!in) FAIL(BERTH_INTERNAL, "out of memory");
    in->host = host;
    if (bj_get(c, "hostsFile", &v) == BJ_OK && (bj_string(v, in->hosts_file, sizeof in->hosts_file, NULL) != BJ_OK || in->hosts_file[0] != '/')) {
        free(in);
        FAIL(BERTH_INVALID_ARGUMENT, "configuration: \"hostsFile\" must be an absolute path");
    }
    *out = in;
    return BERTH_OK;
}

static void destroy(void *p) { free(p); }

/* ---- the hosts file, written after commit ------------------------------------------------------------------- */

typedef struct pending_file {
    char path[1024];
    dbuf text;
} pending_file;

static void write_file_cb(void *arg) {
    pending_file *f = arg;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->path);
    FILE *fp = fopen(tmp, "w");
    if (fp) {
        if (f->text.n) fwrite(f->text.p, 1, f->text.n, fp);
        if (fclose(fp) == 0) rename(tmp, f->path);
        else unlink(tmp);
    }
    free(f->text.p);
    free(f);
}

static void discard_file_cb(void *arg) {
    pending_file *f = arg;
    free(f->text.p);
    free(f);
}

/* "ip app-ordinal.kind" for every live instance, from the namespace as this operation sees it. */
static berth_status render_hosts(instance *in, dbuf *text) {
    const char *prefix = "inst/";
    dbuf key = {0}, val = {0};
    berth_status st = BERTH_OK;
    for (;;) {
        berth_sink ks = {sizeof(berth_sink), &key, dbuf_write}, vs = {sizeof(berth_sink), &val, dbuf_write};
        size_t after_n = key.n;
        char *after = after_n ? strndup(key.p, after_n) : NULL;
        key.n = 0;
        val.n = 0;
        st = in->host->kv_next(in->host->host_ctx, prefix, strlen(prefix), after, after_n, &ks, &vs);
        free(after);
        if (st == BERTH_NOT_FOUND) { st = BERTH_OK; break; }
        if (st != BERTH_OK) break;
        bj_val rec, state, ips, ip;
        if (bj_parse(val.p, val.n, &rec) != BJ_OK || bj_get(rec, "state", &state) != BJ_OK || bj_string_eq(state, "gone")) continue;
        /* the name: inst/<kind>/<app>/<ordinal> -> <app>-<ordinal>.<kind> */
        char name[600], kind[200] = "", app[300] = "", ord[40] = "";
        sscanf(key.p + 5, "%199[^/]/%299[^/]/%39s", kind, app, ord);
        snprintf(name, sizeof name, "%s-%s.%s", app, ord, kind);
        size_t pos = 0;
        char addr[64];
        if (bj_get(rec, "ips", &ips) != BJ_OK) continue;
        while (bj_next(ips, &pos, &ip) == BJ_OK) {
            if (bj_string(ip, addr, sizeof addr, NULL) != BJ_OK) continue;
            char *slash = strchr(addr, '/');
            if (slash) *slash = 0;
            char line[700];
            int n = snprintf(line, sizeof line, "%s %s\n", addr, name);
            if (dbuf_write(text, line, (size_t)n) != BERTH_OK) { st = BERTH_INTERNAL; break; }
        }
    }
    free(key.p);
    free(val.p);
    return st;
}

/* After a successful operation: the new hosts file, written once the operation's writes are committed. */
static berth_status schedule_hosts(instance *in, char *err, size_t err_cap) {
    if (!in->hosts_file[0]) return BERTH_OK;
    pending_file *f = calloc(1, sizeof *f);
    if (!f) FAIL(BERTH_INTERNAL, "out of memory");
    snprintf(f->path, sizeof f->path, "%s", in->hosts_file);
    berth_status st = render_hosts(in, &f->text);
    if (st == BERTH_OK && has_v12(in)) st = in->host->on_complete(in->host->host_ctx, write_file_cb, discard_file_cb, f);
    else if (st == BERTH_OK) { write_file_cb(f); return BERTH_OK; } /* older host: write in place */
    if (st != BERTH_OK) { discard_file_cb(f); FAIL(st, "cannot schedule the hosts file"); }
    return BERTH_OK;
}

/* ---- state -------------------------------------------------------------------------------------------------- */

static uint64_t floor_rev(instance *in) {
    dbuf b = {0};
    berth_sink s = dbuf_sink(&b);
    uint64_t f = 0;
    if (in->host->kv_get(in->host->host_ctx, "floor", 5, &s) == BERTH_OK && b.p) f = strtoull(b.p, NULL, 10);
    free(b.p);
    return f;
}

/* The key of an instance record; 0 when a field is missing or too long. */
static int record_key(bj_val rec, char *key, size_t cap) {
    char kind[128], app[256];
    bj_val v;
    int64_t ord;
    if (!(bj_get(rec, "kind", &v) == BJ_OK && bj_string(v, kind, sizeof kind, NULL) == BJ_OK)) return 0;
    if (!(bj_get(rec, "app", &v) == BJ_OK && bj_string(v, app, sizeof app, NULL) == BJ_OK)) return 0;
    if (!(bj_get(rec, "ordinal", &v) == BJ_OK && bj_i64(v, &ord) == BJ_OK)) return 0;
    if (strchr(kind, '/') || strchr(app, '/')) return 0;
    return snprintf(key, cap, "inst/%s/%s/%lld", kind, app, (long long)ord) < (int)cap;
}

/* Writes {"rev","state","node","ips"} for `rec` at `rev`. */
static berth_status put_record(instance *in, const char *key, bj_val rec, uint64_t rev) {
    dbuf b = {0};
    berth_sink s = dbuf_sink(&b);
    bj_writer w;
    bj_val v;
    bjw_init(&w, &s);
    bjw_begin_object(&w);
    bjw_key(&w, "rev");
    bjw_u64(&w, rev);
    const char *fields[] = {"state", "node", "ips"};
    for (int i = 0; i < 3; i++)
        if (bj_get(rec, fields[i], &v) == BJ_OK) { bjw_key(&w, fields[i]); bjw_raw(&w, v.p, v.n); }
    bjw_end_object(&w);
    berth_status st = bjw_finish(&w);
    if (st == BERTH_OK) st = in->host->kv_put(in->host->host_ctx, key, strlen(key), b.p, b.n);
    free(b.p);
    return st;
}

/* The revision of the stored record at `key`, 0 when there is none. */
static uint64_t stored_rev(instance *in, const char *key) {
    dbuf b = {0};
    berth_sink s = dbuf_sink(&b);
    uint64_t rev = 0;
    bj_val rec, v;
    if (in->host->kv_get(in->host->host_ctx, key, strlen(key), &s) == BERTH_OK && bj_parse(b.p, b.n, &rec) == BJ_OK &&
        bj_get(rec, "rev", &v) == BJ_OK)
        bj_u64(v, &rev);
    free(b.p);
    return rev;
}

static berth_status events(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    instance *in = inst;
    bj_val r, evs, ev, v, data;
    if (bj_parse(req, len, &r) != BJ_OK || r.type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "the request is not a JSON object");
    if (bj_get(r, "events", &evs) != BJ_OK || evs.type != BJ_ARRAY) FAIL(BERTH_INVALID_ARGUMENT, "events: an array is required");
    uint64_t floor = floor_rev(in);
    size_t pos = 0;
    int i = 0;
    for (int rc; (rc = bj_next(evs, &pos, &ev)) != BJ_MISSING; i++) {
        uint64_t rev;
        char type[64], key[512];
        if (rc != BJ_OK || ev.type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "events[%d]: an object is required", i);
        if (bj_get(ev, "rev", &v) != BJ_OK || bj_u64(v, &rev) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "events[%d].rev: a non-negative integer is required", i);
        if (bj_get(ev, "type", &v) != BJ_OK || bj_string(v, type, sizeof type, NULL) == BJ_ERR) FAIL(BERTH_INVALID_ARGUMENT, "events[%d].type: a string is required", i);
        if (strncmp(type, "instance.", 9) != 0 || rev <= floor) continue; /* not ours, or covered by the last resync */
        if (bj_get(ev, "data", &data) != BJ_OK || !record_key(data, key, sizeof key))
            FAIL(BERTH_INVALID_ARGUMENT, "events[%d].data: {kind, app, ordinal, state} is required", i);
        if (stored_rev(in, key) >= rev) continue; /* seen, or something newer is already applied */
        berth_status st = put_record(in, key, data, rev);
        if (st != BERTH_OK) FAIL(st, "kv_put %s failed", key);
    }
    return schedule_hosts(in, err, err_cap);
}

static berth_status delete_all_instances(instance *in) {
    if (has_v12(in)) return in->host->kv_delete_prefix(in->host->host_ctx, "inst/", 5, NULL);
    dbuf k = {0};
    berth_status st;
    for (;;) { /* before ABI 1.2: one key at a time */
        berth_sink ks = dbuf_sink(&k);
        st = in->host->kv_next(in->host->host_ctx, "inst/", 5, NULL, 0, &ks, NULL);
        if (st != BERTH_OK) break;
        if ((st = in->host->kv_delete(in->host->host_ctx, k.p, k.n)) != BERTH_OK) break;
    }
    free(k.p);
    return st == BERTH_NOT_FOUND ? BERTH_OK : st;
}

static berth_status resync(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    instance *in = inst;
    bj_val r, list, rec, v;
    uint64_t rev;
    if (bj_parse(req, len, &r) != BJ_OK || r.type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "the request is not a JSON object");
    if (bj_get(r, "rev", &v) != BJ_OK || bj_u64(v, &rev) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "rev: a non-negative integer is required");
    if (bj_get(r, "instances", &list) != BJ_OK || list.type != BJ_ARRAY) FAIL(BERTH_INVALID_ARGUMENT, "instances: an array is required");
    berth_status st = delete_all_instances(in);
    if (st != BERTH_OK) FAIL(st, "clearing the instances failed");
    size_t pos = 0;
    int i = 0;
    for (int rc; (rc = bj_next(list, &pos, &rec)) != BJ_MISSING; i++) {
        char key[512];
        if (rc != BJ_OK || !record_key(rec, key, sizeof key)) FAIL(BERTH_INVALID_ARGUMENT, "instances[%d]: {kind, app, ordinal, state} is required", i);
        if ((st = put_record(in, key, rec, rev)) != BERTH_OK) FAIL(st, "kv_put %s failed", key);
    }
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)rev);
    if ((st = in->host->kv_put(in->host->host_ctx, "floor", 5, num, strlen(num))) != BERTH_OK) FAIL(st, "kv_put floor failed");
    return schedule_hosts(in, err, err_cap);
}

/* ---- descriptor --------------------------------------------------------------------------------------------- */

static const char SCHEMA[] =
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"hostsFile\":{\"type\":\"string\",\"minLength\":2}}}";

static const berth_discovery_ops DISCOVERY = {
    .struct_size = sizeof(berth_discovery_ops),
    .events = events,
    .resync = resync,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "discplug",
    .version = "1.0.0",
    .description = "instances into a hosts file, written after commit (SDK example in C)",
    .kinds = BERTH_KIND_DISCOVERY,
    .thread_contract = BERTH_THREADS_SERIAL,
    .config_schema = SCHEMA,
    .create = create,
    .destroy = destroy,
    .discovery = &DISCOVERY,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    return host_major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
