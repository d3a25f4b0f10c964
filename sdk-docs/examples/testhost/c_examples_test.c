/*
 * Unit tests of the C storage and discovery examples (sdk-docs/examples/c-storage/storplug.c and
 * c-discovery/discplug.c) against the fake host in berth_testhost.h, including ABI 1.2's completion callbacks
 * (a rolled-back delete keeps the data, a rolled-back publish leaves no target, the hosts file shows committed
 * state only) and the fallback on an older host. Build and run from the repository root:
 *
 *   sdk-docs/examples/c-storage/build.sh && sdk-docs/examples/c-discovery/build.sh
 *   cc -O2 -Wall -I PluginABI/include -I sdk-docs/examples/testhost sdk-docs/examples/testhost/c_examples_test.c \
 *      -o /tmp/berth-c-examples-test -ldl && /tmp/berth-c-examples-test /tmp/libberth-storplug.so /tmp/libberth-discplug.so
 *
 * The plugins are loaded with dlopen (each exports berth_plugin_entry_v1), as the host loads them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth_testhost.h"

#include <dlfcn.h>

typedef const berth_plugin_descriptor *(*entry_fn)(uint16_t, uint16_t);
static entry_fn storplug_entry, discplug_entry;

static entry_fn load(const char *path) {
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so) { fprintf(stderr, "dlopen: %s\n", dlerror()); exit(2); }
    entry_fn e;
    *(void **)&e = dlsym(so, BERTH_PLUGIN_ENTRY_SYMBOL);
    if (!e) { fprintf(stderr, "%s: no %s\n", path, BERTH_PLUGIN_ENTRY_SYMBOL); exit(2); }
    return e;
}

static char dir[256];

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

typedef struct fx {
    bth_host h;
    void *inst;
    bth_out out;
    char err[BERTH_ERR_CAP];
    const berth_plugin_descriptor *d;
} fx;

static int setup(fx *f, const berth_plugin_descriptor *d, const char *config, uint16_t host_minor) {
    bth_init(&f->h);
    bth_set_host_minor(&f->h, host_minor);
    bth_out_init(&f->out, 0);
    f->d = d;
    berth_status st = bth_create(&f->h, d, config, &f->inst, f->err);
    BTH_EXPECT(st == BERTH_OK, "create: %d %s", (int)st, f->err);
    return st == BERTH_OK;
}

static void teardown(fx *f) {
    if (f->inst) f->d->destroy(f->inst);
    bth_out_free(&f->out);
    bth_free(&f->h);
}

static char *storage_config(void) {
    static char c[512];
    snprintf(c, sizeof c, "{\"root\":\"%s/root\",\"nodes\":[\"n1\",\"n2\"],\"maxVolumeBytes\":4611686018427387904}", dir);
    return c;
}

/* create_volume: exact 64-bit sizes in and out; the directory of a rolled-back create is removed again. */
static void storage_create_exact_sizes_and_rollback(void) {
    fx f;
    if (!setup(&f, storplug_entry(1, 2), storage_config(), 2)) return;
    const berth_storage_ops *s = f.d->storage;
    berth_status st = bth_call(&f.h, s->create_volume, f.inst, "{\"name\":\"big\",\"capacityBytes\":4611686018427387904}", &f.out, f.err);
    BTH_EXPECT(st == BERTH_OK && strstr(f.out.p, "\"capacityBytes\":4611686018427387904"), "%d %s %s", (int)st, f.out.p, f.err);
    st = bth_call(&f.h, s->create_volume, f.inst, "{\"name\":\"big\",\"capacityBytes\":4611686018427387905}", &f.out, f.err);
    BTH_EXPECT(st == BERTH_OUT_OF_RANGE, "one byte over the limit: %d %s", (int)st, f.err);
    st = bth_call(&f.h, s->create_volume, f.inst, "{\"name\":\"odd\",\"capacityBytes\":9007199254740993}", &f.out, f.err);
    BTH_EXPECT(st == BERTH_OK && strstr(f.out.p, "9007199254740993"), "2^53+1 kept exact: %s %s", f.out.p, f.err);
    st = bth_call_then_rollback(&f.h, s->create_volume, f.inst, "{\"name\":\"gone\"}", &f.out, f.err);
    BTH_EXPECT(st == BERTH_OK, "%s", f.err);
    char p[512];
    snprintf(p, sizeof p, "%s/root/volumes/vol-00000003", dir);
    BTH_EXPECT(!is_dir(p), "the rolled-back create left %s", p);
    BTH_EXPECT(bth_kv_value(&f.h, "name/gone") == NULL, "no record of it either");
    teardown(&f);
}

/* delete_volume: the data goes after commit only; on a 1.1 host (no on_complete) it goes in place. */
static void storage_delete_defers_data_removal(void) {
    for (int minor = 1; minor <= 2; minor++) {
        fx f;
        if (!setup(&f, storplug_entry(1, minor), storage_config(), (uint16_t)minor)) return;
        const berth_storage_ops *s = f.d->storage;
        BTH_EXPECT(bth_call(&f.h, s->create_volume, f.inst, "{\"name\":\"data\"}", &f.out, f.err) == BERTH_OK, "%s", f.err);
        char vol[512], req[600];
        const char *id = bth_kv_value(&f.h, "name/data");
        snprintf(vol, sizeof vol, "%s/root/volumes/%s", dir, id ? id : "?");
        snprintf(req, sizeof req, "{\"volumeId\":\"%s\"}", id ? id : "?");
        BTH_EXPECT(is_dir(vol), "created %s", vol);
        bth_call_then_rollback(&f.h, s->delete_volume, f.inst, req, &f.out, f.err);
        if (minor == 2) BTH_EXPECT(is_dir(vol), "a rolled-back delete keeps the data (ABI 1.2)");
        else BTH_EXPECT(!is_dir(vol), "ABI 1.1 host: deleted in place (no way to defer)");
        BTH_EXPECT(bth_call(&f.h, s->delete_volume, f.inst, req, &f.out, f.err) == BERTH_OK, "%s", f.err);
        BTH_EXPECT(!is_dir(vol), "a committed delete removes the data");
        teardown(&f);
    }
}

/* node_publish creates the target (a symlink); a rolled-back publish removes it; unpublish removes it after commit;
 * a 4,000-byte target path works (keyed by its hash). */
static void storage_publish_targets(void) {
    fx f;
    if (!setup(&f, storplug_entry(1, 2), storage_config(), 2)) return;
    const berth_storage_ops *s = f.d->storage;
    BTH_EXPECT(bth_call(&f.h, s->create_volume, f.inst, "{\"name\":\"pub\"}", &f.out, f.err) == BERTH_OK, "%s", f.err);
    const char *id = bth_kv_value(&f.h, "name/pub");
    char target[4400], req[4600];
    snprintf(target, sizeof target, "%s/t1", dir);
    snprintf(req, sizeof req, "{\"volumeId\":\"%s\",\"nodeId\":\"n1\",\"targetPath\":\"%s\"}", id, target);
    bth_call_then_rollback(&f.h, s->node_publish, f.inst, req, &f.out, f.err);
    BTH_EXPECT(access(target, F_OK) != 0, "a rolled-back publish leaves no target");
    BTH_EXPECT(bth_call(&f.h, s->node_publish, f.inst, req, &f.out, f.err) == BERTH_OK, "%s", f.err);
    BTH_EXPECT(is_dir(target), "the plugin created the target");
    BTH_EXPECT(bth_call(&f.h, s->delete_volume, f.inst, req, &f.out, f.err) == BERTH_FAILED_PRECONDITION, "delete while published");
    BTH_EXPECT(bth_call(&f.h, s->node_unpublish, f.inst, req, &f.out, f.err) == BERTH_OK, "%s", f.err);
    BTH_EXPECT(access(target, F_OK) != 0, "unpublish removed the target");
    /* A long path: deeper than a key may be. */
    char longdir[4200];
    int n = snprintf(longdir, sizeof longdir, "%s/", dir);
    while (n < 3900) n += snprintf(longdir + n, sizeof longdir - n, "%s", "d123456789/");
    longdir[n - 1] = 0;
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", longdir);
    BTH_EXPECT(system(cmd) == 0, "mkdir");
    snprintf(target, sizeof target, "%s/t", longdir);
    snprintf(req, sizeof req, "{\"volumeId\":\"%s\",\"targetPath\":\"%s\"}", id, target);
    BTH_EXPECT(strlen(target) > 1024 && bth_call(&f.h, s->node_publish, f.inst, req, &f.out, f.err) == BERTH_OK, "long path: %s", f.err);
    BTH_EXPECT(bth_call(&f.h, s->node_unpublish, f.inst, req, &f.out, f.err) == BERTH_OK, "%s", f.err);
    teardown(&f);
}

static char *read_file(const char *p) {
    static char buf[4096];
    FILE *fp = fopen(p, "r");
    if (!fp) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

/* Events in any order and repeated; the hosts file shows committed state only; resync replaces everything. */
static void discovery_hosts_file_after_commit(void) {
    char cfg[400], hosts[300];
    snprintf(hosts, sizeof hosts, "%s/hosts", dir);
    snprintf(cfg, sizeof cfg, "{\"hostsFile\":\"%s\"}", hosts);
    fx f;
    if (!setup(&f, discplug_entry(1, 2), cfg, 2)) return;
    const berth_discovery_ops *d = f.d->discovery;
    const char *rs = "{\"rev\":10,\"site\":\"s\",\"instances\":[{\"kind\":\"App\",\"app\":\"web\",\"ordinal\":0,\"state\":\"running\",\"ips\":[\"10.0.0.1/24\"]}]}";
    BTH_EXPECT(bth_call(&f.h, d->resync, f.inst, rs, &f.out, f.err) == BERTH_OK, "%s", f.err);
    char *t = read_file(hosts);
    BTH_EXPECT(t && strcmp(t, "10.0.0.1 web-0.App\n") == 0, "hosts after resync: %s", t ? t : "(none)");
    const char *ev = "{\"events\":[{\"rev\":11,\"type\":\"instance.running\",\"subject\":\"App/web/1\",\"data\":{\"kind\":\"App\",\"app\":\"web\",\"ordinal\":1,\"state\":\"running\",\"ips\":[\"10.0.0.2\"]}}]}";
    bth_call_then_rollback(&f.h, d->events, f.inst, ev, &f.out, f.err);
    t = read_file(hosts);
    BTH_EXPECT(t && !strstr(t, "web-1"), "a rolled-back batch does not reach the hosts file: %s", t ? t : "");
    BTH_EXPECT(bth_call(&f.h, d->events, f.inst, ev, &f.out, f.err) == BERTH_OK, "%s", f.err);
    t = read_file(hosts);
    BTH_EXPECT(t && strstr(t, "10.0.0.2 web-1.App"), "committed: %s", t ? t : "");
    const char *gone = "{\"events\":[{\"rev\":12,\"type\":\"instance.gone\",\"subject\":\"App/web/1\",\"data\":{\"kind\":\"App\",\"app\":\"web\",\"ordinal\":1,\"state\":\"gone\"}}]}";
    BTH_EXPECT(bth_call(&f.h, d->events, f.inst, gone, &f.out, f.err) == BERTH_OK, "%s", f.err);
    unsigned long long fp = bth_kv_fingerprint(&f.h);
    BTH_EXPECT(bth_call(&f.h, d->events, f.inst, ev, &f.out, f.err) == BERTH_OK && bth_kv_fingerprint(&f.h) == fp, "an older event does not bring web-1 back");
    t = read_file(hosts);
    BTH_EXPECT(t && !strstr(t, "web-1"), "gone: %s", t ? t : "");
    BTH_EXPECT(bth_call(&f.h, d->resync, f.inst, "{\"rev\":20,\"site\":\"s\",\"instances\":[]}", &f.out, f.err) == BERTH_OK, "%s", f.err);
    BTH_EXPECT(bth_kv_count(&f.h, "inst/") == 0, "resync cleared the instances (kv_delete_prefix)");
    BTH_EXPECT(bth_call(&f.h, d->events, f.inst, "{}", &f.out, f.err) == BERTH_INVALID_ARGUMENT, "events missing");
    teardown(&f);
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: %s STORPLUG.so DISCPLUG.so\n", argv[0]), 2;
    storplug_entry = load(argv[1]);
    discplug_entry = load(argv[2]);
    snprintf(dir, sizeof dir, "/tmp/berth-c-examples-test-%d", (int)getpid());
    mkdir(dir, 0755);
    BTH_RUN(storage_create_exact_sizes_and_rollback);
    BTH_RUN(storage_delete_defers_data_removal);
    BTH_RUN(storage_publish_targets);
    BTH_RUN(discovery_hosts_file_after_commit);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return bth_summary();
}
