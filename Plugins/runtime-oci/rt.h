/*
 * runtime-oci's internal interfaces: the plugin's configuration, a growable string, the instance spec turned
 * into an OCI config.json, and the process and file helpers the operations share.
 */
#ifndef BERTH_RUNTIME_OCI_H
#define BERTH_RUNTIME_OCI_H

#include <stddef.h>
#include <stdint.h>

#include "berth_plugin.h"
#include "span_json.h"

#define RT_PATH_CAP 4096
#define RT_ID_MAX 128

/** One plugin instance: its configuration, read-only after create() (so calls may run concurrently). */
typedef struct rt_plugin {
    const berth_host_services *host;
    char state_dir[RT_PATH_CAP];     /**< config "stateDir" */
    char runtime[RT_PATH_CAP];       /**< config "runtime", resolved to a path */
    char monitor[RT_PATH_CAP];       /**< config "monitor", or berth-runtime-monitor beside the .so */
    char cgroup_parent[256];         /**< config "cgroupParent" */
    int64_t log_max_bytes;           /**< config "logMaxBytes" */
} rt_plugin;

/** A growable NUL-terminated string; `oom` is set when an allocation failed (the text is then truncated). */
typedef struct sb {
    char *p;
    size_t n, cap;
    int oom;
} sb;
void sb_add(sb *b, const char *s);
void sb_addn(sb *b, const char *s, size_t n);
void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends `s` as a JSON string literal. */
void sb_quote(sb *b, const char *s);
/** Appends n bytes as a JSON string literal; bytes that are not valid UTF-8 become '?'. */
void sb_quote_utf8(sb *b, const char *s, size_t n);
void sb_free(sb *b);

/**
 * Validates the start request `req` for instance `id` and writes the OCI config.json into `out`. `rootfs_out`
 * gets the spec's rootfs path, `tarball` 1 when it is a tarball (then config.json's root is `<dir>/rootfs`, which
 * the caller extracts). Returns BERTH_OK, or BERTH_INVALID_ARGUMENT with a message naming the field.
 * Does not look inside a tarball: check the command with rt_check_command once it is extracted.
 */
berth_status rt_build_config(const rt_plugin *pl, const char *id, span req, const char *dir, sb *out,
                             char *rootfs_out, size_t rootfs_cap, int *tarball, char *err, size_t err_cap);

/** BERTH_OK when the start request's command resolves to an executable file inside `rootfs` (symlinks are
 *  followed inside the root, PATH is the spec's or the default); else BERTH_INVALID_ARGUMENT naming it. */
berth_status rt_check_command(span req, const char *rootfs, char *err, size_t err_cap);

/** Runs argv (argv[0] a path), stdout and stderr captured into `out` (may be NULL). Returns the exit status
 *  (0..255), 128 + signal when killed, or -1 when it could not be started (errno set). */
int rt_run(char *const argv[], sb *out);

/** rt_run keeping at most max_out bytes of output (*truncated = 1 when more came; it may be NULL), and with a
 *  timeout (0: none): then the child gets SIGTERM, two seconds later SIGKILL, and the result is 124. */
int rt_run_limited(char *const argv[], sb *out, size_t max_out, int *truncated, long timeout_ms);

/** Removes a tree without crossing mount points or following symlinks. 0 on success or when it is absent. */
int rt_rm_rf(const char *path);

/** Reads a small file into buf (NUL-terminated, trailing newline kept). Returns its length, -1 when missing. */
long rt_read_file(const char *path, char *buf, size_t cap);

/** Writes a file atomically (tmp + rename). 0 on success. */
int rt_write_file(const char *path, const char *data, size_t len);

/** Reads the plugin's configuration into `pl` (defaults filled in, runtime and monitor resolved, state directory
 *  created). BERTH_OK, or BERTH_INVALID_ARGUMENT / BERTH_FAILED_PRECONDITION with a message naming the key. */
berth_status rt_configure(rt_plugin *pl, span config, char *err, size_t err_cap);

/** Current UTC time as RFC 3339 with milliseconds. */
void rt_now(char *buf, size_t cap);

#endif
