/* runtime_table — the runtime kind (ABI 1.3) as the loader sees it. Default: a full table whose operations answer
 * canned state objects (start/state: running, list: one instance). -DHALF_RUNTIME: start, stop and state only
 * (→ .halfFilled). -DSMALL_RUNTIME: the table's struct_size ends before `remove` (→ .structTooSmall). */
#include <string.h>
#include "berth_plugin.h"
static berth_status stub_create(const berth_host_services *h, const char *c, size_t n, void **out, char *e, size_t cap) {
    (void)h; (void)c; (void)n; (void)e; (void)cap;
    *out = NULL;
    return BERTH_OK;
}
static void stub_destroy(void *instance) { (void)instance; }
static berth_status put(const berth_sink *o, const char *s) { return o->write(o->ctx, s, strlen(s)); }
static berth_status running(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)e; (void)cap;
    return put(o, "{\"id\":\"a\",\"state\":\"running\",\"pid\":42}");
}
static berth_status listed(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)e; (void)cap;
    return put(o, "{\"instances\":[{\"id\":\"a\",\"state\":\"exited\",\"pid\":0,\"exitCode\":3}]}");
}
static berth_status bad_state(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)e; (void)cap;
    return put(o, "{\"id\":\"a\",\"state\":\"sleeping\"}");
}
static berth_status empty(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)o; (void)e; (void)cap;
    return BERTH_OK;
}
#if defined(HALF_RUNTIME)
static const berth_runtime_ops RT = { .struct_size = sizeof(berth_runtime_ops), .start = running, .stop = bad_state, .state = running };
#elif defined(SMALL_RUNTIME)
static const berth_runtime_ops RT = { .struct_size = (uint32_t)offsetof(berth_runtime_ops, remove), .start = running,
                                      .stop = bad_state, .state = running, .list = listed };
#else
static const berth_runtime_ops RT = { .struct_size = sizeof(berth_runtime_ops), .start = running, .stop = bad_state,
                                      .state = running, .list = listed, .remove = empty };
#endif
static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "runtime-table", .version = "1.0.0", .kinds = BERTH_KIND_RUNTIME, .runtime = &RT,
    .create = stub_create, .destroy = stub_destroy,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
