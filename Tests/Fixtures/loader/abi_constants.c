/* abi_constants — not a plugin: a tiny program the tests run to learn the header's numbers (as C sees them). */
#include <stddef.h>
#include "berth_plugin.h"
int main(void) {
    printf("BERTH_ABI_MAJOR=%d\n", BERTH_ABI_MAJOR);
    printf("BERTH_ABI_MINOR=%d\n", BERTH_ABI_MINOR);
    printf("DESCRIPTOR_V1_0_SIZE=%u\n", BERTH_DESCRIPTOR_V1_0_SIZE);
    printf("DESCRIPTOR_CALL_OFFSET=%zu\n", offsetof(berth_plugin_descriptor, call));
    return 0;
}
