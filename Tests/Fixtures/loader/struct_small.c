/* struct_small — descriptor struct_size one pointer short of the ABI 1.0 size (it "lacks" call). → .structTooSmall */
#include <stddef.h>
#include "berth_plugin.h"
static berth_status stub_create(const berth_host_services *h, const char *c, size_t n, void **out, char *e, size_t cap) {
    (void)h; (void)c; (void)n; (void)e; (void)cap;
    *out = NULL;
    return BERTH_OK;
}
static void stub_destroy(void *instance) { (void)instance; }
static const berth_plugin_descriptor D = {
    .struct_size = (uint32_t)offsetof(berth_plugin_descriptor, call), .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR, .name = "struct-small", .version = "1.0.0", .create = stub_create, .destroy = stub_destroy,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
