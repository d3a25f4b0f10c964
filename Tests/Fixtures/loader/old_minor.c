/*
 * old_minor — a valid plugin built against ABI 1.0 (compile with -DBERTH_ABI_MINOR=0) that implements every
 * kind, with every struct_size set to the frozen ABI 1.0 size rather than sizeof(). A host of a later minor must
 * load it, create an instance and call it: structs only grow at the end, so 1.0 sizes are always enough.
 */
#include <string.h>
#include "berth_plugin.h"

static berth_status old_create(const berth_host_services *host, const char *config, size_t config_len,
                               void **instance_out, char *err, size_t err_cap) {
    (void)config; (void)config_len;
    if (host == NULL || host->struct_size < BERTH_HOST_SERVICES_V1_0_SIZE) {
        BERTH_SET_ERR(err, err_cap, "host services table too small");
        return BERTH_INTERNAL;
    }
    *instance_out = (void *)host;
    return BERTH_OK;
}
static void old_destroy(void *instance) { (void)instance; }
static berth_status old_call(void *instance, const char *method, const char *req, size_t req_len,
                             const berth_sink *out, char *err, size_t err_cap) {
    const berth_host_services *host = instance;
    if (strcmp(method, "echo") == 0) return out->write(out->ctx, req, req_len);
    if (strcmp(method, "info") == 0) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "{\"abi_minor\":%d,\"host_abi_major\":%d}", BERTH_ABI_MINOR,
                         (int)host->host_abi_major);
        return out->write(out->ctx, buf, (size_t)n);
    }
    BERTH_SET_ERR(err, err_cap, "unknown method \"%s\"", method);
    return BERTH_UNIMPLEMENTED;
}
static berth_status op(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)o; (void)e; (void)cap;
    return BERTH_OK;
}
static berth_status filter(void *i, const berth_sched_instance *s, const berth_node_batch *b, uint8_t *codes, char *e,
                           size_t cap) {
    (void)i; (void)s; (void)e; (void)cap;
    for (size_t k = 0; k < b->count; k++) codes[k] = BERTH_SCHED_SUCCESS;
    return BERTH_OK;
}
static berth_status score(void *i, const berth_sched_instance *s, const berth_node_batch *b, int64_t *scores, char *e,
                          size_t cap) {
    (void)i; (void)s; (void)e; (void)cap;
    for (size_t k = 0; k < b->count; k++) scores[k] = 50;
    return BERTH_OK;
}

static const berth_network_ops NET = {
    .struct_size = BERTH_NETWORK_OPS_V1_0_SIZE, .add = op, .del = op, .check = op, .gc = op, .status = op,
};
static const berth_storage_ops STO = {
    .struct_size = BERTH_STORAGE_OPS_V1_0_SIZE,
    .create_volume = op, .delete_volume = op, .node_publish = op, .node_unpublish = op,
};
static const berth_scheduler_ops SCH = {
    .struct_size = BERTH_SCHEDULER_OPS_V1_0_SIZE, .kind = "OldApp",
    .filter = filter, .score = score, .reserve = op, .unreserve = op,
};
static const berth_discovery_ops DIS = { .struct_size = BERTH_DISCOVERY_OPS_V1_0_SIZE, .events = op, .resync = op };

static const berth_plugin_descriptor D = {
    .struct_size = BERTH_DESCRIPTOR_V1_0_SIZE, .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "old-minor", .version = "1.0.0", .description = "loader fixture: an ABI 1.0 plugin",
    .kinds = BERTH_KIND_NETWORK | BERTH_KIND_STORAGE | BERTH_KIND_SCHEDULER | BERTH_KIND_DISCOVERY,
    .thread_contract = BERTH_THREADS_SERIAL,
    .create = old_create, .destroy = old_destroy, .call = old_call,
    .network = &NET, .storage = &STO, .scheduler = &SCH, .discovery = &DIS,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_minor;
    if (host_major != BERTH_ABI_MAJOR) return NULL;
    return &D;
}
