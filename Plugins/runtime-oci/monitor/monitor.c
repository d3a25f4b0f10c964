/*
 * berth-runtime-monitor — runtime-oci's per-instance monitor (what conmon is to podman). It detaches from the
 * host (double fork, new session), becomes a child subreaper, runs `RUNTIME run --detach`, pipes the
 * instance's stdout and stderr into a size-rotated log file, waits for the instance's init process and writes
 * its exit status to a file: exit codes are captured even when berthd is down at the moment of exit.
 *
 *   berth-runtime-monitor RUNTIME RUNTIME_ROOT BUNDLE_DIR ID LOG_MAX_BYTES
 *
 * fd 3 is the report pipe: the monitor writes "ok PID\n" once the instance runs, or "error MESSAGE\n", then
 * closes it. Files in BUNDLE_DIR: monitor.pid, pid (the runtime's pid file), started (RFC 3339 time), log and
 * log.1 (output; log moves to log.1 when it would exceed LOG_MAX_BYTES), runtime.log (the runtime's own log,
 * JSON lines), exit ("CODE SIGNAL FINISHED_AT\n": CODE is the exit status or 128 + SIGNAL, SIGNAL 0 if none).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *runtime, *rroot, *dir, *id;
static long long log_max;

static void path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static void now(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void write_atomic(const char *name, const char *text) {
    char p[4200], tmp[4210];
    path(p, sizeof p, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t n = write(fd, text, strlen(text));
    (void)n;
    fsync(fd);
    close(fd);
    rename(tmp, p);
}

/* Runs the runtime with args (NULL-terminated, after the global flags); stdout/stderr to `out_fd`. */
static int run_runtime(int out_fd, const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
                       const char *a6, const char *a7) {
    char logp[4200];
    path(logp, sizeof logp, "runtime.log");
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(out_fd, 1);
        dup2(out_fd, 2);
        const char *argv[] = {runtime, "--root", rroot, "--log", logp, "--log-format", "json", a1, a2, a3, a4, a5, a6, a7, NULL};
        execv(runtime, (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The last "msg" of the runtime's JSON log, as the reason of a failed run. */
static void last_error(char *out, size_t cap) {
    char p[4200], buf[16384];
    path(p, sizeof p, "runtime.log");
    snprintf(out, cap, "%s failed (no message in %s)", runtime, p);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    lseek(fd, size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    char *m = NULL;
    for (char *s = buf; (s = strstr(s, "\"msg\":\"")); s++) m = s + 7;
    if (!m) return;
    size_t o = 0;
    for (; *m && *m != '\n' && o + 1 < cap; m++) {
        if (*m == '"' && m[-1] != '\\') break;
        if (*m == '\\' && m[1]) m++;
        out[o++] = *m;
    }
    out[o] = 0;
}

static void report(const char *fmt, const char *arg) {
    dprintf(3, fmt, arg);
    close(3);
}

/* Copies the instance's output into log, rotating to log.1 when log would exceed log_max. */
static void pump(int in) {
    char lp[4200], lp1[4200], buf[65536];
    path(lp, sizeof lp, "log");
    path(lp1, sizeof lp1, "log.1");
    int fd = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    struct stat st;
    long long size = fd >= 0 && fstat(fd, &st) == 0 ? (long long)st.st_size : 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (char *p = buf; n > 0;) {
            if (size >= log_max) {
                if (fd >= 0) close(fd);
                rename(lp, lp1);
                fd = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0640);
                size = 0;
            }
            ssize_t chunk = n < log_max - size ? n : (ssize_t)(log_max - size);
            if (fd >= 0 && write(fd, p, (size_t)chunk) != chunk) size = log_max; /* a failed write: start afresh */
            else size += chunk;
            p += chunk, n -= chunk;
        }
    }
    if (fd >= 0) close(fd);
}

/* Waits for the instance's init (our child since we are its subreaper) and records how it ended. */
static void wait_exit(pid_t pid) {
    int st = 0, code = -1, sig = 0;
    for (;;) {
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        if (r != pid) continue;
        if (WIFEXITED(st)) code = WEXITSTATUS(st);
        else if (WIFSIGNALED(st)) sig = WTERMSIG(st), code = 128 + sig;
        break;
    }
    char t[64], line[128];
    now(t, sizeof t);
    snprintf(line, sizeof line, "%d %d %s\n", code, sig, t);
    write_atomic("exit", line);
}

static int monitor(void) {
    char p[4200], buf[64], msg[2048];
    snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    write_atomic("monitor.pid", buf);
    int out[2];
    if (pipe(out) != 0) return report("error pipe: %s\n", strerror(errno)), 1;
    fcntl(out[0], F_SETFD, FD_CLOEXEC);
    path(p, sizeof p, "pid");
    /* One `run --detach`: create and start in one exec of the runtime. */
    if (run_runtime(out[1], "run", "--detach", "--bundle", dir, "--pid-file", p, id) != 0) {
        last_error(msg, sizeof msg);
        return report("error %s\n", msg), 1;
    }
    char pidtxt[32] = "";
    int fd = open(p, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, pidtxt, sizeof pidtxt - 1) : -1;
    if (fd >= 0) close(fd);
    pid_t pid = n > 0 ? (pid_t)atoi(pidtxt) : 0;
    if (pid <= 0) return report("error %s run wrote no pid file\n", runtime), 1;
    now(buf, sizeof buf);
    write_atomic("started", buf);
    close(out[1]);
    snprintf(buf, sizeof buf, "%d", (int)pid);
    report("ok %s\n", buf);
    pump(out[0]);
    close(out[0]);
    wait_exit(pid);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s RUNTIME RUNTIME_ROOT BUNDLE_DIR ID LOG_MAX_BYTES (fd 3: report pipe)\n", argv[0]);
        return 2;
    }
    runtime = argv[1], rroot = argv[2], dir = argv[3], id = argv[4];
    log_max = atoll(argv[5]);
    if (log_max < 4096) log_max = 4096;
    if (fcntl(3, F_GETFD) < 0) return 2;
    fcntl(3, F_SETFD, FD_CLOEXEC);
    /* Keep nothing of the host's: no inherited descriptor (a listening socket would outlive berthd). */
    if (close_range(4, ~0u, 0) != 0)
        for (int fd = 4; fd < 65536; fd++) close(fd);
    pid_t child = fork();
    if (child < 0) return report("error fork: %s\n", strerror(errno)), 1;
    if (child > 0) _exit(0); /* the caller reaps this one at once; the monitor is orphaned, not its child */
    setsid();
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0), dup2(null, 1), dup2(null, 2);
    if (null > 2) close(null);
    return monitor();
}
