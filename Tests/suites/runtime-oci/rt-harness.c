/*
 * rt-harness — loads a runtime plugin (.so) the way berthd does (dlopen, berth_plugin_entry_v1, the descriptor
 * checks of sdk-docs/examples/testhost) and runs one runtime operation per invocation, so every call is a fresh
 * "host" process: that is what reattach after a restart of berthd looks like to the plugin.
 *
 *   rt-harness PLUGIN.so CONFIG_JSON OP [REQUEST_JSON]      OP: start | stop | state | list | remove | exec | check
 *
 * Prints the operation's JSON output on stdout and exits 0; on failure prints "STATUS_NUMBER message" on stderr
 * and exits with 10 + the berth_status (so a shell can tell INVALID_ARGUMENT (13) from NOT_FOUND (15)).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "berth_testhost.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PLUGIN.so CONFIG_JSON start|stop|state|list|remove|exec|check [REQUEST_JSON]\n", argv[0]);
        return 2;
    }
    void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    const berth_plugin_descriptor *(*entry)(uint16_t, uint16_t);
    *(void **)&entry = dlsym(so, BERTH_PLUGIN_ENTRY_SYMBOL);
    const berth_plugin_descriptor *d = entry ? entry(BERTH_ABI_MAJOR, BERTH_ABI_MINOR) : NULL;
    char why[512];
    if (bth_check_descriptor(d, BERTH_ABI_MINOR, why, sizeof why) != 0 || !(d->kinds & BERTH_KIND_RUNTIME)) {
        fprintf(stderr, "descriptor refused: %s\n", d && !(d->kinds & BERTH_KIND_RUNTIME) ? "not a runtime plugin" : why);
        return 2;
    }
    const char *op = argv[3], *req = argc > 4 ? argv[4] : "{}";
    berth_json_op fn = !strcmp(op, "start") ? d->runtime->start : !strcmp(op, "stop") ? d->runtime->stop
                     : !strcmp(op, "state") ? d->runtime->state : !strcmp(op, "list") ? d->runtime->list
                     : !strcmp(op, "remove") ? d->runtime->remove : !strcmp(op, "exec") ? d->runtime->exec : NULL;
    if (!fn && strcmp(op, "check") != 0) {
        fprintf(stderr, "unknown operation %s (or the plugin does not offer it)\n", op);
        return 2;
    }
    bth_host h;
    bth_init(&h);
    void *inst;
    char err[BERTH_ERR_CAP];
    berth_status st = bth_create(&h, d, argv[2], &inst, err);
    if (st == BERTH_OK && fn) {
        bth_out out;
        bth_out_init(&out, 0);
        st = bth_call(&h, fn, inst, req, &out, err);
        if (st == BERTH_OK) printf("%s\n", out.p ? out.p : "{}");
        bth_out_free(&out);
    }
    if (st == BERTH_OK) d->destroy(inst);
    else fprintf(stderr, "%d %s\n", (int)st, err);
    bth_free(&h);
    return st == BERTH_OK ? 0 : 10 + (int)st;
}
