/* Crashes in its entry function, before it ever returns a descriptor. In process this would take the daemon
 * down at load; under process isolation only the runner dies and the plugin is reported as failed. */
#include <stddef.h>

#include "berth_plugin.h"

const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {
    (void)major; (void)minor;
    volatile const berth_plugin_descriptor *d = NULL;
    return (const berth_plugin_descriptor *)d->create; /* reads through NULL */
}
