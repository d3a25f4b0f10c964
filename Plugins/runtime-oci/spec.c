/*
 * runtime-oci: the instance spec (the start request) checked field by field and written as an OCI runtime-spec
 * config.json. The output is deterministic, so comparing two config.json texts compares two specs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define VAL_CAP 8192

static const char *const CAPS[] = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                                   "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                                   "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE", NULL};

/* The mounts every instance gets (runc spec's defaults). */
#define BASE_MOUNTS                                                                                                \
    "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"                                          \
    "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"strictatime\","    \
    "\"mode=755\",\"size=65536k\"]},"                                                                              \
    "{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":[\"nosuid\",\"noexec\","   \
    "\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"                                                 \
    "{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\",\"options\":[\"nosuid\",\"noexec\","      \
    "\"nodev\",\"mode=1777\",\"size=65536k\"]},"                                                                   \
    "{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\",\"options\":[\"nosuid\","          \
    "\"noexec\",\"nodev\"]},"                                                                                      \
    "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":[\"nosuid\",\"noexec\","        \
    "\"nodev\",\"ro\"]},"                                                                                          \
    "{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\",\"options\":[\"nosuid\","      \
    "\"noexec\",\"nodev\",\"relatime\",\"ro\"]}"

#define MASKED_PATHS                                                                                               \
    "\"maskedPaths\":[\"/proc/acpi\",\"/proc/asound\",\"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\","     \
    "\"/proc/timer_list\",\"/proc/timer_stats\",\"/proc/sched_debug\",\"/sys/firmware\",\"/proc/scsi\"],"          \
    "\"readonlyPaths\":[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"]"

#define BAD(...)                                                                                                   \
    do {                                                                                                           \
        BERTH_SET_ERR(err, err_cap, __VA_ARGS__);                                                                  \
        return BERTH_INVALID_ARGUMENT;                                                                             \
    } while (0)

/* A string member: 1 found (copied), 0 absent, -1 present but not a string (or too long). */
static int get_str(span obj, const char *key, char *buf, size_t cap) {
    span v;
    if (!js_get(obj, key, &v)) return 0;
    return js_str(v, buf, cap) ? 1 : -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static berth_status add_resources(span req, const char *cgpath, sb *o, char *err, size_t err_cap) {
    span res, v;
    int64_t cpu = 0, mem = 0, pids = 0;
    if (js_get(req, "resources", &res)) {
        if (res.n == 0 || res.p[0] != '{') BAD("resources must be an object {cpuMillis, memoryBytes, pids}");
        if (js_get(res, "cpuMillis", &v) && (!js_int(v, &cpu) || cpu < 10 || cpu > 1024000))
            BAD("resources.cpuMillis must be an integer from 10 to 1024000 (thousandths of a CPU), got %.*s",
                (int)v.n, v.p);
        if (js_get(res, "memoryBytes", &v) && (!js_int(v, &mem) || mem < 4096))
            BAD("resources.memoryBytes must be a positive number of bytes (at least 4096), got %.*s", (int)v.n, v.p);
        if (js_get(res, "pids", &v) && (!js_int(v, &pids) || pids < 1))
            BAD("resources.pids must be a positive integer (the most processes the instance may have), got %.*s",
                (int)v.n, v.p);
    }
    sb_add(o, "\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]");
    if (mem) sb_printf(o, ",\"memory\":{\"limit\":%lld}", (long long)mem);
    if (cpu) sb_printf(o, ",\"cpu\":{\"quota\":%lld,\"period\":100000}", (long long)cpu * 100);
    if (pids) sb_printf(o, ",\"pids\":{\"limit\":%lld}", (long long)pids);
    sb_add(o, "},\"cgroupsPath\":");
    sb_quote(o, cgpath);
    return BERTH_OK;
}

/* A string list member (args): appended as ,"a","b". */
static berth_status add_args(span req, char *val, sb *o, char *err, size_t err_cap) {
    span v, e;
    size_t pos = 0;
    if (!js_get(req, "args", &v)) return BERTH_OK;
    if (v.n == 0 || v.p[0] != '[') BAD("args must be an array of strings");
    while (js_array_next(v, &pos, &e)) {
        if (!js_str(e, val, VAL_CAP)) BAD("args: every element must be a string (no \\u escapes, under 8 KiB), got %.*s", (int)e.n, e.p);
        sb_add(o, ",");
        sb_quote(o, val);
    }
    return BERTH_OK;
}

/* env {"NAME": "value"} appended as "NAME=value" items; PATH defaults to DEFAULT_PATH. */
static berth_status add_env(span req, char *val, sb *o, char *err, size_t err_cap) {
    span v, k, e;
    size_t pos = 0;
    int has_path = 0;
    if (js_get(req, "env", &v)) {
        if (v.n == 0 || v.p[0] != '{') BAD("env must be an object {\"NAME\": \"value\"}");
        while (js_object_next(v, &pos, &k, &e)) {
            int ok = k.n > 0 && k.n < 256 && !(k.p[0] >= '0' && k.p[0] <= '9');
            for (size_t i = 0; ok && i < k.n; i++) {
                char c = k.p[i];
                ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
            }
            if (!ok) BAD("env: \"%.*s\" is not a variable name (letters, digits and _, not starting with a digit)", (int)k.n, k.p);
            memcpy(val, k.p, k.n);
            val[k.n] = '=';
            if (!js_str(e, val + k.n + 1, VAL_CAP - k.n - 1)) BAD("env.%.*s must be a string (no \\u escapes, under 8 KiB)", (int)k.n, k.p);
            if (k.n == 4 && memcmp(k.p, "PATH", 4) == 0) has_path = 1;
            sb_add(o, ",");
            sb_quote(o, val);
        }
    }
    if (!has_path) sb_add(o, ",\"PATH=" DEFAULT_PATH "\"");
    return BERTH_OK;
}

static berth_status add_process(span req, sb *o, char *err, size_t err_cap) {
    char *val = malloc(VAL_CAP);
    if (!val) BAD("out of memory");
    berth_status st = BERTH_OK;
    int r = get_str(req, "command", val, VAL_CAP);
    if (r != 1 || !val[0]) {
        free(val);
        BAD("command is required: a non-empty string, the program to run inside the rootfs (e.g. \"/bin/httpd\")");
    }
    sb_add(o, "\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":[");
    sb_quote(o, val);
    if ((st = add_args(req, val, o, err, err_cap)) != BERTH_OK) goto out;
    sb_add(o, "],\"env\":[\"BERTH_RUNTIME=runtime-oci\"");
    if ((st = add_env(req, val, o, err, err_cap)) != BERTH_OK) goto out;
    sb_add(o, "],\"cwd\":");
    r = get_str(req, "workingDir", val, VAL_CAP);
    if (r < 0 || (r == 1 && val[0] != '/')) {
        BERTH_SET_ERR(err, err_cap, "workingDir must be an absolute path inside the instance (e.g. \"/srv\")");
        st = BERTH_INVALID_ARGUMENT;
        goto out;
    }
    sb_quote(o, r == 1 ? val : "/");
    sb_add(o, ",\"capabilities\":{");
    const char *sets[] = {"bounding", "effective", "permitted", "ambient", NULL};
    for (int s = 0; sets[s]; s++) {
        sb_printf(o, "%s\"%s\":[", s ? "," : "", sets[s]);
        for (int c = 0; CAPS[c]; c++) sb_printf(o, "%s\"%s\"", c ? "," : "", CAPS[c]);
        sb_add(o, "]");
    }
    sb_add(o, "},\"noNewPrivileges\":true}");
out:
    free(val);
    return st;
}

/* Bind mounts from "mounts": [{source, target, readonly}]; each source must exist on the node. */
static berth_status add_mounts(span req, sb *o, char *err, size_t err_cap) {
    span v, e, ro;
    size_t pos = 0;
    int idx = 0;
    sb_add(o, "\"mounts\":[" BASE_MOUNTS);
    if (!js_get(req, "mounts", &v)) return sb_add(o, "]"), BERTH_OK;
    if (v.n == 0 || v.p[0] != '[') BAD("mounts must be an array of {source, target, readonly}");
    char src[RT_PATH_CAP], dst[RT_PATH_CAP];
    while (js_array_next(v, &pos, &e)) {
        if (get_str(e, "source", src, sizeof src) != 1 || src[0] != '/')
            BAD("mounts[%d].source must be an absolute path on the node", idx);
        if (get_str(e, "target", dst, sizeof dst) != 1 || dst[0] != '/' || strstr(dst, "/../") || ends_with(dst, "/.."))
            BAD("mounts[%d].target must be an absolute path inside the instance, without \"..\"", idx);
        int readonly = js_get(e, "readonly", &ro) ? js_bool(ro) : 0;
        if (readonly < 0) BAD("mounts[%d].readonly must be true or false", idx);
        struct stat st;
        if (stat(src, &st) != 0)
            BAD("mounts[%d].source %s: %s (publish the volume on this node before starting the instance)", idx, src,
                strerror(errno));
        sb_add(o, ",{\"destination\":");
        sb_quote(o, dst);
        sb_add(o, ",\"type\":\"bind\",\"source\":");
        sb_quote(o, src);
        sb_printf(o, ",\"options\":[\"rbind\",\"rprivate\"%s]}", readonly ? ",\"ro\"" : "");
        idx++;
    }
    sb_add(o, "]");
    return BERTH_OK;
}

/* The rootfs: a directory (used in place) or a tarball (extracted into <dir>/rootfs by the caller). */
static berth_status check_rootfs(span req, const char *dir, char *rootfs, size_t cap, int *tarball, char *root,
                                 char *err, size_t err_cap) {
    struct stat st;
    if (get_str(req, "rootfs", rootfs, cap) != 1 || rootfs[0] != '/')
        BAD("rootfs is required: the absolute path of a directory or a tarball (.tar, .tar.gz, .tgz) on this node");
    if (stat(rootfs, &st) != 0)
        BAD("rootfs %s: %s (give a directory or a tarball that exists on this node)", rootfs, strerror(errno));
    *tarball = 0;
    if (S_ISDIR(st.st_mode)) {
        snprintf(root, RT_PATH_CAP, "%s", rootfs);
        return BERTH_OK;
    }
    if (S_ISREG(st.st_mode) && (ends_with(rootfs, ".tar") || ends_with(rootfs, ".tar.gz") || ends_with(rootfs, ".tgz"))) {
        *tarball = 1;
        snprintf(root, RT_PATH_CAP, "%s/rootfs", dir);
        return BERTH_OK;
    }
    BAD("rootfs %s is neither a directory nor a tarball named .tar, .tar.gz or .tgz", rootfs);
}

berth_status rt_build_config(const rt_plugin *pl, const char *id, span req, const char *dir, sb *o,
                             char *rootfs, size_t rootfs_cap, int *tarball, char *err, size_t err_cap) {
    char root[RT_PATH_CAP], buf[RT_PATH_CAP];
    span v;
    berth_status st;
    if (req.n == 0 || req.p[0] != '{') BAD("the start request must be a JSON object");
    if ((st = check_rootfs(req, dir, rootfs, rootfs_cap, tarball, root, err, err_cap)) != BERTH_OK) return st;
    int ro = js_get(req, "rootfsReadonly", &v) ? js_bool(v) : 0;
    if (ro < 0) BAD("rootfsReadonly must be true or false");
    sb_add(o, "{\"ociVersion\":\"1.0.2\",");
    if ((st = add_process(req, o, err, err_cap)) != BERTH_OK) return st;
    sb_add(o, ",\"root\":{\"path\":");
    sb_quote(o, root);
    sb_printf(o, ",\"readonly\":%s},\"hostname\":", ro ? "true" : "false");
    int r = get_str(req, "hostname", buf, 64);
    if (r < 0) BAD("hostname must be a string of at most 63 bytes");
    if (r == 0) snprintf(buf, 64, "%.63s", id); /* a hostname has at most 63 bytes; ids may be longer */
    sb_quote(o, buf);
    sb_add(o, ",");
    if ((st = add_mounts(req, o, err, err_cap)) != BERTH_OK) return st;
    sb_add(o, ",\"linux\":{");
    snprintf(buf, sizeof buf, "/%s/%s", pl->cgroup_parent, id);
    if ((st = add_resources(req, buf, o, err, err_cap)) != BERTH_OK) return st;
    sb_add(o, ",\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"},"
              "{\"type\":\"network\"");
    r = get_str(req, "netns", buf, sizeof buf);
    if (r < 0 || (r == 1 && buf[0] != '/')) BAD("netns must be the absolute path of a network namespace (e.g. /run/netns/NAME)");
    if (r == 1) {
        struct stat nst;
        if (stat(buf, &nst) != 0) BAD("netns %s: %s (create the namespace before starting the instance)", buf, strerror(errno));
        sb_add(o, ",\"path\":");
        sb_quote(o, buf);
    }
    sb_add(o, "}]," MASKED_PATHS "}}\n");
    if (o->oom) BAD("out of memory writing config.json");
    return BERTH_OK;
}

/* Resolves `path` inside `root` the way the kernel would after chroot (symlinks stay inside the root). */
static int resolve_in_root(const char *root, const char *path, char *out, size_t cap) {
    char cur[RT_PATH_CAP] = "", rest[RT_PATH_CAP], full[2 * RT_PATH_CAP + 2], link[RT_PATH_CAP];
    snprintf(rest, sizeof rest, "%s", path);
    for (int links = 0; rest[0];) {
        char *p = rest;
        while (*p == '/') p++;
        char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        char comp[256];
        if (n >= sizeof comp) return -1;
        memcpy(comp, p, n);
        comp[n] = 0;
        memmove(rest, p + n, strlen(p + n) + 1);
        if (n == 0 || strcmp(comp, ".") == 0) continue;
        if (strcmp(comp, "..") == 0) {
            char *last = strrchr(cur, '/');
            if (last) *last = 0;
            continue;
        }
        snprintf(full, sizeof full, "%s%s/%s", root, cur, comp);
        struct stat st;
        if (lstat(full, &st) != 0) return -1;
        if (S_ISLNK(st.st_mode)) {
            if (++links > 40) return -1;
            ssize_t ln = readlink(full, link, sizeof link - 1);
            if (ln <= 0) return -1;
            link[ln] = 0;
            if (link[0] == '/') cur[0] = 0;
            char tmp[RT_PATH_CAP];
            if (snprintf(tmp, sizeof tmp, "%s/%s", link, rest) >= (int)sizeof tmp) return -1;
            memcpy(rest, tmp, sizeof rest);
            continue;
        }
        size_t cl = strlen(cur);
        if (cl + n + 2 > sizeof cur) return -1;
        cur[cl] = '/';
        memcpy(cur + cl + 1, comp, n + 1);
    }
    return snprintf(out, cap, "%s%s", root, cur[0] ? cur : "/") < (int)cap ? 0 : -1;
}

static int executable_in_root(const char *root, const char *path) {
    char real[RT_PATH_CAP];
    struct stat st;
    if (resolve_in_root(root, path, real, sizeof real) != 0 || stat(real, &st) != 0) return 0;
    return S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

berth_status rt_check_command(span req, const char *rootfs, char *err, size_t err_cap) {
    char cmd[RT_PATH_CAP], path[VAL_CAP] = DEFAULT_PATH, cand[RT_PATH_CAP + 256];
    span env, v;
    if (get_str(req, "command", cmd, sizeof cmd) != 1) BAD("command is required");
    if (strchr(cmd, '/')) {
        if (cmd[0] != '/') BAD("command %s: a path must be absolute inside the rootfs", cmd);
        if (!executable_in_root(rootfs, cmd)) BAD("command %s is not an executable file in the rootfs %s", cmd, rootfs);
        return BERTH_OK;
    }
    if (js_get(req, "env", &env) && js_get(env, "PATH", &v)) js_str(v, path, sizeof path);
    for (char *save = NULL, *d = strtok_r(path, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(cand, sizeof cand, "%s/%s", d, cmd);
        if (d[0] == '/' && executable_in_root(rootfs, cand)) return BERTH_OK;
    }
    BAD("command %s was not found in the rootfs %s (searched PATH inside it); give an absolute path or fix PATH in env",
        cmd, rootfs);
}
