/* A well-behaved network plugin (the shared fixture with no fault). */
#define FIXTURE_NAME "good"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)cid; (void)out; (void)err; (void)cap;
    return KEEP;
}
