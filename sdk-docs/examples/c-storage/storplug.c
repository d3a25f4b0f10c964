/*
 * storplug — a small Berth storage plugin in C: directory volumes under a root, published by symlink.
 *
 *   create_volume   a directory <root>/volumes/<id>; idempotent by name (same name and size: the same volume)
 *   delete_volume   FAILED_PRECONDITION while published; the data is removed only AFTER the deletion commits
 *   node_publish    the plugin creates the target: a symlink to the volume's directory (CSI's rule: the CO makes
 *                   the staging path, the plugin makes the target); idempotent per target
 *   node_unpublish  removes the target after the unpublish commits; an unknown target is BERTH_OK
 *   call "info"     {"nodes": [...], "maxVolumeBytes": N}: what `berth plugin check` asks before the storage cases
 *
 * Side effects and transactions (ABI 1.2 on_complete): every operation runs in a host transaction that may still
 * roll back AFTER the plugin returned BERTH_OK (the host's own part of the operation can fail). So:
 *   - what must match the committed state is done in after_commit (delete a volume's data, remove a target);
 *   - what the operation itself needs is done in place and undone in after_rollback (the directory of a new
 *     volume, a new target symlink).
 * On a host older than 1.2 (no on_complete) it falls back to acting in place.
 *
 * All state is in the key-value namespace (the instance keeps only its configuration), so it declares
 * BERTH_THREADS_CONCURRENT. Keys:
 *   next                      the next volume number, decimal
 *   name/<name>               the volume id of a name
 *   vol/<id>                  {"name":..., "capacityBytes":N}
 *   pub/<id>/<hash>           {"targetPath":..., "readonly":b}: a target path can be 4,096 bytes and a key at most
 *                             1,024, so publications are keyed by a 128-bit hash of the path (32 hex digits) and
 *                             the full path is kept in the value and compared on every lookup.
 *
 * JSON in and out with the SDK's header-only helper, PluginABI/include/berth_json.h (exact 64-bit integers).
 *
 * Build:  cc -shared -fPIC -O2 -I PluginABI/include sdk-docs/examples/c-storage/storplug.c -o /tmp/libberth-storplug.so
 * Check:  .build/debug/berth plugin check /tmp/libberth-storplug.so --config sdk-docs/examples/c-storage/config.json
 */
#define _GNU_SOURCE /* nftw, strndup */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth_json.h"
#include "berth_plugin.h"

typedef struct instance {
    const berth_host_services *host;
    char root[1024];
    char nodes[8][64];
    int nnodes;
    uint64_t max_bytes;
} instance;

/* ---- small helpers ------------------------------------------------------------------------------------------ */

#define FAIL(st, ...)                                                                                              \
    do {                                                                                                           \
        BERTH_SET_ERR(err, err_cap, __VA_ARGS__);                                                                  \
        return (st);                                                                                               \
    } while (0)

typedef struct buf {
    char p[4096 + 512];
    size_t n;
    int overflow;
} buf;

static berth_status buf_write(void *ctx, const char *d, size_t n) {
    buf *b = (buf *)ctx;
    if (b->n + n >= sizeof b->p) { b->overflow = 1; return BERTH_OUT_OF_RANGE; }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return BERTH_OK;
}

/* kv_get into a fixed buffer (values here are small). BERTH_NOT_FOUND when missing. */
static berth_status kv_get(instance *in, const char *key, buf *b) {
    b->n = 0;
    b->overflow = 0;
    b->p[0] = 0;
    berth_sink s = {sizeof(berth_sink), b, buf_write};
    return in->host->kv_get(in->host->host_ctx, key, strlen(key), &s);
}

static berth_status kv_put(instance *in, const char *key, const char *val, size_t n) {
    return in->host->kv_put(in->host->host_ctx, key, strlen(key), val, n);
}

static berth_status kv_del(instance *in, const char *key) { return in->host->kv_delete(in->host->host_ctx, key, strlen(key)); }

/* A JSON value written with the writer into a buf. */
static berth_sink buf_sink(buf *b) {
    b->n = 0;
    b->overflow = 0;
    berth_sink s = {sizeof(berth_sink), b, buf_write};
    return s;
}

/* Two FNV-1a 64-bit hashes with different offsets: 32 hex digits naming a target path inside a key. */
static void path_hash(const char *p, char out[33]) {
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
    for (const unsigned char *q = (const unsigned char *)p; *q; q++) {
        a = (a ^ *q) * 0x100000001b3ULL;
        b = (b ^ *q) * 0x100000001b3ULL;
        b ^= b >> 29;
    }
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/* ABI 1.2 on_complete, when the host has it. */
static int has_on_complete(const instance *in) {
    return in->host->host_abi_minor >= 2 && in->host->struct_size > offsetof(berth_host_services, on_complete) &&
           in->host->on_complete != NULL;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(path);
}

/* Callbacks own a heap copy of the path they act on. */
static void remove_tree_cb(void *arg) {
    nftw((char *)arg, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(arg);
}
static void unlink_cb(void *arg) {
    unlink((char *)arg);
    free(arg);
}
static void free_cb(void *arg) { free(arg); }

/* Runs `fn(path)` after the operation commits (or now, on an older host); frees the copy when it rolls back. */
static berth_status after_commit(instance *in, void (*fn)(void *), const char *path) {
    char *copy = strdup(path);
    if (!copy) return BERTH_INTERNAL;
    if (!has_on_complete(in)) { fn(copy); return BERTH_OK; }
    berth_status st = in->host->on_complete(in->host->host_ctx, fn, free_cb, copy);
    if (st != BERTH_OK) free(copy);
    return st;
}

/* Runs `fn(path)` if the operation rolls back (nothing on an older host: a leftover then stays behind). */
static berth_status undo_on_rollback(instance *in, void (*fn)(void *), const char *path) {
    if (!has_on_complete(in)) return BERTH_OK;
    char *copy = strdup(path);
    if (!copy) return BERTH_INTERNAL;
    berth_status st = in->host->on_complete(in->host->host_ctx, free_cb, fn, copy);
    if (st != BERTH_OK) free(copy);
    return st;
}

/* A required string member into `out`. */
static int get_str(bj_val req, const char *key, char *out, size_t cap) {
    bj_val v;
    return bj_get(req, key, &v) == BJ_OK && bj_string(v, out, cap, NULL) == BJ_OK;
}

static berth_status parse(const char *req, size_t len, bj_val *r, char *err, size_t err_cap) {
    if (bj_parse(req, len, r) != BJ_OK || r->type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "the request is not a JSON object");
    return BERTH_OK;
}

/* ---- create / destroy --------------------------------------------------------------------------------------- */

static berth_status create(const berth_host_services *host, const char *config, size_t len, void **out, char *err,
                           size_t err_cap) {
    bj_val c, v, item;
    if (bj_parse(config, len, &c) != BJ_OK || c.type != BJ_OBJECT) FAIL(BERTH_INVALID_ARGUMENT, "configuration: not a JSON object");
    instance *in = calloc(1, sizeof *in);
    if (!in) FAIL(BERTH_INTERNAL, "out of memory");
    in->host = host;
    in->max_bytes = 1ULL << 30;
    if (!get_str(c, "root", in->root, sizeof in->root) || in->root[0] != '/') {
        free(in);
        FAIL(BERTH_INVALID_ARGUMENT, "configuration: \"root\" must be an absolute directory path");
    }
    if (bj_get(c, "maxVolumeBytes", &v) == BJ_OK && bj_u64(v, &in->max_bytes) != BJ_OK) {
        free(in);
        FAIL(BERTH_INVALID_ARGUMENT, "configuration: \"maxVolumeBytes\" must be a non-negative integer");
    }
    size_t pos = 0;
    if (bj_get(c, "nodes", &v) == BJ_OK)
        while (in->nnodes < 8 && bj_next(v, &pos, &item) == BJ_OK)
            if (bj_string(item, in->nodes[in->nnodes], sizeof in->nodes[0], NULL) == BJ_OK) in->nnodes++;
    if (in->nnodes == 0) {
        free(in);
        FAIL(BERTH_INVALID_ARGUMENT, "configuration: \"nodes\" must list the node names this plugin serves");
    }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/volumes", in->root);
    mkdir(in->root, 0755);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        free(in);
        FAIL(BERTH_INTERNAL, "mkdir %s: %s", dir, strerror(errno));
    }
    *out = in;
    return BERTH_OK;
}

static void destroy(void *p) { free(p); }

/* ---- volumes ------------------------------------------------------------------------------------------------ */

static int valid_name(const char *n) {
    size_t len = strlen(n);
    if (len == 0 || len > 128 || n[0] == '.') return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static berth_status write_volume(const berth_sink *out, const char *id, uint64_t size) {
    bj_writer w;
    bjw_init(&w, out);
    bjw_begin_object(&w);
    bjw_key(&w, "volumeId");
    bjw_cstring(&w, id);
    bjw_key(&w, "capacityBytes");
    bjw_u64(&w, size);
    bjw_end_object(&w);
    return bjw_finish(&w);
}

static berth_status create_volume(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    instance *in = inst;
    bj_val r, v;
    berth_status st = parse(req, len, &r, err, err_cap);
    if (st != BERTH_OK) return st;
    char name[130], key[200], mode[16] = "mount";
    if (!get_str(r, "name", name, sizeof name)) FAIL(BERTH_INVALID_ARGUMENT, "name: a string of 1..128 bytes is required");
    if (!valid_name(name)) FAIL(BERTH_INVALID_ARGUMENT, "name \"%.40s\": 1..128 of [A-Za-z0-9._-], not starting with '.'", name);
    uint64_t size = 1 << 20, limit = 0;
    if (bj_get(r, "capacityBytes", &v) == BJ_OK && bj_u64(v, &size) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "capacityBytes: a non-negative integer");
    if (bj_get(r, "limitBytes", &v) == BJ_OK && bj_u64(v, &limit) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "limitBytes: a non-negative integer");
    if (bj_get(r, "volumeMode", &v) == BJ_OK && bj_string(v, mode, sizeof mode, NULL) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "volumeMode: a string");
    if (strcmp(mode, "mount") != 0) FAIL(BERTH_INVALID_ARGUMENT, "volumeMode \"%s\": this plugin makes \"mount\" volumes only", mode);
    if (size == 0) size = 1 << 20;
    if (size > in->max_bytes) FAIL(BERTH_OUT_OF_RANGE, "capacityBytes %llu exceeds maxVolumeBytes %llu", (unsigned long long)size, (unsigned long long)in->max_bytes);
    if (limit && size > limit) FAIL(BERTH_OUT_OF_RANGE, "capacityBytes %llu exceeds limitBytes %llu", (unsigned long long)size, (unsigned long long)limit);
    if (bj_get(r, "source", &v) == BJ_OK) FAIL(BERTH_NOT_FOUND, "source: this plugin has no snapshots");

    buf b;
    snprintf(key, sizeof key, "name/%s", name);
    if (kv_get(in, key, &b) == BERTH_OK) { /* idempotent by name */
        char id[64], vk[80];
        snprintf(id, sizeof id, "%.63s", b.p);
        snprintf(vk, sizeof vk, "vol/%s", id);
        bj_val rec, cap;
        uint64_t have = 0;
        if (kv_get(in, vk, &b) != BERTH_OK || bj_parse(b.p, b.n, &rec) != BJ_OK || bj_get(rec, "capacityBytes", &cap) != BJ_OK ||
            bj_u64(cap, &have) != BJ_OK)
            FAIL(BERTH_INTERNAL, "volume record %s is damaged", vk);
        if (have != size) FAIL(BERTH_ALREADY_EXISTS, "volume \"%s\" exists with %llu bytes, not %llu", name, (unsigned long long)have, (unsigned long long)size);
        return write_volume(out, id, have);
    }
    uint64_t next = 1;
    if (kv_get(in, "next", &b) == BERTH_OK) next = strtoull(b.p, NULL, 10);
    char id[64], vk[80], num[24], dir[1200];
    snprintf(id, sizeof id, "vol-%08llu", (unsigned long long)next);
    snprintf(num, sizeof num, "%llu", (unsigned long long)(next + 1));
    snprintf(vk, sizeof vk, "vol/%s", id);
    snprintf(dir, sizeof dir, "%s/volumes/%s", in->root, id);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) FAIL(BERTH_INTERNAL, "mkdir %s: %s", dir, strerror(errno));
    if ((st = undo_on_rollback(in, remove_tree_cb, dir)) != BERTH_OK) FAIL(st, "on_complete failed");
    buf rec;
    berth_sink rs = buf_sink(&rec);
    bj_writer w;
    bjw_init(&w, &rs);
    bjw_begin_object(&w);
    bjw_key(&w, "name");
    bjw_cstring(&w, name);
    bjw_key(&w, "capacityBytes");
    bjw_u64(&w, size);
    bjw_end_object(&w);
    if (bjw_finish(&w) != BERTH_OK) FAIL(BERTH_INTERNAL, "volume record too large");
    if (kv_put(in, "next", num, strlen(num)) != BERTH_OK || kv_put(in, key, id, strlen(id)) != BERTH_OK ||
        kv_put(in, vk, rec.p, rec.n) != BERTH_OK)
        FAIL(BERTH_INTERNAL, "kv_put failed");
    return write_volume(out, id, size);
}

/* Number of publications of a volume (kv_count_prefix on 1.2 hosts, else kv_next for "at least one"). */
static uint64_t publications(instance *in, const char *prefix) {
    uint64_t n = 0;
    if (has_on_complete(in) && in->host->kv_count_prefix &&
        in->host->kv_count_prefix(in->host->host_ctx, prefix, strlen(prefix), &n) == BERTH_OK)
        return n;
    return in->host->kv_next(in->host->host_ctx, prefix, strlen(prefix), NULL, 0, NULL, NULL) == BERTH_OK;
}

static berth_status delete_volume(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    instance *in = inst;
    bj_val r;
    berth_status st = parse(req, len, &r, err, err_cap);
    if (st != BERTH_OK) return st;
    char id[64], vk[80], pk[80], nk[200], dir[1200];
    if (!get_str(r, "volumeId", id, sizeof id) || !id[0]) FAIL(BERTH_INVALID_ARGUMENT, "volumeId: a string is required");
    snprintf(vk, sizeof vk, "vol/%s", id);
    buf b;
    if (kv_get(in, vk, &b) != BERTH_OK) return BERTH_OK; /* unknown: already deleted */
    snprintf(pk, sizeof pk, "pub/%s/", id);
    uint64_t n = publications(in, pk);
    if (n) FAIL(BERTH_FAILED_PRECONDITION, "volume %s is published at %llu target(s); unpublish it first", id, (unsigned long long)n);
    bj_val rec, nm;
    char name[130] = "";
    if (bj_parse(b.p, b.n, &rec) == BJ_OK && bj_get(rec, "name", &nm) == BJ_OK) bj_string(nm, name, sizeof name, NULL);
    snprintf(nk, sizeof nk, "name/%s", name);
    if (kv_del(in, vk) != BERTH_OK || (name[0] && kv_del(in, nk) != BERTH_OK)) FAIL(BERTH_INTERNAL, "kv_delete failed");
    /* The data goes only once the deletion is committed: a rolled-back delete keeps a volume, so it keeps its data. */
    snprintf(dir, sizeof dir, "%s/volumes/%s", in->root, id);
    if ((st = after_commit(in, remove_tree_cb, dir)) != BERTH_OK) FAIL(st, "on_complete failed");
    return BERTH_OK;
}

/* ---- publish ------------------------------------------------------------------------------------------------ */

static int served(instance *in, const char *node) {
    for (int i = 0; i < in->nnodes; i++)
        if (strcmp(in->nodes[i], node) == 0) return 1;
    return 0;
}

static berth_status node_publish(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    instance *in = inst;
    bj_val r, v;
    berth_status st = parse(req, len, &r, err, err_cap);
    if (st != BERTH_OK) return st;
    char id[64], node[64], target[4097], vk[80], pk[120], h[33], dir[1200];
    int readonly = 0;
    if (!get_str(r, "volumeId", id, sizeof id) || !id[0]) FAIL(BERTH_INVALID_ARGUMENT, "volumeId: a string is required");
    if (!get_str(r, "targetPath", target, sizeof target) || target[0] != '/') FAIL(BERTH_INVALID_ARGUMENT, "targetPath: an absolute path is required");
    if (get_str(r, "nodeId", node, sizeof node) && !served(in, node)) FAIL(BERTH_NOT_FOUND, "node \"%s\" is not served by this plugin", node);
    if (bj_get(r, "readonly", &v) == BJ_OK && bj_bool(v, &readonly) != BJ_OK) FAIL(BERTH_INVALID_ARGUMENT, "readonly: a boolean");
    snprintf(vk, sizeof vk, "vol/%s", id);
    buf b;
    if (kv_get(in, vk, &b) != BERTH_OK) FAIL(BERTH_NOT_FOUND, "volume \"%s\" does not exist", id);
    path_hash(target, h);
    snprintf(pk, sizeof pk, "pub/%s/%s", id, h);
    if (kv_get(in, pk, &b) == BERTH_OK) { /* published there before: the same request is OK, another is not */
        bj_val rec, t, ro;
        int was = 0;
        if (bj_parse(b.p, b.n, &rec) != BJ_OK || bj_get(rec, "targetPath", &t) != BJ_OK || !bj_string_eq(t, target))
            FAIL(BERTH_ALREADY_EXISTS, "another target path has the same hash as %s", target);
        if (bj_get(rec, "readonly", &ro) == BJ_OK) bj_bool(ro, &was);
        if (was != readonly) FAIL(BERTH_ALREADY_EXISTS, "volume %s is published at %s with readonly=%s", id, target, was ? "true" : "false");
        return BERTH_OK;
    }
    /* The plugin creates the target (CSI); the CO created its parent directory. */
    snprintf(dir, sizeof dir, "%s/volumes/%s", in->root, id);
    if (symlink(dir, target) != 0) FAIL(BERTH_INTERNAL, "symlink %s -> %s: %s", target, dir, strerror(errno));
    if ((st = undo_on_rollback(in, unlink_cb, target)) != BERTH_OK) FAIL(st, "on_complete failed");
    buf rec;
    berth_sink rs = buf_sink(&rec);
    bj_writer w;
    bjw_init(&w, &rs);
    bjw_begin_object(&w);
    bjw_key(&w, "targetPath");
    bjw_cstring(&w, target);
    bjw_key(&w, "readonly");
    bjw_bool(&w, readonly);
    bjw_end_object(&w);
    if (bjw_finish(&w) != BERTH_OK || kv_put(in, pk, rec.p, rec.n) != BERTH_OK) FAIL(BERTH_INTERNAL, "kv_put failed");
    return BERTH_OK;
}

static berth_status node_unpublish(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t err_cap) {
    (void)out;
    instance *in = inst;
    bj_val r;
    berth_status st = parse(req, len, &r, err, err_cap);
    if (st != BERTH_OK) return st;
    char id[64], target[4097], pk[120], h[33];
    if (!get_str(r, "volumeId", id, sizeof id) || !id[0]) FAIL(BERTH_INVALID_ARGUMENT, "volumeId: a string is required");
    if (!get_str(r, "targetPath", target, sizeof target) || target[0] != '/') FAIL(BERTH_INVALID_ARGUMENT, "targetPath: an absolute path is required");
    path_hash(target, h);
    snprintf(pk, sizeof pk, "pub/%s/%s", id, h);
    buf b;
    if (kv_get(in, pk, &b) != BERTH_OK) return BERTH_OK; /* unknown target: nothing to do */
    if (kv_del(in, pk) != BERTH_OK) FAIL(BERTH_INTERNAL, "kv_delete failed");
    /* The plugin removes the target it made, once the unpublish is committed. */
    if ((st = after_commit(in, unlink_cb, target)) != BERTH_OK) FAIL(st, "on_complete failed");
    return BERTH_OK;
}

/* ---- info --------------------------------------------------------------------------------------------------- */

static berth_status call(void *inst, const char *method, const char *req, size_t len, const berth_sink *out, char *err,
                         size_t err_cap) {
    (void)req, (void)len;
    instance *in = inst;
    if (strcmp(method, "info") != 0) FAIL(BERTH_UNIMPLEMENTED, "unknown method \"%s\" (info)", method);
    bj_writer w;
    bjw_init(&w, out);
    bjw_begin_object(&w);
    bjw_key(&w, "nodes");
    bjw_begin_array(&w);
    for (int i = 0; i < in->nnodes; i++) bjw_cstring(&w, in->nodes[i]);
    bjw_end_array(&w);
    bjw_key(&w, "maxVolumeBytes");
    bjw_u64(&w, in->max_bytes);
    bjw_end_object(&w);
    return bjw_finish(&w);
}

/* ---- descriptor --------------------------------------------------------------------------------------------- */

static const char SCHEMA[] =
    "{\"type\":\"object\",\"required\":[\"root\",\"nodes\"],\"additionalProperties\":false,\"properties\":{"
    "\"root\":{\"type\":\"string\",\"minLength\":2},"
    "\"nodes\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":8,\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63}},"
    "\"maxVolumeBytes\":{\"type\":\"integer\",\"minimum\":1}}}";

static const berth_storage_ops STORAGE = {
    .struct_size = sizeof(berth_storage_ops),
    .create_volume = create_volume,
    .delete_volume = delete_volume,
    .node_publish = node_publish,
    .node_unpublish = node_unpublish,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "storplug",
    .version = "1.0.0",
    .description = "directory volumes published by symlink (SDK example in C)",
    .kinds = BERTH_KIND_STORAGE,
    .thread_contract = BERTH_THREADS_CONCURRENT,
    .config_schema = SCHEMA,
    .create = create,
    .destroy = destroy,
    .storage = &STORAGE,
    .call = call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    return host_major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
