/*
 * flaky — a discovery plugin that fails every other call (test fixture).
 *
 * It wraps a real discovery plugin (config "inner": path of its .so, "innerConfig": its configuration) and forwards
 * events and resync to it, but every `failEvery`-th call (default 2: every other one) fails with UNAVAILABLE,
 * alternately BEFORE forwarding (the inner plugin never sees the batch) and AFTER forwarding (the inner plugin
 * applied the batch and wrote its files, yet the host must roll its key-value writes back and deliver again).
 * "delayMs" makes every call slow. The inner plugin runs with this instance's host services, so it keeps its
 * state in this instance's namespace.
 *
 * Build: cc -shared -fPIC -I PluginABI/include Tests/Fixtures/discovery/flaky.c -o flaky.so
 */
#include <berth_plugin.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const berth_plugin_descriptor *inner;
    void *inner_instance;
    long fail_every;
    long delay_ms;
    unsigned long calls;
    unsigned long failures;
} flaky;

/* Finds "key": in a JSON object (flat scan; good enough for this fixture's own configuration). */
static const char *find_key(const char *json, size_t len, const char *key) {
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 < len; i++) {
        if (json[i] == '"' && strncmp(json + i + 1, key, klen) == 0 && json[i + 1 + klen] == '"') {
            const char *p = json + i + klen + 2;
            while (p < json + len && (*p == ' ' || *p == ':')) p++;
            return p;
        }
    }
    return NULL;
}

static long int_field(const char *json, size_t len, const char *key, long dflt) {
    const char *p = find_key(json, len, key);
    return p ? strtol(p, NULL, 10) : dflt;
}

/* A string value without escapes, copied into out. */
static int string_field(const char *json, size_t len, const char *key, char *out, size_t cap) {
    const char *p = find_key(json, len, key);
    if (!p || *p != '"') return 0;
    p++;
    size_t n = 0;
    while (p + n < json + len && p[n] != '"' && n + 1 < cap) n++;
    memcpy(out, p, n);
    out[n] = 0;
    return 1;
}

/* The extent of an object value (balanced braces, strings skipped). */
static int object_field(const char *json, size_t len, const char *key, const char **start, size_t *olen) {
    const char *p = find_key(json, len, key);
    if (!p || *p != '{') return 0;
    int depth = 0, in_str = 0;
    for (const char *q = p; q < json + len; q++) {
        if (in_str) {
            if (*q == '\\') q++;
            else if (*q == '"') in_str = 0;
        } else if (*q == '"') in_str = 1;
        else if (*q == '{') depth++;
        else if (*q == '}' && --depth == 0) {
            *start = p;
            *olen = (size_t)(q - p + 1);
            return 1;
        }
    }
    return 0;
}

static berth_status flaky_create(const berth_host_services *host, const char *config, size_t config_len, void **out,
                                 char *err, size_t err_cap) {
    char path[4096];
    if (!string_field(config, config_len, "inner", path, sizeof path)) {
        BERTH_SET_ERR(err, err_cap, "inner: required, the path of the discovery plugin to wrap");
        return BERTH_INVALID_ARGUMENT;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        BERTH_SET_ERR(err, err_cap, "inner: cannot load %s: %s", path, dlerror());
        return BERTH_INVALID_ARGUMENT;
    }
    const berth_plugin_descriptor *(*entry)(uint16_t, uint16_t) =
        (const berth_plugin_descriptor *(*)(uint16_t, uint16_t))dlsym(h, BERTH_PLUGIN_ENTRY_SYMBOL);
    const berth_plugin_descriptor *d = entry ? entry(BERTH_ABI_MAJOR, BERTH_ABI_MINOR) : NULL;
    if (!d || !d->discovery) {
        BERTH_SET_ERR(err, err_cap, "inner: %s is not a discovery plugin", path);
        return BERTH_INVALID_ARGUMENT;
    }
    const char *ic = "{}";
    size_t ic_len = 2;
    object_field(config, config_len, "innerConfig", &ic, &ic_len);
    flaky *f = calloc(1, sizeof *f);
    f->inner = d;
    f->fail_every = int_field(config, config_len, "failEvery", 2);
    f->delay_ms = int_field(config, config_len, "delayMs", 0);
    berth_status st = d->create(host, ic, ic_len, &f->inner_instance, err, err_cap);
    if (st != BERTH_OK) {
        free(f);
        return st;
    }
    *out = f;
    return BERTH_OK;
}

static void flaky_destroy(void *instance) {
    flaky *f = instance;
    f->inner->destroy(f->inner_instance);
    free(f);
}

static berth_status forward(flaky *f, int resync, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    if (f->delay_ms > 0) {
        struct timespec ts = {f->delay_ms / 1000, (f->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    f->calls++;
    int fail = f->fail_every > 0 && f->calls % (unsigned long)f->fail_every == 1 % (unsigned long)f->fail_every;
    if (fail && (f->failures++ % 2) == 0) {
        BERTH_SET_ERR(err, cap, "flaky: call %lu fails on purpose, before the inner plugin saw it", f->calls);
        return BERTH_UNAVAILABLE;
    }
    berth_json_op op = resync ? f->inner->discovery->resync : f->inner->discovery->events;
    berth_status st = op(f->inner_instance, req, len, out, err, cap);
    if (st != BERTH_OK) return st;
    if (fail) {
        BERTH_SET_ERR(err, cap, "flaky: call %lu fails on purpose, after the inner plugin applied it", f->calls);
        return BERTH_UNAVAILABLE;
    }
    return BERTH_OK;
}

static berth_status flaky_events(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t c) { return forward(i, 0, r, n, o, e, c); }
static berth_status flaky_resync(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t c) { return forward(i, 1, r, n, o, e, c); }

static berth_status flaky_call(void *instance, const char *method, const char *req, size_t len, const berth_sink *out,
                               char *err, size_t cap) {
    flaky *f = instance;
    if (!f->inner->call) {
        BERTH_SET_ERR(err, cap, "the inner plugin has no generic call");
        return BERTH_UNIMPLEMENTED;
    }
    return f->inner->call(f->inner_instance, method, req, len, out, err, cap);
}

static const berth_discovery_ops ops = {
    .struct_size = sizeof(berth_discovery_ops),
    .events = flaky_events,
    .resync = flaky_resync,
};

static const berth_plugin_descriptor descriptor = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "flaky",
    .version = "1.0.0",
    .description = "Test fixture: a discovery plugin that fails every other call",
    .kinds = BERTH_KIND_DISCOVERY,
    .thread_contract = BERTH_THREADS_SERIAL,
    .config_schema = "{\"type\":\"object\",\"required\":[\"inner\"],\"properties\":{\"inner\":{\"type\":\"string\"},"
                     "\"innerConfig\":{\"type\":\"object\"},\"failEvery\":{\"type\":\"integer\",\"minimum\":0},"
                     "\"delayMs\":{\"type\":\"integer\",\"minimum\":0}}}",
    .create = flaky_create,
    .destroy = flaky_destroy,
    .discovery = &ops,
    .call = flaky_call,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    return host_major == BERTH_ABI_MAJOR ? &descriptor : NULL;
}
