/* create_fails — loads fine, but create() fails with FAILED_PRECONDITION and a message. → .createFailed */
#include "berth_plugin.h"
static berth_status failing_create(const berth_host_services *h, const char *c, size_t n, void **out, char *err,
                                   size_t err_cap) {
    (void)h; (void)c; (void)n; (void)out;
    BERTH_SET_ERR(err, err_cap, "cannot reach the VLAN controller at %s", "10.0.0.1");
    return BERTH_FAILED_PRECONDITION;
}
static void stub_destroy(void *instance) { (void)instance; }
static const berth_plugin_descriptor D = {
    .struct_size = sizeof(berth_plugin_descriptor), .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,
    .name = "create-fails", .version = "1.0.0", .create = failing_create, .destroy = stub_destroy,
};
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return &D;
}
