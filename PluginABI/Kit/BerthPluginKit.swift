// BerthPluginKit — write a Berth plugin in Swift without touching raw pointers.
//
// A plugin is a class conforming to `BerthPlugin` (and to one protocol per kind it implements: `NetworkPlugin`,
// `StoragePlugin`, `DiscoveryPlugin`, `RuntimePlugin`), exported from its shared object with one function:
//
//     @_cdecl("berth_plugin_entry_v1")
//     public func berthEntry(_ major: UInt16, _ minor: UInt16) -> UnsafeRawPointer? {
//         BerthPluginExport.entry(MyPlugin.self, info: PluginInfo(name: "my-plugin", version: "1.0.0",
//                                 description: "What it does"), hostMajor: major)
//     }
//
// The kit builds the C descriptor once, turns thrown `PluginError`s into status codes and messages, copies
// inputs into Swift values and outputs into the host's sink. It depends on nothing but the ABI header and the
// Swift standard library; a plugin may use Foundation (or anything else) itself.

import BerthPluginABI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Status codes, mirroring `berth_status` in berth_plugin.h.
public enum PluginStatus: Int32, Sendable {
    case ok = 0
    case invalidArgument = 3
    case notFound = 5
    case alreadyExists = 6
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
}

/// Throw this from any plugin function to return a status and a message to the host.
public struct PluginError: Error, CustomStringConvertible, Sendable {
    public var status: PluginStatus
    public var message: String
    public init(_ status: PluginStatus, _ message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { message }
}

/// What the plugin is: the descriptor's metadata.
public struct PluginInfo: Sendable {
    public var name: String
    public var version: String
    public var description: String
    /// JSON Schema for the plugin's configuration; nil accepts any object.
    public var configSchema: String?
    /// true when every function may be called concurrently on one instance.
    public var concurrent: Bool
    public init(name: String, version: String, description: String, configSchema: String? = nil, concurrent: Bool = false) {
        self.name = name
        self.version = version
        self.description = description
        self.configSchema = configSchema
        self.concurrent = concurrent
    }
}

/// The host's services for one instance: logging, the plugin's key-value namespace, events.
/// Key-value functions act on the transaction of the call in progress; use them only inside a call.
public final class HostServices: @unchecked Sendable {
    public enum Level: UInt32 { case debug = 0, info, warn, error }
    let raw: UnsafePointer<berth_host_services>

    init(_ raw: UnsafePointer<berth_host_services>) { self.raw = raw }

    public func log(_ level: Level, _ message: String) {
        var m = message
        m.withUTF8 { raw.pointee.log(raw.pointee.host_ctx, berth_log_level(rawValue: level.rawValue), $0.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, $0.count) }
    }

    /// The value stored at `key`, or nil.
    public func get(_ key: String) throws -> [UInt8]? {
        var k = key
        let collector = SinkCollector()
        let st = k.withUTF8 { kb in
            collector.withSink { sink in raw.pointee.kv_get(raw.pointee.host_ctx, cchar(kb), kb.count, sink) }
        }
        if st == BERTH_NOT_FOUND { return nil }
        try check(st, "kv_get(\(key))")
        return collector.bytes
    }

    /// The value stored at `key` as a UTF-8 string, or nil.
    public func getString(_ key: String) throws -> String? {
        try get(key).map { String(decoding: $0, as: UTF8.self) }
    }

    public func put(_ key: String, _ value: [UInt8]) throws {
        var k = key
        let st = k.withUTF8 { kb in
            value.withUnsafeBufferPointer { vb in
                raw.pointee.kv_put(raw.pointee.host_ctx, cchar(kb), kb.count, vb.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, vb.count)
            }
        }
        try check(st, "kv_put(\(key))")
    }

    public func put(_ key: String, _ value: String) throws { try put(key, Array(value.utf8)) }

    public func delete(_ key: String) throws {
        var k = key
        let st = k.withUTF8 { kb in raw.pointee.kv_delete(raw.pointee.host_ctx, cchar(kb), kb.count) }
        try check(st, "kv_delete(\(key))")
    }

    /// The first entry whose key starts with `prefix` and sorts strictly after `after` (O(log n)), or nil.
    public func next(prefix: String, after: String = "") throws -> (key: String, value: [UInt8])? {
        var p = prefix, a = after
        let keys = SinkCollector(), values = SinkCollector()
        let st = p.withUTF8 { pb in
            a.withUTF8 { ab in
                keys.withSink { ks in values.withSink { vs in
                    raw.pointee.kv_next(raw.pointee.host_ctx, cchar(pb), pb.count, cchar(ab), ab.count, ks, vs)
                } }
            }
        }
        if st == BERTH_NOT_FOUND { return nil }
        try check(st, "kv_next(\(prefix))")
        return (String(decoding: keys.bytes, as: UTF8.self), values.bytes)
    }

    /// Every entry under `prefix`, in key order. Costs one `next` per entry: for administrative listings.
    public func scan(prefix: String, limit: Int = Int.max) throws -> [(key: String, value: [UInt8])] {
        var out: [(key: String, value: [UInt8])] = []
        var after = ""
        while out.count < limit, let e = try next(prefix: prefix, after: after) {
            out.append(e)
            after = e.key
        }
        return out
    }

    /// Append an event to the host's log (committed with the current operation).
    public func emit(_ type: String, json: String) {
        var j = json
        _ = type.withCString { tc in
            j.withUTF8 { jb in raw.pointee.emit_event(raw.pointee.host_ctx, tc, cchar(jb), jb.count) }
        }
    }

    /// True when the host offers ABI 1.2's services (completion callbacks, kv_len, prefix count and delete).
    public var hasV12: Bool {
        raw.pointee.host_abi_minor >= 2 && Int(raw.pointee.struct_size) >= MemoryLayout<berth_host_services>.size
    }

    /// ABI 1.2: run `afterCommit` once the current operation's writes are durable, `afterRollback` once they are
    /// discarded (exactly one of them runs, once; outside any transaction, so the namespace is not available there).
    /// Defer side effects that must match the committed state here: delete data, unmount, update a cache.
    /// Only inside an operation. On a host older than 1.2 this throws UNIMPLEMENTED: do the side effect in place.
    public func onComplete(afterCommit: (() -> Void)? = nil, afterRollback: (() -> Void)? = nil) throws {
        guard hasV12, let f = raw.pointee.on_complete else { throw PluginError(.unimplemented, "the host is older than ABI 1.2: no on_complete") }
        let box = Unmanaged.passRetained(CompletionBox(afterCommit, afterRollback)).toOpaque()
        let st = f(raw.pointee.host_ctx, { a in Unmanaged<CompletionBox>.fromOpaque(a!).takeRetainedValue().commit?() },
                   { a in Unmanaged<CompletionBox>.fromOpaque(a!).takeRetainedValue().rollback?() }, box)
        if st != BERTH_OK { Unmanaged<CompletionBox>.fromOpaque(box).release() }
        try check(st, "on_complete")
    }

    /// ABI 1.2: the length of `key`'s value (nil when missing), without reading it.
    public func valueLength(_ key: String) throws -> UInt64? {
        guard hasV12, let f = raw.pointee.kv_len else { return try get(key).map { UInt64($0.count) } }
        var k = key, n: UInt64 = 0
        let st = k.withUTF8 { kb in f(raw.pointee.host_ctx, cchar(kb), kb.count, &n) }
        if st == BERTH_NOT_FOUND { return nil }
        try check(st, "kv_len(\(key))")
        return n
    }

    /// ABI 1.2: how many keys start with `prefix`.
    public func count(prefix: String) throws -> UInt64 {
        guard hasV12, let f = raw.pointee.kv_count_prefix else { return UInt64(try scan(prefix: prefix).count) }
        var p = prefix, n: UInt64 = 0
        let st = p.withUTF8 { pb in f(raw.pointee.host_ctx, cchar(pb), pb.count, &n) }
        try check(st, "kv_count_prefix(\(prefix))")
        return n
    }

    /// ABI 1.2: delete every key that starts with `prefix` (not empty); returns how many.
    @discardableResult
    public func delete(prefix: String) throws -> UInt64 {
        guard hasV12, let f = raw.pointee.kv_delete_prefix else {
            let all = try scan(prefix: prefix)
            for (k, _) in all { try delete(k) }
            return UInt64(all.count)
        }
        var p = prefix, n: UInt64 = 0
        let st = p.withUTF8 { pb in f(raw.pointee.host_ctx, cchar(pb), pb.count, &n) }
        try check(st, "kv_delete_prefix(\(prefix))")
        return n
    }

    private func check(_ st: berth_status, _ what: String) throws {
        if st != BERTH_OK {
            throw PluginError(PluginStatus(rawValue: Int32(st.rawValue)) ?? .internal, "host \(what) failed with status \(st.rawValue)")
        }
    }
}

/// The two closures of one on_complete registration; exactly one runs, and releases the box.
final class CompletionBox {
    let commit: (() -> Void)?
    let rollback: (() -> Void)?
    init(_ c: (() -> Void)?, _ r: (() -> Void)?) { commit = c; rollback = r }
}

@inline(__always) func cchar(_ b: UnsafeBufferPointer<UInt8>) -> UnsafePointer<CChar>? {
    b.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
}

/// Collects what the host writes into a sink.
final class SinkCollector {
    var bytes: [UInt8] = []
    func withSink<R>(_ body: (UnsafePointer<berth_sink>) -> R) -> R {
        var sink = berth_sink(struct_size: UInt32(MemoryLayout<berth_sink>.size), ctx: Unmanaged.passUnretained(self).toOpaque(), write: { ctx, data, len in
            let c = Unmanaged<SinkCollector>.fromOpaque(ctx!).takeUnretainedValue()
            if let data, len > 0 { c.bytes.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len)) }
            return BERTH_OK
        })
        return withUnsafePointer(to: &sink) { body($0) }
    }
}

// MARK: - Plugin protocols

/// Every plugin. `init` is create(): it runs inside a transaction, so it may read and initialise its namespace.
public protocol BerthPlugin: AnyObject {
    init(host: HostServices, config: [UInt8]) throws
    /// Apply a new configuration; throw `.unimplemented` to have the host create a new instance instead.
    func reconfigure(config: [UInt8]) throws
    /// Generic JSON call ("echo", "info", ...). Default: unimplemented.
    func call(method: String, request: [UInt8]) throws -> [UInt8]
}

extension BerthPlugin {
    public func reconfigure(config: [UInt8]) throws {
        throw PluginError(.unimplemented, "reconfigure is not supported")
    }
    public func call(method: String, request: [UInt8]) throws -> [UInt8] {
        throw PluginError(.unimplemented, "unknown method \"\(method)\"")
    }
}

/// A network plugin (CNI-style IPAM). Requests and responses are JSON documents (sdk-docs/kinds/network.md).
public protocol NetworkPlugin: BerthPlugin {
    func add(_ request: [UInt8]) throws -> [UInt8]
    func del(_ request: [UInt8]) throws -> [UInt8]
    func check(_ request: [UInt8]) throws -> [UInt8]
    func gc(_ request: [UInt8]) throws -> [UInt8]
    func status(_ request: [UInt8]) throws -> [UInt8]
    func capacity(_ request: [UInt8]) throws -> [UInt8]
    func admin(op: String, _ request: [UInt8]) throws -> [UInt8]
    /// ABI 1.1, optional: true when `addBatch` is implemented (the kit then fills add_batch in the C table; the
    /// host otherwise calls `add` once per attachment).
    static var addsInBatches: Bool { get }
    /// ABI 1.1, optional: {"network", "items": [add request...]} -> {"results": [add result...]}, all or nothing
    /// (see add_batch in berth_plugin.h).
    func addBatch(_ request: [UInt8]) throws -> [UInt8]
}

extension NetworkPlugin {
    public static var addsInBatches: Bool { false }
    public func addBatch(_ request: [UInt8]) throws -> [UInt8] { throw PluginError(.unimplemented, "add_batch is not supported") }
    public func capacity(_ request: [UInt8]) throws -> [UInt8] { throw PluginError(.unimplemented, "capacity is not supported") }
    public func admin(op: String, _ request: [UInt8]) throws -> [UInt8] { throw PluginError(.unimplemented, "unknown admin operation \"\(op)\"") }
}

/// Optional storage steps a plugin implements; the kit leaves the others NULL in the C table.
public struct StorageCapabilities: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let controllerPublish = StorageCapabilities(rawValue: 1 << 0)  // controllerPublish + controllerUnpublish
    public static let stage = StorageCapabilities(rawValue: 1 << 1)              // nodeStage + nodeUnstage
    public static let expand = StorageCapabilities(rawValue: 1 << 2)
    public static let snapshots = StorageCapabilities(rawValue: 1 << 3)          // create/delete/list snapshots
    public static let listVolumes = StorageCapabilities(rawValue: 1 << 4)
    public static let capacity = StorageCapabilities(rawValue: 1 << 5)
    public static let validateCapabilities = StorageCapabilities(rawValue: 1 << 6)
}

/// A storage plugin (CSI-style volumes). Declare the optional steps you implement in `capabilities`;
/// the defaults of the optional functions answer UNIMPLEMENTED.
public protocol StoragePlugin: BerthPlugin {
    static var capabilities: StorageCapabilities { get }
    func createVolume(_ request: [UInt8]) throws -> [UInt8]
    func deleteVolume(_ request: [UInt8]) throws -> [UInt8]
    func nodePublish(_ request: [UInt8]) throws -> [UInt8]
    func nodeUnpublish(_ request: [UInt8]) throws -> [UInt8]
    func controllerPublish(_ request: [UInt8]) throws -> [UInt8]
    func controllerUnpublish(_ request: [UInt8]) throws -> [UInt8]
    func nodeStage(_ request: [UInt8]) throws -> [UInt8]
    func nodeUnstage(_ request: [UInt8]) throws -> [UInt8]
    func expandVolume(_ request: [UInt8]) throws -> [UInt8]
    func createSnapshot(_ request: [UInt8]) throws -> [UInt8]
    func deleteSnapshot(_ request: [UInt8]) throws -> [UInt8]
    func listSnapshots(_ request: [UInt8]) throws -> [UInt8]
    func listVolumes(_ request: [UInt8]) throws -> [UInt8]
    func getCapacity(_ request: [UInt8]) throws -> [UInt8]
    func validateCapabilities(_ request: [UInt8]) throws -> [UInt8]
}

extension StoragePlugin {
    public static var capabilities: StorageCapabilities { [] }
    private func unimplemented(_ op: String) -> PluginError { PluginError(.unimplemented, "\(op) is not supported by this plugin") }
    public func controllerPublish(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("controller_publish") }
    public func controllerUnpublish(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("controller_unpublish") }
    public func nodeStage(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("node_stage") }
    public func nodeUnstage(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("node_unstage") }
    public func expandVolume(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("expand_volume") }
    public func createSnapshot(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("create_snapshot") }
    public func deleteSnapshot(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("delete_snapshot") }
    public func listSnapshots(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("list_snapshots") }
    public func listVolumes(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("list_volumes") }
    public func getCapacity(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("get_capacity") }
    public func validateCapabilities(_ request: [UInt8]) throws -> [UInt8] { throw unimplemented("validate_capabilities") }
}

/// A discovery plugin: receives the event stream and full resyncs.
public protocol DiscoveryPlugin: BerthPlugin {
    func events(_ request: [UInt8]) throws -> [UInt8]
    func resync(_ request: [UInt8]) throws -> [UInt8]
}

/// A runtime plugin (ABI 1.3): runs instances on the node. Every request names its instance with "id"; every
/// operation is idempotent per id; start, stop and state answer the state object. JSON shapes, idempotency and
/// reattach rules: berth_runtime_ops in berth_plugin.h and sdk-docs/kinds/runtime.md.
public protocol RuntimePlugin: BerthPlugin {
    /// {"id", "rootfs", "command", "args", "env", "workingDir", "resources", "netns", "mounts"} -> state object.
    func start(_ request: [UInt8]) throws -> [UInt8]
    /// {"id", "graceSeconds"} -> state object (SIGTERM, then SIGKILL after the grace). Unknown ids succeed.
    func stop(_ request: [UInt8]) throws -> [UInt8]
    /// {"id"} -> state object; `.notFound` for an id the plugin does not have.
    func state(_ request: [UInt8]) throws -> [UInt8]
    /// {} -> {"instances": [state object...]}: what runs on the node, for reattach after a host restart.
    func list(_ request: [UInt8]) throws -> [UInt8]
    /// {"id", "force"} -> {}: delete the instance and all it has on the node. Unknown ids succeed.
    func remove(_ request: [UInt8]) throws -> [UInt8]
    /// Optional: true when `exec` is implemented (the kit then fills exec in the C table; NULL otherwise).
    static var executes: Bool { get }
    /// Optional: {"id", "command", "args", "env", "timeoutSeconds"} -> {"exitCode", "output", "truncated"}.
    func exec(_ request: [UInt8]) throws -> [UInt8]
}

extension RuntimePlugin {
    public static var executes: Bool { false }
    public func exec(_ request: [UInt8]) throws -> [UInt8] { throw PluginError(.unimplemented, "exec is not supported by this runtime") }
}

// MARK: - Export

/// One live instance, as the C side sees it.
final class InstanceBox {
    let plugin: any BerthPlugin
    let network: (any NetworkPlugin)?
    let storage: (any StoragePlugin)?
    let discovery: (any DiscoveryPlugin)?
    let runtime: (any RuntimePlugin)?
    let host: HostServices
    init(_ p: any BerthPlugin, host: HostServices) {
        plugin = p
        network = p as? any NetworkPlugin
        storage = p as? any StoragePlugin
        discovery = p as? any DiscoveryPlugin
        runtime = p as? any RuntimePlugin
        self.host = host
    }
}

nonisolated(unsafe) private var factory: ((HostServices, [UInt8]) throws -> any BerthPlugin)?
nonisolated(unsafe) private var builtDescriptor: UnsafeMutablePointer<berth_plugin_descriptor>?
private let exportLock: UnsafeMutablePointer<pthread_mutex_t> = {
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    pthread_mutex_init(m, nil)
    return m
}()

@inline(__always) private func box(_ p: UnsafeMutableRawPointer?) -> InstanceBox {
    Unmanaged<InstanceBox>.fromOpaque(p!).takeUnretainedValue()
}

@inline(__always) private func bytes(_ p: UnsafePointer<CChar>?, _ n: Int) -> [UInt8] {
    guard let p, n > 0 else { return [] }
    return Array(UnsafeRawBufferPointer(start: p, count: n))
}

/// Runs `body`, writes its output to the sink, and maps errors to a status and message.
@inline(__always) private func run(_ out: UnsafePointer<berth_sink>?, _ err: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                   _ body: () throws -> [UInt8]) -> berth_status {
    do {
        let result = try body()
        if let out, !result.isEmpty {
            return result.withUnsafeBufferPointer { b in
                out.pointee.write(out.pointee.ctx, UnsafeRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self), b.count)
            }
        }
        return BERTH_OK
    } catch {
        return fail(error, err, cap)
    }
}

private func fail(_ error: any Error, _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
    let (status, message): (PluginStatus, String)
    if let e = error as? PluginError { (status, message) = (e.status, e.message) } else { (status, message) = (.internal, "\(error)") }
    writeError(message, err, cap)
    return berth_status(rawValue: UInt32(bitPattern: status.rawValue))
}

private func writeError(_ message: String, _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) {
    guard let err, cap > 0 else { return }
    let u = Array(message.utf8.prefix(cap - 1))
    u.withUnsafeBufferPointer { b in
        if let base = b.baseAddress { memcpy(err, base, b.count) }
    }
    err[u.count] = 0
}

private func persistent(_ s: String?) -> UnsafePointer<CChar>? {
    guard let s else { return nil }
    return UnsafePointer(strdup(s))
}

public enum BerthPluginExport {
    /// Builds (once) and returns the plugin's descriptor; call it from `berth_plugin_entry_v1`.
    /// Returns nil when the host's major version is not 1.
    public static func entry<P: BerthPlugin>(_ type: P.Type, info: PluginInfo, hostMajor: UInt16) -> UnsafeRawPointer? {
        guard hostMajor == UInt16(BERTH_ABI_MAJOR) else { return nil }
        pthread_mutex_lock(exportLock)
        defer { pthread_mutex_unlock(exportLock) }
        if let d = builtDescriptor { return UnsafeRawPointer(d) }
        factory = { host, config in try P(host: host, config: config) }
        let d = UnsafeMutablePointer<berth_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: berth_plugin_descriptor())
        d.pointee.struct_size = UInt32(MemoryLayout<berth_plugin_descriptor>.size)
        d.pointee.abi_major = UInt16(BERTH_ABI_MAJOR)
        d.pointee.abi_minor = UInt16(BERTH_ABI_MINOR)
        d.pointee.name = persistent(info.name)
        d.pointee.version = persistent(info.version)
        d.pointee.description = persistent(info.description)
        d.pointee.config_schema = persistent(info.configSchema)
        d.pointee.thread_contract = info.concurrent ? 1 : 0
        d.pointee.create = { host, config, len, out, err, cap in
            guard let host, let make = factory else { return BERTH_INTERNAL }
            do {
                let services = HostServices(host)
                let plugin = try make(services, bytes(config, len))
                out?.pointee = Unmanaged.passRetained(InstanceBox(plugin, host: services)).toOpaque()
                return BERTH_OK
            } catch {
                return fail(error, err, cap)
            }
        }
        d.pointee.destroy = { p in
            guard let p else { return }
            Unmanaged<InstanceBox>.fromOpaque(p).release()
        }
        d.pointee.reconfigure = { p, config, len, err, cap in
            run(nil, err, cap) { try box(p).plugin.reconfigure(config: bytes(config, len)); return [] }
        }
        d.pointee.call = { p, method, req, len, out, err, cap in
            run(out, err, cap) { try box(p).plugin.call(method: String(cString: method!), request: bytes(req, len)) }
        }
        var kinds: UInt32 = 0
        if let N = P.self as? any NetworkPlugin.Type {
            kinds |= UInt32(BERTH_KIND_NETWORK)
            let ops = UnsafeMutablePointer<berth_network_ops>.allocate(capacity: 1)
            ops.initialize(to: berth_network_ops())
            ops.pointee.struct_size = UInt32(MemoryLayout<berth_network_ops>.size)
            ops.pointee.add = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.add(bytes(r, n)) } }
            ops.pointee.del = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.del(bytes(r, n)) } }
            ops.pointee.check = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.check(bytes(r, n)) } }
            ops.pointee.gc = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.gc(bytes(r, n)) } }
            ops.pointee.status = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.status(bytes(r, n)) } }
            ops.pointee.capacity = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.capacity(bytes(r, n)) } }
            ops.pointee.admin = { p, op, r, n, o, e, c in
                run(o, e, c) { try box(p).network!.admin(op: String(cString: op!), bytes(r, n)) }
            }
            if N.addsInBatches { ops.pointee.add_batch = { p, r, n, o, e, c in run(o, e, c) { try box(p).network!.addBatch(bytes(r, n)) } } }
            d.pointee.network = UnsafePointer(ops)
        }
        if let S = P.self as? any StoragePlugin.Type {
            kinds |= UInt32(BERTH_KIND_STORAGE)
            let caps = S.capabilities
            let ops = UnsafeMutablePointer<berth_storage_ops>.allocate(capacity: 1)
            ops.initialize(to: berth_storage_ops())
            ops.pointee.struct_size = UInt32(MemoryLayout<berth_storage_ops>.size)
            ops.pointee.create_volume = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.createVolume(bytes(r, n)) } }
            ops.pointee.delete_volume = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.deleteVolume(bytes(r, n)) } }
            ops.pointee.node_publish = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.nodePublish(bytes(r, n)) } }
            ops.pointee.node_unpublish = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.nodeUnpublish(bytes(r, n)) } }
            if caps.contains(.controllerPublish) {
                ops.pointee.controller_publish = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.controllerPublish(bytes(r, n)) } }
                ops.pointee.controller_unpublish = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.controllerUnpublish(bytes(r, n)) } }
            }
            if caps.contains(.stage) {
                ops.pointee.node_stage = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.nodeStage(bytes(r, n)) } }
                ops.pointee.node_unstage = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.nodeUnstage(bytes(r, n)) } }
            }
            if caps.contains(.expand) {
                ops.pointee.expand_volume = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.expandVolume(bytes(r, n)) } }
            }
            if caps.contains(.snapshots) {
                ops.pointee.create_snapshot = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.createSnapshot(bytes(r, n)) } }
                ops.pointee.delete_snapshot = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.deleteSnapshot(bytes(r, n)) } }
                ops.pointee.list_snapshots = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.listSnapshots(bytes(r, n)) } }
            }
            if caps.contains(.listVolumes) {
                ops.pointee.list_volumes = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.listVolumes(bytes(r, n)) } }
            }
            if caps.contains(.capacity) {
                ops.pointee.get_capacity = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.getCapacity(bytes(r, n)) } }
            }
            if caps.contains(.validateCapabilities) {
                ops.pointee.validate_capabilities = { p, r, n, o, e, c in run(o, e, c) { try box(p).storage!.validateCapabilities(bytes(r, n)) } }
            }
            d.pointee.storage = UnsafePointer(ops)
        }
        if P.self is any DiscoveryPlugin.Type {
            kinds |= UInt32(BERTH_KIND_DISCOVERY)
            let ops = UnsafeMutablePointer<berth_discovery_ops>.allocate(capacity: 1)
            ops.initialize(to: berth_discovery_ops())
            ops.pointee.struct_size = UInt32(MemoryLayout<berth_discovery_ops>.size)
            ops.pointee.events = { p, r, n, o, e, c in run(o, e, c) { try box(p).discovery!.events(bytes(r, n)) } }
            ops.pointee.resync = { p, r, n, o, e, c in run(o, e, c) { try box(p).discovery!.resync(bytes(r, n)) } }
            d.pointee.discovery = UnsafePointer(ops)
        }
        if let R = P.self as? any RuntimePlugin.Type {
            kinds |= UInt32(BERTH_KIND_RUNTIME)
            let ops = UnsafeMutablePointer<berth_runtime_ops>.allocate(capacity: 1)
            ops.initialize(to: berth_runtime_ops())
            ops.pointee.struct_size = UInt32(MemoryLayout<berth_runtime_ops>.size)
            ops.pointee.start = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.start(bytes(r, n)) } }
            ops.pointee.stop = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.stop(bytes(r, n)) } }
            ops.pointee.state = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.state(bytes(r, n)) } }
            ops.pointee.list = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.list(bytes(r, n)) } }
            ops.pointee.remove = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.remove(bytes(r, n)) } }
            if R.executes { ops.pointee.exec = { p, r, n, o, e, c in run(o, e, c) { try box(p).runtime!.exec(bytes(r, n)) } } }
            d.pointee.runtime = UnsafePointer(ops)
        }
        d.pointee.kinds = kinds
        builtDescriptor = d
        return UnsafeRawPointer(d)
    }
}
