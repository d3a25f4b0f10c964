// A loaded plugin (its descriptor, read safely by struct_size), a live instance of it, the host services table
// the instance receives, and the one place where the host calls across the ABI.
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

public struct PluginKinds: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let network = PluginKinds(rawValue: 1 << 0)
    public static let storage = PluginKinds(rawValue: 1 << 1)
    public static let scheduler = PluginKinds(rawValue: 1 << 2)
    public static let discovery = PluginKinds(rawValue: 1 << 3)
    /// ABI 1.3: runs the instances placed on this node (berth_runtime_ops).
    public static let runtime = PluginKinds(rawValue: 1 << 4)
    public var names: [String] {
        var n: [String] = []
        if contains(.network) { n.append("network") }
        if contains(.storage) { n.append("storage") }
        if contains(.scheduler) { n.append("scheduler") }
        if contains(.discovery) { n.append("discovery") }
        if contains(.runtime) { n.append("runtime") }
        return n
    }
    public var description: String { names.isEmpty ? "-" : names.joined(separator: ",") }
}

/// The descriptor of a loaded shared object, copied into host memory up to the plugin's struct_size so that
/// fields a smaller (older) plugin struct lacks read as zero.
public final class LoadedPlugin: @unchecked Sendable {
    public let file: String
    public let copy: String
    public let sha256: String
    package let d: UnsafeMutablePointer<berth_plugin_descriptor>
    package let network: UnsafeMutablePointer<berth_network_ops>?
    package let storage: UnsafeMutablePointer<berth_storage_ops>?
    package let scheduler: UnsafeMutablePointer<berth_scheduler_ops>?
    package let discovery: UnsafeMutablePointer<berth_discovery_ops>?
    package let runtime: UnsafeMutablePointer<berth_runtime_ops>?
    public let name: String
    public let version: String
    public let summary: String
    public let kinds: PluginKinds
    public let concurrent: Bool
    public let abiMinor: Int
    public let configSchema: JSON?
    public let schedulerKind: String?
    public let kindSchema: JSON?
    /// Set when the plugin runs in a berth-plugin-runner (isolation "process"); see Remote.swift.
    var remote: RemotePlugin?

    init(file: String, copy: String, sha256: String, raw: UnsafePointer<berth_plugin_descriptor>, schema: JSON?, kindSchema: JSON?) {
        self.file = file
        self.copy = copy
        self.sha256 = sha256
        d = LoadedPlugin.safeCopy(raw, Int(raw.pointee.struct_size))
        network = d.pointee.network.map { LoadedPlugin.safeCopy($0, Int($0.pointee.struct_size)) }
        storage = d.pointee.storage.map { LoadedPlugin.safeCopy($0, Int($0.pointee.struct_size)) }
        scheduler = d.pointee.scheduler.map { LoadedPlugin.safeCopy($0, Int($0.pointee.struct_size)) }
        discovery = d.pointee.discovery.map { LoadedPlugin.safeCopy($0, Int($0.pointee.struct_size)) }
        // ABI 1.3: a 1.0-1.2 descriptor ends before `runtime`, which the zero-padded copy reads as NULL.
        runtime = d.pointee.runtime.map { LoadedPlugin.safeCopy($0, Int($0.pointee.struct_size)) }
        name = d.pointee.name.map { String(cString: $0) } ?? ""
        version = d.pointee.version.map { String(cString: $0) } ?? ""
        summary = d.pointee.description.map { String(cString: $0) } ?? ""
        kinds = PluginKinds(rawValue: d.pointee.kinds)
        concurrent = d.pointee.thread_contract == BERTH_THREADS_CONCURRENT
        abiMinor = Int(d.pointee.abi_minor)
        configSchema = schema
        schedulerKind = scheduler?.pointee.kind.map { String(cString: $0) }
        self.kindSchema = kindSchema
    }

    /// Whether the plugin can apply a new configuration to a live instance (it has `reconfigure`).
    public var reconfigurable: Bool { d.pointee.reconfigure != nil }

    /// Copies min(size, sizeof(T)) bytes of a plugin struct into a zeroed host struct.
    static func safeCopy<T>(_ p: UnsafePointer<T>, _ size: Int) -> UnsafeMutablePointer<T> {
        let m = UnsafeMutablePointer<T>.allocate(capacity: 1)
        memset(m, 0, MemoryLayout<T>.size)
        memcpy(m, p, min(size, MemoryLayout<T>.size))
        return m
    }

    public var info: JSON {
        ["name": .string(name), "version": .string(version), "description": .string(summary),
         "kinds": .array(kinds.names.map { .string($0) }), "threads": .string(concurrent ? "concurrent" : "serial"),
         "abi": .string("1.\(abiMinor)"), "sha256": .string(sha256), "file": .string(file),
         "schedulerKind": schedulerKind.map { .string($0) } ?? .null]
    }
}

/// Per-plugin call statistics for `berth plugins list` and /metrics.
public final class CallStats: @unchecked Sendable {
    private var m = pthread_mutex_t()
    public private(set) var calls: UInt64 = 0
    public private(set) var errors: UInt64 = 0
    public private(set) var totalNanos: UInt64 = 0
    /// Upper bounds of the latency histogram buckets, in seconds.
    public static let bounds: [Double] = [0.000_001, 0.000_01, 0.000_1, 0.001, 0.01, 0.1, 1, 10]
    public private(set) var buckets = [UInt64](repeating: 0, count: CallStats.bounds.count)
    init() { pthread_mutex_init(&m, nil) }
    func record(_ nanos: UInt64, ok: Bool) {
        pthread_mutex_lock(&m)
        calls += 1
        if !ok { errors += 1 }
        totalNanos += nanos
        let s = Double(nanos) / 1e9
        if let i = CallStats.bounds.firstIndex(where: { s <= $0 }) { buckets[i] += 1 }
        pthread_mutex_unlock(&m)
    }
    public func snapshot() -> (calls: UInt64, errors: UInt64, totalNanos: UInt64, buckets: [UInt64]) {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return (calls, errors, totalNanos, buckets)
    }
}

/// Collects a callee's output, up to a limit.
package final class OutputSink {
    package var bytes: [UInt8] = []
    let limit: Int
    package var overflowed = false
    package init(limit: Int) { self.limit = limit }

    package func with<R>(_ body: (UnsafePointer<berth_sink>) -> R) -> R {
        var sink = berth_sink(struct_size: UInt32(MemoryLayout<berth_sink>.size), ctx: Unmanaged.passUnretained(self).toOpaque(),
                              write: { ctx, data, len in
            let s = Unmanaged<OutputSink>.fromOpaque(ctx!).takeUnretainedValue()
            if s.bytes.count + len > s.limit { s.overflowed = true; return BERTH_OUT_OF_RANGE }
            if let data, len > 0 { s.bytes.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len)) }
            return BERTH_OK
        })
        return withUnsafePointer(to: &sink) { body($0) }
    }
}

/// What the host services table points at: one per instance.
final class PluginContext {
    let name: String          // the key-value namespace and the name in logs
    let executor: Executor?
    let log: (berth_log_level, String) -> Void
    /// true while the host is inside a call into this instance on the executor thread.
    var inCall = false
    /// Runs a completion callback the way calls into the instance run (a serial instance: under its lock).
    var exclusive: (() -> Void) -> Void = { $0() }
    var services = berth_host_services()

    init(name: String, executor: Executor?, log: @escaping (berth_log_level, String) -> Void) {
        self.name = name
        self.executor = executor
        self.log = log
        services.struct_size = UInt32(MemoryLayout<berth_host_services>.size)
        services.host_abi_major = UInt16(BERTH_ABI_MAJOR)
        services.host_abi_minor = UInt16(BERTH_ABI_MINOR)
        services.log = { ctx, level, msg, len in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            let text = msg.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: len), as: UTF8.self) } ?? ""
            c.log(level, text)
        }
        services.kv_get = { ctx, key, klen, out in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard klen > 0, klen <= 1024 else { return BERTH_INVALID_ARGUMENT }
            do {
                return try store.kvRead(c.name, UnsafeRawBufferPointer(start: key, count: klen)) { v in
                    guard let v else { return BERTH_NOT_FOUND }
                    guard let out else { return BERTH_OK }
                    return out.pointee.write(out.pointee.ctx, v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
                }
            } catch { return hostStatus(error) }
        }
        services.kv_put = { ctx, key, klen, val, vlen in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard klen > 0, klen <= 1024, vlen <= 16 << 20 else { return BERTH_INVALID_ARGUMENT }
            do {
                try store.kvPut(c.name, UnsafeRawBufferPointer(start: key, count: klen), UnsafeRawBufferPointer(start: val, count: vlen))
                return BERTH_OK
            } catch { return hostStatus(error) }
        }
        services.kv_delete = { ctx, key, klen in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard klen > 0, klen <= 1024 else { return BERTH_INVALID_ARGUMENT }
            do {
                try store.kvDelete(c.name, UnsafeRawBufferPointer(start: key, count: klen))
                return BERTH_OK
            } catch { return hostStatus(error) }
        }
        services.kv_next = { ctx, prefix, plen, after, alen, kout, vout in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            do {
                return try store.kvScanNext(c.name, prefix: UnsafeRawBufferPointer(start: prefix, count: plen),
                                            after: UnsafeRawBufferPointer(start: after, count: alen)) { row in
                    guard let row else { return BERTH_NOT_FOUND }
                    if let kout {
                        let k = row.key
                        let st = kout.pointee.write(kout.pointee.ctx, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count)
                        if st != BERTH_OK { return st }
                    }
                    if let vout {
                        let v = row.value
                        return vout.pointee.write(vout.pointee.ctx, v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
                    }
                    return BERTH_OK
                }
            } catch { return hostStatus(error) }
        }
        services.emit_event = { ctx, type, json, len in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let type else { return BERTH_INVALID_ARGUMENT }
            let t = String(cString: type)
            let raw = json.map { Array(UnsafeRawBufferPointer(start: $0, count: len)) } ?? []
            guard let data = try? JSON.parse(raw) else { return BERTH_INVALID_ARGUMENT }
            return c.emit(type: t, data: data) ? BERTH_OK : BERTH_INTERNAL
        }
        installV12()
        services.host_ctx = Unmanaged.passUnretained(self).toOpaque()
    }

    /// ABI 1.2: completion callbacks and the small key-value additions (Completion.swift).
    private func installV12() {
        services.on_complete = { ctx, commit, rollback, arg in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            let run = c.exclusive
            let ok = store.completions.register(commit: commit.map { f in { run { f(arg) } } }, rollback: rollback.map { f in { run { f(arg) } } })
            return ok ? BERTH_OK : BERTH_FAILED_PRECONDITION
        }
        services.kv_len = { ctx, key, klen, lenOut in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard klen > 0, klen <= 1024 else { return BERTH_INVALID_ARGUMENT }
            do {
                guard let n = try store.kvLen(c.name, UnsafeRawBufferPointer(start: key, count: klen)) else { return BERTH_NOT_FOUND }
                lenOut?.pointee = UInt64(n)
                return BERTH_OK
            } catch { return hostStatus(error) }
        }
        services.kv_count_prefix = { ctx, prefix, plen, countOut in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard plen <= 1024 else { return BERTH_INVALID_ARGUMENT }
            do {
                countOut?.pointee = UInt64(try store.kvCountPrefix(c.name, UnsafeRawBufferPointer(start: prefix, count: plen)))
                return BERTH_OK
            } catch { return hostStatus(error) }
        }
        services.kv_delete_prefix = { ctx, prefix, plen, deletedOut in
            let c = Unmanaged<PluginContext>.fromOpaque(ctx!).takeUnretainedValue()
            guard let store = c.transactionStore() else { return BERTH_FAILED_PRECONDITION }
            guard plen > 0, plen <= 1024 else { return BERTH_INVALID_ARGUMENT }
            do {
                let n = try store.kvDeletePrefix(c.name, UnsafeRawBufferPointer(start: prefix, count: plen))
                deletedOut?.pointee = UInt64(n)
                return BERTH_OK
            } catch { return hostStatus(error) }
        }
    }

    /// The store of the transaction in progress, when the caller is inside a host call into this instance.
    func transactionStore() -> (any StateStore)? {
        guard inCall, let ex = executor, ex.isExecutorThread else { return nil }
        return ex.store
    }

    func emit(type: String, data: JSON) -> Bool {
        guard let ex = executor else { return true }
        if inCall && ex.isExecutorThread {
            guard let rev = try? ex.store.appendEvent(type: type, subject: name, actor: "plugin:\(name)", data: data) else { return false }
            ex.noteEvent(rev)
            return true
        }
        let name = self.name
        Detached.run { _ = try? ex.runSync { ex.noteEvent(try ex.store.appendEvent(type: type, subject: name, actor: "plugin:\(name)", data: data)) } }
        return true
    }
}

/// A live instance of a plugin.
public final class PluginInstance: @unchecked Sendable {
    public let plugin: LoadedPlugin
    public let name: String
    let ctx: PluginContext
    var handle: UnsafeMutableRawPointer?
    public let stats = CallStats()
    /// Largest output accepted from one call.
    public var outputLimit = 16 << 20
    private var serialLock = pthread_mutex_t()
    public private(set) var destroyed = false

    init(plugin: LoadedPlugin, name: String, ctx: PluginContext) {
        self.plugin = plugin
        self.name = name
        self.ctx = ctx
        pthread_mutex_init(&serialLock, nil)
        if !plugin.concurrent {
            ctx.exclusive = { [weak self] body in
                guard let self, !self.destroyed else { return }
                pthread_mutex_lock(&self.serialLock)
                body()
                pthread_mutex_unlock(&self.serialLock)
            }
        }
    }

    /// Every call across the boundary goes through here: serialisation per the thread contract, the
    /// key-value window, timing, statistics and the error buffer.
    @inline(__always)
    func invoke(_ operation: String, _ body: (UnsafeMutablePointer<CChar>, Int) -> berth_status) throws {
        let serial = !plugin.concurrent
        if serial { pthread_mutex_lock(&serialLock) }
        // The key-value window is open only for calls on the executor thread (where transactions run); a
        // concurrent call on another thread must not open or close it under the executor's feet.
        let onExecutor = ctx.executor?.isExecutorThread ?? false
        let wasInCall = ctx.inCall
        if onExecutor {
            ctx.inCall = true
            ctx.executor?.noteCall((name, operation))
        }
        let t0 = monotonicNanos()
        // The error buffer lives on the stack: no allocation on the hot path.
        let (st, message) = withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(BERTH_ERR_CAP)) { err -> (berth_status, String?) in
            err[0] = 0
            let st = body(err.baseAddress!, err.count)
            guard st != BERTH_OK else { return (st, nil) }
            err[err.count - 1] = 0
            return (st, String(cString: err.baseAddress!))
        }
        let dt = monotonicNanos() - t0
        if onExecutor {
            ctx.inCall = wasInCall
            ctx.executor?.noteCall(nil)
        }
        if serial { pthread_mutex_unlock(&serialLock) }
        stats.record(dt, ok: st == BERTH_OK)
        if st != BERTH_OK {
            var msg = message ?? ""
            if msg.isEmpty { msg = "(the plugin gave no message)" }
            throw BerthError(plugin: name, operation: operation, status: BerthStatus(rawValue: Int32(bitPattern: st.rawValue)), message: msg)
        }
    }

    /// Calls a JSON control operation and returns its output (empty output reads as `{}`).
    public func callJSON(_ operation: String, _ fn: berth_json_op?, _ request: [UInt8]) throws -> [UInt8] {
        guard let fn else {
            throw BerthError(plugin: name, operation: operation, status: .unimplemented, message: "the plugin does not implement \(operation)")
        }
        let sink = OutputSink(limit: outputLimit)
        try checkingOutput(sink, operation) {
            try invoke(operation) { err, cap in
                sink.with { out in
                    request.withUnsafeBufferPointer { r in
                        fn(handle, UnsafeRawPointer(r.baseAddress)?.assumingMemoryBound(to: CChar.self), r.count, out, err, cap)
                    }
                }
            }
        }
        return sink.bytes
    }

    /// Output over the limit is the plugin's failure (INTERNAL), whatever status it returned after the sink refused.
    func checkingOutput(_ sink: OutputSink, _ operation: String, _ body: () throws -> Void) throws {
        do { try body() } catch let e as BerthError where sink.overflowed {
            throw BerthError(plugin: name, operation: operation, status: .internal, message: "output exceeds the limit of \(outputLimit) bytes (\(e.message))")
        }
        if sink.overflowed {
            throw BerthError(plugin: name, operation: operation, status: .internal, message: "output exceeds the limit of \(outputLimit) bytes")
        }
    }

    /// Calls a JSON operation and parses its output, refusing output that is not a JSON object.
    public func callObject(_ operation: String, _ fn: berth_json_op?, _ request: JSON) throws -> JSON {
        let out = try callJSON(operation, fn, request.bytes)
        if out.isEmpty { return .object([]) }
        let v: JSON
        do { v = try JSON.parse(out) } catch {
            // Also a NUL or bytes that are not UTF-8 in a string: ids a plugin returns are input too (Names.swift).
            throw BerthError(plugin: name, operation: operation, status: .internal, message: "the plugin returned invalid JSON (\(out.count) bytes): \(error)")
        }
        guard case .object = v else {
            throw BerthError(plugin: name, operation: operation, status: .internal, message: "the plugin returned invalid JSON (\(out.count) bytes, not an object)")
        }
        return v
    }

    /// The generic call (`descriptor.call`).
    public func call(method: String, _ request: [UInt8]) throws -> [UInt8] {
        guard let fn = plugin.d.pointee.call else {
            throw BerthError(plugin: name, operation: "call(\(method))", status: .unimplemented, message: "the plugin offers no generic call")
        }
        let sink = OutputSink(limit: outputLimit)
        try checkingOutput(sink, "call(\(method))") {
            try invoke("call(\(method))") { err, cap in
                sink.with { out in
                    method.withCString { m in
                        request.withUnsafeBufferPointer { r in
                            fn(handle, m, UnsafeRawPointer(r.baseAddress)?.assumingMemoryBound(to: CChar.self), r.count, out, err, cap)
                        }
                    }
                }
            }
        }
        return sink.bytes
    }

    public var network: UnsafeMutablePointer<berth_network_ops>? { plugin.network }
    public var storage: UnsafeMutablePointer<berth_storage_ops>? { plugin.storage }
    public var scheduler: UnsafeMutablePointer<berth_scheduler_ops>? { plugin.scheduler }
    public var discovery: UnsafeMutablePointer<berth_discovery_ops>? { plugin.discovery }
    /// The runtime table; only the typed wrapper (Kinds/RuntimePlugin.swift) reads it.
    var runtimeOps: berth_runtime_ops? { plugin.runtime?.pointee }

    /// Network admin operation by name.
    public func networkAdmin(_ op: String, _ request: JSON) throws -> JSON {
        guard let fn = plugin.network?.pointee.admin else {
            throw BerthError(plugin: name, operation: op, status: .unimplemented, message: "the plugin has no administrative operations")
        }
        let sink = OutputSink(limit: outputLimit)
        let req = request.bytes
        try checkingOutput(sink, op) {
            try invoke(op) { err, cap in
                sink.with { out in
                    op.withCString { o in
                        req.withUnsafeBufferPointer { r in
                            fn(handle, o, UnsafeRawPointer(r.baseAddress)?.assumingMemoryBound(to: CChar.self), r.count, out, err, cap)
                        }
                    }
                }
            }
        }
        if sink.bytes.isEmpty { return .object([]) }
        guard let v = try? JSON.parse(sink.bytes) else {
            throw BerthError(plugin: name, operation: op, status: .internal, message: "the plugin returned invalid JSON")
        }
        return v
    }

    /// Typed batch: filter. Returns one code per node.
    public func filter(_ inst: UnsafePointer<berth_sched_instance>, _ batch: UnsafePointer<berth_node_batch>, codes: UnsafeMutablePointer<UInt8>) throws {
        guard let fn = plugin.scheduler?.pointee.filter else { return }
        try invoke("filter") { err, cap in fn(handle, inst, batch, codes, err, cap) }
    }

    public func score(_ inst: UnsafePointer<berth_sched_instance>, _ batch: UnsafePointer<berth_node_batch>, scores: UnsafeMutablePointer<Int64>) throws {
        guard let fn = plugin.scheduler?.pointee.score else { return }
        try invoke("score") { err, cap in fn(handle, inst, batch, scores, err, cap) }
    }

    /// Destroys the instance (once). No call may be in flight.
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        if let fn = plugin.d.pointee.destroy { fn(handle) }
    }

    /// Applies a new configuration through the plugin's reconfigure, if it has one. Returns false when not.
    public func reconfigure(_ config: JSON) throws -> Bool {
        guard let fn = plugin.d.pointee.reconfigure else { return false }
        let bytes = config.bytes
        try invoke("reconfigure") { err, cap in
            bytes.withUnsafeBufferPointer { b in fn(handle, UnsafeRawPointer(b.baseAddress)?.assumingMemoryBound(to: CChar.self), b.count, err, cap) }
        }
        return true
    }
}

/// A tiny detached-thread helper (Foundation-free).
package enum Detached {
    package static func run(_ body: @escaping () -> Void) {
        final class Box { let f: () -> Void; init(_ f: @escaping () -> Void) { self.f = f } }
        var t = pthread_t()
        let arg = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&t, nil, { a in
            Unmanaged<Box>.fromOpaque(a!).takeRetainedValue().f()
            return nil
        }, arg)
        pthread_detach(t)
    }
}

/// The status a host service returns for a store failure: the store's own (UNAVAILABLE while etcd elects a leader,
/// RESOURCE_EXHAUSTED over its limits, ABORTED for a gone snapshot), INTERNAL for anything else.
func hostStatus(_ error: Error) -> berth_status {
    guard let e = error as? BerthError else { return BERTH_INTERNAL }
    return berth_status(rawValue: UInt32(bitPattern: e.status.rawValue))
}
