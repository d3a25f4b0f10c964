/*
 * netplug — a small but complete Berth network plugin in C.
 *
 * It hands out IPv4 addresses from one configured subnet, with CNI semantics:
 *   add     idempotent per (containerID, ifname); honours one requested address ("ips")
 *   del     always BERTH_OK, also for unknown or half-finished attachments
 *   check   BERTH_NOT_FOUND when the reservation is missing
 *   gc      releases every attachment not in "valid"
 *   status  BERTH_RESOURCE_EXHAUSTED when no address is left
 *   capacity (optional) free / reserved / active counts
 *
 * ALL state lives in the host's key-value namespace; the instance only holds its parsed configuration, which
 * is why it can declare BERTH_THREADS_CONCURRENT. Each operation runs inside a host transaction: when it
 * returns anything but BERTH_OK, every kv write it made is rolled back, so it can simply return an error
 * half-way through. Key layout (all keys are ASCII):
 *
 *   cfg/subnet        the subnet this namespace was initialised for ("10.77.0.0/24")
 *   next              decimal host offset of the next never-used address (starts at 1)
 *   active            decimal count of addresses in use
 *   free/<hex addr>   released addresses below `next`, found in O(log n) with kv_next
 *   ip/<hex addr>     owner of an address: "<ifname>/<containerID>"
 *   att/<ifname>/<containerID>   the attachment's address, 8 hex digits
 *
 * Build:  cc -shared -fPIC -O2 -I PluginABI/include sdk-docs/examples/c-network/netplug.c -o /tmp/libberth-netplug.so
 * Check:  .build/debug/berth plugin check /tmp/libberth-netplug.so --config sdk-docs/examples/c-network/config.json
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"

/* ================================ a tiny JSON reader (validating) ================================ */

typedef struct jspan {
    const char *p;
    const char *end;
} jspan;

static const char *j_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int j_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* p points at '"'; returns the byte after the closing quote, or NULL when malformed. */
static const char *j_skip_string(const char *p, const char *e) {
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c != '\\') continue;
        if (++p >= e) return NULL;
        if (*p == 'u') {
            for (int i = 1; i <= 4; i++)
                if (p + i >= e || j_hex(p[i]) < 0) return NULL;
            p += 4;
        } else if (!memchr("\"\\/bfnrt", *p, 8)) {
            return NULL;
        }
    }
    return NULL;
}

static const char *j_skip_literal(const char *p, const char *e, const char *lit) {
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

/* Skips one JSON value (after leading whitespace); returns the byte after it, or NULL when malformed. */
static const char *j_skip(const char *p, const char *e, int depth) {
    p = j_ws(p, e);
    if (p >= e || depth > 64) return NULL;
    switch (*p) {
    case '"': return j_skip_string(p, e);
    case 't': return j_skip_literal(p, e, "true");
    case 'f': return j_skip_literal(p, e, "false");
    case 'n': return j_skip_literal(p, e, "null");
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        p = j_ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (object) {
                p = j_ws(p, e);
                if (p >= e || *p != '"' || !(p = j_skip_string(p, e))) return NULL;
                p = j_ws(p, e);
                if (p >= e || *p++ != ':') return NULL;
            }
            if (!(p = j_skip(p, e, depth + 1))) return NULL;
            p = j_ws(p, e);
            if (p >= e) return NULL;
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    default: {
        const char *s = p;
        int digits = 0;
        while (p < e && memchr("+-0123456789.eE", *p, 15)) digits += (*p >= '0' && *p <= '9'), p++;
        return digits && p > s ? p : NULL;
    }
    }
}

/* The whole input must be exactly one JSON object. */
static int j_parse_object(const char *s, size_t n, jspan *out) {
    const char *e = s + n, *p = j_ws(s, e);
    if (p >= e || *p != '{') return -1;
    const char *end = j_skip(p, e, 0);
    if (!end || j_ws(end, e) != e) return -1;
    out->p = p;
    out->end = end;
    return 0;
}

/* Iterates an array: *cur starts NULL. Returns 1 with the next element in *elem, 0 at the end. */
static int j_array_next(jspan arr, const char **cur, jspan *elem) {
    const char *p = *cur ? *cur : arr.p + 1;
    p = j_ws(p, arr.end);
    if (*p == ',') p = j_ws(p + 1, arr.end);
    if (*p == ']') return 0;
    elem->p = p;
    elem->end = j_skip(p, arr.end, 0);
    *cur = elem->end;
    return 1;
}

/* Finds member `key` of an (already validated) object. Keys are compared as raw bytes. Returns 1 if found. */
static int j_get(jspan obj, const char *key, jspan *val) {
    size_t klen = strlen(key);
    const char *p = j_ws(obj.p + 1, obj.end);
    while (p < obj.end && *p == '"') {
        const char *kend = j_skip_string(p, obj.end);
        int match = (size_t)(kend - p - 2) == klen && memcmp(p + 1, key, klen) == 0;
        p = j_ws(kend, obj.end) + 1; /* past ':' */
        p = j_ws(p, obj.end);
        const char *vend = j_skip(p, obj.end, 0);
        if (match) {
            val->p = p;
            val->end = vend;
            return 1;
        }
        p = j_ws(vend, obj.end);
        if (*p == ',') p = j_ws(p + 1, obj.end);
    }
    return 0;
}

static void put_utf8(char *out, size_t *n, uint32_t cp) {
    if (cp < 0x80) out[(*n)++] = (char)cp;
    else if (cp < 0x800) out[(*n)++] = (char)(0xC0 | cp >> 6), out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        out[(*n)++] = (char)(0xE0 | cp >> 12), out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    else
        out[(*n)++] = (char)(0xF0 | cp >> 18), out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[(*n)++] = (char)(0x80 | (cp & 0x3F));
}

static uint32_t j_u4(const char *p) { return (uint32_t)(j_hex(p[0]) << 12 | j_hex(p[1]) << 8 | j_hex(p[2]) << 4 | j_hex(p[3])); }

/* Decodes a JSON string into out (NUL-terminated). Returns its length, -1 if `v` is not a string, -2 if it
 * does not fit in cap-1 bytes, -3 if it contains a NUL character. */
static int j_string(jspan v, char *out, size_t cap) {
    if (v.p >= v.end || *v.p != '"') return -1;
    size_t n = 0;
    for (const char *p = v.p + 1; p < v.end - 1; p++) {
        if (n + 4 >= cap) return -2;
        if (*p != '\\') { out[n++] = *p; continue; }
        switch (*++p) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            uint32_t cp = j_u4(p + 1);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p + 6 < v.end && p[1] == '\\' && p[2] == 'u') {
                uint32_t lo = j_u4(p + 3);
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), p += 6;
            }
            if (cp == 0) return -3;
            put_utf8(out, &n, cp);
            break;
        }
        default: out[n++] = *p; break; /* \" \\ \/ */
        }
    }
    out[n] = 0;
    return (int)n;
}

/* ================================ small helpers ================================ */

/* A growable byte buffer that is also a berth_sink. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static berth_status buf_write(void *ctx, const char *data, size_t len) {
    buf *b = ctx;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return BERTH_INTERNAL;
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = 0;
    return BERTH_OK;
}

static berth_sink buf_sink(buf *b) {
    berth_sink s = {sizeof(berth_sink), b, buf_write};
    return s;
}

/* Writes a JSON string literal (quoted, escaped) to a sink. */
static berth_status sink_json_string(const berth_sink *s, const char *str) {
    berth_status st = s->write(s->ctx, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p && st == BERTH_OK; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') esc[0] = '\\', esc[1] = (char)*p, st = s->write(s->ctx, esc, 2);
        else if (*p < 0x20) snprintf(esc, sizeof esc, "\\u%04x", *p), st = s->write(s->ctx, esc, 6);
        else st = s->write(s->ctx, (const char *)p, 1);
    }
    return st == BERTH_OK ? s->write(s->ctx, "\"", 1) : st;
}

static int parse_ipv4(const char *s, uint32_t *out) {
    unsigned a, b, c, d;
    char tail;
    if (sscanf(s, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 || c > 255 || d > 255) return -1;
    *out = a << 24 | b << 16 | c << 8 | d;
    return 0;
}

static void format_ipv4(uint32_t a, char out[16]) {
    snprintf(out, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

/* ================================ the instance ================================ */

typedef struct netplug {
    const berth_host_services *host; /* valid until destroy() returns */
    uint32_t net, prefix, size;      /* network address, prefix length, 2^(32-prefix) */
    uint32_t gw;                     /* gateway address */
    char subnet[20], gateway[16];    /* canonical text forms */
} netplug;

#define KV(np) (np)->host->host_ctx

static berth_status kv_get_str(netplug *np, const char *key, buf *out) {
    out->len = 0;
    berth_sink s = buf_sink(out);
    berth_status st = np->host->kv_get(KV(np), key, strlen(key), &s);
    if (st == BERTH_OK && !out->p) st = buf_write(out, "", 0); /* empty value: still a valid C string */
    return st;
}

static berth_status kv_put_str(netplug *np, const char *key, const char *value) {
    return np->host->kv_put(KV(np), key, strlen(key), value, strlen(value));
}

static berth_status kv_del_str(netplug *np, const char *key) { return np->host->kv_delete(KV(np), key, strlen(key)); }

/* Reads a decimal counter; a missing key reads as `dflt`. */
static berth_status kv_get_u32(netplug *np, const char *key, uint32_t dflt, uint32_t *out) {
    buf b = {0};
    berth_status st = kv_get_str(np, key, &b);
    *out = st == BERTH_OK ? (uint32_t)strtoul(b.p, NULL, 10) : dflt;
    free(b.p);
    return st == BERTH_NOT_FOUND ? BERTH_OK : st;
}

static berth_status kv_put_u32(netplug *np, const char *key, uint32_t v) {
    char s[16];
    snprintf(s, sizeof s, "%u", v);
    return kv_put_str(np, key, s);
}

/* Addresses a subnet offers: all but the network and broadcast addresses and the gateway. */
static uint32_t usable(const netplug *np) { return np->size - 3; }

/* Every kv call can fail (the host refuses outside a call, the store can fail): pass such failures on. */
#define TRY(expr)                                                                                           \
    do {                                                                                                    \
        berth_status st_ = (expr);                                                                          \
        if (st_ != BERTH_OK) {                                                                              \
            BERTH_SET_ERR(err, err_cap, "host key-value call failed with status %d (%s:%d)", (int)st_,        \
                          __FILE__, __LINE__);                                                              \
            rc = st_;                                                                                       \
            goto out;                                                                                       \
        }                                                                                                   \
    } while (0)

/* ================================ requests ================================ */

/* The attachment key of a request: containerID (required) and ifname (default "eth0"). */
typedef struct attkey {
    char cid[257], ifname[16];
    char owner[16 + 1 + 257]; /* "<ifname>/<containerID>" */
} attkey;

static berth_status parse_request(const char *req, size_t len, jspan *obj, char *err, size_t err_cap) {
    if (j_parse_object(req, len, obj) != 0) {
        BERTH_SET_ERR(err, err_cap, "the request is not a well-formed JSON object");
        return BERTH_INVALID_ARGUMENT;
    }
    return BERTH_OK;
}

static berth_status parse_key(jspan obj, attkey *k, char *err, size_t err_cap) {
    jspan v;
    if (!j_get(obj, "containerID", &v)) {
        BERTH_SET_ERR(err, err_cap, "containerID is required");
        return BERTH_INVALID_ARGUMENT;
    }
    int n = j_string(v, k->cid, sizeof k->cid);
    if (n <= 0) {
        BERTH_SET_ERR(err, err_cap, "containerID must be a non-empty string of at most 256 bytes without NUL");
        return BERTH_INVALID_ARGUMENT;
    }
    strcpy(k->ifname, "eth0");
    if (j_get(obj, "ifname", &v) && (n = j_string(v, k->ifname, sizeof k->ifname)) <= 0) {
        BERTH_SET_ERR(err, err_cap, "ifname must be a string of 1-15 bytes");
        return BERTH_INVALID_ARGUMENT;
    }
    if (strchr(k->ifname, '/')) {
        BERTH_SET_ERR(err, err_cap, "ifname \"%s\" must not contain '/'", k->ifname);
        return BERTH_INVALID_ARGUMENT;
    }
    snprintf(k->owner, sizeof k->owner, "%s/%s", k->ifname, k->cid);
    return BERTH_OK;
}

/* The add result: a pure function of the address, so a repeated add returns identical bytes. */
static berth_status write_result(netplug *np, uint32_t addr, const berth_sink *out) {
    char ip[16], json[256];
    format_ipv4(addr, ip);
    int n = snprintf(json, sizeof json,
                     "{\"ips\":[{\"address\":\"%s/%u\",\"gateway\":\"%s\",\"mac\":\"0a:58:%02x:%02x:%02x:%02x\"}]}", ip,
                     np->prefix, np->gateway, addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255);
    return out->write(out->ctx, json, (size_t)n);
}

static berth_status emit(netplug *np, const char *type, uint32_t addr, const attkey *k) {
    char ip[16];
    format_ipv4(addr, ip);
    buf b = {0};
    berth_sink s = buf_sink(&b);
    buf_write(&b, "{\"address\":\"", 12);
    buf_write(&b, ip, strlen(ip));
    buf_write(&b, "\",\"containerID\":", 16);
    sink_json_string(&s, k->cid);
    buf_write(&b, ",\"ifname\":", 10);
    sink_json_string(&s, k->ifname);
    berth_status st = buf_write(&b, "}", 1);
    if (st == BERTH_OK) st = np->host->emit_event(KV(np), type, b.p, b.len);
    free(b.p);
    return st;
}

/* ================================ operations ================================ */

static berth_status np_add(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                           size_t err_cap) {
    netplug *np = instance;
    berth_status rc = BERTH_OK;
    jspan obj, v;
    attkey k;
    buf b = {0};
    char key[300], ip[64];
    uint32_t addr = 0;
    int have_addr = 0;
    if ((rc = parse_request(req, req_len, &obj, err, err_cap)) || (rc = parse_key(obj, &k, err, err_cap))) return rc;

    /* Idempotent: the same key returns the same result. */
    snprintf(key, sizeof key, "att/%s", k.owner);
    berth_status st = kv_get_str(np, key, &b);
    if (st == BERTH_OK) {
        rc = write_result(np, (uint32_t)strtoul(b.p, NULL, 16), out);
        goto out;
    }
    TRY(st == BERTH_NOT_FOUND ? BERTH_OK : st);

    if (j_get(obj, "ips", &v) && *v.p == '[') {
        /* A requested address: must be usable, and free. */
        const char *cur = NULL;
        jspan e;
        int count = 0;
        while (j_array_next(v, &cur, &e)) {
            if (++count > 1) {
                BERTH_SET_ERR(err, err_cap, "ips: netplug allocates one address per attachment; request at most one");
                rc = BERTH_INVALID_ARGUMENT;
                goto out;
            }
            int n = j_string(e, ip, sizeof ip);
            char *slash = n > 0 ? strchr(ip, '/') : NULL;
            if (slash) *slash = 0; /* "10.77.0.9/24" is accepted too */
            if (n <= 0 || parse_ipv4(ip, &addr)) {
                BERTH_SET_ERR(err, err_cap, "ips[0]: expected an IPv4 address such as \"10.77.0.9\"");
                rc = BERTH_INVALID_ARGUMENT;
                goto out;
            }
            have_addr = 1;
        }
        if (have_addr) {
            uint32_t off = addr - np->net;
            if ((addr & ~(np->size - 1)) != np->net || off == 0 || off == np->size - 1 || addr == np->gw) {
                BERTH_SET_ERR(err, err_cap, "requested address %s is not an allocatable address of %s%s", ip, np->subnet,
                              addr == np->gw ? " (it is the gateway)" : "");
                rc = BERTH_INVALID_ARGUMENT;
                goto out;
            }
            snprintf(key, sizeof key, "ip/%08x", addr);
            st = kv_get_str(np, key, &b);
            if (st == BERTH_OK) {
                BERTH_SET_ERR(err, err_cap, "requested address %s is in use by %s", ip, b.p);
                rc = BERTH_ALREADY_EXISTS;
                goto out;
            }
            TRY(st == BERTH_NOT_FOUND ? BERTH_OK : st);
            snprintf(key, sizeof key, "free/%08x", addr);
            TRY(kv_del_str(np, key));
        }
    }

    if (!have_addr) {
        /* 1. the smallest released address: one O(log n) kv_next over the free index */
        b.len = 0;
        berth_sink ks = buf_sink(&b);
        st = np->host->kv_next(KV(np), "free/", 5, "", 0, &ks, NULL);
        if (st == BERTH_OK) {
            addr = (uint32_t)strtoul(b.p + 5, NULL, 16);
            TRY(np->host->kv_delete(KV(np), b.p, b.len));
        } else {
            TRY(st == BERTH_NOT_FOUND ? BERTH_OK : st);
            /* 2. else the next never-used offset, skipping the gateway and requested addresses */
            uint32_t off;
            TRY(kv_get_u32(np, "next", 1, &off));
            for (; off <= np->size - 2; off++) {
                if (np->net + off == np->gw) continue;
                snprintf(key, sizeof key, "ip/%08x", np->net + off);
                st = kv_get_str(np, key, &b);
                if (st == BERTH_NOT_FOUND) break;
                TRY(st);
            }
            if (off > np->size - 2) {
                uint32_t active;
                TRY(kv_get_u32(np, "active", 0, &active));
                BERTH_SET_ERR(err, err_cap, "no free address in %s (%u of %u in use); release some (del, gc) or use a larger subnet",
                              np->subnet, active, usable(np));
                rc = BERTH_RESOURCE_EXHAUSTED;
                goto out;
            }
            addr = np->net + off;
            TRY(kv_put_u32(np, "next", off + 1));
        }
    }

    uint32_t active;
    snprintf(key, sizeof key, "ip/%08x", addr);
    TRY(kv_put_str(np, key, k.owner));
    snprintf(key, sizeof key, "att/%s", k.owner);
    snprintf(ip, sizeof ip, "%08x", addr);
    TRY(kv_put_str(np, key, ip));
    TRY(kv_get_u32(np, "active", 0, &active));
    TRY(kv_put_u32(np, "active", active + 1));
    TRY(emit(np, "address.allocated", addr, &k)); /* committed with this operation, or not at all */
    rc = write_result(np, addr, out);
out:
    free(b.p);
    return rc;
}

/* Releases one attachment (shared by del and gc). Missing pieces are fine: that is a half-finished one. */
static berth_status release(netplug *np, const attkey *k, char *err, size_t err_cap) {
    berth_status rc = BERTH_OK;
    buf b = {0};
    char key[300];
    snprintf(key, sizeof key, "att/%s", k->owner);
    berth_status st = kv_get_str(np, key, &b);
    if (st == BERTH_NOT_FOUND) goto out; /* unknown: nothing to do, and that is success */
    TRY(st);
    uint32_t addr = (uint32_t)strtoul(b.p, NULL, 16);
    TRY(kv_del_str(np, key));
    snprintf(key, sizeof key, "ip/%08x", addr);
    st = kv_get_str(np, key, &b);
    if (st == BERTH_OK && strcmp(b.p, k->owner) == 0) { /* only free what this attachment owns */
        uint32_t next, active;
        TRY(kv_del_str(np, key));
        TRY(kv_get_u32(np, "next", 1, &next));
        if (addr - np->net < next) {
            snprintf(key, sizeof key, "free/%08x", addr);
            TRY(kv_put_str(np, key, ""));
        }
        TRY(kv_get_u32(np, "active", 0, &active));
        TRY(kv_put_u32(np, "active", active ? active - 1 : 0));
        TRY(emit(np, "address.released", addr, k));
    } else if (st != BERTH_NOT_FOUND) {
        TRY(st);
    }
out:
    free(b.p);
    return rc;
}

static berth_status np_del(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                           size_t err_cap) {
    (void)out;
    jspan obj;
    attkey k;
    berth_status rc;
    if ((rc = parse_request(req, req_len, &obj, err, err_cap)) || (rc = parse_key(obj, &k, err, err_cap))) return rc;
    return release(instance, &k, err, err_cap);
}

static berth_status np_check(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                             size_t err_cap) {
    (void)out;
    netplug *np = instance;
    jspan obj;
    attkey k;
    berth_status rc;
    buf b = {0};
    char key[300];
    if ((rc = parse_request(req, req_len, &obj, err, err_cap)) || (rc = parse_key(obj, &k, err, err_cap))) return rc;
    snprintf(key, sizeof key, "att/%s", k.owner);
    berth_status st = kv_get_str(np, key, &b);
    if (st == BERTH_OK) {
        snprintf(key, sizeof key, "ip/%s", b.p);
        st = kv_get_str(np, key, &b);
        if (st == BERTH_OK && strcmp(b.p, k.owner) != 0) st = BERTH_NOT_FOUND;
    }
    if (st == BERTH_NOT_FOUND) BERTH_SET_ERR(err, err_cap, "no reservation for container \"%s\" interface %s", k.cid, k.ifname);
    else if (st != BERTH_OK) BERTH_SET_ERR(err, err_cap, "host key-value call failed with status %d", (int)st);
    free(b.p);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static berth_status np_gc(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                          size_t err_cap) {
    netplug *np = instance;
    berth_status rc = BERTH_OK;
    jspan obj, valid, e;
    char **keep = NULL;
    size_t nkeep = 0, cap = 0;
    unsigned released = 0;
    buf after = {0}, b = {0};
    if ((rc = parse_request(req, req_len, &obj, err, err_cap))) return rc;
    if (!j_get(obj, "valid", &valid) || *valid.p != '[') {
        BERTH_SET_ERR(err, err_cap, "valid is required: an array of {containerID, ifname}");
        return BERTH_INVALID_ARGUMENT;
    }
    /* The attachments to keep, sorted for bsearch. */
    const char *cur = NULL;
    while (j_array_next(valid, &cur, &e)) {
        attkey k;
        if (*e.p != '{') {
            BERTH_SET_ERR(err, err_cap, "valid[%zu]: expected an object {containerID, ifname}", nkeep);
            rc = BERTH_INVALID_ARGUMENT;
            goto out;
        }
        if ((rc = parse_key(e, &k, err, err_cap))) goto out;
        if (nkeep == cap) {
            char **p = realloc(keep, (cap = cap ? cap * 2 : 16) * sizeof *keep);
            if (!p) { rc = BERTH_INTERNAL; BERTH_SET_ERR(err, err_cap, "out of memory"); goto out; }
            keep = p;
        }
        size_t n = strlen(k.owner) + 1;
        if (!(keep[nkeep] = malloc(n))) { rc = BERTH_INTERNAL; BERTH_SET_ERR(err, err_cap, "out of memory"); goto out; }
        memcpy(keep[nkeep++], k.owner, n);
    }
    if (nkeep) qsort(keep, nkeep, sizeof *keep, cmp_str);
    /* Walk every attachment in key order; release the ones not kept. Deleting the current key is safe:
     * kv_next continues strictly after it. */
    buf_write(&after, "", 0);
    for (;;) {
        b.len = 0;
        berth_sink ks = buf_sink(&b);
        berth_status st = np->host->kv_next(KV(np), "att/", 4, after.p, after.len, &ks, NULL);
        if (st == BERTH_NOT_FOUND) break;
        TRY(st);
        after.len = 0;
        buf_write(&after, b.p, b.len);
        const char *owner = b.p + 4;
        if (nkeep && bsearch(&owner, keep, nkeep, sizeof *keep, cmp_str)) continue;
        attkey k;
        const char *slash = strchr(owner, '/');
        if (!slash || (size_t)(slash - owner) >= sizeof k.ifname || strlen(slash + 1) >= sizeof k.cid) continue;
        memcpy(k.ifname, owner, (size_t)(slash - owner));
        k.ifname[slash - owner] = 0;
        strcpy(k.cid, slash + 1);
        strcpy(k.owner, owner);
        if ((rc = release(np, &k, err, err_cap))) goto out;
        released++;
    }
    char json[64];
    int n = snprintf(json, sizeof json, "{\"released\":%u}", released);
    rc = out->write(out->ctx, json, (size_t)n);
out:
    for (size_t i = 0; i < nkeep; i++) free(keep[i]);
    free(keep);
    free(after.p);
    free(b.p);
    return rc;
}

static berth_status counts(netplug *np, uint32_t *active, uint32_t *freec, char *err, size_t err_cap) {
    berth_status rc = BERTH_OK;
    TRY(kv_get_u32(np, "active", 0, active));
    *freec = *active >= usable(np) ? 0 : usable(np) - *active;
out:
    return rc;
}

static berth_status np_status(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                              size_t err_cap) {
    (void)req; (void)req_len;
    netplug *np = instance;
    uint32_t active, freec;
    berth_status rc = counts(np, &active, &freec, err, err_cap);
    if (rc) return rc;
    if (freec == 0) {
        BERTH_SET_ERR(err, err_cap, "no free address in %s (all %u in use)", np->subnet, active);
        return BERTH_RESOURCE_EXHAUSTED;
    }
    char json[160];
    int n = snprintf(json, sizeof json, "{\"subnet\":\"%s\",\"active\":%u,\"free\":%u}", np->subnet, active, freec);
    return out->write(out->ctx, json, (size_t)n);
}

static berth_status np_capacity(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                                size_t err_cap) {
    (void)req; (void)req_len; /* one subnet for every node: "node" does not change the answer */
    netplug *np = instance;
    uint32_t active, freec;
    berth_status rc = counts(np, &active, &freec, err, err_cap);
    if (rc) return rc;
    char json[256];
    int n = snprintf(json, sizeof json,
                     "{\"free\":%u,\"reserved\":0,\"active\":%u,\"pools\":[{\"name\":\"default\",\"subnet\":\"%s\","
                     "\"free\":%u,\"reserved\":0,\"active\":%u}]}",
                     freec, active, np->subnet, freec, active);
    return out->write(out->ctx, json, (size_t)n);
}

/* ================================ lifecycle ================================ */

#define CONFIG_SCHEMA                                                                                       \
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"subnet\"],"                        \
    "\"properties\":{"                                                                                      \
    "\"subnet\":{\"type\":\"string\",\"pattern\":\"^[0-9.]+/[0-9]+$\",\"description\":\"IPv4 subnet, /8 to /30\"}," \
    "\"gateway\":{\"type\":\"string\",\"pattern\":\"^[0-9.]+$\",\"description\":\"default: the subnet's first address\"}}}"

static berth_status np_create(const berth_host_services *host, const char *config, size_t config_len,
                              void **instance_out, char *err, size_t err_cap) {
    berth_status rc = BERTH_OK;
    jspan obj, v;
    char text[64], *slash;
    buf b = {0};
    unsigned prefix;
    netplug *np = NULL;
    /* The host validated the configuration against CONFIG_SCHEMA; check what a schema cannot express. */
    if (j_parse_object(config, config_len, &obj) || !j_get(obj, "subnet", &v) || j_string(v, text, sizeof text) <= 0 ||
        !(slash = strchr(text, '/'))) {
        BERTH_SET_ERR(err, err_cap, "subnet is required, e.g. \"10.77.0.0/24\"");
        return BERTH_INVALID_ARGUMENT;
    }
    *slash = 0;
    if (!(np = calloc(1, sizeof *np))) {
        BERTH_SET_ERR(err, err_cap, "out of memory");
        return BERTH_INTERNAL;
    }
    np->host = host;
    if (parse_ipv4(text, &np->net) || sscanf(slash + 1, "%u", &prefix) != 1 || prefix < 8 || prefix > 30) {
        BERTH_SET_ERR(err, err_cap, "subnet \"%s/%s\": expected an IPv4 subnet from /8 to /30", text, slash + 1);
        rc = BERTH_INVALID_ARGUMENT;
        goto out;
    }
    np->prefix = prefix;
    np->size = 1u << (32 - prefix);
    if (np->net & (np->size - 1)) {
        char fixed[16];
        format_ipv4(np->net & ~(np->size - 1), fixed);
        BERTH_SET_ERR(err, err_cap, "subnet \"%s/%u\" has host bits set; did you mean \"%s/%u\"?", text, prefix, fixed, prefix);
        rc = BERTH_INVALID_ARGUMENT;
        goto out;
    }
    format_ipv4(np->net, text); /* canonical form */
    snprintf(np->subnet, sizeof np->subnet, "%.15s/%u", text, prefix);
    np->gw = np->net + 1;
    if (j_get(obj, "gateway", &v)) {
        if (j_string(v, text, sizeof text) <= 0 || parse_ipv4(text, &np->gw) || (np->gw & ~(np->size - 1)) != np->net ||
            np->gw == np->net || np->gw == np->net + np->size - 1) {
            BERTH_SET_ERR(err, err_cap, "gateway \"%s\" is not a host address of %s", text, np->subnet);
            rc = BERTH_INVALID_ARGUMENT;
            goto out;
        }
    }
    format_ipv4(np->gw, np->gateway);

    /* create() runs inside a transaction: initialise the namespace, or refuse a changed subnet while
     * addresses of the old one are still in use. */
    berth_status st = kv_get_str(np, "cfg/subnet", &b);
    if (st == BERTH_OK && strcmp(b.p, np->subnet) != 0) {
        uint32_t active;
        TRY(kv_get_u32(np, "active", 0, &active));
        if (active > 0) {
            BERTH_SET_ERR(err, err_cap,
                          "this instance's state holds %u addresses of subnet %s, not %s: release them first "
                          "(berth attachments gc) or give the new subnet a new instance name",
                          active, b.p, np->subnet);
            rc = BERTH_FAILED_PRECONDITION;
            goto out;
        }
        for (;;) { /* forget the old free index */
            b.len = 0;
            berth_sink ks = buf_sink(&b);
            st = host->kv_next(host->host_ctx, "free/", 5, "", 0, &ks, NULL);
            if (st == BERTH_NOT_FOUND) break;
            TRY(st);
            TRY(host->kv_delete(host->host_ctx, b.p, b.len));
        }
        TRY(kv_del_str(np, "next"));
        st = BERTH_NOT_FOUND;
    }
    if (st == BERTH_NOT_FOUND) TRY(kv_put_str(np, "cfg/subnet", np->subnet));
    else TRY(st);

    char msg[128];
    int n = snprintf(msg, sizeof msg, "netplug serving %s (%u addresses, gateway %s)", np->subnet, usable(np), np->gateway);
    host->log(host->host_ctx, BERTH_LOG_INFO, msg, (size_t)n);
    *instance_out = np;
    np = NULL;
out:
    free(np);
    free(b.p);
    return rc;
}

static void np_destroy(void *instance) { free(instance); }

/* ================================ the descriptor ================================ */

static const berth_network_ops NETWORK = {
    .struct_size = sizeof(berth_network_ops),
    .add = np_add,
    .del = np_del,
    .check = np_check,
    .gc = np_gc,
    .status = np_status,
    .capacity = np_capacity, /* optional */
    .admin = NULL,           /* optional: no pool administration in this example */
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "netplug",
    .version = "1.0.0",
    .description = "Example network plugin in C: IPv4 addresses from one subnet, state in the host kv",
    .kinds = BERTH_KIND_NETWORK,
    /* The instance is immutable after create() and all state is in the host kv: concurrent calls are safe. */
    .thread_contract = BERTH_THREADS_CONCURRENT,
    .config_schema = CONFIG_SCHEMA,
    .create = np_create,
    .destroy = np_destroy,
    .reconfigure = NULL, /* the host creates a new instance on a configuration change */
    .network = &NETWORK,
    .call = NULL,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor; /* the host checks host_minor >= our abi_minor itself */
    return host_major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
