/*
 * A small but complete network plugin shared by the fault fixtures: CNI-style add/del/check/gc/status over the
 * plugin's key-value namespace (keys "next" and "a/<containerID>/<ifname>"), one event per allocation. Each
 * fixture defines FIXTURE_NAME and fault(), which add() calls after it has written its state and emitted its event
 * and before it writes its result: whatever the fault does, nothing of that call may be committed.
 *
 *   static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap);
 *     return -1 to go on normally, or a status to return (the fixture has written its own output then).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "berth_plugin.h"

struct fx {
    const berth_host_services *host;
    char config[256];
    unsigned long calls; /* add() calls in this process */
};

#define KEEP (-1)
static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap);

/* The string value of "field" in a flat JSON object, or 0 when missing. Enough for the host's own requests. */
static int field(const char *json, size_t len, const char *name, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) {
        if (memcmp(json + i, pat, pl) != 0) continue;
        size_t j = i + pl;
        while (j < len && (json[j] == ' ' || json[j] == ':')) j++;
        if (j >= len || json[j] != '"') return 0;
        j++;
        size_t n = 0;
        while (j < len && json[j] != '"' && n + 1 < cap) out[n++] = json[j++];
        if (j >= len || json[j] != '"') return 0;
        out[n] = 0;
        return n > 0;
    }
    return 0;
}

__attribute__((unused)) static long config_int(struct fx *f, const char *name, long dflt) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = strstr(f->config, pat);
    if (!p) return dflt;
    p += strlen(pat);
    while (*p == ' ' || *p == ':') p++;
    return strtol(p, NULL, 10);
}

#include "../fixture_sink.h"

static berth_status fx_create(const berth_host_services *host, const char *config, size_t len, void **out, char *err, size_t cap) {
    struct fx *f = calloc(1, sizeof *f);
    if (!f) { BERTH_SET_ERR(err, cap, "out of memory"); return BERTH_INTERNAL; }
    f->host = host;
    memcpy(f->config, config, len < sizeof f->config - 1 ? len : sizeof f->config - 1);
    *out = f;
    return BERTH_OK;
}

static void fx_destroy(void *inst) { free(inst); }

static berth_status fx_add(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    struct fx *f = inst;
    const berth_host_services *h = f->host;
    f->calls++;
    char cid[128], ifn[32], key[200];
    if (!field(req, len, "containerID", cid, sizeof cid)) { BERTH_SET_ERR(err, cap, "containerID is required"); return BERTH_INVALID_ARGUMENT; }
    if (!field(req, len, "ifname", ifn, sizeof ifn)) strcpy(ifn, "eth0");
    snprintf(key, sizeof key, "a/%s/%s", cid, ifn);
    struct buf addr = {{0}, 0};
    berth_sink s = {sizeof s, &addr, buf_write};
    berth_status st = h->kv_get(h->host_ctx, key, strlen(key), &s);
    if (st == BERTH_NOT_FOUND) {
        struct buf next = {{0}, 0};
        berth_sink ns = {sizeof ns, &next, buf_write};
        long n = h->kv_get(h->host_ctx, "next", 4, &ns) == BERTH_OK ? strtol(next.data, NULL, 10) : 1;
        n++;
        char nb[32];
        snprintf(nb, sizeof nb, "%ld", n);
        if ((st = h->kv_put(h->host_ctx, "next", 4, nb, strlen(nb))) != BERTH_OK) return st;
        addr.len = (size_t)snprintf(addr.data, sizeof addr.data, "10.77.%ld.%ld/16", (n >> 8) & 255, n & 255);
        if ((st = h->kv_put(h->host_ctx, key, strlen(key), addr.data, addr.len)) != BERTH_OK) return st;
        char ev[1024];
        snprintf(ev, sizeof ev, "{\"containerID\":\"%s\",\"address\":\"%s\"}", cid, addr.data);
        if ((st = h->emit_event(h->host_ctx, "fixture.allocated", ev, strlen(ev))) != BERTH_OK) return st;
    } else if (st != BERTH_OK) {
        return st;
    }
    berth_status fs = fault(f, cid, out, err, cap);
    if ((int)fs != KEEP) return fs;
    char res[600];
    snprintf(res, sizeof res, "{\"ips\":[{\"address\":\"%s\"}]}", addr.data);
    return berth_sink_puts(out, res);
}

static berth_status fx_del(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    struct fx *f = inst;
    char cid[128], ifn[32], key[200];
    if (!field(req, len, "containerID", cid, sizeof cid)) { BERTH_SET_ERR(err, cap, "containerID is required"); return BERTH_INVALID_ARGUMENT; }
    if (!field(req, len, "ifname", ifn, sizeof ifn)) strcpy(ifn, "eth0");
    snprintf(key, sizeof key, "a/%s/%s", cid, ifn);
    return f->host->kv_delete(f->host->host_ctx, key, strlen(key));
}

static berth_status fx_check(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    struct fx *f = inst;
    char cid[128], ifn[32], key[200];
    if (!field(req, len, "containerID", cid, sizeof cid)) { BERTH_SET_ERR(err, cap, "containerID is required"); return BERTH_INVALID_ARGUMENT; }
    if (!field(req, len, "ifname", ifn, sizeof ifn)) strcpy(ifn, "eth0");
    snprintf(key, sizeof key, "a/%s/%s", cid, ifn);
    berth_status st = f->host->kv_get(f->host->host_ctx, key, strlen(key), NULL);
    if (st == BERTH_NOT_FOUND) BERTH_SET_ERR(err, cap, "no reservation for %s/%s", cid, ifn);
    return st;
}

/* Releases every attachment whose container is not named in the request's "valid" list. */
static berth_status fx_gc(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out; (void)err; (void)cap;
    struct fx *f = inst;
    const berth_host_services *h = f->host;
    struct buf k = {{0}, 0};
    char after[512] = "";
    size_t alen = 0;
    for (;;) {
        k.len = 0;
        berth_sink ks = {sizeof ks, &k, buf_write};
        berth_status st = h->kv_next(h->host_ctx, "a/", 2, after, alen, &ks, NULL);
        if (st == BERTH_NOT_FOUND) return BERTH_OK;
        if (st != BERTH_OK) return st;
        memcpy(after, k.data, k.len);
        alen = k.len;
        char cid[256];
        const char *slash = memchr(k.data + 2, '/', k.len - 2);
        size_t cl = slash ? (size_t)(slash - (k.data + 2)) : k.len - 2;
        snprintf(cid, sizeof cid, "\"%.*s\"", (int)cl, k.data + 2);
        int listed = 0;
        for (size_t i = 0; i + strlen(cid) <= len; i++) if (memcmp(req + i, cid, strlen(cid)) == 0) { listed = 1; break; }
        if (!listed && (st = h->kv_delete(h->host_ctx, k.data, k.len)) != BERTH_OK) return st;
    }
}

static berth_status fx_status(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)inst; (void)req; (void)len; (void)out; (void)err; (void)cap;
    return BERTH_OK;
}

static berth_status fx_call(void *inst, const char *method, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    struct fx *f = inst;
    if (strcmp(method, "echo") == 0) return out->write(out->ctx, req, len);
    if (strcmp(method, "pid") == 0) {
        char b[64];
        snprintf(b, sizeof b, "{\"pid\":%ld,\"calls\":%lu}", (long)getpid(), f->calls);
        return berth_sink_puts(out, b);
    }
    BERTH_SET_ERR(err, cap, "unknown method \"%s\"", method);
    return BERTH_UNIMPLEMENTED;
}

static const berth_network_ops NET = {
    .struct_size = sizeof(berth_network_ops),
    .add = fx_add, .del = fx_del, .check = fx_check, .gc = fx_gc, .status = fx_status,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = FIXTURE_NAME,
    .version = "0.1.0",
    .description = "fault fixture: " FIXTURE_NAME,
    .kinds = BERTH_KIND_NETWORK,
    .thread_contract = BERTH_THREADS_SERIAL,
    .config_schema = "{\"type\":\"object\",\"properties\":{\"nth\":{\"type\":\"integer\",\"minimum\":1}}}",
    .create = fx_create,
    .destroy = fx_destroy,
    .network = &NET,
    .call = fx_call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {
    (void)minor;
    return major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
