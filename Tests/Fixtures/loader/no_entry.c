/* no_entry — a shared object that exports no berth_plugin_entry_v1 (a typo'd name instead). → .entryMissing */
#include "berth_plugin.h"
const berth_plugin_descriptor *berth_plugin_entry(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return NULL;
}
