/* half_network — declares the network kind with add and del only (no check, gc, status). → .halfFilled */
#include "berth_plugin.h"
static berth_status stub_create(const berth_host_services *h, const char *c, size_t n, void **out, char *e, size_t cap) {
    (void)h; (void)c; (void)n; (void)e; (void)cap;
    *out = NULL;
    return BERTH_OK;
}
static void stub_destroy(void *instance) { (void)instance; }
static berth_status op(void *i, const char *r, size_t n, const berth_sink *o, char *e, size_t cap) {
    (void)i; (void)r; (void)n; (void)o; (void)e; (void)cap;
    return BERTH_OK;
}
static const berth_network_ops NET = { .struct_size = sizeof(berth_network_ops), .add = op, .del = op };
static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "half-network", .version = "1.0.0", .kinds = BERTH_KIND_NETWORK, .network = &NET,
    .create = stub_create, .destroy = stub_destroy,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
