/* refuse — the entry returns NULL: the plugin refuses this host. → .refused */
#include "berth_plugin.h"
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor) {
    (void)host_major; (void)host_minor;
    return NULL;
}
