/* Segfaults on the Nth add() of its process (config "nth", default 3): a crash in the middle of a call. */
#define FIXTURE_NAME "segv-nth"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)cid; (void)out; (void)err; (void)cap;
    if ((long)f->calls == config_int(f, "nth", 3)) {
        volatile int *p = NULL;
        *p = 42;
    }
    return KEEP;
}
