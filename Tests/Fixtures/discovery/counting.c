/*
 * counting — a discovery plugin that is NOT idempotent (test fixture for `berth plugin check`).
 *
 * Every events or resync call increments a counter in its namespace, and it accepts anything, malformed JSON
 * included. The discovery conformance cases must report "repeated batch is idempotent" and "malformed JSON is
 * refused" as failures.
 */
#include <berth_plugin.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct { const berth_host_services *host; } counting;

typedef struct { char buf[32]; size_t len; } small;

static berth_status put_small(void *ctx, const char *data, size_t len) {
    small *s = ctx;
    if (s->len + len >= sizeof s->buf) return BERTH_OUT_OF_RANGE;
    for (size_t i = 0; i < len; i++) s->buf[s->len++] = data[i];
    s->buf[s->len] = 0;
    return BERTH_OK;
}

static berth_status bump(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)req; (void)len; (void)out; (void)err; (void)cap;
    counting *c = instance;
    small v = {{0}, 0};
    berth_sink sink = {sizeof sink, &v, put_small};
    long n = c->host->kv_get(c->host->host_ctx, "count", 5, &sink) == BERTH_OK ? strtol(v.buf, NULL, 10) : 0;
    char text[32];
    int tl = snprintf(text, sizeof text, "%ld", n + 1);
    return c->host->kv_put(c->host->host_ctx, "count", 5, text, (size_t)tl);
}

static berth_status create(const berth_host_services *host, const char *config, size_t config_len, void **out, char *err, size_t cap) {
    (void)config; (void)config_len; (void)err; (void)cap;
    counting *c = calloc(1, sizeof *c);
    c->host = host;
    *out = c;
    return BERTH_OK;
}

static void destroy(void *instance) { free(instance); }

static const berth_discovery_ops ops = {.struct_size = sizeof(berth_discovery_ops), .events = bump, .resync = bump};

static const berth_plugin_descriptor descriptor = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "counting",
    .version = "1.0.0",
    .description = "Test fixture: a discovery plugin that counts deliveries (not idempotent)",
    .kinds = BERTH_KIND_DISCOVERY,
    .thread_contract = BERTH_THREADS_SERIAL,
    .create = create,
    .destroy = destroy,
    .discovery = &ops,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    return host_major == BERTH_ABI_MAJOR ? &descriptor : NULL;
}
