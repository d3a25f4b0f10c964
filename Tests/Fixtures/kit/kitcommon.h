/*
 * What the conformance kit's base headers (kitnet.h, kitsched.h, kitdisc.h) share, so that each helper has one
 * home. A base header includes its system headers and berth_plugin.h, defines its `struct fx` (the instance; it
 * must have a `const berth_host_services *host` member), then includes this file, and ends with KIT_PLUGIN(...).
 *
 *   crash()               a SIGSEGV, for the KIT_*SEGV* faults
 *   find(), contains()    substring search in a request that is not NUL-terminated
 *   is_object()           a JSON object, roughly: first non-blank is '{', last non-blank is '}'
 *   value_at()            where the value of "name" starts; sfield() and nfield() read a string or an integer there
 *   struct buf, buf_write a small fixed-size sink (NUL-terminated) for what the host hands back (kv_get, kv_next)
 *   fx_create(), fx_destroy()  a zeroed struct fx holding the host services; free
 *   KIT_PLUGIN(...)       the descriptor (the kind's fields as arguments) and berth_plugin_entry_v1
 *
 * KIT_SFIELD_TOO_LONG(len), defined by the base header before it includes this file, is what sfield() does
 * before it answers 0 for a value that does not fit its buffer (nothing by default).
 *
 * The JSON handling is just enough for the kit's requests: no escapes, the first occurrence of a name wins.
 */
#ifndef KITCOMMON_H
#define KITCOMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_plugin.h"

#ifndef KIT_SFIELD_TOO_LONG
#define KIT_SFIELD_TOO_LONG(len) ((void)(len))
#endif

__attribute__((unused)) static void crash(void) { *(volatile int *)0 = 1; }

/* The first occurrence of pat in s[0..len), or NULL. */
__attribute__((unused)) static const char *find(const char *s, size_t len, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) if (memcmp(s + i, pat, pl) == 0) return s + i;
    return NULL;
}

__attribute__((unused)) static int contains(const char *s, size_t len, const char *pat) { return find(s, len, pat) != NULL; }

__attribute__((unused)) static int is_object(const char *s, size_t len) {
    size_t a = 0, b = len;
    while (a < b && (s[a] == ' ' || s[a] == '\n')) a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\n')) b--;
    return b - a >= 2 && s[a] == '{' && s[b - 1] == '}';
}

/* The index in json where the value of "name" (its first occurrence) starts: past the blanks and colons after the
 * name, and past any '[' too when `in_list`. len when the name is absent. */
__attribute__((unused)) static size_t value_at(const char *json, size_t len, const char *name, int in_list) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = find(json, len, pat);
    if (!p) return len;
    size_t j = (size_t)(p - json) + strlen(pat);
    while (j < len && (json[j] == ' ' || json[j] == ':' || (in_list && json[j] == '['))) j++;
    return j;
}

/* "name":"value" (the first occurrence) into out; 0 when absent, empty, not a string or longer than cap - 1. */
__attribute__((unused)) static int sfield(const char *json, size_t len, const char *name, char *out, size_t cap) {
    size_t j = value_at(json, len, name, 0);
    if (j >= len || json[j] != '"') return 0;
    j++;
    size_t n = 0;
    while (j < len && json[j] != '"') {
        if (n + 1 >= cap) {
            KIT_SFIELD_TOO_LONG(len);
            return 0;
        }
        out[n++] = json[j++];
    }
    if (j >= len) return 0;
    out[n] = 0;
    return n > 0;
}

/* "name": <non-negative integer> (the first occurrence); -1 when absent or not a number. */
__attribute__((unused)) static long nfield(const char *json, size_t len, const char *name) {
    size_t j = value_at(json, len, name, 0);
    if (j >= len || json[j] < '0' || json[j] > '9') return -1;
    long v = 0;
    while (j < len && json[j] >= '0' && json[j] <= '9' && v < 1000000000) v = v * 10 + (json[j++] - '0');
    return v;
}

#include "../fixture_sink.h"

static berth_status fx_create(const berth_host_services *host, const char *config, size_t len, void **out, char *err, size_t cap) {
    (void)config; (void)len;
    struct fx *f = calloc(1, sizeof *f);
    if (!f) { BERTH_SET_ERR(err, cap, "out of memory"); return BERTH_INTERNAL; }
    f->host = host;
    *out = f;
    return BERTH_OK;
}

static void fx_destroy(void *inst) { free(inst); }

/* The descriptor of a kit fixture and its entry point. The arguments are the kind's designated initializers,
 * e.g. KIT_PLUGIN(.kinds = BERTH_KIND_DISCOVERY, .discovery = &DISC). */
#define KIT_PLUGIN(...)                                                                                      \
    static const berth_plugin_descriptor DESCRIPTOR = {                                                     \
        .struct_size = sizeof(berth_plugin_descriptor),                                                     \
        .abi_major = BERTH_ABI_MAJOR,                                                                       \
        .abi_minor = BERTH_ABI_MINOR,                                                                       \
        .name = FIXTURE_NAME,                                                                               \
        .version = "0.1.0",                                                                                 \
        .description = "conformance-kit fixture: " FIXTURE_NAME,                                            \
        .thread_contract = BERTH_THREADS_SERIAL,                                                            \
        .create = fx_create,                                                                                \
        .destroy = fx_destroy,                                                                              \
        __VA_ARGS__                                                                                         \
    };                                                                                                      \
    const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major, uint16_t minor) {                  \
        (void)minor;                                                                                        \
        return major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;                                               \
    }

#endif
