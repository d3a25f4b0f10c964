/*
 * runtime-oci's configuration (stateDir, runtime, monitor, cgroupParent, logMaxBytes): defaults, resolving the
 * runtime and monitor programs, creating the state directory. Keys: Plugins/runtime-oci/README.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

#define SEARCH_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int is_exec(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* A program name or path resolved against PATH and the usual system directories. */
static int find_program(const char *name, char *out, size_t cap) {
    if (strchr(name, '/')) {
        snprintf(out, cap, "%s", name);
        return is_exec(out);
    }
    char dirs[8192];
    const char *env = getenv("PATH");
    snprintf(dirs, sizeof dirs, "%s:%s", env ? env : "", SEARCH_PATH);
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (d[0] != '/') continue;
        snprintf(out, cap, "%s/%s", d, name);
        if (is_exec(out)) return 1;
    }
    return 0;
}

static int works(const char *prog) {
    char *argv[] = {(char *)prog, "--version", NULL};
    return rt_run(argv, NULL) == 0;
}

static int mkdir_p(const char *path) {
    char tmp[RT_PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static int get_str(span obj, const char *key, char *buf, size_t cap) {
    span v;
    if (!js_get(obj, key, &v)) return 0;
    return js_str(v, buf, cap) ? 1 : -1;
}

/* The monitor shipped beside this shared object (SwiftPM and packages put both in one directory). */
static int default_monitor(char *out, size_t cap) {
    Dl_info info;
    if (!dladdr((void *)default_monitor, &info) || !info.dli_fname) return 0;
    char so[RT_PATH_CAP];
    snprintf(so, sizeof so, "%s", info.dli_fname);
    snprintf(out, cap, "%s/berth-runtime-monitor", dirname(so));
    if (is_exec(out)) return 1;
    return find_program("berth-runtime-monitor", out, cap);
}

berth_status rt_configure(rt_plugin *pl, span config, char *err, size_t cap) {
    char name[RT_PATH_CAP], p[RT_PATH_CAP + 16];
    span v;
    snprintf(pl->state_dir, sizeof pl->state_dir, "/var/lib/berth/runtime-oci");
    snprintf(pl->cgroup_parent, sizeof pl->cgroup_parent, "berth");
    pl->log_max_bytes = 10 << 20;
    /* The host validated the keys against the schema; a direct caller (a test harness) gets the same limits here. */
    int r = get_str(config, "stateDir", name, 1025);
    if (r < 0 || (r == 1 && name[0] != '/')) {
        BERTH_SET_ERR(err, cap, "stateDir must be an absolute path of at most 1024 bytes");
        return BERTH_INVALID_ARGUMENT;
    }
    if (r == 1) snprintf(pl->state_dir, sizeof pl->state_dir, "%s", name);
    r = get_str(config, "cgroupParent", name, 65);
    if (r < 0 || (r == 1 && (!strcmp(name, ".") || !strcmp(name, "..") || !name[0] || name[strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")]))) {
        BERTH_SET_ERR(err, cap, "cgroupParent must be 1-64 characters of [A-Za-z0-9_.-], not . or ..");
        return BERTH_INVALID_ARGUMENT;
    }
    if (r == 1) snprintf(pl->cgroup_parent, sizeof pl->cgroup_parent, "%s", name);
    if (js_get(config, "logMaxBytes", &v) && (!js_int(v, &pl->log_max_bytes) || pl->log_max_bytes < 4096)) {
        BERTH_SET_ERR(err, cap, "logMaxBytes must be an integer of at least 4096");
        return BERTH_INVALID_ARGUMENT;
    }
    if (get_str(config, "runtime", name, sizeof name) == 1) {
        if (!find_program(name, pl->runtime, sizeof pl->runtime) || !works(pl->runtime)) {
            BERTH_SET_ERR(err, cap, "runtime \"%s\" is not an OCI runtime that runs here (\"%s --version\" failed or it "
                                    "is not on PATH); install runc (apt-get install runc) or name its path", name, name);
            return BERTH_FAILED_PRECONDITION;
        }
    } else if (!(find_program("runc", pl->runtime, sizeof pl->runtime) && works(pl->runtime)) &&
               !(find_program("crun", pl->runtime, sizeof pl->runtime) && works(pl->runtime))) {
        BERTH_SET_ERR(err, cap, "no OCI runtime found: neither runc nor crun is on PATH; install one (apt-get install "
                                "runc) or set \"runtime\" in the plugin's config");
        return BERTH_FAILED_PRECONDITION;
    }
    if (get_str(config, "monitor", name, sizeof name) == 1 ? !(snprintf(pl->monitor, sizeof pl->monitor, "%s", name),
                                                               is_exec(pl->monitor))
                                                           : !default_monitor(pl->monitor, sizeof pl->monitor)) {
        BERTH_SET_ERR(err, cap, "the monitor program berth-runtime-monitor was not found (looked at \"%s\"); install it "
                                "beside the plugin or set \"monitor\" to its path", pl->monitor);
        return BERTH_FAILED_PRECONDITION;
    }
    snprintf(p, sizeof p, "%s/instances", pl->state_dir);
    if (mkdir_p(p) != 0) {
        BERTH_SET_ERR(err, cap, "stateDir %s cannot be created: %s", pl->state_dir, strerror(errno));
        return BERTH_FAILED_PRECONDITION;
    }
    snprintf(p, sizeof p, "%s/runtime", pl->state_dir);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        BERTH_SET_ERR(err, cap, "cannot create %s: %s", p, strerror(errno));
        return BERTH_FAILED_PRECONDITION;
    }
    return BERTH_OK;
}
