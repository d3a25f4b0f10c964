/*
 * The base of the conformance-kit fixtures: a small, correct network plugin (pool 10.88.0.2 .. 10.88.0.9, state
 * in the key-value namespace: "a/<containerID>/<ifname>" -> address, "ip/<address>" -> attachment key;
 * identities refused with INVALID_ARGUMENT). Each fixture defines FIXTURE_NAME and one KIT_* macro that breaks
 * exactly one rule of sdk-docs/kinds/network.md, then includes this file:
 *
 *   KIT_ADD_NOT_IDEMPOTENT  a repeated ADD of the same key allocates again
 *   KIT_DEL_UNKNOWN_FAILS   DEL of an unknown attachment returns NOT_FOUND
 *   KIT_DUPLICATES          addresses come from a counter that wraps after 3, without reservations
 *   KIT_EXHAUST_OK          a full pool answers OK with "ips": [] instead of RESOURCE_EXHAUSTED
 *   KIT_GC_IGNORED          GC returns OK and releases nothing
 *   KIT_MEMORY_STATE        state lives in the instance's memory, not in the namespace (lost with the instance)
 *   KIT_SEGV_MALFORMED      dereferences NULL on a request that is not a JSON object
 *   KIT_SEGV_HUGE           copies the request into a fixed buffer: a crash (SIGSEGV) on a request over 1 MiB
 *   KIT_IDENTITIES          no fault: accepts identities {app, ordinal, releasePolicy}; a non-final DEL of an
 *                           identity's attachment keeps its address held ("ip/<address>" stays) for its next ADD
 *   KIT_IDENTITY_NOT_RETURNED  as KIT_IDENTITIES, but the next ADD of the identity allocates a new address
 *                           instead of giving back the held one (an immutable identity loses its address)
 */
#include "berth_plugin.h"

#if defined(KIT_IDENTITIES) || defined(KIT_IDENTITY_NOT_RETURNED)
#define KIT_ID 1
#endif

#define KIT_POOL_FIRST 2
#define KIT_POOL_LAST 9

struct fx {
    const berth_host_services *host;
    unsigned long allocations;
    int n;
    struct { char k[200]; char v[64]; } mem[64]; /* KIT_MEMORY_STATE only */
};

#include "kitcommon.h"

/* ---- state: the namespace, or (KIT_MEMORY_STATE) the instance's memory ---- */

static berth_status sget(struct fx *f, const char *k, char *v, size_t cap) {
#ifdef KIT_MEMORY_STATE
    for (int i = 0; i < f->n; i++) if (strcmp(f->mem[i].k, k) == 0) { snprintf(v, cap, "%s", f->mem[i].v); return BERTH_OK; }
    return BERTH_NOT_FOUND;
#else
    struct buf b = {{0}, 0};
    berth_sink s = {sizeof s, &b, buf_write};
    berth_status st = f->host->kv_get(f->host->host_ctx, k, strlen(k), &s);
    if (st == BERTH_OK) snprintf(v, cap, "%s", b.data);
    return st;
#endif
}

static berth_status sput(struct fx *f, const char *k, const char *v) {
#ifdef KIT_MEMORY_STATE
    for (int i = 0; i < f->n; i++) if (strcmp(f->mem[i].k, k) == 0) { snprintf(f->mem[i].v, sizeof f->mem[i].v, "%s", v); return BERTH_OK; }
    if (f->n == 64) return BERTH_RESOURCE_EXHAUSTED;
    snprintf(f->mem[f->n].k, sizeof f->mem[0].k, "%s", k);
    snprintf(f->mem[f->n].v, sizeof f->mem[0].v, "%s", v);
    f->n++;
    return BERTH_OK;
#else
    return f->host->kv_put(f->host->host_ctx, k, strlen(k), v, strlen(v));
#endif
}

static berth_status sdel(struct fx *f, const char *k) {
#ifdef KIT_MEMORY_STATE
    for (int i = 0; i < f->n; i++) if (strcmp(f->mem[i].k, k) == 0) { f->mem[i] = f->mem[--f->n]; return BERTH_OK; }
    return BERTH_OK;
#else
    return f->host->kv_delete(f->host->host_ctx, k, strlen(k));
#endif
}

/* The first attachment key after `after` ("" for the first), into `out`; 0 when there is none. */
__attribute__((unused)) static int snext(struct fx *f, const char *after, char *out, size_t cap) {
#ifdef KIT_MEMORY_STATE
    const char *best = NULL;
    for (int i = 0; i < f->n; i++) {
        if (strncmp(f->mem[i].k, "a/", 2) != 0 || strcmp(f->mem[i].k, after) <= 0) continue;
        if (!best || strcmp(f->mem[i].k, best) < 0) best = f->mem[i].k;
    }
    if (!best) return 0;
    snprintf(out, cap, "%s", best);
    return 1;
#else
    struct buf k = {{0}, 0};
    berth_sink ks = {sizeof ks, &k, buf_write};
    if (f->host->kv_next(f->host->host_ctx, "a/", 2, after, strlen(after), &ks, NULL) != BERTH_OK) return 0;
    snprintf(out, cap, "%s", k.data);
    return 1;
#endif
}

/* ---- the operations ---- */

/* Parses the attachment key; INVALID_ARGUMENT (or, with KIT_SEGV_MALFORMED, a crash) for malformed input. */
static berth_status key_of(const char *req, size_t len, char *key, size_t kcap, char *err, size_t cap) {
    char cid[128], ifn[32];
#ifdef KIT_SEGV_HUGE
    if (len > (1u << 20)) crash();
#endif
    if (!is_object(req, len)) {
#ifdef KIT_SEGV_MALFORMED
        crash();
#endif
        BERTH_SET_ERR(err, cap, "request is not a JSON object");
        return BERTH_INVALID_ARGUMENT;
    }
    if (!sfield(req, len, "containerID", cid, sizeof cid)) { BERTH_SET_ERR(err, cap, "containerID is required"); return BERTH_INVALID_ARGUMENT; }
    if (!sfield(req, len, "ifname", ifn, sizeof ifn)) strcpy(ifn, "eth0");
    snprintf(key, kcap, "a/%s/%s", cid, ifn);
    return BERTH_OK;
}

static berth_status result(const berth_sink *out, const char *addr) {
    char res[128];
    snprintf(res, sizeof res, "{\"ips\":[{\"address\":\"%s/28\"}]}", addr);
    return berth_sink_puts(out, res);
}

#ifdef KIT_ID
/* "id/<app>/<ordinal>" of the request's "identity" object into idk; "" without one. */
static berth_status identity_key(const char *req, size_t len, char *idk, size_t cap, char *err, size_t ecap) {
    idk[0] = 0;
    const char *id = find(req, len, "\"identity\"");
    if (!id) return BERTH_OK;
    size_t n = len - (size_t)(id - req);
    char app[128];
    if (!sfield(id, n, "app", app, sizeof app)) { BERTH_SET_ERR(err, ecap, "identity.app is required"); return BERTH_INVALID_ARGUMENT; }
    size_t j = value_at(id, n, "ordinal", 0);
    if (j >= n || id[j] < '0' || id[j] > '9') { BERTH_SET_ERR(err, ecap, "identity.ordinal is required"); return BERTH_INVALID_ARGUMENT; }
    long ord = 0; /* capped lower than nfield's */
    while (j < n && id[j] >= '0' && id[j] <= '9' && ord < 1000000) ord = ord * 10 + (id[j++] - '0');
    snprintf(idk, cap, "id/%s/%ld", app, ord);
    return BERTH_OK;
}
#endif

static berth_status fx_add(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    struct fx *f = inst;
    char key[200], addr[64], ipk[80];
    berth_status st = key_of(req, len, key, sizeof key, err, cap);
    if (st != BERTH_OK) return st;
#ifdef KIT_ID
    char idk[200], ik[220];
    if ((st = identity_key(req, len, idk, sizeof idk, err, cap)) != BERTH_OK) return st;
    snprintf(ik, sizeof ik, "i/%s", key);
#else
    if (contains(req, len, "\"identity\"")) { BERTH_SET_ERR(err, cap, "identities are not supported"); return BERTH_INVALID_ARGUMENT; }
#endif
#ifndef KIT_ADD_NOT_IDEMPOTENT
    if ((st = sget(f, key, addr, sizeof addr)) == BERTH_OK) return result(out, addr);
    if (st != BERTH_NOT_FOUND) return st;
#endif
#ifdef KIT_ID
    if (idk[0]) {
#ifndef KIT_IDENTITY_NOT_RETURNED
        /* The identity's held address comes back to it. */
        if ((st = sget(f, idk, addr, sizeof addr)) == BERTH_OK) {
            snprintf(ipk, sizeof ipk, "ip/%s", addr);
            if ((st = sput(f, ipk, key)) != BERTH_OK || (st = sput(f, key, addr)) != BERTH_OK || (st = sput(f, ik, idk)) != BERTH_OK) return st;
            return result(out, addr);
        }
        if (st != BERTH_NOT_FOUND) return st;
#endif
    }
#endif
#ifdef KIT_DUPLICATES
    snprintf(addr, sizeof addr, "10.88.0.%lu", KIT_POOL_FIRST + f->allocations++ % 3);
#else
    int found = 0;
    for (int i = KIT_POOL_FIRST; i <= KIT_POOL_LAST && !found; i++) {
        char owner[200];
        snprintf(addr, sizeof addr, "10.88.0.%d", i);
        snprintf(ipk, sizeof ipk, "ip/%s", addr);
        if ((st = sget(f, ipk, owner, sizeof owner)) == BERTH_NOT_FOUND) found = 1;
        else if (st != BERTH_OK) return st;
    }
    if (!found) {
#ifdef KIT_EXHAUST_OK
        return berth_sink_puts(out, "{\"ips\":[]}");
#else
        BERTH_SET_ERR(err, cap, "no address left in 10.88.0.0/28");
        return BERTH_RESOURCE_EXHAUSTED;
#endif
    }
    f->allocations++;
#endif
    snprintf(ipk, sizeof ipk, "ip/%s", addr);
    if ((st = sput(f, ipk, key)) != BERTH_OK) return st;
    if ((st = sput(f, key, addr)) != BERTH_OK) return st;
#ifdef KIT_ID
    if (idk[0] && ((st = sput(f, idk, addr)) != BERTH_OK || (st = sput(f, ik, idk)) != BERTH_OK)) return st;
#endif
    return result(out, addr);
}

/* Releases the attachment `key`; a non-final release of an identity's attachment keeps its address held. */
static berth_status release(struct fx *f, const char *key, int final) {
    char addr[64], ipk[80];
    berth_status st = sget(f, key, addr, sizeof addr);
    if (st != BERTH_OK) return st;
    snprintf(ipk, sizeof ipk, "ip/%s", addr);
#ifdef KIT_ID
    char ik[220], idk[200];
    snprintf(ik, sizeof ik, "i/%s", key);
    if (sget(f, ik, idk, sizeof idk) == BERTH_OK) {
        if ((st = sdel(f, ik)) != BERTH_OK) return st;
        if (!final) {
            if ((st = sput(f, ipk, idk)) != BERTH_OK) return st;
            return sdel(f, key);
        }
        if ((st = sdel(f, idk)) != BERTH_OK) return st;
    }
#else
    (void)final;
#endif
    if ((st = sdel(f, ipk)) != BERTH_OK) return st;
    return sdel(f, key);
}

static berth_status fx_del(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    char key[200];
    berth_status st = key_of(req, len, key, sizeof key, err, cap);
    if (st != BERTH_OK) return st;
    st = release(inst, key, contains(req, len, "\"final\":true") || contains(req, len, "\"final\": true"));
#ifdef KIT_DEL_UNKNOWN_FAILS
    if (st == BERTH_NOT_FOUND) BERTH_SET_ERR(err, cap, "no attachment %s", key);
    return st;
#else
    return st == BERTH_NOT_FOUND ? BERTH_OK : st;
#endif
}

static berth_status fx_check(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    char key[200], addr[64];
    berth_status st = key_of(req, len, key, sizeof key, err, cap);
    if (st != BERTH_OK) return st;
    st = sget(inst, key, addr, sizeof addr);
    if (st == BERTH_NOT_FOUND) BERTH_SET_ERR(err, cap, "no reservation for %s", key);
    return st;
}

static berth_status fx_gc(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out; (void)err; (void)cap;
#ifdef KIT_GC_IGNORED
    (void)inst; (void)req; (void)len;
    return BERTH_OK;
#else
    struct fx *f = inst;
    char after[200] = "", key[200];
    while (snext(f, after, key, sizeof key)) {
        snprintf(after, sizeof after, "%s", key);
        char cid[200];
        const char *slash = strchr(key + 2, '/');
        snprintf(cid, sizeof cid, "\"%.*s\"", (int)(slash ? slash - (key + 2) : (long)strlen(key + 2)), key + 2);
        if (contains(req, len, cid)) continue;
        berth_status st = release(f, key, 1);
        if (st != BERTH_OK && st != BERTH_NOT_FOUND) return st;
    }
    return BERTH_OK;
#endif
}

static berth_status fx_status(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)inst; (void)req; (void)len; (void)out; (void)err; (void)cap;
    return BERTH_OK;
}

static const berth_network_ops NET = {
    .struct_size = sizeof(berth_network_ops),
    .add = fx_add, .del = fx_del, .check = fx_check, .gc = fx_gc, .status = fx_status,
};

KIT_PLUGIN(.kinds = BERTH_KIND_NETWORK, .config_schema = "{\"type\":\"object\"}", .network = &NET)
