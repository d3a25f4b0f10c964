/* Returns invalid JSON from add() for containers whose ID starts with "bad". */
#define FIXTURE_NAME "bad-json"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)err; (void)cap;
    if (strncmp(cid, "bad", 3) != 0) return KEEP;
    berth_sink_puts(out, "{\"ips\":[{\"address\":\"10.77.0.9/16\"}");
    return BERTH_OK;
}
