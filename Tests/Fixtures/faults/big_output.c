/* Writes 24 MiB of output from add() for containers whose ID starts with "bad", ignoring the sink's refusal,
 * and returns OK: over the host's 16 MiB output limit. */
#define FIXTURE_NAME "big-output"
#include "netfixture.h"

static berth_status fault(struct fx *f, const char *cid, const berth_sink *out, char *err, size_t cap) {
    (void)f; (void)err; (void)cap;
    if (strncmp(cid, "bad", 3) != 0) return KEEP;
    static char chunk[1 << 16];
    memset(chunk, ' ', sizeof chunk);
    out->write(out->ctx, "{\"ips\":[],\"pad\":\"", 17);
    for (int i = 0; i < 24 * 16; i++) out->write(out->ctx, chunk, sizeof chunk);
    out->write(out->ctx, "\"}", 2);
    return BERTH_OK;
}
