/*
 * hello — the smallest complete Berth plugin, in C.
 *
 * It proves the whole path: a descriptor with a configuration schema, create/destroy with host services,
 * a generic JSON call ("echo", "info") and a scheduler kind ("HelloApp") whose filter and score work on the
 * typed node batch. Build it by hand with:
 *     cc -shared -fPIC -O2 -I PluginABI/include Plugins/hello/hello.c -o libberth-hello.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"

typedef struct hello {
    const berth_host_services *host;
    char greeting[128];
    unsigned long calls;
} hello;

#define CONFIG_SCHEMA                                                                                        \
    "{\"type\":\"object\",\"additionalProperties\":false,"                                            \
    "\"properties\":{\"greeting\":{\"type\":\"string\",\"maxLength\":120}}}"

/* Finds "greeting":"..." in the (already schema-validated) configuration; a real plugin would use a JSON parser. */
static void read_greeting(hello *h, const char *config, size_t len) {
    strcpy(h->greeting, "hello");
    const char *key = "\"greeting\"";
    const char *end = config + len;
    for (const char *p = config; p + 10 < end; p++) {
        if (memcmp(p, key, 10) != 0) continue;
        p += 10;
        while (p < end && (*p == ' ' || *p == ':')) p++;
        if (p >= end || *p != '"') return;
        p++;
        size_t n = 0;
        while (p + n < end && p[n] != '"' && n < sizeof h->greeting - 1) n++;
        memcpy(h->greeting, p, n);
        h->greeting[n] = 0;
        return;
    }
}

static berth_status hello_create(const berth_host_services *host, const char *config, size_t config_len,
                                 void **instance_out, char *err, size_t err_cap) {
    hello *h = calloc(1, sizeof *h);
    if (!h) {
        BERTH_SET_ERR(err, err_cap, "out of memory");
        return BERTH_INTERNAL;
    }
    h->host = host;
    read_greeting(h, config, config_len);
    const char *msg = "hello plugin created";
    host->log(host->host_ctx, BERTH_LOG_INFO, msg, strlen(msg));
    *instance_out = h;
    return BERTH_OK;
}

static void hello_destroy(void *instance) { free(instance); }

static berth_status hello_reconfigure(void *instance, const char *config, size_t len, char *err, size_t cap) {
    (void)err; (void)cap;
    read_greeting(instance, config, len);
    return BERTH_OK;
}

static berth_status hello_call(void *instance, const char *method, const char *req, size_t req_len,
                               const berth_sink *out, char *err, size_t err_cap) {
    hello *h = instance;
    h->calls++;
    if (strcmp(method, "echo") == 0) return out->write(out->ctx, req, req_len);
    if (strcmp(method, "info") == 0) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "{\"greeting\":\"%s\",\"calls\":%lu}", h->greeting, h->calls);
        return out->write(out->ctx, buf, (size_t)n);
    }
    BERTH_SET_ERR(err, err_cap, "unknown method \"%s\" (hello knows echo and info)", method);
    return BERTH_UNIMPLEMENTED;
}

/* ---- scheduler kind HelloApp: keep nodes with free CPU, prefer the fullest (bin packing) ---- */

#define NODE_AT(b, i) ((const berth_node_view *)((const char *)(b)->nodes + (size_t)(i) * (b)->node_size))

static berth_status hello_filter(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                                 uint8_t *codes, char *err, size_t err_cap) {
    (void)instance; (void)inst; (void)err; (void)err_cap;
    for (size_t i = 0; i < nodes->count; i++)
        codes[i] = NODE_AT(nodes, i)->cpu_free_milli >= 0 ? BERTH_SCHED_SUCCESS : BERTH_SCHED_UNSCHEDULABLE;
    return BERTH_OK;
}

static berth_status hello_score(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                                int64_t *scores, char *err, size_t err_cap) {
    (void)instance; (void)inst; (void)err; (void)err_cap;
    for (size_t i = 0; i < nodes->count; i++) {
        int64_t free_cpu = NODE_AT(nodes, i)->cpu_free_milli;
        scores[i] = free_cpu <= 0 ? 100 : free_cpu >= 100000 ? 0 : 100 - free_cpu / 1000;
    }
    return BERTH_OK;
}

static berth_status hello_noop(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                               size_t err_cap) {
    (void)instance; (void)req; (void)req_len; (void)out; (void)err; (void)err_cap;
    return BERTH_OK;
}

/* reserve: {"kind", "app", "ordinal", "node"}. HelloApp keeps no reservations, but a request it cannot read is
 * refused with INVALID_ARGUMENT naming the field (the header's rule for every JSON operation). */
static int has(const char *s, size_t len, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++)
        if (memcmp(s + i, pat, pl) == 0) return 1;
    return 0;
}

static berth_status hello_reserve(void *instance, const char *req, size_t req_len, const berth_sink *out, char *err,
                                  size_t err_cap) {
    (void)instance; (void)out;
    size_t a = 0, b = req_len;
    while (a < b && (req[a] == ' ' || req[a] == '\n' || req[a] == '\t' || req[a] == '\r')) a++;
    while (b > a && (req[b - 1] == ' ' || req[b - 1] == '\n' || req[b - 1] == '\t' || req[b - 1] == '\r')) b--;
    if (b - a < 2 || req[a] != '{' || req[b - 1] != '}') {
        BERTH_SET_ERR(err, err_cap, "reserve: the request is not a JSON object");
        return BERTH_INVALID_ARGUMENT;
    }
    static const char *const required[] = {"app", "ordinal", "node"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, "\"%s\"", required[i]);
        if (!has(req, req_len, key)) {
            BERTH_SET_ERR(err, err_cap, "reserve: \"%s\" is required", required[i]);
            return BERTH_INVALID_ARGUMENT;
        }
    }
    return BERTH_OK;
}

static const berth_scheduler_ops SCHED = {
    .struct_size = sizeof(berth_scheduler_ops),
    .kind = "HelloApp",
    .kind_schema = "{\"type\":\"object\",\"properties\":{\"replicas\":{\"type\":\"integer\",\"minimum\":0}}}",
    .filter = hello_filter,
    .score = hello_score,
    .reserve = hello_reserve,
    .unreserve = hello_noop, /* idempotent and never fails: nothing to give back */
    .bind = NULL,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "hello",
    .version = "1.0.0",
    .description = "The smallest complete Berth plugin: echo, info and a toy scheduler kind",
    .kinds = BERTH_KIND_SCHEDULER,
    .thread_contract = BERTH_THREADS_SERIAL,
    .config_schema = CONFIG_SCHEMA,
    .create = hello_create,
    .destroy = hello_destroy,
    .reconfigure = hello_reconfigure,
    .scheduler = &SCHED,
    .call = hello_call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    if (host_major != BERTH_ABI_MAJOR) return NULL;
    return &DESCRIPTOR;
}
