/* Hangs forever in add() for containers whose ID starts with "bad": only a kill ends it. */
#define FIXTURE_NAME "hang"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)out; (void)err; (void)cap;
    if (strncmp(cid, "bad", 3) == 0) for (;;) pause();
    return KEEP;
}
