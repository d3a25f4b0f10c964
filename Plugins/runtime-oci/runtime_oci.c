/*
 * runtime-oci — the reference runtime plugin (ABI 1.3): runs each instance as an OCI container with runc (or
 * crun), one bundle per instance under the state directory, detached under berth-runtime-monitor, which keeps
 * the output and the exit status while berthd is away. The node is the source of truth: `list` rebuilds the
 * view from the state directory and the runtime's own state. Config keys and files: Plugins/runtime-oci/README.md.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

extern char **environ;

#define CONFIG_SCHEMA                                                                                              \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                                         \
    "\"stateDir\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":1024,\"pattern\":\"^/\"},"                    \
    "\"runtime\":{\"type\":\"string\",\"minLength\":1},"                                                           \
    "\"monitor\":{\"type\":\"string\",\"minLength\":2,\"pattern\":\"^/\"},"                                        \
    "\"cgroupParent\":{\"type\":\"string\",\"maxLength\":64,\"pattern\":\"^[A-Za-z0-9_.-]+$\"},"                   \
    "\"logMaxBytes\":{\"type\":\"integer\",\"minimum\":4096}}}"


static void ipath(const rt_plugin *pl, const char *id, const char *name, char *buf, size_t cap) {
    if (name) snprintf(buf, cap, "%s/instances/%s/%s", pl->state_dir, id, name);
    else snprintf(buf, cap, "%s/instances/%s", pl->state_dir, id);
}

/* Runs `RUNTIME --root ROOT a1 a2 a3` with output captured. */
static int runtime3(const rt_plugin *pl, const char *a1, const char *a2, const char *a3, sb *out) {
    char root[RT_PATH_CAP];
    snprintf(root, sizeof root, "%s/runtime", pl->state_dir);
    char *argv[] = {(char *)pl->runtime, "--root", root, (char *)a1, (char *)a2, (char *)a3, NULL};
    return rt_run(argv, out);
}

static int valid_id(span v, char *id) {
    if (!js_str(v, id, RT_ID_MAX + 1) || !id[0] || id[0] == '.' || id[0] == '-') return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '.' || *c == '-'))
            return 0;
    return 1;
}

static berth_status get_id(span req, char *id, char *err, size_t cap) {
    span v;
    if (req.n == 0 || req.p[0] != '{' || !js_get(req, "id", &v) || !valid_id(v, id)) {
        BERTH_SET_ERR(err, cap, "id is required: 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'");
        return BERTH_INVALID_ARGUMENT;
    }
    return BERTH_OK;
}

static int exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The monitor's pid when it still runs (checked against its command line, so a reused pid does not count). */
static pid_t monitor_alive(const rt_plugin *pl, const char *id) {
    char p[RT_PATH_CAP], buf[8192];
    ipath(pl, id, "monitor.pid", p, sizeof p);
    if (rt_read_file(p, buf, 32) <= 0) return 0;
    pid_t pid = (pid_t)atoi(buf);
    snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid);
    long n = pid > 0 ? rt_read_file(p, buf, sizeof buf) : -1;
    if (n <= 0) return 0;
    for (long i = 0; i < n; i++)
        if (!buf[i]) buf[i] = ' ';
    char needle[RT_ID_MAX + 3];
    snprintf(needle, sizeof needle, " %s ", id);
    return strstr(buf, needle) ? pid : 0;
}

/* Writes the state object of an instance that has a directory. Returns 1 when it is running or created. */
static int write_state(const rt_plugin *pl, const char *id, sb *o) {
    char p[RT_PATH_CAP], buf[512], started[64] = "", status[32] = "";
    int pid = 0;
    ipath(pl, id, "started", p, sizeof p);
    if (rt_read_file(p, started, sizeof started) < 0) started[0] = 0;
    ipath(pl, id, "pid", p, sizeof p);
    if (rt_read_file(p, buf, 32) > 0) pid = atoi(buf);
    ipath(pl, id, "exit", p, sizeof p);
    long n = rt_read_file(p, buf, sizeof buf);
    if (n < 0) {
        /* Not recorded yet: ask the runtime. "stopped" means the monitor is about to write the exit file. */
        for (int tries = 0; tries < 40; tries++) {
            sb out = {0};
            int rc = runtime3(pl, "state", id, NULL, &out);
            span s = {out.p ? out.p : "", out.n}, v;
            status[0] = 0;
            if (rc == 0 && js_get(s, "status", &v)) js_str(v, status, sizeof status);
            sb_free(&out);
            if (strcmp(status, "stopped") != 0) break;
            if ((n = rt_read_file(p, buf, sizeof buf)) >= 0) break;
            usleep(50000);
        }
    }
    sb_add(o, "{\"id\":");
    sb_quote(o, id);
    int live = 0, code = 0, sig = 0;
    char finished[64] = "";
    if (n >= 0 && sscanf(buf, "%d %d %63s", &code, &sig, finished) == 3 && code >= 0) {
        sb_printf(o, ",\"state\":\"exited\",\"pid\":0,\"exitCode\":%d", code);
        if (sig) sb_printf(o, ",\"signal\":%d", sig);
    } else if (n >= 0) {
        sb_add(o, ",\"state\":\"unknown\",\"pid\":0,\"reason\":\"the instance ended but its monitor could not read its "
                  "exit status\"");
    } else if (strcmp(status, "running") == 0 || strcmp(status, "paused") == 0) {
        sb_printf(o, ",\"state\":\"running\",\"pid\":%d", pid);
        live = 1;
    } else if (strcmp(status, "created") == 0 || (!status[0] && monitor_alive(pl, id))) {
        sb_printf(o, ",\"state\":\"created\",\"pid\":%d", pid);
        live = 1;
    } else {
        sb_add(o, ",\"state\":\"unknown\",\"pid\":0,\"reason\":");
        sb_quote(o, status[0] ? "the process ended and its monitor is gone without recording the exit status"
                              : "the runtime has no such container and no exit was recorded (the monitor died)");
    }
    started[strcspn(started, "\n")] = 0;
    if (started[0]) sb_printf(o, ",\"startedAt\":\"%s\"", started);
    if (finished[0]) sb_printf(o, ",\"finishedAt\":\"%s\"", finished);
    ipath(pl, id, "log", p, sizeof p);
    sb_add(o, ",\"logPath\":");
    sb_quote(o, p);
    snprintf(p, sizeof p, "/%s/%s", pl->cgroup_parent, id);
    sb_add(o, ",\"cgroupsPath\":");
    sb_quote(o, p);
    ipath(pl, id, NULL, p, sizeof p);
    sb_add(o, ",\"bundle\":");
    sb_quote(o, p);
    sb_add(o, "}");
    return live;
}

static berth_status emit(const berth_sink *out, sb *o, char *err, size_t cap) {
    if (o->oom) {
        sb_free(o);
        BERTH_SET_ERR(err, cap, "out of memory");
        return BERTH_INTERNAL;
    }
    berth_status st = out->write(out->ctx, o->p, o->n);
    sb_free(o);
    return st;
}

/* Removes everything of an instance: the runtime's container, leftover cgroups, the monitor, the directory. */
static void destroy_instance(const rt_plugin *pl, const char *id) {
    char p[RT_PATH_CAP];
    pid_t mon = monitor_alive(pl, id);
    runtime3(pl, "kill", id, "KILL", NULL);
    for (int i = 0; i < 100 && mon && monitor_alive(pl, id); i++) usleep(20000);
    if ((mon = monitor_alive(pl, id))) kill(mon, SIGKILL);
    char root[RT_PATH_CAP];
    snprintf(root, sizeof root, "%s/runtime", pl->state_dir);
    char *argv[] = {(char *)pl->runtime, "--root", root, "delete", "--force", (char *)id, NULL};
    rt_run(argv, NULL);
    /* The runtime removes its cgroups; these catch a container that never got that far (v1 and v2 layouts). */
    static const char *const ctl[] = {"", "memory/", "cpu/", "cpuacct/", "pids/", "cpuset/", "devices/", "freezer/",
                                      "blkio/", "systemd/", "net_cls/", "perf_event/", "hugetlb/", "unified/", NULL};
    for (int i = 0; ctl[i]; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s%s/%s", ctl[i], pl->cgroup_parent, id);
        rmdir(p);
    }
    ipath(pl, id, NULL, p, sizeof p);
    rt_rm_rf(p);
}

/* Starts the monitor for a prepared bundle and waits for its report ("ok PID" or "error ..."). */
static berth_status launch(const rt_plugin *pl, const char *id, char *err, size_t cap) {
    char dir[RT_PATH_CAP], root[RT_PATH_CAP], logmax[32], msg[2048];
    ipath(pl, id, NULL, dir, sizeof dir);
    snprintf(root, sizeof root, "%s/runtime", pl->state_dir);
    snprintf(logmax, sizeof logmax, "%lld", (long long)pl->log_max_bytes);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        BERTH_SET_ERR(err, cap, "pipe: %s", strerror(errno));
        return BERTH_INTERNAL;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 3);
    char *argv[] = {(char *)pl->monitor, (char *)pl->runtime, root, dir, (char *)id, logmax, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, pl->monitor, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        BERTH_SET_ERR(err, cap, "cannot run the monitor %s: %s (set \"monitor\" in the plugin's config)", pl->monitor,
                      strerror(rc));
        return BERTH_FAILED_PRECONDITION;
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    size_t n = 0;
    struct pollfd pf = {fds[0], POLLIN, 0};
    while (n + 1 < sizeof msg && poll(&pf, 1, 60000) > 0) {
        ssize_t r = read(fds[0], msg + n, sizeof msg - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fds[0]);
    msg[n] = 0;
    if (strncmp(msg, "ok ", 3) == 0) return BERTH_OK;
    char *nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    BERTH_SET_ERR(err, cap, "%s could not start instance %s: %s", pl->runtime, id,
                  strncmp(msg, "error ", 6) == 0 ? msg + 6 : (n ? msg : "the monitor exited without a report"));
    return BERTH_FAILED_PRECONDITION;
}

/* A fresh start: directory, rootfs (tarballs extracted), command check, config.json, monitor. */
static berth_status start_new(const rt_plugin *pl, const char *id, span req, sb *cfg, const char *rootfs,
                              int tarball, char *err, size_t cap) {
    char dir[RT_PATH_CAP], p[RT_PATH_CAP];
    berth_status st;
    ipath(pl, id, NULL, dir, sizeof dir);
    if (mkdir(dir, 0700) != 0) {
        BERTH_SET_ERR(err, cap, "cannot create %s: %s", dir, strerror(errno));
        return BERTH_INTERNAL;
    }
    if (tarball) {
        ipath(pl, id, "rootfs", p, sizeof p);
        sb out = {0};
        char *argv[] = {"/bin/tar", "-C", p, "-xf", (char *)rootfs, NULL};
        int rc = mkdir(p, 0755) == 0 ? rt_run(argv, &out) : -1;
        if (rc != 0) {
            BERTH_SET_ERR(err, cap, "rootfs %s could not be extracted: %s", rootfs, out.p ? out.p : strerror(errno));
            sb_free(&out);
            destroy_instance(pl, id);
            return BERTH_INVALID_ARGUMENT;
        }
        sb_free(&out);
    }
    if ((st = rt_check_command(req, tarball ? p : rootfs, err, cap)) != BERTH_OK) {
        destroy_instance(pl, id);
        return st;
    }
    ipath(pl, id, "config.json", p, sizeof p);
    if (rt_write_file(p, cfg->p, cfg->n) != 0) {
        BERTH_SET_ERR(err, cap, "cannot write %s: %s", p, strerror(errno));
        destroy_instance(pl, id);
        return BERTH_INTERNAL;
    }
    if ((st = launch(pl, id, err, cap)) != BERTH_OK) destroy_instance(pl, id);
    return st;
}

static berth_status op_start(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    const rt_plugin *pl = inst;
    char id[RT_ID_MAX + 1], dir[RT_PATH_CAP], rootfs[RT_PATH_CAP], p[RT_PATH_CAP];
    span r = {req, len};
    berth_status st = get_id(r, id, err, cap);
    if (st != BERTH_OK) return st;
    ipath(pl, id, NULL, dir, sizeof dir);
    sb cfg = {0};
    int tarball = 0;
    if ((st = rt_build_config(pl, id, r, dir, &cfg, rootfs, sizeof rootfs, &tarball, err, cap)) != BERTH_OK) {
        sb_free(&cfg);
        return st;
    }
    if (exists(dir)) {
        /* The id exists: same spec -> its state (idempotent); another spec -> refused. A directory without a
         * monitor record is a start that crashed half-way: start again. */
        char *old = malloc(cfg.n + 2);
        ipath(pl, id, "config.json", p, sizeof p);
        long n = old ? rt_read_file(p, old, cfg.n + 2) : -1;
        int same = n == (long)cfg.n && memcmp(old, cfg.p, cfg.n) == 0;
        free(old);
        ipath(pl, id, "monitor.pid", p, sizeof p);
        if (!exists(p)) destroy_instance(pl, id);
        else if (!same) {
            sb_free(&cfg);
            BERTH_SET_ERR(err, cap, "instance %s already exists with a different spec; stop and remove it first, or "
                                    "use another id", id);
            return BERTH_ALREADY_EXISTS;
        }
    }
    if (!exists(dir) && (st = start_new(pl, id, r, &cfg, rootfs, tarball, err, cap)) != BERTH_OK) {
        sb_free(&cfg);
        return st;
    }
    sb_free(&cfg);
    sb o = {0};
    write_state(pl, id, &o);
    return emit(out, &o, err, cap);
}

/* Waits up to `ms` for the exit file. */
static int wait_exit(const rt_plugin *pl, const char *id, long ms) {
    char p[RT_PATH_CAP];
    ipath(pl, id, "exit", p, sizeof p);
    for (long waited = 0;; waited += 20) {
        if (exists(p)) return 1;
        if (waited >= ms) return 0;
        usleep(20000);
    }
}

static berth_status op_stop(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    const rt_plugin *pl = inst;
    char id[RT_ID_MAX + 1], dir[RT_PATH_CAP];
    span r = {req, len}, v;
    berth_status st = get_id(r, id, err, cap);
    if (st != BERTH_OK) return st;
    double grace = 10;
    if (js_get(r, "graceSeconds", &v)) {
        char num[64];
        char *end = NULL;
        snprintf(num, sizeof num, "%.*s", (int)(v.n < 63 ? v.n : 63), v.p);
        grace = strtod(num, &end);
        if (end == num || *end || grace < 0 || grace > 86400) {
            BERTH_SET_ERR(err, cap, "graceSeconds must be a number of seconds from 0 to 86400, got %.*s", (int)v.n, v.p);
            return BERTH_INVALID_ARGUMENT;
        }
    }
    ipath(pl, id, NULL, dir, sizeof dir);
    sb o = {0};
    if (!exists(dir)) {
        sb_add(&o, "{\"id\":");
        sb_quote(&o, id);
        sb_add(&o, ",\"state\":\"unknown\",\"pid\":0,\"reason\":\"no such instance\"}");
        return emit(out, &o, err, cap);
    }
    if (write_state(pl, id, &o)) {
        sb_free(&o);
        if (!(grace > 0 && runtime3(pl, "kill", id, "TERM", NULL) == 0 && wait_exit(pl, id, (long)(grace * 1000)))) {
            runtime3(pl, "kill", id, "KILL", NULL);
            wait_exit(pl, id, 5000);
        }
        write_state(pl, id, &o);
    }
    return emit(out, &o, err, cap);
}

static berth_status op_state(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    const rt_plugin *pl = inst;
    char id[RT_ID_MAX + 1], dir[RT_PATH_CAP];
    berth_status st = get_id((span){req, len}, id, err, cap);
    if (st != BERTH_OK) return st;
    ipath(pl, id, NULL, dir, sizeof dir);
    if (!exists(dir)) {
        BERTH_SET_ERR(err, cap, "no instance %s on this node", id);
        return BERTH_NOT_FOUND;
    }
    sb o = {0};
    write_state(pl, id, &o);
    return emit(out, &o, err, cap);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static berth_status op_list(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)req, (void)len;
    const rt_plugin *pl = inst;
    char p[RT_PATH_CAP];
    snprintf(p, sizeof p, "%s/instances", pl->state_dir);
    DIR *d = opendir(p);
    char **names = NULL;
    size_t count = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        span s = {e->d_name, strlen(e->d_name)};
        char id[RT_ID_MAX + 1], q[RT_ID_MAX + 3];
        snprintf(q, sizeof q, "\"%.*s\"", RT_ID_MAX, e->d_name);
        s = (span){q, strlen(q)};
        if (e->d_type != DT_DIR || !valid_id(s, id)) continue;
        char **n2 = realloc(names, (count + 1) * sizeof *names);
        if (!n2) break;
        names = n2;
        names[count++] = strdup(id);
    }
    if (d) closedir(d);
    qsort(names, count, sizeof *names, cmp_names);
    sb o = {0};
    sb_add(&o, "{\"instances\":[");
    for (size_t i = 0; i < count; i++) {
        if (i) sb_add(&o, ",");
        if (names[i]) write_state(pl, names[i], &o);
        free(names[i]);
    }
    free(names);
    sb_add(&o, "]}");
    return emit(out, &o, err, cap);
}

static berth_status op_remove(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    (void)out;
    const rt_plugin *pl = inst;
    char id[RT_ID_MAX + 1], dir[RT_PATH_CAP];
    span r = {req, len}, v;
    berth_status st = get_id(r, id, err, cap);
    if (st != BERTH_OK) return st;
    int force = js_get(r, "force", &v) ? js_bool(v) : 0;
    if (force < 0) {
        BERTH_SET_ERR(err, cap, "force must be true or false");
        return BERTH_INVALID_ARGUMENT;
    }
    ipath(pl, id, NULL, dir, sizeof dir);
    if (!exists(dir)) return BERTH_OK;
    sb o = {0};
    int live = write_state(pl, id, &o);
    sb_free(&o);
    if (live && !force) {
        BERTH_SET_ERR(err, cap, "instance %s is still running: stop it first, or remove with \"force\": true", id);
        return BERTH_FAILED_PRECONDITION;
    }
    destroy_instance(pl, id);
    if (exists(dir)) {
        BERTH_SET_ERR(err, cap, "instance %s: could not remove %s", id, dir);
        return BERTH_INTERNAL;
    }
    return BERTH_OK;
}

/* exec's argv: RUNTIME --root ROOT exec [--env K=V]... ID COMMAND ARGS...; strings are malloc'd (argv_free). */
static berth_status exec_argv(const rt_plugin *pl, const char *id, span r, char ***argv_out, char *err, size_t cap) {
    span v, e, k;
    size_t n = 0, pos = 0, max = 8;
    char **argv = calloc(max, sizeof *argv), val[8192];
    char root[RT_PATH_CAP];
    snprintf(root, sizeof root, "%s/runtime", pl->state_dir);
#define PUSH(str)                                                                                                  \
    do {                                                                                                           \
        if (n + 2 > max) {                                                                                         \
            char **a2 = argv ? realloc(argv, (max *= 2) * sizeof *argv) : NULL;                                   \
            if (!a2) goto oom;                                                                                     \
            argv = a2;                                                                                             \
        }                                                                                                          \
        if (!(argv[n++] = strdup(str))) goto oom;                                                                  \
        argv[n] = NULL;                                                                                            \
    } while (0)
    if (!argv) goto oom;
    PUSH(pl->runtime);
    PUSH("--root");
    PUSH(root);
    PUSH("exec");
    if (js_get(r, "env", &v)) {
        if (v.n == 0 || v.p[0] != '{') goto bad_env;
        while (js_object_next(v, &pos, &k, &e)) {
            int len = snprintf(val, sizeof val, "%.*s=", (int)k.n, k.p);
            if (len <= 1 || len >= (int)sizeof val || !js_str(e, val + len, sizeof val - (size_t)len)) goto bad_env;
            PUSH("--env");
            PUSH(val);
        }
    }
    PUSH(id);
    if (!js_get(r, "command", &v) || !js_str(v, val, sizeof val) || !val[0]) {
        BERTH_SET_ERR(err, cap, "command is required: the program to run inside the instance");
        goto fail;
    }
    PUSH(val);
    if (js_get(r, "args", &v)) {
        pos = 0;
        while (js_array_next(v, &pos, &e)) {
            if (!js_str(e, val, sizeof val)) {
                BERTH_SET_ERR(err, cap, "args must be an array of strings");
                goto fail;
            }
            PUSH(val);
        }
    }
#undef PUSH
    *argv_out = argv;
    return BERTH_OK;
bad_env:
    BERTH_SET_ERR(err, cap, "env must be an object {\"NAME\": \"value\"} of strings");
    goto fail;
oom:
    BERTH_SET_ERR(err, cap, "out of memory");
fail:
    for (size_t i = 0; argv && i < n; i++) free(argv[i]);
    free(argv);
    return BERTH_INVALID_ARGUMENT;
}

static berth_status op_exec(void *inst, const char *req, size_t len, const berth_sink *out, char *err, size_t cap) {
    const rt_plugin *pl = inst;
    char id[RT_ID_MAX + 1], dir[RT_PATH_CAP];
    span r = {req, len}, v;
    berth_status st = get_id(r, id, err, cap);
    if (st != BERTH_OK) return st;
    int64_t timeout = 30;
    if (js_get(r, "timeoutSeconds", &v) && (!js_int(v, &timeout) || timeout < 1 || timeout > 3600)) {
        BERTH_SET_ERR(err, cap, "timeoutSeconds must be an integer from 1 to 3600, got %.*s", (int)v.n, v.p);
        return BERTH_INVALID_ARGUMENT;
    }
    ipath(pl, id, NULL, dir, sizeof dir);
    if (!exists(dir)) {
        BERTH_SET_ERR(err, cap, "no instance %s on this node", id);
        return BERTH_NOT_FOUND;
    }
    sb o = {0};
    int live = write_state(pl, id, &o);
    int running = live && strstr(o.p ? o.p : "", "\"state\":\"running\"") != NULL;
    sb_free(&o);
    if (!running) {
        BERTH_SET_ERR(err, cap, "instance %s is not running: exec needs a running instance", id);
        return BERTH_FAILED_PRECONDITION;
    }
    char **argv = NULL;
    if ((st = exec_argv(pl, id, r, &argv, err, cap)) != BERTH_OK) return st;
    sb output = {0};
    int truncated = 0;
    int code = rt_run_limited(argv, &output, 1u << 20, &truncated, (long)timeout * 1000);
    for (size_t i = 0; argv[i]; i++) free(argv[i]);
    free(argv);
    sb_printf(&o, "{\"exitCode\":%d,\"output\":", code);
    sb_quote_utf8(&o, output.p ? output.p : "", output.n);
    sb_printf(&o, ",\"truncated\":%s}", truncated ? "true" : "false");
    sb_free(&output);
    return emit(out, &o, err, cap);
}

static berth_status rt_create(const berth_host_services *host, const char *config, size_t len, void **out,
                              char *err, size_t cap) {
    rt_plugin *pl = calloc(1, sizeof *pl);
    if (!pl) {
        BERTH_SET_ERR(err, cap, "out of memory");
        return BERTH_INTERNAL;
    }
    pl->host = host;
    span c = {config ? config : "{}", config ? len : 2};
    berth_status st = rt_configure(pl, c, err, cap);
    if (st != BERTH_OK) {
        free(pl);
        return st;
    }
    *out = pl;
    return BERTH_OK;
}

static void rt_destroy(void *inst) { free(inst); }

static const berth_runtime_ops RUNTIME_OPS = {
    .struct_size = sizeof(berth_runtime_ops),
    .start = op_start,
    .stop = op_stop,
    .state = op_state,
    .list = op_list,
    .remove = op_remove,
    .exec = op_exec,
};

static const berth_plugin_descriptor DESCRIPTOR = {
    .struct_size = sizeof(berth_plugin_descriptor),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = "runtime-oci",
    .version = "1.0.0",
    .description = "Runs instances as OCI containers with runc or crun, monitored so exits are kept while berthd is away",
    .kinds = BERTH_KIND_RUNTIME,
    .thread_contract = BERTH_THREADS_CONCURRENT,
    .config_schema = CONFIG_SCHEMA,
    .create = rt_create,
    .destroy = rt_destroy,
    .runtime = &RUNTIME_OPS,
};

__attribute__((visibility("default"))) const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t major,
                                                                                             uint16_t minor) {
    (void)minor;
    return major == BERTH_ABI_MAJOR ? &DESCRIPTOR : NULL;
}
