/*
 * A tiny read-only JSON reader shared by the C reference plugins (sched-stateful, runtime-oci): finds members and walks arrays/objects in place, without
 * allocating. Inputs come from the host (already valid JSON), but every function stays bounded by the span's
 * length and fails cleanly on malformed text.
 */
#ifndef BERTH_SPAN_JSON_H
#define BERTH_SPAN_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Linked into each plugin .so; hidden so that two plugins loaded in one process never bind to each other's copy. */
#pragma GCC visibility push(hidden)

typedef struct span {
    const char *p;
    size_t n;
} span;

/** A span over a NUL-terminated string. */
span js_cstr(const char *s);

/** Skips one JSON value starting at s[*i] (after whitespace); returns 0 on success and moves *i past it. */
int js_skip(span s, size_t *i);

/** Finds member `key` of the object `obj`; 1 and *out = the value's text when found, else 0. */
int js_get(span obj, const char *key, span *out);

/** Iterates the elements of an array: start with *pos = 0; returns 1 with *elem set, 0 at the end. */
int js_array_next(span arr, size_t *pos, span *elem);

/** Iterates the members of an object: start with *pos = 0; returns 1 with key (raw, unquoted) and value. */
int js_object_next(span obj, size_t *pos, span *key, span *val);

/** Reads an integer value; 1 on success. */
int js_int(span v, int64_t *out);

/** Reads `true` (1) / `false` (0); returns -1 when the value is not a boolean. */
int js_bool(span v);

/** Copies a string value (simple escapes decoded) into buf, NUL-terminated; 1 on success, 0 if not a string or too long. */
int js_str(span v, char *buf, size_t cap);

/** 1 when the value is the string `lit` (no escapes), else 0. */
int js_str_eq(span v, const char *lit);

/** Writes `s` as a JSON string literal (with quotes) into buf; returns the length written or -1 if it does not fit. */
int js_quote(const char *s, char *buf, size_t cap);

#pragma GCC visibility pop

#endif
