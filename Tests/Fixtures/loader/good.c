/* good — a minimal valid plugin (no kinds): create/destroy and an "echo" call. The positive control. */
#include <stdlib.h>
#include <string.h>
#include "berth_plugin.h"

static berth_status good_create(const berth_host_services *host, const char *config, size_t config_len,
                                void **instance_out, char *err, size_t err_cap) {
    (void)host; (void)config; (void)config_len; (void)err; (void)err_cap;
    *instance_out = NULL;
    return BERTH_OK;
}
static void good_destroy(void *instance) { (void)instance; }
static berth_status good_call(void *instance, const char *method, const char *req, size_t req_len,
                              const berth_sink *out, char *err, size_t err_cap) {
    (void)instance;
    if (strcmp(method, "echo") == 0) return out->write(out->ctx, req, req_len);
    BERTH_SET_ERR(err, err_cap, "unknown method \"%s\"", method);
    return BERTH_UNIMPLEMENTED;
}
static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "good", .version = "1.0.0", .description = "loader fixture: a valid plugin",
    .create = good_create, .destroy = good_destroy, .call = good_call,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
