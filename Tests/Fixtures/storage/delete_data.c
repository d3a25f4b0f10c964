/*
 * A minimal storage fixture for ABI 1.2 completion callbacks: a volume is a directory <root>/<volumeId> (the id is
 * the name) published by symlink. delete_volume removes the directory IN PLACE (the fault: a rolled-back delete
 * loses the data of a volume that still exists), or, compiled with -DDEFER_DELETE, in an after_commit callback.
 * Config {"root": "/abs/dir"}; call "info" answers {"nodes": ["n1", "n2"]}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth_json.h"

typedef struct fx {
    const berth_host_services *host;
    char root[512];
} fx;

static int get(bj_val r, const char *k, char *out, size_t cap) {
    bj_val v;
    return bj_get(r, k, &v) == BJ_OK && bj_string(v, out, cap, NULL) == BJ_OK && out[0] && !strchr(out, '/') && out[0] != '.';
}

static int exists(fx *f, const char *id) {
    char k[200];
    snprintf(k, sizeof k, "v/%s", id);
    return f->host->kv_get(f->host->host_ctx, k, strlen(k), NULL) == BERTH_OK;
}

static void rm_dir_cb(void *arg) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", (char *)arg);
    if (system(cmd) != 0) { /* best effort */ }
    free(arg);
}

static berth_status create(const berth_host_services *h, const char *c, size_t n, void **out, char *err, size_t cap) {
    bj_val r;
    fx *f = calloc(1, sizeof *f);
    f->host = h;
    if (bj_parse(c, n, &r) != BJ_OK || bj_get(r, "root", &r) != BJ_OK || bj_string(r, f->root, sizeof f->root, NULL) != BJ_OK) {
        free(f);
        BERTH_SET_ERR(err, cap, "config: root is required");
        return BERTH_INVALID_ARGUMENT;
    }
    mkdir(f->root, 0755);
    *out = f;
    return BERTH_OK;
}

static void destroy(void *p) { free(p); }

static berth_status create_volume(void *p, const char *req, size_t n, const berth_sink *out, char *err, size_t cap) {
    fx *f = p;
    bj_val r;
    char name[130], k[200], dir[700];
    if (bj_parse(req, n, &r) != BJ_OK || !get(r, "name", name, sizeof name)) { BERTH_SET_ERR(err, cap, "name is required"); return BERTH_INVALID_ARGUMENT; }
    snprintf(k, sizeof k, "v/%s", name);
    snprintf(dir, sizeof dir, "%s/%s", f->root, name);
    mkdir(dir, 0755);
    berth_status st = f->host->kv_put(f->host->host_ctx, k, strlen(k), "1", 1);
    if (st != BERTH_OK) return st;
    bj_writer w;
    bjw_init(&w, out);
    bjw_begin_object(&w);
    bjw_key(&w, "volumeId");
    bjw_cstring(&w, name);
    bjw_key(&w, "capacityBytes");
    bjw_u64(&w, 1 << 20);
    bjw_end_object(&w);
    return bjw_finish(&w);
}

static berth_status delete_volume(void *p, const char *req, size_t n, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    fx *f = p;
    bj_val r;
    char id[130], k[200], dir[700];
    if (bj_parse(req, n, &r) != BJ_OK || !get(r, "volumeId", id, sizeof id)) { BERTH_SET_ERR(err, cap, "volumeId is required"); return BERTH_INVALID_ARGUMENT; }
    if (!exists(f, id)) return BERTH_OK;
    snprintf(k, sizeof k, "v/%s", id);
    snprintf(dir, sizeof dir, "%s/%s", f->root, id);
    berth_status st = f->host->kv_delete(f->host->host_ctx, k, strlen(k));
    if (st != BERTH_OK) return st;
#ifdef DEFER_DELETE
    return f->host->on_complete(f->host->host_ctx, rm_dir_cb, free, strdup(dir));
#else
    rm_dir_cb(strdup(dir));
    return BERTH_OK;
#endif
}

static berth_status node_publish(void *p, const char *req, size_t n, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    fx *f = p;
    bj_val r, t;
    char id[130], target[1024], dir[700];
    if (bj_parse(req, n, &r) != BJ_OK || !get(r, "volumeId", id, sizeof id) || bj_get(r, "targetPath", &t) != BJ_OK ||
        bj_string(t, target, sizeof target, NULL) != BJ_OK) {
        BERTH_SET_ERR(err, cap, "volumeId and targetPath are required");
        return BERTH_INVALID_ARGUMENT;
    }
    if (!exists(f, id)) { BERTH_SET_ERR(err, cap, "volume %s does not exist", id); return BERTH_NOT_FOUND; }
    snprintf(dir, sizeof dir, "%s/%s", f->root, id);
    if (symlink(dir, target) != 0 && errno != EEXIST) { BERTH_SET_ERR(err, cap, "symlink: %s", strerror(errno)); return BERTH_INTERNAL; }
    return BERTH_OK;
}

static berth_status node_unpublish(void *p, const char *req, size_t n, const berth_sink *out, char *err, size_t cap) {
    (void)p, (void)out;
    bj_val r, t;
    char target[1024];
    if (bj_parse(req, n, &r) != BJ_OK || bj_get(r, "targetPath", &t) != BJ_OK || bj_string(t, target, sizeof target, NULL) != BJ_OK) {
        BERTH_SET_ERR(err, cap, "targetPath is required");
        return BERTH_INVALID_ARGUMENT;
    }
    unlink(target);
    return BERTH_OK;
}

static berth_status call(void *p, const char *m, const char *req, size_t n, const berth_sink *out, char *err, size_t cap) {
    (void)p, (void)req, (void)n, (void)err, (void)cap;
    if (strcmp(m, "info") != 0) return BERTH_UNIMPLEMENTED;
    return berth_sink_puts(out, "{\"nodes\":[\"n1\",\"n2\"]}");
}

static const berth_storage_ops OPS = {sizeof(berth_storage_ops), create_volume, delete_volume, node_publish, node_unpublish};

static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "delete-data", .version = "1", .description = "delete_volume fixture", .kinds = BERTH_KIND_STORAGE,
    .thread_contract = BERTH_THREADS_SERIAL, .create = create, .destroy = destroy, .storage = &OPS, .call = call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {
    (void)minor;
    return major == BERTH_ABI_MAJOR ? &D : NULL;
}
