/*
 * Unit tests for the example network plugin (sdk-docs/examples/c-network/netplug.c), run against the fake
 * host in berth_testhost.h. Build and run from the repository root:
 *
 *   cc -O2 -Wall -I PluginABI/include -I sdk-docs/examples/testhost sdk-docs/examples/testhost/example_test.c \
 *      sdk-docs/examples/c-network/netplug.c -o /tmp/berth-example-test -ldl && /tmp/berth-example-test
 *
 * With a path argument it runs the same tests against a built plugin instead of the compiled-in one, e.g. the
 * Rust example:  /tmp/berth-example-test /tmp/berth-rust-target/release/libberth_rustnet.so
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "berth_testhost.h"

static const berth_plugin_descriptor *D;
static const char *CONFIG = "{\"subnet\":\"10.77.0.0/24\",\"gateway\":\"10.77.0.1\"}";

/* A fresh host with a created instance. */
typedef struct fixture {
    bth_host h;
    void *inst;
    bth_out out;
    char err[BERTH_ERR_CAP];
} fixture;

static int setup(fixture *f, const char *config) {
    bth_init(&f->h);
    bth_out_init(&f->out, 0);
    berth_status st = bth_create(&f->h, D, config, &f->inst, f->err);
    BTH_EXPECT(st == BERTH_OK, "create returned %d: %s", (int)st, f->err);
    return st == BERTH_OK;
}

static void teardown(fixture *f) {
    if (f->inst) D->destroy(f->inst);
    bth_out_free(&f->out);
    bth_free(&f->h);
}

static berth_status op(fixture *f, berth_json_op fn, const char *req) { return bth_call(&f->h, fn, f->inst, req, &f->out, f->err); }

#define ADD(f, req) op(f, D->network->add, req)
#define DEL(f, req) op(f, D->network->del, req)
#define CHECK(f, req) op(f, D->network->check, req)
#define HAS(f, s) (strstr((f)->out.p, s) != NULL)

/* ------------------------------------------------------------------------------------------------------ */

static void testhost_kv_next_semantics(void) {
    bth_host h;
    bth_init(&h);
    const char *keys[] = {"a", "a/1", "a/2", "a/20", "b/1"};
    for (int i = 0; i < 5; i++) bth_kv_seed(&h, keys[i], "");
    bth_out k;
    bth_out_init(&k, 0);
    BTH_EXPECT(h.services.kv_next(&h, "a/", 2, "", 0, &k.sink, NULL) == BERTH_FAILED_PRECONDITION, "kv outside a transaction");
    bth_begin(&h);
    BTH_EXPECT(h.services.kv_next(&h, "a/", 2, "", 0, &k.sink, NULL) == BERTH_OK && strcmp(k.p, "a/1") == 0, "first: got %s", k.p);
    bth_out_reset(&k);
    BTH_EXPECT(h.services.kv_next(&h, "a/", 2, "a/2", 3, &k.sink, NULL) == BERTH_OK && strcmp(k.p, "a/20") == 0, "strictly after a/2: %s", k.p);
    bth_out_reset(&k);
    BTH_EXPECT(h.services.kv_next(&h, "a/", 2, "a", 1, &k.sink, NULL) == BERTH_OK && strcmp(k.p, "a/1") == 0, "after < prefix: %s", k.p);
    BTH_EXPECT(h.services.kv_next(&h, "a/", 2, "a/20", 4, NULL, NULL) == BERTH_NOT_FOUND, "nothing after the last key of the prefix");
    bth_rollback(&h);
    bth_out_free(&k);
    bth_free(&h);
}

static void descriptor_follows_the_loader_rules(void) {
    char why[256] = "";
    BTH_EXPECT(bth_check_descriptor(D, BERTH_ABI_MINOR, why, sizeof why) == 0, "%s", why);
    BTH_EXPECT(D->kinds == BERTH_KIND_NETWORK, "kinds 0x%x", D->kinds);
}

static void create_initialises_the_namespace_and_logs(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        BTH_EXPECT(bth_kv_value(&f.h, "cfg/subnet") && strcmp(bth_kv_value(&f.h, "cfg/subnet"), "10.77.0.0/24") == 0, "cfg/subnet");
        BTH_EXPECT(bth_find_log(&f.h, "10.77.0.0/24") != NULL, "a log line naming the subnet");
    }
    teardown(&f);
}

static void create_refuses_bad_subnets_and_writes_nothing(void) {
    const char *bad[] = {"{\"subnet\":\"10.77.0.5/24\"}", "{\"subnet\":\"10.77.0.0/31\"}", "{\"subnet\":\"10.77.0.0/24\",\"gateway\":\"10.78.0.1\"}"};
    for (int i = 0; i < 3; i++) {
        bth_host h;
        bth_init(&h);
        void *inst = NULL;
        char err[BERTH_ERR_CAP];
        berth_status st = bth_create(&h, D, bad[i], &inst, err);
        BTH_EXPECT(st == BERTH_INVALID_ARGUMENT, "%s: status %d", bad[i], (int)st);
        BTH_EXPECT(err[0] != 0, "%s: a message", bad[i]);
        BTH_EXPECT(h.kv_len == 0, "%s: nothing committed", bad[i]);
        if (st == BERTH_OK) D->destroy(inst);
        bth_free(&h);
    }
}

static void add_allocates_the_first_free_address(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        berth_status st = ADD(&f, "{\"network\":\"t\",\"containerID\":\"c1\",\"ifname\":\"eth0\",\"node\":\"n1\"}");
        BTH_EXPECT(st == BERTH_OK, "add: %d %s", (int)st, f.err);
        BTH_EXPECT(HAS(&f, "\"address\":\"10.77.0.2/24\""), "first address: %s", f.out.p);
        BTH_EXPECT(HAS(&f, "\"gateway\":\"10.77.0.1\""), "gateway: %s", f.out.p);
        BTH_EXPECT(HAS(&f, "\"mac\":\"0a:58:0a:4d:00:02\""), "mac from the address: %s", f.out.p);
        BTH_EXPECT(bth_event_count(&f.h, "address.allocated") == 1, "one address.allocated event");
    }
    teardown(&f);
}

static void add_is_idempotent(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        char first[512];
        snprintf(first, sizeof first, "%s", f.out.p);
        unsigned long long before = bth_kv_fingerprint(&f.h);
        berth_status st = ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\",\"node\":\"other\"}");
        BTH_EXPECT(st == BERTH_OK && strcmp(first, f.out.p) == 0, "same result: %s vs %s", first, f.out.p);
        BTH_EXPECT(bth_kv_fingerprint(&f.h) == before, "no state change on a repeated add");
        BTH_EXPECT(bth_event_count(&f.h, "address.allocated") == 1, "no second event");
    }
    teardown(&f);
}

static void distinct_keys_get_distinct_addresses(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(HAS(&f, "10.77.0.2/"), "%s", f.out.p);
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"net1\"}");
        BTH_EXPECT(HAS(&f, "10.77.0.3/"), "same container, other interface: %s", f.out.p);
        ADD(&f, "{\"containerID\":\"c2\"}");
        BTH_EXPECT(HAS(&f, "10.77.0.4/"), "ifname defaults to eth0, new container: %s", f.out.p);
    }
    teardown(&f);
}

static void requested_addresses(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        berth_status st = ADD(&f, "{\"containerID\":\"db-0\",\"ifname\":\"eth0\",\"ips\":[\"10.77.0.50\"]}");
        BTH_EXPECT(st == BERTH_OK && HAS(&f, "10.77.0.50/24"), "honoured: %d %s %s", (int)st, f.out.p, f.err);
        st = ADD(&f, "{\"containerID\":\"db-1\",\"ifname\":\"eth0\",\"ips\":[\"10.77.0.50/24\"]}");
        BTH_EXPECT(st == BERTH_ALREADY_EXISTS, "taken: %d %s", (int)st, f.err);
        st = ADD(&f, "{\"containerID\":\"db-1\",\"ifname\":\"eth0\",\"ips\":[\"10.77.0.1\"]}");
        BTH_EXPECT(st == BERTH_INVALID_ARGUMENT, "gateway: %d %s", (int)st, f.err);
        st = ADD(&f, "{\"containerID\":\"db-1\",\"ifname\":\"eth0\",\"ips\":[\"192.168.0.9\"]}");
        BTH_EXPECT(st == BERTH_INVALID_ARGUMENT, "outside the subnet: %d %s", (int)st, f.err);
        st = ADD(&f, "{\"containerID\":\"db-1\",\"ifname\":\"eth0\",\"ips\":[\"10.77.0.255\"]}");
        BTH_EXPECT(st == BERTH_INVALID_ARGUMENT, "broadcast: %d %s", (int)st, f.err);
    }
    teardown(&f);
}

static void check_confirms_or_reports_not_found(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        berth_status st = CHECK(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(st == BERTH_OK, "existing: %d %s", (int)st, f.err);
        st = CHECK(&f, "{\"containerID\":\"nope\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(st == BERTH_NOT_FOUND && f.err[0], "unknown: %d %s", (int)st, f.err);
    }
    teardown(&f);
}

static void del_always_succeeds_and_frees_the_address(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        ADD(&f, "{\"containerID\":\"c2\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(DEL(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_OK, "del: %s", f.err);
        BTH_EXPECT(DEL(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_OK, "del twice: %s", f.err);
        BTH_EXPECT(DEL(&f, "{\"containerID\":\"never\",\"ifname\":\"eth0\",\"final\":true}") == BERTH_OK, "del unknown: %s", f.err);
        BTH_EXPECT(CHECK(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_NOT_FOUND, "gone after del");
        BTH_EXPECT(bth_event_count(&f.h, "address.released") == 1, "one release event");
        ADD(&f, "{\"containerID\":\"c3\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(HAS(&f, "10.77.0.2/"), "the released address is reused first: %s", f.out.p);
    }
    teardown(&f);
}

static void del_of_a_half_finished_attachment(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        /* An attachment record whose address is owned by someone else (state left by a bug or an old version). */
        bth_kv_seed(&f.h, "att/eth0/ghost", "0a4d0009");
        BTH_EXPECT(DEL(&f, "{\"containerID\":\"ghost\",\"ifname\":\"eth0\"}") == BERTH_OK, "del: %s", f.err);
        BTH_EXPECT(bth_kv_value(&f.h, "att/eth0/ghost") == NULL, "record removed");
    }
    teardown(&f);
}

static void exhaustion_rolls_back_and_status_reports_it(void) {
    fixture f;
    if (setup(&f, "{\"subnet\":\"10.77.0.0/30\"}")) { /* .1 gateway, .2 the only address, .3 broadcast */
        BTH_EXPECT(op(&f, D->network->status, "{\"network\":\"t\"}") == BERTH_OK, "status with room: %s", f.err);
        BTH_EXPECT(ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_OK, "first add: %s", f.err);
        unsigned long long before = bth_kv_fingerprint(&f.h);
        size_t events = bth_event_count(&f.h, NULL);
        berth_status st = ADD(&f, "{\"containerID\":\"c2\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(st == BERTH_RESOURCE_EXHAUSTED && f.err[0], "second add: %d %s", (int)st, f.err);
        BTH_EXPECT(bth_kv_fingerprint(&f.h) == before, "the failed add left no trace");
        BTH_EXPECT(bth_event_count(&f.h, NULL) == events, "and no event");
        st = op(&f, D->network->status, "{\"network\":\"t\"}");
        BTH_EXPECT(st == BERTH_RESOURCE_EXHAUSTED, "status when full: %d", (int)st);
    }
    teardown(&f);
}

static void gc_releases_everything_not_listed(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"keep\",\"ifname\":\"eth0\"}");
        ADD(&f, "{\"containerID\":\"drop1\",\"ifname\":\"eth0\"}");
        ADD(&f, "{\"containerID\":\"drop2\",\"ifname\":\"net1\"}");
        berth_status st = op(&f, D->network->gc, "{\"network\":\"t\",\"valid\":[{\"containerID\":\"keep\",\"ifname\":\"eth0\"}]}");
        BTH_EXPECT(st == BERTH_OK && HAS(&f, "\"released\":2"), "gc: %d %s %s", (int)st, f.out.p, f.err);
        BTH_EXPECT(CHECK(&f, "{\"containerID\":\"keep\",\"ifname\":\"eth0\"}") == BERTH_OK, "kept");
        BTH_EXPECT(CHECK(&f, "{\"containerID\":\"drop1\",\"ifname\":\"eth0\"}") == BERTH_NOT_FOUND, "released");
        BTH_EXPECT(bth_kv_count(&f.h, "att/") == 1 && bth_kv_count(&f.h, "ip/") == 1, "one attachment left");
        st = op(&f, D->network->gc, "{\"valid\":[]}");
        BTH_EXPECT(st == BERTH_OK && bth_kv_count(&f.h, "att/") == 0, "empty list releases all");
    }
    teardown(&f);
}

static void invalid_input_is_refused_with_the_field_named(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        BTH_EXPECT(ADD(&f, "{\"containerID\":") == BERTH_INVALID_ARGUMENT, "truncated JSON");
        BTH_EXPECT(ADD(&f, "[1,2]") == BERTH_INVALID_ARGUMENT, "not an object");
        BTH_EXPECT(ADD(&f, "{}") == BERTH_INVALID_ARGUMENT && strstr(f.err, "containerID"), "missing: %s", f.err);
        BTH_EXPECT(ADD(&f, "{\"containerID\":42}") == BERTH_INVALID_ARGUMENT && strstr(f.err, "containerID"), "wrong type: %s", f.err);
        BTH_EXPECT(op(&f, D->network->gc, "{}") == BERTH_INVALID_ARGUMENT && strstr(f.err, "valid"), "gc without valid: %s", f.err);
        BTH_EXPECT(ADD(&f, "{\"containerID\":\"c\\u00e9\",\"future\":{\"x\":[1,2,{}]}}") == BERTH_OK, "unknown fields ignored: %s", f.err);
    }
    teardown(&f);
}

static void an_operation_can_be_rerun_after_a_crash(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        /* The host crashed before committing: the plugin's writes never happened. Re-running gives the
         * result a clean run gives. */
        unsigned long long clean = bth_kv_fingerprint(&f.h);
        bth_begin(&f.h);
        bth_out_reset(&f.out);
        const char *req = "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}";
        berth_status st = D->network->add(f.inst, req, strlen(req), &f.out.sink, f.err, BERTH_ERR_CAP);
        BTH_EXPECT(st == BERTH_OK, "add inside the transaction");
        bth_rollback(&f.h);
        BTH_EXPECT(bth_kv_fingerprint(&f.h) == clean, "rolled back");
        st = ADD(&f, req);
        BTH_EXPECT(st == BERTH_OK && HAS(&f, "10.77.0.2/"), "re-run: %s", f.out.p);
    }
    teardown(&f);
}

static void state_lives_in_the_namespace_only(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        D->destroy(f.inst); /* a restart: a new instance on the same namespace */
        f.inst = NULL;
        berth_status st = bth_create(&f.h, D, CONFIG, &f.inst, f.err);
        BTH_EXPECT(st == BERTH_OK, "re-create: %s", f.err);
        BTH_EXPECT(CHECK(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_OK, "reservation survived: %s", f.err);
        ADD(&f, "{\"containerID\":\"c2\",\"ifname\":\"eth0\"}");
        BTH_EXPECT(HAS(&f, "10.77.0.3/"), "allocation continues: %s", f.out.p);
        void *other = NULL;
        char err[BERTH_ERR_CAP];
        st = bth_create(&f.h, D, "{\"subnet\":\"10.99.0.0/24\"}", &other, err);
        BTH_EXPECT(st == BERTH_FAILED_PRECONDITION, "subnet change with addresses in use: %d %s", (int)st, err);
        if (other) D->destroy(other);
    }
    teardown(&f);
}

static void capacity_counts(void) {
    fixture f;
    if (setup(&f, CONFIG)) {
        ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}");
        berth_status st = op(&f, D->network->capacity, "{\"node\":\"n1\"}");
        BTH_EXPECT(st == BERTH_OK && HAS(&f, "\"free\":252") && HAS(&f, "\"active\":1"), "capacity: %s %s", f.out.p, f.err);
    }
    teardown(&f);
}

static void a_panic_becomes_berth_internal(void) {
    /* Only the Rust example has a "panic" method (descriptor.call): it shows catch_unwind at the boundary. */
    fixture f;
    if (setup(&f, CONFIG)) {
        berth_status st = bth_call_named(&f.h, D->call, f.inst, "panic", "{}", &f.out, f.err);
        BTH_EXPECT(st == BERTH_INTERNAL && strstr(f.err, "panic"), "status %d: %s", (int)st, f.err);
        BTH_EXPECT(ADD(&f, "{\"containerID\":\"c1\",\"ifname\":\"eth0\"}") == BERTH_OK, "the instance still works");
    }
    teardown(&f);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!so) return fprintf(stderr, "dlopen: %s\n", dlerror()), 2;
        const berth_plugin_descriptor *(*entry)(uint16_t, uint16_t);
        *(void **)&entry = dlsym(so, BERTH_PLUGIN_ENTRY_SYMBOL); /* the POSIX idiom for function pointers */
        if (!entry) return fprintf(stderr, "%s: no %s\n", argv[1], BERTH_PLUGIN_ENTRY_SYMBOL), 2;
        D = entry(BERTH_ABI_MAJOR, BERTH_ABI_MINOR); /* never dlclose: the Rust runtime cannot be unloaded */
    } else {
        D = berth_plugin_entry_v1(BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
    }
    if (!D || !D->network) return fprintf(stderr, "not a network plugin\n"), 2;
    printf("testing %s %s\n\n", D->name, D->version);
    BTH_RUN(testhost_kv_next_semantics);
    BTH_RUN(descriptor_follows_the_loader_rules);
    BTH_RUN(create_initialises_the_namespace_and_logs);
    BTH_RUN(create_refuses_bad_subnets_and_writes_nothing);
    BTH_RUN(add_allocates_the_first_free_address);
    BTH_RUN(add_is_idempotent);
    BTH_RUN(distinct_keys_get_distinct_addresses);
    BTH_RUN(requested_addresses);
    BTH_RUN(check_confirms_or_reports_not_found);
    BTH_RUN(del_always_succeeds_and_frees_the_address);
    BTH_RUN(del_of_a_half_finished_attachment);
    BTH_RUN(exhaustion_rolls_back_and_status_reports_it);
    BTH_RUN(gc_releases_everything_not_listed);
    BTH_RUN(invalid_input_is_refused_with_the_field_named);
    BTH_RUN(an_operation_can_be_rerun_after_a_crash);
    BTH_RUN(state_lives_in_the_namespace_only);
    BTH_RUN(capacity_counts);
    /* Only the Rust example answers call("panic"); the C example has no call, and a Swift plugin's call (the kit's
     * default) answers UNIMPLEMENTED, and a Swift trap cannot be caught anyway. */
    if (D->call && strcmp(D->name, "rustnet") == 0) BTH_RUN(a_panic_becomes_berth_internal);
    return bth_summary();
}
