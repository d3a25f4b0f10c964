/* Allocates without bound in add() for containers whose ID starts with "bad", touching every page and never
 * checking malloc: under a memory limit malloc eventually returns NULL and the write kills the process. */
#define FIXTURE_NAME "alloc"
#include "netfixture.h"

static void *volatile held;

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)out; (void)err; (void)cap;
    if (strncmp(cid, "bad", 3) != 0) return KEEP;
    for (;;) {
        char *p = malloc(1 << 20);
        memset(p, 0xab, 1 << 20);
        *(void **)p = held; /* keep it reachable: nothing is ever freed */
        held = p;
    }
}
