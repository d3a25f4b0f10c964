/*
 * The base of the conformance-kit fixtures: a small, correct network plugin (pool 10.88.0.2 .. 10.88.0.9, state
 * in the key-value namespace: "a/<containerID>/<ifname>" -> address, "ip/<address>" -> attachment key;
 * an identity with releasePolicy onDelete is a plain attachment, immutable and never are refused with
 * INVALID_ARGUMENT). Each fixture defines FIXTURE_NAME and one KIT_* macro that breaks
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
 *   KIT_REFUSES_IDENTITIES  refuses every ADD that carries an identity (so no App can use the network)
 *   KIT_IDENTITIES          no fault: accepts identities {app, ordinal, releasePolicy}; a non-final DEL of an
 *                           identity's attachment keeps its address held ("ip/<address>" stays) for its next ADD
 *   KIT_IDENTITY_NOT_RETURNED  as KIT_IDENTITIES, but the next ADD of the identity allocates a new address
 *                           instead of giving back the held one (an immutable identity loses its address)
 *   KIT_IDENTITY_TAKES_OVER as KIT_IDENTITIES, but an ADD of the identity while its address is still attached to
 *                           another container takes it over (two live attachments share the address)
 *   KIT_BATCH               no fault: add_batch (ABI 1.1), each item through add in order, all or nothing
 *   KIT_BATCH_DISAGREES     add_batch allocates from the top of the pool down (add from the bottom up)
 *   KIT_BATCH_SHORT         add_batch leaves out the last item's result
 *   KIT_BATCH_NOT_ATOMIC    add_batch reports an item it cannot add as {"error": ...} and returns OK
 *   KIT_BATCH_SEGV          add_batch dereferences NULL when "items" is not an array
 *
 * Without KIT_BATCH (or one of its faults) the plugin has no add_batch: the host adds one at a time.
 */
#include "berth_plugin.h"

#if defined(KIT_IDENTITIES) || defined(KIT_IDENTITY_NOT_RETURNED) || defined(KIT_IDENTITY_TAKES_OVER)
#define KIT_ID 1
#endif

#if defined(KIT_BATCH_DISAGREES) || defined(KIT_BATCH_SHORT) || defined(KIT_BATCH_NOT_ATOMIC) || defined(KIT_BATCH_SEGV)
#define KIT_BATCH 1
#endif

#define KIT_POOL_FIRST 2
#define KIT_POOL_LAST 9

struct fx {
    const berth_host_services *host;
    unsigned long allocations;
    int n;
    int in_batch; /* set while add_batch runs an item through add (KIT_BATCH_DISAGREES) */
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
#elif defined(KIT_REFUSES_IDENTITIES)
    if (contains(req, len, "\"identity\"")) { BERTH_SET_ERR(err, cap, "identities are not supported"); return BERTH_INVALID_ARGUMENT; }
#else
    /* Identities as the host sends them for every App instance are fine (releasePolicy onDelete: a plain
     * attachment); only the policies that need held addresses are refused. */
    if (contains(req, len, "\"identity\"") && (contains(req, len, "\"immutable\"") || contains(req, len, "\"never\""))) {
        BERTH_SET_ERR(err, cap, "identity.releasePolicy: only onDelete is supported");
        return BERTH_INVALID_ARGUMENT;
    }
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
#ifndef KIT_IDENTITY_TAKES_OVER
            /* Still attached to another container: no second holder until that one is released. */
            char holder[200];
            if (sget(f, ipk, holder, sizeof holder) == BERTH_OK && strncmp(holder, "a/", 2) == 0 && strcmp(holder, key) != 0) {
                BERTH_SET_ERR(err, cap, "the identity's address is still attached to another container; release it first");
                return BERTH_FAILED_PRECONDITION;
            }
#endif
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
    for (int n = 0; n <= KIT_POOL_LAST - KIT_POOL_FIRST && !found; n++) {
        int i = KIT_POOL_FIRST + n;
#ifdef KIT_BATCH_DISAGREES
        if (f->in_batch) i = KIT_POOL_LAST - n;
#endif
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

#ifdef KIT_BATCH
/* A growing sink for add_batch's response. */
struct gbuf { char *p; size_t len, cap; };
static berth_status gbuf_write(void *ctx, const char *d, size_t n) {
    struct gbuf *b = ctx;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (b->len + n + 1 > c) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) return BERTH_INTERNAL;
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
    return BERTH_OK;
}

/* The index just past the '}' that closes the object starting at s[i] ('{'); len when it is not closed. */
static size_t object_end(const char *s, size_t len, size_t i) {
    int depth = 0, str = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (str) {
            if (c == '\\') i++;
            else if (c == '"') str = 0;
        } else if (c == '"') str = 1;
        else if (c == '{') depth++;
        else if (c == '}' && --depth == 0) return i + 1;
    }
    return len;
}

/* add_batch: every item through add, in order (each sees the writes of those before it); the first item that
 * cannot be added fails the call, naming the item, and the host rolls back the call's writes. */
static berth_status fx_add_batch(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    struct fx *f = inst;
    if (!is_object(req, len)) { BERTH_SET_ERR(err, cap, "request is not a JSON object"); return BERTH_INVALID_ARGUMENT; }
    size_t j = value_at(req, len, "items", 0);
    if (j >= len || req[j] != '[') {
#ifdef KIT_BATCH_SEGV
        crash();
#endif
        BERTH_SET_ERR(err, cap, "\"items\" must be an array of add requests");
        return BERTH_INVALID_ARGUMENT;
    }
    struct gbuf res = {NULL, 0, 0};
    berth_sink rs = {sizeof rs, &res, gbuf_write};
    berth_status st = gbuf_write(&res, "{\"results\":[", 12);
    size_t last = res.len; /* where the last item's result starts (with its comma) */
    int n = 0;
    j++;
    while (st == BERTH_OK) {
        while (j < len && (req[j] == ' ' || req[j] == '\n' || req[j] == ',')) j++;
        if (j < len && req[j] == ']') break;
        if (j >= len || req[j] != '{') {
            BERTH_SET_ERR(err, cap, "items[%d] must be a JSON object", n);
            st = BERTH_INVALID_ARGUMENT;
            break;
        }
        size_t e = object_end(req, len, j);
        last = res.len;
        if (n > 0 && (st = gbuf_write(&res, ",", 1)) != BERTH_OK) break;
        char ierr[256] = "";
        f->in_batch = 1;
        berth_status ist = fx_add(f, req + j, e - j, &rs, ierr, sizeof ierr);
        f->in_batch = 0;
        if (ist != BERTH_OK) {
#ifdef KIT_BATCH_NOT_ATOMIC
            char item[320];
            snprintf(item, sizeof item, "{\"error\":\"%s\"}", ierr);
            st = berth_sink_puts(&rs, item);
#else
            BERTH_SET_ERR(err, cap, "items[%d]: %s", n, ierr);
            st = ist;
            break;
#endif
        }
        n++;
        j = e;
    }
#ifdef KIT_BATCH_SHORT
    if (n > 0) res.len = last;
#else
    (void)last;
#endif
    if (st == BERTH_OK) st = gbuf_write(&res, "]}", 2);
    if (st == BERTH_OK) st = out->write(out->ctx, res.p, res.len);
    free(res.p);
    return st;
}
#endif

static const berth_network_ops NET = {
    .struct_size = sizeof(berth_network_ops),
    .add = fx_add, .del = fx_del, .check = fx_check, .gc = fx_gc, .status = fx_status,
#ifdef KIT_BATCH
    .add_batch = fx_add_batch,
#endif
};

KIT_PLUGIN(.kinds = BERTH_KIND_NETWORK, .config_schema = "{\"type\":\"object\"}", .network = &NET)
