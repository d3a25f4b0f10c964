/*
 * berth_plugin.h — the Berth plugin ABI, version 1.3.
 *
 * What each minor added:
 *   1.0  everything not listed below.
 *   1.1  berth_network_ops.add_batch (optional): many ADDs in one call.
 *   1.2  berth_host_services: on_complete (after_commit / after_rollback callbacks per operation), kv_len,
 *        kv_count_prefix, kv_delete_prefix. Check host_abi_minor >= 2 (or the struct_size) before using them.
 *   1.3  the runtime kind: BERTH_KIND_RUNTIME, berth_runtime_ops, berth_plugin_descriptor.runtime (appended).
 *        A 1.3 host loads 1.0-1.2 plugins unchanged (their descriptor ends before `runtime`, which reads NULL);
 *        a runtime plugin states abi_minor 3, so an older host refuses it with "built against a newer ABI".
 *
 * This one header is the whole contract between the Berth host (berthd, `berth plugin check`, the plugin
 * runner) and a plugin: a shared object loaded at run time with dlopen(RTLD_NOW | RTLD_LOCAL).
 *
 * RULES THAT HOLD FOR EVERY FUNCTION BELOW
 *
 *  Versioning.  The host calls berth_plugin_entry_v1(host_major, host_minor). The plugin's descriptor states
 *    the ABI it was built against (BERTH_ABI_MAJOR / BERTH_ABI_MINOR from the header it compiled with). The
 *    host loads it only when the majors are equal and the host's minor is at least the plugin's. Minor
 *    versions only ever add: new fields at the END of structs, new optional function pointers, new status
 *    codes, new JSON fields. A major bump renames the entry function (berth_plugin_entry_v2), so one shared
 *    object may serve two majors at once.
 *
 *  Sizes.  Every struct that crosses the boundary begins with `uint32_t struct_size`, set to sizeof() of the
 *    struct as the writer compiled it. A reader never touches a field that lies beyond struct_size; a field
 *    beyond it reads as zero / NULL. A plugin-provided struct smaller than its ABI 1.0 size is refused at load.
 *
 *  Optional functions are NULL-able and say so ("optional"). Required functions come in groups per kind:
 *    all of a group, or none of it. A half-filled group is refused at load with an error naming the gap.
 *
 *  Memory never crosses the boundary to be freed on the other side.
 *    - Inputs (const pointers) are BORROWED for the duration of the call only; copy what you keep.
 *    - Outputs are written through a berth_sink provided by the caller; the sink copies immediately.
 *    - Errors are a status code plus a NUL-terminated message written into a caller-provided buffer
 *      (`err`, `err_cap` bytes including the NUL; truncate, never overflow). Leave it untouched on success.
 *    - Strings are UTF-8. Lengths, where given, exclude any NUL; such strings need not be NUL-terminated.
 *
 *  JSON.  Control operations take one JSON object and write one JSON object (to the `out` sink). Unknown
 *    input fields must be ignored (a newer host may send more); missing required fields get
 *    BERTH_INVALID_ARGUMENT with a message naming the field.
 *
 *  Threads.  The descriptor's thread_contract says how the host may call an instance:
 *    BERTH_THREADS_SERIAL      — never two calls into the same instance at once (the host serialises them);
 *    BERTH_THREADS_CONCURRENT  — any function of an instance may be called from several threads at once.
 *    Different instances of one plugin may always be called concurrently. The plugin must not start threads
 *    from berth_plugin_entry_v1, and must stop any threads it started before destroy() returns.
 *
 *  State.  A plugin keeps no durable state of its own. Every operation runs as one transaction over the
 *    plugin's key-value namespace (berth_host_services.kv_*): when the operation returns BERTH_OK its writes
 *    commit together with the host's own records; on any other status they are discarded. Operations must be
 *    safe to re-run after a crash. In-memory caches are fine but must be rebuildable from the namespace.
 *    Side effects outside the namespace (files, mounts, caches, other processes) that must match the committed
 *    state are deferred with on_complete (ABI 1.2): after_commit runs once the operation's writes are durable,
 *    after_rollback once they are discarded.
 *    Runtime plugins (ABI 1.3) are the exception: what they run lives on the node and outlives the host, so
 *    the node is their source of truth and idempotency per instance id replaces rollback (berth_runtime_ops).
 *
 *  Unloading.  The host never dlclose()s a plugin (Swift, Go and Rust runtimes cannot be unloaded). Reload
 *    means a new instance, usually from a new content-addressed copy of the file; the old instance drains
 *    and is destroyed.
 */
#ifndef BERTH_PLUGIN_H
#define BERTH_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes. */
#define BERTH_ABI_MAJOR 1
#ifndef BERTH_ABI_MINOR
#define BERTH_ABI_MINOR 3
#endif

/** Exported symbol name of the entry function (for dlsym). */
#define BERTH_PLUGIN_ENTRY_SYMBOL "berth_plugin_entry_v1"

/** Suggested size of error buffers. The host always passes at least this many bytes. */
#define BERTH_ERR_CAP 1024

/* ------------------------------------------------------------------------------------------------------ */
/* Status codes                                                                                             */
/* ------------------------------------------------------------------------------------------------------ */

/**
 * Status of every call that can fail. The values mirror gRPC/CSI codes where one exists, so storage plugins
 * map CSI errors one to one; network plugins' errors surface to CNI callers as CNI error codes (see the
 * network guide in sdk-docs). Values are stable; new ones may be added in minor versions, so treat an
 * unknown value as BERTH_INTERNAL.
 */
typedef enum berth_status {
    BERTH_OK = 0,
    BERTH_INVALID_ARGUMENT = 3,    /**< malformed or missing input; names the field in the message */
    BERTH_NOT_FOUND = 5,           /**< the object named in the request does not exist */
    BERTH_ALREADY_EXISTS = 6,      /**< an object of that name exists and is incompatible with the request */
    BERTH_RESOURCE_EXHAUSTED = 8,  /**< no free addresses, no capacity */
    BERTH_FAILED_PRECONDITION = 9, /**< the object is in a state that forbids the operation (in use, published) */
    BERTH_ABORTED = 10,            /**< a concurrent operation on the same object; retry */
    BERTH_OUT_OF_RANGE = 11,       /**< a size or value outside what the plugin supports */
    BERTH_UNIMPLEMENTED = 12,      /**< the operation is not supported by this plugin */
    BERTH_INTERNAL = 13,           /**< a bug or an unexpected failure inside the plugin */
    BERTH_UNAVAILABLE = 14,        /**< a dependency is unreachable; retry later */
} berth_status;

/** Log levels for berth_host_services.log. */
typedef enum berth_log_level {
    BERTH_LOG_DEBUG = 0,
    BERTH_LOG_INFO = 1,
    BERTH_LOG_WARN = 2,
    BERTH_LOG_ERROR = 3,
} berth_log_level;

/** Plugin kinds, a bit set in berth_plugin_descriptor.kinds. */
#define BERTH_KIND_NETWORK   (1u << 0)
#define BERTH_KIND_STORAGE   (1u << 1)
#define BERTH_KIND_SCHEDULER (1u << 2)
#define BERTH_KIND_DISCOVERY (1u << 3)
#define BERTH_KIND_RUNTIME   (1u << 4) /**< ABI 1.3: berth_plugin_descriptor.runtime */

/** Thread contracts, berth_plugin_descriptor.thread_contract. */
#define BERTH_THREADS_SERIAL     0u
#define BERTH_THREADS_CONCURRENT 1u

/* ------------------------------------------------------------------------------------------------------ */
/* Output sink                                                                                              */
/* ------------------------------------------------------------------------------------------------------ */

/**
 * Where a callee writes its output. Provided by the caller, valid for the duration of the call only.
 *
 * write(ctx, data, len) appends `len` bytes to the output and copies them before it returns, so `data` may
 * be a stack buffer. It may be called any number of times (the pieces are concatenated) and returns
 * BERTH_OK, or BERTH_OUT_OF_RANGE when the output exceeds the caller's size limit — stop writing then and
 * return that status. Never NULL.
 */
typedef struct berth_sink {
    uint32_t struct_size;
    void *ctx;
    berth_status (*write)(void *ctx, const char *data, size_t len);
} berth_sink;

/* ------------------------------------------------------------------------------------------------------ */
/* Host services                                                                                            */
/* ------------------------------------------------------------------------------------------------------ */

/**
 * Services the host offers a plugin instance. Passed to create(); the table and `host_ctx` stay valid until
 * destroy() returns, so the instance may keep the pointer. The host exports no symbols to plugins: this
 * table is the only way in. Always pass `host_ctx` back as the first argument.
 *
 * Threading: log() and emit_event() may be called from any thread at any time while the instance lives.
 * The kv_* functions may be called only from inside a call the host made into this instance (create(),
 * reconfigure() or a kind operation), on the thread that call runs on: they act on that call's transaction.
 * Outside of one they return BERTH_FAILED_PRECONDITION.
 */
typedef struct berth_host_services {
    uint32_t struct_size;
    /** ABI version of the host (major, minor), for plugins that use optional newer services. */
    uint16_t host_abi_major;
    uint16_t host_abi_minor;
    /** Opaque; pass back to every function below. */
    void *host_ctx;

    /** Write a log line (no trailing newline needed) tagged with the plugin's name. Never fails. */
    void (*log)(void *host_ctx, berth_log_level level, const char *msg, size_t msg_len);

    /**
     * Read `key` from the plugin's namespace into `value_out`. Returns BERTH_NOT_FOUND when the key does
     * not exist (the sink is not called). Sees the current transaction's own uncommitted writes.
     * `value_out` may be NULL to test for existence only.
     * Keys are byte strings of 1..1024 bytes; values at most 16 MiB.
     */
    berth_status (*kv_get)(void *host_ctx, const char *key, size_t key_len, const berth_sink *value_out);

    /** Create or replace `key`. Part of the current transaction. */
    berth_status (*kv_put)(void *host_ctx, const char *key, size_t key_len, const char *value, size_t value_len);

    /** Delete `key`. Deleting a missing key is BERTH_OK. Part of the current transaction. */
    berth_status (*kv_delete)(void *host_ctx, const char *key, size_t key_len);

    /**
     * Ordered iteration: find the smallest key that starts with `prefix` and sorts (bytewise) strictly after
     * `after` (pass after_len = 0 to start at the prefix). Writes that key to `key_out` and its value to
     * `value_out` (either sink may be NULL when not wanted). Returns BERTH_NOT_FOUND when there is none.
     * Costs O(log n) in the size of the namespace, never a scan: use it to find a free item in an index.
     */
    berth_status (*kv_next)(void *host_ctx, const char *prefix, size_t prefix_len, const char *after,
                            size_t after_len, const berth_sink *key_out, const berth_sink *value_out);

    /**
     * Append an event to the host's event log, committed with the current transaction when called inside
     * an operation (and immediately otherwise). `type` is a short dotted name ("pool.imported"),
     * `json` an object with the event's data.
     */
    berth_status (*emit_event)(void *host_ctx, const char *type, const char *json, size_t json_len);

    /* ---- ABI 1.2 (NULL, or beyond struct_size, on older hosts) ---- */

    /**
     * Completion callbacks for the CURRENT OPERATION (the call the host made into this instance, on this
     * thread). Exactly one of them is called, exactly once, with `arg`:
     *   after_commit(arg)    once the operation's key-value writes (and the host's own records of it) are
     *                        committed and durable, before the host answers whoever asked for the operation;
     *   after_rollback(arg)  once they are discarded: the operation returned an error, the host's own part of
     *                        the same operation failed after the plugin returned OK (for example a record could
     *                        not be stored), or the commit failed.
     * Either pointer may be NULL (nothing to do in that case; `arg` is still yours to free in the other).
     * Per operation, not per transaction: the host group-commits many operations into one transaction and a
     * failed one rolls back alone while the others commit, so only a per-operation outcome tells a plugin what
     * became of the writes it made. Call it any number of times in one operation; each registration is its own.
     *
     * Ordering: callbacks of one operation run in registration order on commit and in reverse order on
     * rollback; operations complete in the order they committed. Threading: they run on a host thread (the
     * executor's, or the one that waits for the disk), never inside another call into the instance; a
     * BERTH_THREADS_SERIAL instance is never called while one runs. They are not inside a transaction: kv_*
     * return BERTH_FAILED_PRECONDITION there (log and emit_event work; an event is then its own transaction).
     * Keep them short and make them idempotent: after a crash between commit and callback, the callback never
     * runs, so recover from the namespace at create() (e.g. delete data of volumes the namespace no longer has).
     * When the host cannot establish the outcome (the disk failed to sync; the plugin's runner died before the
     * outcome was known) neither runs; the host stops taking changes or re-creates the instance.
     * Returns BERTH_FAILED_PRECONDITION outside an operation (e.g. from another thread), BERTH_OK otherwise.
     */
    berth_status (*on_complete)(void *host_ctx, void (*after_commit)(void *arg), void (*after_rollback)(void *arg),
                                void *arg);

    /** The length of `key`'s value in *len_out, without copying it. BERTH_NOT_FOUND when the key is missing. */
    berth_status (*kv_len)(void *host_ctx, const char *key, size_t key_len, uint64_t *len_out);

    /** The number of keys that start with `prefix` (an empty prefix counts the namespace). O(count). */
    berth_status (*kv_count_prefix)(void *host_ctx, const char *prefix, size_t prefix_len, uint64_t *count_out);

    /**
     * Delete every key that starts with `prefix` (prefix_len >= 1). Part of the current transaction. The
     * number deleted goes to *deleted_out unless it is NULL.
     */
    berth_status (*kv_delete_prefix)(void *host_ctx, const char *prefix, size_t prefix_len, uint64_t *deleted_out);
} berth_host_services;

/* ------------------------------------------------------------------------------------------------------ */
/* Control operations                                                                                       */
/* ------------------------------------------------------------------------------------------------------ */

/**
 * The shape of every JSON control operation.
 *
 *   instance  the value create() produced.
 *   req       one JSON object (borrowed; req_len bytes, not NUL-terminated).
 *   out       where to write the response: one JSON object. Write nothing for an empty object.
 *   err       on failure, a NUL-terminated message for the user (err_cap bytes including the NUL).
 *
 * Returns BERTH_OK, or an error status with a message in `err`. On failure any output is discarded and the
 * operation's key-value writes are rolled back.
 */
typedef berth_status (*berth_json_op)(void *instance, const char *req, size_t req_len, const berth_sink *out,
                                      char *err, size_t err_cap);

/* ---- network ---------------------------------------------------------------------------------------- */

/**
 * Network plugins: CNI-style address management. Requests and responses are JSON; the exact fields are in
 * sdk-docs/kinds/network.md. Required group: add, del, check, gc, status.
 *
 *  add     allocate addresses for the attachment key {network, containerID, ifname}. Idempotent: the same
 *          key returns the same result. Fields: containerID, ifname, node, identity {app, ordinal,
 *          releasePolicy}, ips (requested addresses), pool.
 *  del     release the attachment. Always BERTH_OK for unknown or half-finished attachments.
 *  check   BERTH_NOT_FOUND when the attachment's reservation is missing, else OK.
 *  gc      {"valid":[{containerID, ifname}]}: release everything not listed.
 *  status  OK when addresses can be allocated; BERTH_RESOURCE_EXHAUSTED when none can.
 *  capacity (optional) {"node": N} -> {"free":..,"reserved":..,"active":..} per node and per pool.
 *  admin   (optional) named administrative operations; `op` is a NUL-terminated name such as
 *          "pool.import", "pool.list", "pool.show", "pool.delete", "address.move", "node.release",
 *          "identity.release".
 *          Unknown names: BERTH_UNIMPLEMENTED.
 *  add_batch (optional, ABI 1.1) many ADDs in one call, so that a plugin reads its pool state once per batch
 *          instead of once per address. Request {"network": N, "items": [<add request>, ...]}; response
 *          {"results": [<add result>, ...]}, one per item and in order, each what add would have returned had
 *          the items been added one at a time in that order. The host sends only attachments it has no record
 *          of, each key at most once, at most 1024 items.
 *          All or nothing: when any item cannot be added, return an error status. The host then discards every
 *          key-value write of the call and runs the items one at a time through add, so each item gets its own
 *          answer (for example: the pool ran out at item 700). A plugin never reports per-item failures here.
 *          Leave it NULL and the host always uses add.
 */
typedef struct berth_network_ops {
    uint32_t struct_size;
    berth_json_op add;
    berth_json_op del;
    berth_json_op check;
    berth_json_op gc;
    berth_json_op status;
    berth_json_op capacity; /* optional */
    berth_status (*admin)(void *instance, const char *op, const char *req, size_t req_len, const berth_sink *out,
                          char *err, size_t err_cap); /* optional */
    /* ABI 1.1 */
    berth_json_op add_batch; /* optional */
} berth_network_ops;

/* ---- storage ---------------------------------------------------------------------------------------- */

/**
 * Storage plugins: CSI-style volumes. The host keeps the publish order and reference counts (controller
 * publish -> node stage once per node -> node publish per target, and back), so each call here concerns one
 * step. Every operation is idempotent as in the CSI spec. Fields: sdk-docs/kinds/storage.md.
 * Required group: create_volume, delete_volume, node_publish, node_unpublish.
 * Optional: everything else (a NULL controller_publish or node_stage means the step is a no-op for this
 * plugin; NULL snapshot functions mean snapshots are unsupported).
 */
typedef struct berth_storage_ops {
    uint32_t struct_size;
    berth_json_op create_volume;
    berth_json_op delete_volume;
    berth_json_op node_publish;
    berth_json_op node_unpublish;
    berth_json_op controller_publish;   /* optional */
    berth_json_op controller_unpublish; /* optional; required if controller_publish is set */
    berth_json_op node_stage;           /* optional */
    berth_json_op node_unstage;         /* optional; required if node_stage is set */
    berth_json_op expand_volume;        /* optional */
    berth_json_op create_snapshot;      /* optional */
    berth_json_op delete_snapshot;      /* optional; required if create_snapshot is set */
    berth_json_op list_snapshots;       /* optional */
    berth_json_op list_volumes;         /* optional */
    berth_json_op get_capacity;         /* optional */
    berth_json_op validate_capabilities;/* optional */
} berth_storage_ops;

/* ---- scheduler -------------------------------------------------------------------------------------- */

/** Scheduling status codes, as in the kube-scheduler framework. */
typedef enum berth_sched_code {
    BERTH_SCHED_SUCCESS = 0,
    BERTH_SCHED_ERROR = 1,
    BERTH_SCHED_UNSCHEDULABLE = 2,
    BERTH_SCHED_UNRESOLVABLE = 3, /**< UnschedulableAndUnresolvable: no preemption/retry can help */
    BERTH_SCHED_WAIT = 4,
    BERTH_SCHED_SKIP = 5,
} berth_sched_code;

/** A label, borrowed. */
typedef struct berth_label {
    const char *key;
    const char *value;
} berth_label;

/** One candidate node, borrowed for the call. Elements of a batch are `node_size` bytes apart. */
typedef struct berth_node_view {
    const char *name;           /**< NUL-terminated */
    uint32_t index;             /**< position in the host's node table; stable for the call */
    uint32_t zone;              /**< interned value of the "zone" label (0 = none); equal ids = same zone */
    int64_t cpu_free_milli;     /**< free CPU after this instance is subtracted would fit if >= 0 */
    int64_t memory_free;        /**< bytes */
    int64_t disk_free;          /**< bytes */
    int64_t free_addresses;     /**< free addresses from the network plugin; -1 when unknown */
    uint32_t label_count;
    const berth_label *labels;
} berth_node_view;

/** The batch of candidate nodes for one placement. */
typedef struct berth_node_batch {
    uint32_t struct_size;
    uint32_t node_size; /**< sizeof(berth_node_view) as the host compiled it; step by this */
    size_t count;
    const berth_node_view *nodes;
} berth_node_batch;

/** The instance being placed. */
typedef struct berth_sched_instance {
    uint32_t struct_size;
    const char *kind;        /**< the custom kind, e.g. "StatefulApp" */
    const char *app;         /**< the object's name */
    int32_t ordinal;         /**< ordinal within the app, -1 when not ordinal-based */
    const char *spec_json;   /**< the object's spec, JSON (NUL-terminated) */
    const char *state_json;  /**< host-kept facts: previous node, volume node, ... (NUL-terminated JSON) */
} berth_sched_instance;

/**
 * Scheduler plugins own custom kinds. The core filters candidates on resources and labels, then hands the
 * plugin the feasible nodes in ONE batch per placement (never one call per node).
 * Required group: filter, score, reserve, unreserve. Optional: bind, kind_schema (a NUL-terminated JSON
 * Schema for the kind's spec; the host validates objects against it before storing them).
 *
 *  kv_* are available in filter and score when the host calls them during a placement (inside its
 *  transaction); `berth plugin check` calls them outside one, where kv_* return BERTH_FAILED_PRECONDITION.
 *
 *  filter    write one berth_sched_code per node into codes[i] (SUCCESS keeps the node). The call's own
 *            return is BERTH_OK unless the plugin failed.
 *  score     write one score in 0..100 per node into scores[i]. Deterministic for the same input.
 *  reserve   JSON {kind, app, ordinal, node} -> OK, or an error (the host then unreserves).
 *  unreserve the same JSON, plus "final": true when the instance is going away for good (scale-down or
 *            deletion); idempotent; must not fail (its status is logged and ignored).
 *  bind      the same JSON; optional.
 */
typedef struct berth_scheduler_ops {
    uint32_t struct_size;
    const char *kind;        /**< the custom kind this plugin owns, NUL-terminated */
    const char *kind_schema; /**< optional JSON Schema of the kind's spec */
    berth_status (*filter)(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                           uint8_t *codes, char *err, size_t err_cap);
    berth_status (*score)(void *instance, const berth_sched_instance *inst, const berth_node_batch *nodes,
                          int64_t *scores, char *err, size_t err_cap);
    berth_json_op reserve;
    berth_json_op unreserve;
    berth_json_op bind; /* optional */
} berth_scheduler_ops;

/* ---- discovery -------------------------------------------------------------------------------------- */

/**
 * Discovery plugins watch the platform. The host delivers its ordered event log in batches with a durable
 * cursor per plugin (at least once), and a full resync at start or when the plugin fell too far behind.
 * Both must be idempotent. Required group: events, resync.
 *
 *  events  {"events":[{"rev":N,"type":"...","subject":"...","data":{...}}, ...]}
 *  resync  {"rev":N,"site":"...","instances":[{kind, app, ordinal, node, state, ips}]} — the full current
 *          state as of revision N; authoritative for everything at or below N.
 */
typedef struct berth_discovery_ops {
    uint32_t struct_size;
    berth_json_op events;
    berth_json_op resync;
} berth_discovery_ops;

/* ---- runtime (ABI 1.3) ------------------------------------------------------------------------------ */

/**
 * Runtime plugins run instances on the node whose host loaded them: an OCI runtime, a VM monitor, a plain
 * process supervisor. The host's node agent prepares everything around an instance (network namespace and
 * CNI, published volumes, restart policy, health checks) and calls these operations; the plugin only runs
 * the process tree. Full field reference and examples: sdk-docs/kinds/runtime.md.
 * Required group: start, stop, state, list, remove. Optional: exec.
 *
 * Instance ids.  Every request names its instance with "id": 1..128 bytes of [A-Za-z0-9_.-], not starting
 *   with '.' or '-'; the host chooses it and it is unique on the node (it may be reused after remove). A bad
 *   id is BERTH_INVALID_ARGUMENT naming "id".
 *
 * Where the truth lives.  Unlike the other kinds, a runtime's instances are processes on the node that
 *   outlive the host (instances keep running while berthd restarts or is down). The source of truth for what
 *   runs is therefore the node itself (the plugin's state directory, the OCI runtime's own state), not the
 *   key-value namespace: a runtime plugin need not use kv_* at all, and its side effects are not undone when
 *   the host rolls an operation back. Instead every operation is idempotent per id, so the host simply
 *   repeats or reverses it (a start whose host-side record failed is followed by stop + remove).
 *
 * The state object.  start, stop and state answer, and list's "instances" hold, one object per instance:
 *     {"id": "web-0", "state": "created" | "running" | "exited" | "unknown",
 *      "pid": 4242,                 // the instance's main process as seen from the node (0 when none)
 *      "exitCode": 137,             // present once exited: the status, or 128 + signal when killed
 *      "signal": 9,                 // present when the process was killed by a signal
 *      "startedAt": "2026-12-04T18:00:00.123Z", "finishedAt": "...",   // UTC, RFC 3339; each when known
 *      "reason": "...",             // for "unknown" (and optional otherwise): what the plugin could not tell
 *      "logPath": "/var/lib/...",   // optional: the file holding the instance's stdout and stderr
 *      ...}                         // plugin-specific fields are allowed; hosts ignore the ones they do not know
 *   "created": set up but its process not started yet (or still starting). "running": the process runs.
 *   "exited": it ended; exitCode says how. An exit that happened while the host was down is reported the same
 *   way the next time the host asks: a plugin records exit codes without the host (a per-instance monitor).
 *   "unknown": the plugin has the instance but cannot tell its state (the runtime's state is unreadable, the
 *   monitor died before recording the exit); "reason" says why. The host treats it as not running.
 *
 *  start   Start an instance from a spec; answers its state object (normally "running" with its pid).
 *          {"id", "rootfs": path of a directory or a tarball (.tar, .tar.gz, .tgz) on the node,
 *           "command": "/bin/httpd", "args": ["-f", "-p", "80"] (optional), "env": {"NAME": "value"}
 *           (optional), "workingDir": "/" (optional), "hostname" (optional),
 *           "resources": {"cpuMillis": 500, "memoryBytes": 67108864, "pids": 64} (optional, each optional; a
 *           negative or zero value is BERTH_INVALID_ARGUMENT naming it),
 *           "rootfsReadonly": false (optional: mount the rootfs read-only),
 *           "netns": "/run/netns/NAME" (optional: join that network namespace; absent: a new, empty one),
 *           "mounts": [{"source": "/host/path", "target": "/in/instance", "readonly": false}] (optional; bind
 *           mounts; source must exist)}
 *          Idempotent: when the id exists with the same spec, answers its current state (whatever it is:
 *          start never restarts an exited instance; the host removes it and starts it again for a restart).
 *          The id with a different spec: BERTH_ALREADY_EXISTS. A spec that cannot run (rootfs missing,
 *          command not found in the rootfs, a mount source missing) is BERTH_INVALID_ARGUMENT or
 *          BERTH_FAILED_PRECONDITION with the reason, and leaves nothing behind (no instance, no cgroup).
 *  stop    {"id", "graceSeconds": 10 (optional, >= 0, default 10)}: signal the instance to stop (SIGTERM),
 *          wait up to the grace period, then kill it (SIGKILL); answers the state object, "exited" with the
 *          exit code. Idempotent: stopping an exited instance answers its state. An unknown id is BERTH_OK
 *          with {"id", "state": "unknown", "reason": "no such instance"} (like CNI DEL: teardown never fails
 *          for lack of something to tear down). Blocks for at most the grace period plus a few seconds.
 *  state   {"id"}: the state object. An id the plugin does not have: BERTH_NOT_FOUND.
 *  list    {}: {"instances": [state object, ...]}, every instance this plugin instance has on the node
 *          (running or not, until removed), in id order. This is reattach: after the host restarts it calls
 *          list, adopts the ones it expects and stops + removes the others.
 *  remove  {"id", "force": false (optional)}: delete the instance and everything the plugin made for it
 *          (container, cgroup, bundle, logs). A running instance is BERTH_FAILED_PRECONDITION unless "force"
 *          (then it is killed first). An unknown id is BERTH_OK.
 *
 *  exec    (optional) {"id", "command": "/bin/cat", "args": [...], "env": {...}, "timeoutSeconds": 30 (optional,
 *          1..3600)}: run a command inside the running instance (its namespaces and cgroup), stdin empty, and
 *          answer {"exitCode": N, "output": "stdout and stderr interleaved", "truncated": false} once it ends.
 *          "output" keeps at most the first 1 MiB (then "truncated": true); bytes that are not UTF-8 become '?'.
 *          When the timeout passes, the command is signalled (SIGTERM, then SIGKILL) and exitCode is 124. An
 *          instance that is not running: BERTH_FAILED_PRECONDITION; an unknown id: BERTH_NOT_FOUND. Not idempotent
 *          (it runs the command each time). NULL: the host offers no `berth exec` for this runtime.
 *
 *  Threads: operations on different ids may run concurrently when the descriptor says
 *  BERTH_THREADS_CONCURRENT; the host never runs two operations on the same id at once.
 */
typedef struct berth_runtime_ops {
    uint32_t struct_size;
    berth_json_op start;
    berth_json_op stop;
    berth_json_op state;
    berth_json_op list;
    berth_json_op remove;
    berth_json_op exec; /* optional */
} berth_runtime_ops;

/* ------------------------------------------------------------------------------------------------------ */
/* The descriptor                                                                                           */
/* ------------------------------------------------------------------------------------------------------ */

/**
 * What a plugin is. Returned by berth_plugin_entry_v1 as a pointer to constant, static storage that stays
 * valid for the life of the process (the host never unloads a plugin).
 */
typedef struct berth_plugin_descriptor {
    uint32_t struct_size;     /**< sizeof(berth_plugin_descriptor) as compiled by the plugin */
    uint16_t abi_major;       /**< BERTH_ABI_MAJOR */
    uint16_t abi_minor;       /**< BERTH_ABI_MINOR */
    const char *name;         /**< short name, [a-z0-9-], at most 63 bytes */
    const char *version;      /**< the plugin's own version, e.g. "1.2.0" */
    const char *description;  /**< one line */
    uint32_t kinds;           /**< BERTH_KIND_* bit set; every kind set must have its ops table */
    uint32_t thread_contract; /**< BERTH_THREADS_SERIAL or BERTH_THREADS_CONCURRENT */
    /**
     * JSON Schema (draft 2020-12 subset: type, properties, required, additionalProperties, items, enum,
     * minimum, maximum, minLength, maxLength, minItems, maxItems, pattern) for the plugin's configuration.
     * The host validates the configuration against it before create() ever sees it. NULL = any object.
     */
    const char *config_schema;

    /**
     * Create an instance. `host` lives until destroy() returns. `config` is the validated configuration
     * (JSON object, borrowed). Store the instance in *instance_out (it may be any pointer, even NULL).
     * Runs inside a transaction: kv_* may be used to read or initialise state.
     * On failure return an error status and a message in `err`; destroy() is then not called.
     * Required.
     */
    berth_status (*create)(const berth_host_services *host, const char *config, size_t config_len,
                           void **instance_out, char *err, size_t err_cap);

    /** Destroy an instance. No call into it is in flight or will follow. Required. */
    void (*destroy)(void *instance);

    /**
     * Apply a new (validated) configuration to a live instance. Optional: when NULL the host creates a new
     * instance with the new configuration and destroys the old one once it has drained.
     */
    berth_status (*reconfigure)(void *instance, const char *config, size_t config_len, char *err, size_t err_cap);

    /** Per-kind tables; each must be non-NULL exactly when its bit is set in `kinds`. */
    const berth_network_ops *network;
    const berth_storage_ops *storage;
    const berth_scheduler_ops *scheduler;
    const berth_discovery_ops *discovery;

    /**
     * Optional generic call used by tools and benchmarks ("echo", "info"): any JSON in, JSON out. NULL when
     * the plugin offers none.
     */
    berth_status (*call)(void *instance, const char *method, const char *req, size_t req_len,
                         const berth_sink *out, char *err, size_t err_cap);

    /* ---- ABI 1.3 (reads NULL for plugins built against 1.0-1.2: beyond their struct_size) ---- */

    /** The runtime kind's table; non-NULL exactly when BERTH_KIND_RUNTIME is set in `kinds`. */
    const berth_runtime_ops *runtime;
} berth_plugin_descriptor;

/**
 * The one exported entry point. Called once per load with the host's ABI version; returns the descriptor,
 * or NULL to refuse this host (for instance when host_major is not one the plugin supports). Must not
 * allocate, start threads, or call back into the host. Thread-safe: may be called more than once.
 */
const berth_plugin_descriptor *berth_plugin_entry_v1(uint16_t host_major, uint16_t host_minor);

/** Helper for C plugins: write a formatted error message into err (NUL-terminated, truncated). */
#define BERTH_SET_ERR(err, cap, ...)                                                                         \
    do {                                                                                                     \
        if ((err) && (cap) > 0) snprintf((err), (cap), __VA_ARGS__);                                         \
    } while (0)

/** Helper for C plugins: write a NUL-terminated string to a sink. */
static inline berth_status berth_sink_puts(const berth_sink *s, const char *str) {
    size_t n = 0;
    while (str[n]) n++;
    return s->write(s->ctx, str, n);
}

/** ABI 1.0 sizes: the host refuses plugin structs smaller than these. */
/* Frozen: computed from the last field that ABI 1.0 defines, so later minors can grow the structs. */
#define BERTH_DESCRIPTOR_V1_0_SIZE ((uint32_t)(offsetof(berth_plugin_descriptor, call) + sizeof(void *)))
#define BERTH_NETWORK_OPS_V1_0_SIZE ((uint32_t)(offsetof(berth_network_ops, admin) + sizeof(void *)))
#define BERTH_STORAGE_OPS_V1_0_SIZE ((uint32_t)(offsetof(berth_storage_ops, validate_capabilities) + sizeof(void *)))
#define BERTH_SCHEDULER_OPS_V1_0_SIZE ((uint32_t)(offsetof(berth_scheduler_ops, bind) + sizeof(void *)))
#define BERTH_DISCOVERY_OPS_V1_0_SIZE ((uint32_t)(offsetof(berth_discovery_ops, resync) + sizeof(void *)))
#define BERTH_HOST_SERVICES_V1_0_SIZE ((uint32_t)(offsetof(berth_host_services, emit_event) + sizeof(void *)))
/** ABI 1.3: the smallest runtime table the host accepts (the kind first appeared in 1.3). */
#define BERTH_RUNTIME_OPS_V1_3_SIZE ((uint32_t)(offsetof(berth_runtime_ops, remove) + sizeof(void *)))

#ifdef __cplusplus
}
#endif
#endif /* BERTH_PLUGIN_H */
