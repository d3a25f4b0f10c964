/*
 * fixture_sink.h — the one sink the C test fixtures collect host output into (kv values, keys): a fixed buffer,
 * kept NUL-terminated; BERTH_OUT_OF_RANGE when the data does not fit. Included by faults/netfixture.h and
 * kit/kitcommon.h after berth_plugin.h and <string.h>.
 */
#ifndef BERTH_FIXTURE_SINK_H
#define BERTH_FIXTURE_SINK_H

struct buf { char data[512]; size_t len; };

__attribute__((unused)) static berth_status buf_write(void *ctx, const char *d, size_t n) {
    struct buf *b = ctx;
    if (b->len + n >= sizeof b->data) return BERTH_OUT_OF_RANGE;
    memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = 0;
    return BERTH_OK;
}

#endif
