/* A scheduler plugin whose score() writes 150 for every node: out of the 0..100 range. */
#include <string.h>

#include "berth_plugin.h"

static berth_status create(const berth_host_services *host, const char *config, size_t len, void **out, char *err, size_t cap) {
    (void)host; (void)config; (void)len; (void)err; (void)cap;
    static int token;
    *out = &token;
    return BERTH_OK;
}

static void destroy(void *inst) { (void)inst; }

static berth_status filter(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes, uint8_t *codes, char *err, size_t cap) {
    (void)instance; (void)inst; (void)err; (void)cap;
    for (size_t i = 0; i < nodes->count; i++) codes[i] = BERTH_SCHED_SUCCESS;
    return BERTH_OK;
}

static berth_status score(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes, int64_t *scores, char *err, size_t cap) {
    (void)instance; (void)inst; (void)err; (void)cap;
    for (size_t i = 0; i < nodes->count; i++) scores[i] = 150;
    return BERTH_OK;
}

static berth_status noop(void *instance, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)instance; (void)req; (void)len; (void)out; (void)err; (void)cap;
    return BERTH_OK;
}

static const berth_scheduler_ops SCHED = {
    .struct_size = sizeof(berth_scheduler_ops),
    .kind = "KitApp",
    .filter = filter, .score = score, .reserve = noop, .unreserve = noop,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "kit-sched-scores-out-of-range",
    .version = "0.1.0",
    .description = "conformance-kit fixture: scores out of range",
    .kinds = BERTH_KIND_SCHEDULER,
    .thread_contract = BERTH_THREADS_SERIAL,
    .create = create,
    .destroy = destroy,
    .scheduler = &SCHED,
};

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {
    (void)minor;
    return major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
