/* abi_major — a descriptor that claims ABI major 2 (returned from the v1 entry). → .abiMajorMismatch(plugin: 2, host: 1) */
#include "berth_plugin.h"
static berth_status stub_create(const berth_host_services *h, const char *c, size_t n, void **out, char *e, size_t cap) {
    (void)h; (void)c; (void)n; (void)e; (void)cap;
    *out = NULL;
    return BERTH_OK;
}
static void stub_destroy(void *instance) { (void)instance; }
static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = 2, .abi_minor = 0,
    .name = "abi-major", .version = "1.0.0", .create = stub_create, .destroy = stub_destroy,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
