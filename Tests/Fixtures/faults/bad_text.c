/* Returns well-formed JSON whose strings a host must refuse: a NUL (\u0000) in an address for container IDs
 * starting with "nul", and a byte that is not UTF-8 for those starting with "utf". */
#define FIXTURE_NAME "bad-text"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)err; (void)cap;
    if (strncmp(cid, "nul", 3) == 0) {
        berth_sink_puts(out, "{\"ips\":[{\"address\":\"10.77.0.9/16\\u0000x\"}]}");
        return BERTH_OK;
    }
    if (strncmp(cid, "utf", 3) == 0) {
        berth_sink_puts(out, "{\"ips\":[{\"address\":\"10.77.0.9/16\xff\"}]}");
        return BERTH_OK;
    }
    return KEEP;
}
