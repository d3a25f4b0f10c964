/*
 * broken_storage.c — a deliberately broken storage plugin for the conformance suite's own tests.
 *
 * It loads and runs, but breaks CSI's rules on purpose:
 *   - create_volume validates nothing (no name required, malformed JSON accepted) and is not idempotent: the same
 *     name always makes a new volume, whatever the size;
 *   - delete_volume of an unknown id returns NOT_FOUND instead of OK;
 *   - controller_publish publishes anything anywhere: unknown volumes, and single-node-writer volumes on a second node;
 *   - list_volumes ignores maxEntries and the page token (a bad token is not refused);
 *   - node_publish is not idempotent: publishing the same target twice returns ALREADY_EXISTS;
 *     and it "publishes" unknown volumes.
 * State lives in its key-value namespace like a good plugin's (v/<id> volumes, p/<target> publications).
 */
#include <berth_plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const berth_host_services *host;
} broken;

/* Crude: the string value following "key": in the request (no escapes). */
static int get_str(const char *req, size_t len, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) {
        if (memcmp(req + i, pat, pl) != 0) continue;
        size_t j = i + pl;
        while (j < len && (req[j] == ' ' || req[j] == ':')) j++;
        if (j >= len || req[j] != '"') return 0;
        j++;
        size_t k = 0;
        while (j < len && req[j] != '"' && k + 1 < cap) out[k++] = req[j++];
        out[k] = 0;
        return 1;
    }
    return 0;
}

static long long get_int(const char *req, size_t len, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) {
        if (memcmp(req + i, pat, pl) != 0) continue;
        size_t j = i + pl;
        while (j < len && (req[j] == ' ' || req[j] == ':')) j++;
        char num[32];
        size_t k = 0;
        while (j < len && k + 1 < sizeof num && req[j] >= '0' && req[j] <= '9') num[k++] = req[j++];
        num[k] = 0;
        return atoll(num);
    }
    return 0;
}

typedef struct { char buf[256]; size_t n; } small_sink;
static berth_status small_write(void *ctx, const char *d, size_t n) {
    small_sink *s = ctx;
    if (s->n + n >= sizeof s->buf) return BERTH_OUT_OF_RANGE;
    memcpy(s->buf + s->n, d, n);
    s->n += n;
    s->buf[s->n] = 0;
    return BERTH_OK;
}

static berth_status kv_has(broken *b, const char *key) {
    small_sink s = {{0}, 0};
    berth_sink sink = {sizeof(berth_sink), &s, small_write};
    return b->host->kv_get(b->host->host_ctx, key, strlen(key), &sink);
}

static berth_status b_create(const berth_host_services *host, const char *config, size_t len, void **out, char *err, size_t cap) {
    (void)config; (void)len; (void)err; (void)cap;
    broken *b = calloc(1, sizeof *b);
    b->host = host;
    *out = b;
    return BERTH_OK;
}

static void b_destroy(void *p) { free(p); }

static berth_status create_volume(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)err; (void)cap;
    broken *b = p;
    small_sink s = {{0}, 0};
    berth_sink sink = {sizeof(berth_sink), &s, small_write};
    long long seq = 0;
    if (b->host->kv_get(b->host->host_ctx, "seq", 3, &sink) == BERTH_OK) seq = atoll(s.buf);
    seq++;
    char num[32], key[64], val[256];
    int n = snprintf(num, sizeof num, "%lld", seq);
    b->host->kv_put(b->host->host_ctx, "seq", 3, num, (size_t)n);
    long long size = get_int(req, len, "capacityBytes");
    snprintf(key, sizeof key, "v/bv-%lld", seq);
    int vl = snprintf(val, sizeof val, "{\"volumeId\":\"bv-%lld\",\"capacityBytes\":%lld}", seq, size);
    b->host->kv_put(b->host->host_ctx, key, strlen(key), val, (size_t)vl);
    return out->write(out->ctx, val, (size_t)vl);
}

static berth_status delete_volume(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    broken *b = p;
    char id[200], key[256];
    if (!get_str(req, len, "volumeId", id, sizeof id)) { BERTH_SET_ERR(err, cap, "volumeId?"); return BERTH_INTERNAL; }
    snprintf(key, sizeof key, "v/%s", id);
    if (kv_has(b, key) != BERTH_OK) { BERTH_SET_ERR(err, cap, "no such volume %s", id); return BERTH_NOT_FOUND; }
    b->host->kv_delete(b->host->host_ctx, key, strlen(key));
    return BERTH_OK;
}

static berth_status controller_publish(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)p; (void)req; (void)len; (void)err; (void)cap;
    return berth_sink_puts(out, "{\"publishContext\":{}}");
}

static berth_status controller_unpublish(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)p; (void)req; (void)len; (void)out; (void)err; (void)cap;
    return BERTH_OK;
}

static berth_status node_publish(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    broken *b = p;
    char target[1024], key[1100];
    if (!get_str(req, len, "targetPath", target, sizeof target)) { BERTH_SET_ERR(err, cap, "targetPath?"); return BERTH_INTERNAL; }
    snprintf(key, sizeof key, "p/%s", target);
    if (kv_has(b, key) == BERTH_OK) { BERTH_SET_ERR(err, cap, "%s is already published", target); return BERTH_ALREADY_EXISTS; }
    b->host->kv_put(b->host->host_ctx, key, strlen(key), "1", 1);
    mkdir(target, 0755);
    return BERTH_OK;
}

static berth_status node_unpublish(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out; (void)err; (void)cap;
    broken *b = p;
    char target[1024], key[1100];
    if (!get_str(req, len, "targetPath", target, sizeof target)) return BERTH_OK;
    snprintf(key, sizeof key, "p/%s", target);
    b->host->kv_delete(b->host->host_ctx, key, strlen(key));
    rmdir(target);
    return BERTH_OK;
}

typedef struct { char buf[1024]; size_t n; } key_sink;
static berth_status key_write(void *ctx, const char *d, size_t n) {
    key_sink *s = ctx;
    if (s->n + n >= sizeof s->buf) return BERTH_OUT_OF_RANGE;
    memcpy(s->buf + s->n, d, n);
    s->n += n;
    s->buf[s->n] = 0;
    return BERTH_OK;
}

static berth_status list_volumes(void *p, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)req; (void)len; (void)err; (void)cap;
    broken *b = p;
    berth_sink_puts(out, "{\"entries\":[");
    key_sink k = {{0}, 0}, v = {{0}, 0};
    char after[1024] = "";
    int first = 1;
    for (;;) {
        k.n = 0; v.n = 0; k.buf[0] = 0; v.buf[0] = 0;
        berth_sink ks = {sizeof(berth_sink), &k, key_write}, vs = {sizeof(berth_sink), &v, key_write};
        if (b->host->kv_next(b->host->host_ctx, "v/", 2, after, strlen(after), &ks, &vs) != BERTH_OK) break;
        if (!first) berth_sink_puts(out, ",");
        first = 0;
        out->write(out->ctx, v.buf, v.n);
        snprintf(after, sizeof after, "%s", k.buf);
    }
    return berth_sink_puts(out, "]}");
}

static const berth_storage_ops storage_ops = {
    .struct_size = sizeof(berth_storage_ops),
    .create_volume = create_volume,
    .delete_volume = delete_volume,
    .node_publish = node_publish,
    .node_unpublish = node_unpublish,
    .controller_publish = controller_publish,
    .controller_unpublish = controller_unpublish,
    .list_volumes = list_volumes,
};

static const berth_plugin_descriptor descriptor = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "broken-storage",
    .version = "0.0.1",
    .description = "A storage plugin that breaks CSI idempotency and error codes on purpose (test fixture)",
    .kinds = BERTH_KIND_STORAGE,
    .thread_contract = BERTH_THREADS_SERIAL,
    .create = b_create,
    .destroy = b_destroy,
    .storage = &storage_ops,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    return host_major == BERTH_ABI_MAJOR ? &descriptor : NULL;
}
