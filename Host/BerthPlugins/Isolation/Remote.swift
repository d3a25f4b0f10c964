// Process isolation (`"isolation": "process"`): the plugin runs in a `berth-plugin-runner` child process and the
// daemon talks to it over a socket pair. The rest of the host cannot tell the difference: the runner answers a
// DESCRIBE with the plugin's descriptor metadata, and this file SYNTHESISES a `berth_plugin_descriptor` (plus
// ops tables) whose function pointers are C trampolines forwarding each call over the socket. That descriptor
// goes through the normal `Loader.validate` and `Loader.instantiate`, so configuration validation, the
// PluginInstance call path (serialisation, statistics, error buffer, output limit, JSON validation) and the
// transactions are the very same code as in process.
//
// While a trampoline waits for the RESULT of a call it serves the runner's host-service requests (log, kv_*,
// emit_event) by calling the real host services table of the instance: the trampoline runs inside
// `PluginInstance.invoke` on the caller's thread (the executor thread for every transactional operation), so
// the key-value operations act on the current transaction exactly as they do in process.
//
// Supervision, per instance: a crash (EOF on the socket) fails the call in flight with BERTH_UNAVAILABLE and a
// message naming the plugin and the signal; the runner is restarted on the next call (with backoff) and the
// instance re-created with the same configuration (instance state lives in the key-value namespace, so that is
// safe). A call that exceeds the site's `callTimeoutMs` kills the runner (SIGKILL) and fails the same way.
// Five deaths within 60 s put the instance into a failed state: calls fail fast and `failedReason` says why.
//
// The runner side (`PluginRunner.main`, the whole of berth-plugin-runner) is at the end of this file, so the
// protocol lives in one place.
//
// Wire format: frames of [u32 payload length, little endian][u8 type][payload], payloads in the compact binary
// encoding of WireWriter/WireReader below (JSON requests travel as the bytes they already are).
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

// MARK: - frames

enum FrameType: UInt8 {
    // daemon -> runner
    case describe = 1, create = 2, call = 3, destroy = 4, reply = 5
    case complete = 6  // ABI 1.2: run completion callback [u64 id][u8 committed]; answered with a RESULT
    // runner -> daemon
    case described = 16, result = 17, log = 18, kvGet = 19, kvPut = 20, kvDelete = 21, kvNext = 22, event = 23, eventAsync = 24
    // ABI 1.2
    case onComplete = 25, kvLen = 26, kvCountPrefix = 27, kvDeletePrefix = 28
}

/// Largest frame either side accepts: a sanity bound above any request (api.maxBodyBytes <= 64 MiB), output or
/// key-value value (<= 16 MiB) plus headroom.
let maxFrameBytes = 256 << 20

/// Result flags.
let resultOutputOverflowed: UInt8 = 1

struct WireError: Error, CustomStringConvertible { let description: String }

struct WireWriter {
    var bytes: [UInt8]
    init(_ type: FrameType, capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity + 5)
        bytes.append(contentsOf: [0, 0, 0, 0, type.rawValue])
    }
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func raw(_ p: UnsafeRawPointer?, _ n: Int) {
        if n > 0, let p { bytes.append(contentsOf: UnsafeRawBufferPointer(start: p, count: n)) }
    }
    mutating func raw(_ b: UnsafeRawBufferPointer) { if b.count > 0 { bytes.append(contentsOf: b) } }
    mutating func blob(_ p: UnsafeRawPointer?, _ n: Int) { u32(UInt32(n)); raw(p, n) }
    mutating func blob(_ b: UnsafeRawBufferPointer) { u32(UInt32(b.count)); raw(b) }
    /// A string that may be absent (NULL): length UInt32.max.
    mutating func string(_ s: String?) {
        guard let s else { u32(.max); return }
        u32(UInt32(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
    mutating func cstring(_ p: UnsafePointer<CChar>?) {
        guard let p else { u32(.max); return }
        blob(p, strlen(p))
    }
    /// A C string with its NUL, so the reader can use it in place.
    mutating func cstringZ(_ p: UnsafePointer<CChar>?) {
        guard let p else { u32(.max); return }
        let n = strlen(p)
        u32(UInt32(n))
        raw(p, n + 1)
    }
    /// The frame, with its length filled in.
    mutating func finish() -> [UInt8] {
        let n = UInt32(bytes.count - 5).littleEndian
        withUnsafeBytes(of: n) { for i in 0..<4 { bytes[i] = $0[i] } }
        return bytes
    }
}

struct WireReader {
    let b: UnsafeRawBufferPointer
    var pos = 0
    init(_ b: UnsafeRawBufferPointer) { self.b = b }
    mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= b.count - pos else { throw WireError(description: "truncated frame (wanted \(n) bytes at \(pos) of \(b.count))") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: b[pos..<pos + n])
    }
    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    mutating func blob() throws -> UnsafeRawBufferPointer { try take(Int(try u32())) }
    mutating func string() throws -> String? {
        let n = try u32()
        if n == .max { return nil }
        return String(decoding: try take(Int(n)), as: UTF8.self)
    }
    mutating func rest() -> UnsafeRawBufferPointer {
        defer { pos = b.count }
        return UnsafeRawBufferPointer(rebasing: b[pos...])
    }
}

/// One end of the socket pair: whole frames out (under a lock: a runner's background threads may log), whole
/// frames in (one reader), with an optional deadline.
final class FrameChannel: @unchecked Sendable {
    /// How long a reader polls without blocking before it sleeps in the kernel.
    static let spinNanos: UInt64 = 50_000
    let fd: Int32
    private var buf: UnsafeMutableRawPointer
    private var cap = 1 << 16
    private var start = 0
    private var end = 0
    private var writeLock = pthread_mutex_t()
    private(set) var closed = false

    enum Received {
        case frame(FrameType, [UInt8])
        case timeout
        /// EOF (nil) or a read/protocol error.
        case closed(String?)
    }

    init(fd: Int32) {
        self.fd = fd
        buf = malloc(cap)!
        pthread_mutex_init(&writeLock, nil)
        // Larger socket buffers mean fewer context switches for big frames (node batches, large JSON). Beyond
        // net.core.wmem_max only with CAP_NET_ADMIN (SO_SNDBUFFORCE); either way best effort.
        var size: Int32 = 1 << 20
        let len = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, len) != 0 { _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, len) }
    }

    deinit {
        close()
        free(buf)
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Sends one frame. False when the peer is gone (never raises SIGPIPE).
    @discardableResult
    func send(_ frame: [UInt8]) -> Bool {
        pthread_mutex_lock(&writeLock)
        defer { pthread_mutex_unlock(&writeLock) }
        var off = 0
        return frame.withUnsafeBytes { p in
            while off < p.count {
                let n = Glibc.send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                off += n
            }
            return true
        }
    }

    /// The next frame; waits until `deadline` (monotonic nanoseconds), or forever when nil.
    func receive(deadline: UInt64?) -> Received {
        while true {
            let have = end - start
            var need = 5
            if have >= 5 {
                let len = Int(UInt32(littleEndian: (buf + start).loadUnaligned(as: UInt32.self)))
                if len > maxFrameBytes { return .closed("frame of \(len) bytes is larger than the limit of \(maxFrameBytes)") }
                if have >= 5 + len {
                    let raw = (buf + start + 4).load(as: UInt8.self)
                    let payload = [UInt8](UnsafeRawBufferPointer(start: buf + start + 5, count: len))
                    start += 5 + len
                    if start == end { start = 0; end = 0 }
                    guard let type = FrameType(rawValue: raw) else { return .closed("unknown frame type \(raw)") }
                    return .frame(type, payload)
                }
                need = 5 + len
            }
            // Make room for the whole frame.
            if start > 0 && cap - start < need {
                memmove(buf, buf + start, have)
                start = 0
                end = have
            }
            if cap - start < need {
                var n = cap
                while n - start < need { n *= 2 }
                buf = realloc(buf, n)!
                cap = n
            }
            // Spin briefly before blocking: the answer to a call usually comes within a few microseconds, and
            // blocking would cost a cross-CPU wake-up (tens of microseconds on a small VM) on each side.
            let spinUntil = monotonicNanos() + FrameChannel.spinNanos
            var spun = 0
            while true {
                let n = recv(fd, buf + end, cap - end, Int32(MSG_DONTWAIT))
                if n > 0 { spun = n; break }
                if n == 0 { return .closed(nil) }
                if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { break }
                if monotonicNanos() >= spinUntil { break }
            }
            if spun > 0 { end += spun; continue }
            if let deadline {
                let now = monotonicNanos()
                if now >= deadline { return .timeout }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ms = Int32(min((deadline - now + 999_999) / 1_000_000, UInt64(Int32.max)))
                let r = poll(&pfd, 1, ms)
                if r < 0 {
                    if errno == EINTR { continue }
                    return .closed("poll: \(String(cString: strerror(errno)))")
                }
                if r == 0 { continue }
            }
            let n = recv(fd, buf + end, cap - end, 0)
            if n == 0 { return .closed(nil) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                // The peer died with our request unread: that is its end, not a protocol error.
                if errno == ECONNRESET { return .closed(nil) }
                return .closed("recv: \(String(cString: strerror(errno)))")
            }
            end += n
        }
    }
}

// MARK: - slots

/// Every function pointer of the ABI that a runner can serve. The raw value is the slot's wire id and its bit in
/// the DESCRIBED presence mask.
enum Slot: UInt8, CaseIterable {
    case create, destroy, reconfigure, call
    case netAdd, netDel, netCheck, netGc, netStatus, netCapacity, netAdmin
    case stCreateVolume, stDeleteVolume, stNodePublish, stNodeUnpublish, stControllerPublish, stControllerUnpublish,
         stNodeStage, stNodeUnstage, stExpandVolume, stCreateSnapshot, stDeleteSnapshot, stListSnapshots, stListVolumes,
         stGetCapacity, stValidateCapabilities
    case schedFilter, schedScore, schedReserve, schedUnreserve, schedBind
    case discEvents, discResync
    case netAddBatch  // ABI 1.1 (appended: the numbering is the wire's)

    var bit: UInt64 { 1 << UInt64(rawValue) }

    /// The operation's name in messages (as PluginInstance names it in process).
    var opName: String {
        switch self {
        case .create: return "create"
        case .destroy: return "destroy"
        case .reconfigure: return "reconfigure"
        case .call: return "call"
        case .netAdd: return "add"
        case .netDel: return "del"
        case .netCheck: return "check"
        case .netGc: return "gc"
        case .netStatus: return "status"
        case .netCapacity: return "capacity"
        case .netAddBatch: return "add_batch"
        case .netAdmin: return "admin"
        case .stCreateVolume: return "create_volume"
        case .stDeleteVolume: return "delete_volume"
        case .stNodePublish: return "node_publish"
        case .stNodeUnpublish: return "node_unpublish"
        case .stControllerPublish: return "controller_publish"
        case .stControllerUnpublish: return "controller_unpublish"
        case .stNodeStage: return "node_stage"
        case .stNodeUnstage: return "node_unstage"
        case .stExpandVolume: return "expand_volume"
        case .stCreateSnapshot: return "create_snapshot"
        case .stDeleteSnapshot: return "delete_snapshot"
        case .stListSnapshots: return "list_snapshots"
        case .stListVolumes: return "list_volumes"
        case .stGetCapacity: return "get_capacity"
        case .stValidateCapabilities: return "validate_capabilities"
        case .schedFilter: return "filter"
        case .schedScore: return "score"
        case .schedReserve: return "reserve"
        case .schedUnreserve: return "unreserve"
        case .schedBind: return "bind"
        case .discEvents: return "events"
        case .discResync: return "resync"
        }
    }

    /// The plugin's function for a JSON-shaped slot (runner side).
    func jsonOp(_ p: LoadedPlugin) -> berth_json_op? {
        let n = p.network?.pointee, s = p.storage?.pointee, sc = p.scheduler?.pointee, d = p.discovery?.pointee
        switch self {
        case .netAdd: return n?.add
        case .netDel: return n?.del
        case .netCheck: return n?.check
        case .netGc: return n?.gc
        case .netStatus: return n?.status
        case .netCapacity: return n?.capacity
        case .netAddBatch: return n?.add_batch
        case .stCreateVolume: return s?.create_volume
        case .stDeleteVolume: return s?.delete_volume
        case .stNodePublish: return s?.node_publish
        case .stNodeUnpublish: return s?.node_unpublish
        case .stControllerPublish: return s?.controller_publish
        case .stControllerUnpublish: return s?.controller_unpublish
        case .stNodeStage: return s?.node_stage
        case .stNodeUnstage: return s?.node_unstage
        case .stExpandVolume: return s?.expand_volume
        case .stCreateSnapshot: return s?.create_snapshot
        case .stDeleteSnapshot: return s?.delete_snapshot
        case .stListSnapshots: return s?.list_snapshots
        case .stListVolumes: return s?.list_volumes
        case .stGetCapacity: return s?.get_capacity
        case .stValidateCapabilities: return s?.validate_capabilities
        case .schedReserve: return sc?.reserve
        case .schedUnreserve: return sc?.unreserve
        case .schedBind: return sc?.bind
        case .discEvents: return d?.events
        case .discResync: return d?.resync
        default: return nil
        }
    }

    /// Which slots a loaded plugin fills (runner side).
    static func mask(_ p: LoadedPlugin) -> UInt64 {
        var m: UInt64 = 0
        let d = p.d.pointee
        if d.create != nil { m |= Slot.create.bit }
        if d.destroy != nil { m |= Slot.destroy.bit }
        if d.reconfigure != nil { m |= Slot.reconfigure.bit }
        if d.call != nil { m |= Slot.call.bit }
        if p.network?.pointee.admin != nil { m |= Slot.netAdmin.bit }
        if p.scheduler?.pointee.filter != nil { m |= Slot.schedFilter.bit }
        if p.scheduler?.pointee.score != nil { m |= Slot.schedScore.bit }
        for s in Slot.allCases where s.jsonOp(p) != nil { m |= s.bit }
        return m
    }
}

// MARK: - DESCRIBE

/// What a runner reports about the plugin it loaded: everything the descriptor says, minus the code.
struct Described {
    var name: String
    var version: String?
    var summary: String?
    var abiMinor: UInt16
    var kinds: UInt32
    var threads: UInt32
    var configSchema: String?
    var slots: UInt64
    var schedulerKind: String?
    var kindSchema: String?
    var copy: String
    var digest: String

    init(_ p: LoadedPlugin) {
        let d = p.d.pointee
        name = p.name
        version = d.version.map { String(cString: $0) }
        summary = d.description.map { String(cString: $0) }
        abiMinor = d.abi_minor
        kinds = d.kinds
        threads = d.thread_contract
        configSchema = d.config_schema.map { String(cString: $0) }
        slots = Slot.mask(p)
        schedulerKind = p.scheduler?.pointee.kind.map { String(cString: $0) }
        kindSchema = p.scheduler?.pointee.kind_schema.map { String(cString: $0) }
        copy = p.copy
        digest = p.sha256
    }

    func encode(into w: inout WireWriter) {
        w.u8(0)
        w.string(name); w.string(version); w.string(summary)
        w.u32(UInt32(abiMinor)); w.u32(kinds); w.u32(threads)
        w.string(configSchema); w.u64(slots); w.string(schedulerKind); w.string(kindSchema)
        w.string(copy); w.string(digest)
    }

    init(_ r: inout WireReader) throws {
        name = try r.string() ?? ""
        version = try r.string()
        summary = try r.string()
        abiMinor = UInt16(truncatingIfNeeded: try r.u32())
        kinds = try r.u32()
        threads = try r.u32()
        configSchema = try r.string()
        slots = try r.u64()
        schedulerKind = try r.string()
        kindSchema = try r.string()
        copy = try r.string() ?? ""
        digest = try r.string() ?? ""
    }

    func has(_ s: Slot) -> Bool { slots & s.bit != 0 }

    /// A descriptor whose functions are trampolines to the runner. Never freed, like a dlopen'ed plugin's.
    func synthesize() -> UnsafeMutablePointer<berth_plugin_descriptor> {
        func cstr(_ s: String?) -> UnsafePointer<CChar>? { s.map { UnsafePointer(strdup($0)!) } }
        let d = UnsafeMutablePointer<berth_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: berth_plugin_descriptor())
        d.pointee.struct_size = UInt32(MemoryLayout<berth_plugin_descriptor>.size)
        d.pointee.abi_major = UInt16(BERTH_ABI_MAJOR)
        d.pointee.abi_minor = abiMinor
        d.pointee.name = cstr(name)
        d.pointee.version = cstr(version)
        d.pointee.description = cstr(summary)
        d.pointee.kinds = kinds
        d.pointee.thread_contract = threads
        d.pointee.config_schema = cstr(configSchema)
        if has(.create) { d.pointee.create = { h, c, n, o, e, cap in RemoteConnection.createTrampoline(h, c, n, o, e, cap) } }
        if has(.destroy) { d.pointee.destroy = { RemoteConnection.destroyTrampoline($0) } }
        if has(.reconfigure) { d.pointee.reconfigure = { i, c, n, e, cap in RemoteConnection.reconfigureTrampoline(i, c, n, e, cap) } }
        if has(.call) { d.pointee.call = { i, m, r, n, o, e, c in RemoteConnection.namedTrampoline(.call, i, m, r, n, o, e, c) } }

        if kinds & UInt32(BERTH_KIND_NETWORK) != 0 {
            let t = UnsafeMutablePointer<berth_network_ops>.allocate(capacity: 1)
            t.initialize(to: berth_network_ops())
            t.pointee.struct_size = UInt32(MemoryLayout<berth_network_ops>.size)
            if has(.netAdd) { t.pointee.add = { RemoteConnection.jsonTrampoline(.netAdd, $0, $1, $2, $3, $4, $5) } }
            if has(.netDel) { t.pointee.del = { RemoteConnection.jsonTrampoline(.netDel, $0, $1, $2, $3, $4, $5) } }
            if has(.netCheck) { t.pointee.check = { RemoteConnection.jsonTrampoline(.netCheck, $0, $1, $2, $3, $4, $5) } }
            if has(.netGc) { t.pointee.gc = { RemoteConnection.jsonTrampoline(.netGc, $0, $1, $2, $3, $4, $5) } }
            if has(.netStatus) { t.pointee.status = { RemoteConnection.jsonTrampoline(.netStatus, $0, $1, $2, $3, $4, $5) } }
            if has(.netCapacity) { t.pointee.capacity = { RemoteConnection.jsonTrampoline(.netCapacity, $0, $1, $2, $3, $4, $5) } }
            if has(.netAddBatch) { t.pointee.add_batch = { RemoteConnection.jsonTrampoline(.netAddBatch, $0, $1, $2, $3, $4, $5) } }
            if has(.netAdmin) { t.pointee.admin = { i, op, r, n, o, e, c in RemoteConnection.namedTrampoline(.netAdmin, i, op, r, n, o, e, c) } }
            d.pointee.network = UnsafePointer(t)
        }
        if kinds & UInt32(BERTH_KIND_STORAGE) != 0 {
            let t = UnsafeMutablePointer<berth_storage_ops>.allocate(capacity: 1)
            t.initialize(to: berth_storage_ops())
            t.pointee.struct_size = UInt32(MemoryLayout<berth_storage_ops>.size)
            if has(.stCreateVolume) { t.pointee.create_volume = { RemoteConnection.jsonTrampoline(.stCreateVolume, $0, $1, $2, $3, $4, $5) } }
            if has(.stDeleteVolume) { t.pointee.delete_volume = { RemoteConnection.jsonTrampoline(.stDeleteVolume, $0, $1, $2, $3, $4, $5) } }
            if has(.stNodePublish) { t.pointee.node_publish = { RemoteConnection.jsonTrampoline(.stNodePublish, $0, $1, $2, $3, $4, $5) } }
            if has(.stNodeUnpublish) { t.pointee.node_unpublish = { RemoteConnection.jsonTrampoline(.stNodeUnpublish, $0, $1, $2, $3, $4, $5) } }
            if has(.stControllerPublish) { t.pointee.controller_publish = { RemoteConnection.jsonTrampoline(.stControllerPublish, $0, $1, $2, $3, $4, $5) } }
            if has(.stControllerUnpublish) { t.pointee.controller_unpublish = { RemoteConnection.jsonTrampoline(.stControllerUnpublish, $0, $1, $2, $3, $4, $5) } }
            if has(.stNodeStage) { t.pointee.node_stage = { RemoteConnection.jsonTrampoline(.stNodeStage, $0, $1, $2, $3, $4, $5) } }
            if has(.stNodeUnstage) { t.pointee.node_unstage = { RemoteConnection.jsonTrampoline(.stNodeUnstage, $0, $1, $2, $3, $4, $5) } }
            if has(.stExpandVolume) { t.pointee.expand_volume = { RemoteConnection.jsonTrampoline(.stExpandVolume, $0, $1, $2, $3, $4, $5) } }
            if has(.stCreateSnapshot) { t.pointee.create_snapshot = { RemoteConnection.jsonTrampoline(.stCreateSnapshot, $0, $1, $2, $3, $4, $5) } }
            if has(.stDeleteSnapshot) { t.pointee.delete_snapshot = { RemoteConnection.jsonTrampoline(.stDeleteSnapshot, $0, $1, $2, $3, $4, $5) } }
            if has(.stListSnapshots) { t.pointee.list_snapshots = { RemoteConnection.jsonTrampoline(.stListSnapshots, $0, $1, $2, $3, $4, $5) } }
            if has(.stListVolumes) { t.pointee.list_volumes = { RemoteConnection.jsonTrampoline(.stListVolumes, $0, $1, $2, $3, $4, $5) } }
            if has(.stGetCapacity) { t.pointee.get_capacity = { RemoteConnection.jsonTrampoline(.stGetCapacity, $0, $1, $2, $3, $4, $5) } }
            if has(.stValidateCapabilities) { t.pointee.validate_capabilities = { RemoteConnection.jsonTrampoline(.stValidateCapabilities, $0, $1, $2, $3, $4, $5) } }
            d.pointee.storage = UnsafePointer(t)
        }
        if kinds & UInt32(BERTH_KIND_SCHEDULER) != 0 {
            let t = UnsafeMutablePointer<berth_scheduler_ops>.allocate(capacity: 1)
            t.initialize(to: berth_scheduler_ops())
            t.pointee.struct_size = UInt32(MemoryLayout<berth_scheduler_ops>.size)
            t.pointee.kind = cstr(schedulerKind)
            t.pointee.kind_schema = cstr(kindSchema)
            if has(.schedFilter) { t.pointee.filter = { i, inst, b, codes, e, c in RemoteConnection.filterTrampoline(i, inst, b, codes, e, c) } }
            if has(.schedScore) { t.pointee.score = { i, inst, b, scores, e, c in RemoteConnection.scoreTrampoline(i, inst, b, scores, e, c) } }
            if has(.schedReserve) { t.pointee.reserve = { RemoteConnection.jsonTrampoline(.schedReserve, $0, $1, $2, $3, $4, $5) } }
            if has(.schedUnreserve) { t.pointee.unreserve = { RemoteConnection.jsonTrampoline(.schedUnreserve, $0, $1, $2, $3, $4, $5) } }
            if has(.schedBind) { t.pointee.bind = { RemoteConnection.jsonTrampoline(.schedBind, $0, $1, $2, $3, $4, $5) } }
            d.pointee.scheduler = UnsafePointer(t)
        }
        if kinds & UInt32(BERTH_KIND_DISCOVERY) != 0 {
            let t = UnsafeMutablePointer<berth_discovery_ops>.allocate(capacity: 1)
            t.initialize(to: berth_discovery_ops())
            t.pointee.struct_size = UInt32(MemoryLayout<berth_discovery_ops>.size)
            if has(.discEvents) { t.pointee.events = { RemoteConnection.jsonTrampoline(.discEvents, $0, $1, $2, $3, $4, $5) } }
            if has(.discResync) { t.pointee.resync = { RemoteConnection.jsonTrampoline(.discResync, $0, $1, $2, $3, $4, $5) } }
            d.pointee.discovery = UnsafePointer(t)
        }
        return d
    }
}

/// LoadError crosses the socket intact, so a plugin that fails to load in its runner is reported with exactly the
/// reason it would have had in process.
enum LoadErrorCodec {
    static func encode(_ e: LoadError, into w: inout WireWriter) {
        func put(_ tag: UInt8, _ fields: [String]) {
            w.u8(tag)
            w.u32(UInt32(fields.count))
            for f in fields { w.string(f) }
        }
        switch e.cause {
        case .fileMissing: put(1, [])
        case .unreadable(let s): put(2, [s])
        case .insecurePermissions(let s): put(3, [s])
        case let .checksumMismatch(a, b): put(4, [a, b])
        case .notSharedObject(let s): put(5, [s])
        case .entryMissing: put(6, [])
        case .refused(let minor): put(7, ["\(minor)"])
        case let .abiMajorMismatch(p, h): put(8, ["\(p)", "\(h)"])
        case let .abiMinorTooNew(p, h): put(9, ["\(p)", "\(h)"])
        case let .structTooSmall(what, size, minimum): put(10, [what, "\(size)", "\(minimum)"])
        case .badDescriptor(let s): put(11, [s])
        case let .halfFilled(kind, missing): put(12, [kind] + missing)
        case .configRejected(let errs): put(13, errs)
        case let .createFailed(status, message): put(14, [status, message])
        case .copyFailed(let s): put(15, [s])
        @unknown default: put(11, [e.reason])
        }
        w.string(e.reason)
    }

    static func decode(_ r: inout WireReader, plugin: String, file: String) throws -> LoadError {
        let tag = try r.u8()
        let n = Int(try r.u32())
        guard n <= 4096 else { throw WireError(description: "implausible load error field count \(n)") }
        var f: [String] = []
        for _ in 0..<n { f.append(try r.string() ?? "") }
        let reason = try r.string() ?? "unknown load error"
        func s(_ i: Int) -> String { i < f.count ? f[i] : "" }
        func i(_ k: Int) -> Int { Int(s(k)) ?? 0 }
        let cause: LoadError.Cause
        switch tag {
        case 1: cause = .fileMissing
        case 2: cause = .unreadable(s(0))
        case 3: cause = .insecurePermissions(s(0))
        case 4: cause = .checksumMismatch(expected: s(0), actual: s(1))
        case 5: cause = .notSharedObject(s(0))
        case 6: cause = .entryMissing
        case 7: cause = .refused(hostMinor: i(0))
        case 8: cause = .abiMajorMismatch(plugin: i(0), host: i(1))
        case 9: cause = .abiMinorTooNew(plugin: i(0), host: i(1))
        case 10: cause = .structTooSmall(what: s(0), size: i(1), minimum: i(2))
        case 12: cause = .halfFilled(kind: s(0), missing: Array(f.dropFirst()))
        case 13: cause = .configRejected(f)
        case 14: cause = .createFailed(status: s(0), message: s(1))
        case 15: cause = .copyFailed(s(0))
        case 11: cause = .badDescriptor(s(0))
        default: cause = .badDescriptor(reason)
        }
        return LoadError(plugin: plugin, file: file, cause: cause)
    }
}

/// A failure of the isolation machinery itself (runner missing, runner died while loading).
public struct IsolationError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

// MARK: - processes

/// posix_spawn from one long-lived thread. PR_SET_PDEATHSIG fires when the *thread* that created the child exits,
/// not the process; spawning from a pool or detached thread would kill runners when that thread retires.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    private var m = pthread_mutex_t()
    private var c = pthread_cond_t()
    private final class Job { let body: () -> Void; var done = false; init(_ b: @escaping () -> Void) { body = b } }
    private var jobs: [Job] = []

    private init() {
        pthread_mutex_init(&m, nil)
        pthread_cond_init(&c, nil)
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            Unmanaged<Spawner>.fromOpaque(arg!).takeUnretainedValue().loop()
            return nil
        }, Unmanaged.passRetained(self).toOpaque())
        pthread_detach(t)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&m)
            while jobs.isEmpty { pthread_cond_wait(&c, &m) }
            let j = jobs.removeFirst()
            pthread_mutex_unlock(&m)
            j.body()
            pthread_mutex_lock(&m)
            j.done = true
            pthread_cond_broadcast(&c)
            pthread_mutex_unlock(&m)
        }
    }

    func run(_ body: @escaping () -> Void) {
        let j = Job(body)
        pthread_mutex_lock(&m)
        jobs.append(j)
        pthread_cond_broadcast(&c)
        while !j.done { pthread_cond_wait(&c, &m) }
        pthread_mutex_unlock(&m)
    }
}

func signalName(_ s: Int32) -> String {
    let names: [Int32: String] = [
        SIGSEGV: "SIGSEGV", SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL",
        SIGTERM: "SIGTERM", SIGTRAP: "SIGTRAP", SIGSYS: "SIGSYS", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGINT: "SIGINT",
        SIGQUIT: "SIGQUIT", SIGHUP: "SIGHUP", SIGPIPE: "SIGPIPE", SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2", SIGALRM: "SIGALRM",
    ]
    return names[s] ?? "signal \(s)"
}

/// A running berth-plugin-runner: its pid and the daemon's end of the socket pair.
final class RunnerProcess {
    let pid: pid_t
    let channel: FrameChannel
    private var reaped = false

    init(pid: pid_t, fd: Int32) {
        self.pid = pid
        channel = FrameChannel(fd: fd)
    }

    static func spawn(_ path: String, _ args: [String]) throws -> RunnerProcess {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IsolationError(description: "socketpair: \(String(cString: strerror(errno)))")
        }
        var child = fds[1]
        if child == 3 {
            // dup2(3, 3) would leave FD_CLOEXEC set: move it out of the way first.
            child = fcntl(3, F_DUPFD_CLOEXEC, 10)
            Glibc.close(3)
        }
        var pid: pid_t = 0
        var rc: Int32 = 0
        let argv = [path] + args
        // The Swift runtime's crash backtracer would spend about half a second symbolicating a plugin's crash
        // (and print pages to the daemon's stderr) before the runner dies: off unless the operator asks for it.
        var env: [String] = []
        var i = 0
        while let e = environ[i] { env.append(String(cString: e)); i += 1 }
        if !env.contains(where: { $0.hasPrefix("SWIFT_BACKTRACE=") }) { env.append("SWIFT_BACKTRACE=enable=no") }
        Spawner.shared.run {
            var fa = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&fa)
            posix_spawn_file_actions_adddup2(&fa, child, 3)
            var attr = posix_spawnattr_t()
            posix_spawnattr_init(&attr)
            var mask = sigset_t()
            sigemptyset(&mask)
            posix_spawnattr_setsigmask(&attr, &mask)
            var dflt = sigset_t()
            sigemptyset(&dflt)
            for s in [SIGPIPE, SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&dflt, s) }
            posix_spawnattr_setsigdefault(&attr, &dflt)
            // Own process group: a ^C on the daemon's terminal does not kill runners under calls in flight;
            // they still die with the daemon (EOF, and PR_SET_PDEATHSIG).
            posix_spawnattr_setpgroup(&attr, 0)
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
            let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
            let cenv: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
            rc = cargs.withUnsafeBufferPointer { a in cenv.withUnsafeBufferPointer { e in posix_spawn(&pid, path, &fa, &attr, a.baseAddress!, e.baseAddress!) } }
            for a in cargs + cenv { free(a) }
            posix_spawn_file_actions_destroy(&fa)
            posix_spawnattr_destroy(&attr)
        }
        Glibc.close(child)
        guard rc == 0 else {
            Glibc.close(fds[0])
            throw IsolationError(description: "cannot start the plugin runner \(path): \(String(cString: strerror(rc)))")
        }
        return RunnerProcess(pid: pid, fd: fds[0])
    }

    func kill9() {
        if !reaped { kill(pid, SIGKILL) }
    }

    /// Waits for the runner to exit and returns its wait status. A runner that closed its socket but lingers is
    /// given `grace` nanoseconds, then killed.
    func reap(grace: UInt64 = 1_000_000_000) -> Int32 {
        channel.close()
        guard !reaped else { return 0 }
        var st: Int32 = 0
        let until = monotonicNanos() + grace
        while true {
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { st = 0; break }
            if monotonicNanos() > until {
                kill(pid, SIGKILL)
                while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
                break
            }
            usleep(1000)
        }
        reaped = true
        return st
    }

    deinit {
        if !reaped {
            kill(pid, SIGKILL)
            _ = reap()
        }
    }
}

/// Where berth-plugin-runner lives: $BERTH_PLUGIN_RUNNER, else next to the running executable.
public var pluginRunnerPath: String {
    if let p = getenv("BERTH_PLUGIN_RUNNER"), p.pointee != 0 { return String(cString: p) }
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    var exe = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    if let slash = exe.lastIndex(of: "/") { exe = String(exe[..<slash]) } else { exe = "." }
    return exe + "/berth-plugin-runner"
}

// MARK: - host side: the plugin and its instances

/// A plugin loaded under process isolation: the synthesized descriptor and the connections of its instances.
public final class RemotePlugin: @unchecked Sendable {
    let spec: PluginSpec
    let loader: Loader
    let runnerPath: String
    let callTimeoutMs: Int
    let outputLimit: Int
    var described: Described!
    private let lock = PthreadLock()
    /// Every instance's connection. Kept for the life of the process: instance handles point at them.
    private var connections: [RemoteConnection] = []
    /// The runner that answered DESCRIBE, handed to the first instance.
    private var spare: RunnerProcess?
    /// Staged for a dry run: the runner opens the checked file itself and makes no content-addressed copy.
    var dryRun = false

    /// Set, per instance name, while `instantiate` runs Loader.instantiate: the synthesized create() has no other
    /// way to know which plugin it creates an instance of (C function pointers carry no context); it finds the
    /// name through its host services (the instance's PluginContext).
    nonisolated(unsafe) private static var pending: [String: [RemotePlugin]] = [:]
    private static let pendingLock = PthreadLock()

    static func pending(for name: String) -> RemotePlugin? { pendingLock.with { pending[name]?.last } }

    init(spec: PluginSpec, loader: Loader, runnerPath: String, callTimeoutMs: Int, outputLimit: Int) {
        self.spec = spec
        self.loader = loader
        self.runnerPath = runnerPath
        self.callTimeoutMs = callTimeoutMs
        self.outputLimit = outputLimit
    }

    /// Loads `spec` in a berth-plugin-runner: the runner validates the file with the same Loader, and the
    /// descriptor it describes is synthesised here and validated again by `loader`. `callTimeoutMs` is the
    /// deadline of each call; the runner applies `spec`'s memory and open-file limits.
    /// `dryRun`: only stage it (a dry run of a site): no copy is made; `discardDryRun` ends the runner.
    public static func load(_ spec: PluginSpec, loader: Loader, callTimeoutMs: Int, runnerPath: String = pluginRunnerPath,
                            dryRun: Bool = false,
                            log: @escaping (berth_log_level, String) -> Void = { _, _ in }) throws -> LoadedPlugin {
        let rp = RemotePlugin(spec: spec, loader: loader, runnerPath: runnerPath, callTimeoutMs: max(1, callTimeoutMs), outputLimit: 16 << 20)
        rp.dryRun = dryRun
        let (runner, described) = try rp.startRunner(pinned: false, log: log)
        rp.described = described
        rp.spare = runner
        let raw = described.synthesize()
        let loaded: LoadedPlugin
        do {
            loaded = try loader.validate(UnsafePointer(raw), spec: spec, file: spec.path, copy: described.copy, digest: described.digest)
        } catch {
            rp.takeSpare()?.kill9()
            throw error
        }
        loaded.remote = rp
        return loaded
    }

    /// Ends the runner that staged a plugin for a dry run (it never gets an instance).
    public static func discardDryRun(_ loaded: LoadedPlugin) {
        guard let rp = loaded.remote, let r = rp.takeSpare() else { return }
        r.kill9()
        _ = r.reap()
    }

    /// Creates an instance of a plugin loaded by `load`, through the normal Loader.instantiate (configuration
    /// validated against the plugin's schema, create() inside a transaction on `executor`).
    public static func instantiate(_ loaded: LoadedPlugin, spec: PluginSpec, loader: Loader, executor: Executor?,
                                   log: @escaping (berth_log_level, String) -> Void) throws -> PluginInstance {
        guard let rp = loaded.remote else {
            throw IsolationError(description: "plugin \"\(spec.name)\" was not loaded in a runner")
        }
        pendingLock.with { pending[spec.name, default: []].append(rp) }
        defer {
            pendingLock.with {
                if let i = pending[spec.name]?.lastIndex(where: { $0 === rp }) { pending[spec.name]!.remove(at: i) }
                if pending[spec.name]?.isEmpty == true { pending[spec.name] = nil }
            }
        }
        let inst = try loader.instantiate(loaded, spec: spec, executor: executor, log: log)
        inst.outputLimit = rp.outputLimit
        return inst
    }

    /// `load` then `instantiate`.
    public static func instantiate(_ spec: PluginSpec, loader: Loader, executor: Executor?, callTimeoutMs: Int,
                                   runnerPath: String = pluginRunnerPath,
                                   log: @escaping (berth_log_level, String) -> Void) throws -> PluginInstance {
        let loaded = try load(spec, loader: loader, callTimeoutMs: callTimeoutMs, runnerPath: runnerPath, log: log)
        return try instantiate(loaded, spec: spec, loader: loader, executor: executor, log: log)
    }

    /// Spawns a runner and has it load the plugin. `pinned`: load the content-addressed copy with its digest
    /// (restarts run exactly the code that was loaded first).
    func startRunner(pinned: Bool, log: (berth_log_level, String) -> Void) throws -> (RunnerProcess, Described) {
        var args = ["--name", spec.name, "--copy-dir", loader.copyDir, "--host-minor", "\(loader.hostMinor)",
                    "--parent", "\(getpid())", "--output-limit", "\(outputLimit)"]
        if pinned, let d = described {
            args += ["--path", d.copy, "--sha256", d.digest]
        } else {
            args += ["--path", spec.path]
            if let s = spec.sha256 { args += ["--sha256", s] }
            if spec.allowInsecurePermissions { args.append("--allow-insecure-permissions") }
            if dryRun { args.append("--dry-run") }
        }
        if let m = spec.memoryLimitBytes { args += ["--memory-bytes", "\(m)"] }
        if let f = spec.openFilesLimit { args += ["--open-files", "\(f)"] }
        let r = try RunnerProcess.spawn(runnerPath, args)
        var w = WireWriter(.describe)
        r.channel.send(w.finish())
        let deadline = monotonicNanos() + UInt64(max(callTimeoutMs, 10_000)) * 1_000_000
        func died(_ why: String) -> IsolationError {
            r.kill9()
            let st = r.reap()
            let sig = st & 0x7f
            let how = sig != 0 && sig != 0x7f ? "crashed (\(signalName(sig)))" : "exited with status \((st >> 8) & 0xff)"
            return IsolationError(description: "the plugin runner \(how) while loading the plugin\(why.isEmpty ? "" : " (\(why))")")
        }
        while true {
            switch r.channel.receive(deadline: deadline) {
            case .timeout:
                r.kill9()
                _ = r.reap()
                throw IsolationError(description: "the plugin runner did not describe the plugin within \(max(callTimeoutMs, 10_000)) ms")
            case .closed(let why):
                throw died(why ?? "")
            case .frame(.log, let payload):
                if payload.count >= 1 {
                    let msg = String(decoding: payload[1...], as: UTF8.self)
                    if payload[0] == UInt8(BERTH_LOG_WARN.rawValue) { loader.warn(msg) } else { log(berth_log_level(rawValue: UInt32(payload[0])), msg) }
                }
            case .frame(.described, let payload):
                do {
                    return try payload.withUnsafeBytes { b -> (RunnerProcess, Described) in
                        var rd = WireReader(b)
                        if try rd.u8() != 0 {
                            throw try LoadErrorCodec.decode(&rd, plugin: spec.name, file: spec.path)
                        }
                        let d = try Described(&rd)
                        if let pin = described, pin.digest != d.digest {
                            throw IsolationError(description: "the restarted runner loaded different code (sha256 \(d.digest), expected \(pin.digest))")
                        }
                        return (r, d)
                    }
                } catch {
                    r.kill9()
                    _ = r.reap()
                    throw error
                }
            case .frame(let t, _):
                throw died("unexpected frame \(t) before DESCRIBED")
            }
        }
    }

    func takeSpare() -> RunnerProcess? {
        lock.lock()
        defer { lock.unlock() }
        let r = spare
        spare = nil
        return r
    }

    func adopt(_ c: RemoteConnection) {
        lock.lock()
        connections.append(c)
        lock.unlock()
    }
}

/// A small pthread mutex wrapper (Foundation-free).
final class PthreadLock: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func lock() { pthread_mutex_lock(&m) }
    func unlock() { pthread_mutex_unlock(&m) }
    func with<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// Writes `msg` into a caller-provided error buffer (NUL-terminated, truncated on a UTF-8 boundary).
func writeError(_ err: UnsafeMutablePointer<CChar>?, _ cap: Int, _ msg: String) {
    guard let err, cap > 0 else { return }
    var n = 0
    var utf8 = Array(msg.utf8)
    if utf8.count > cap - 1 {
        var cut = cap - 1
        while cut > 0 && (utf8[cut] & 0xC0) == 0x80 { cut -= 1 }
        utf8 = Array(utf8[0..<cut])
    }
    for b in utf8 { err[n] = CChar(bitPattern: b); n += 1 }
    err[n] = 0
}

/// One instance living in a runner: the socket, the supervision state, and the trampolines' implementation.
final class RemoteConnection: @unchecked Sendable {
    let plugin: RemotePlugin
    var name: String { plugin.spec.name }
    var runner: RunnerProcess?
    /// The host services of the instance (valid until destroy), and its configuration for re-creation.
    var host: UnsafePointer<berth_host_services>?
    var config: [UInt8]
    private var callLock = pthread_mutex_t()
    private let state = PthreadLock()
    private var deaths: [UInt64] = []
    private var crashes: UInt64 = 0
    private var failed: String?
    private var lastDeath = ""
    private var restartAt: UInt64 = 0
    private var destroyed = false

    static let window: UInt64 = 60_000_000_000
    static let maxDeaths = 5

    init(plugin: RemotePlugin, host: UnsafePointer<berth_host_services>?, config: [UInt8]) {
        self.plugin = plugin
        self.host = host
        self.config = config
        pthread_mutex_init(&callLock, nil)
    }

    var failedReason: String? { state.with { failed } }
    var crashCount: UInt64 { state.with { crashes } }
    var runnerPid: pid_t? { state.with { runner?.pid } }

    func log(_ level: berth_log_level, _ msg: String) {
        guard let h = host?.pointee, let f = h.log else { return }
        msg.withCString { f(h.host_ctx, level, $0, strlen($0)) }
    }

    // MARK: the call path

    enum Outcome {
        case result(berth_status, String, UInt8, [UInt8])  // status, error message, flags, output
        case failed(berth_status, String)
    }

    /// Sends one request frame and serves the runner's host-service requests until its RESULT arrives, the
    /// runner dies, or the deadline passes.
    private func exchange(_ frame: [UInt8], op: String) -> Outcome {
        guard let r = runner else { return .failed(BERTH_UNAVAILABLE, "plugin \"\(name)\" has no runner") }
        let deadline = monotonicNanos() + UInt64(plugin.callTimeoutMs) * 1_000_000
        if !r.channel.send(frame) { return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false)) }
        while true {
            switch r.channel.receive(deadline: deadline) {
            case .timeout:
                return .failed(BERTH_UNAVAILABLE, died(op, timedOut: true))
            case .closed(let why):
                return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: why))
            case .frame(.result, let payload):
                do {
                    return try payload.withUnsafeBytes { b in
                        var rd = WireReader(b)
                        let st = berth_status(rawValue: try rd.u32())
                        let msg = try rd.string() ?? ""
                        let flags = try rd.u8()
                        return .result(st, msg, flags, Array(rd.rest()))
                    }
                } catch {
                    return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: "\(error)"))
                }
            case .frame(let type, let payload):
                do { try serve(type, payload, r) } catch {
                    return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: "\(error)"))
                }
            }
        }
    }

    /// A host-service request from the runner, answered with the real services table of the instance.
    private func serve(_ type: FrameType, _ payload: [UInt8], _ r: RunnerProcess) throws {
        guard let h = host?.pointee else { throw WireError(description: "host service request before create") }
        try payload.withUnsafeBytes { b in
            var rd = WireReader(b)
            func reply(_ st: berth_status, _ extra: (inout WireWriter) -> Void = { _ in }) {
                var w = WireWriter(.reply)
                w.u32(st.rawValue)
                extra(&w)
                r.channel.send(w.finish())
            }
            func ptr(_ x: UnsafeRawBufferPointer) -> UnsafePointer<CChar>? { x.baseAddress?.assumingMemoryBound(to: CChar.self) }
            switch type {
            case .log:
                let level = berth_log_level(rawValue: UInt32(try rd.u8()))
                let msg = rd.rest()
                h.log?(h.host_ctx, level, ptr(msg), msg.count)
            case .kvGet:
                let key = rd.rest()
                let sink = OutputSink(limit: Int.max)
                let st = sink.with { out in h.kv_get?(h.host_ctx, ptr(key), key.count, out) ?? BERTH_INTERNAL }
                reply(st) { w in if st == BERTH_OK { sink.bytes.withUnsafeBytes { w.raw($0) } } }
            case .kvPut:
                let key = try rd.blob()
                let value = rd.rest()
                reply(h.kv_put?(h.host_ctx, ptr(key), key.count, ptr(value), value.count) ?? BERTH_INTERNAL)
            case .kvDelete:
                let key = rd.rest()
                reply(h.kv_delete?(h.host_ctx, ptr(key), key.count) ?? BERTH_INTERNAL)
            case .kvNext:
                let want = try rd.u8()
                let prefix = try rd.blob()
                let after = rd.rest()
                let ks = OutputSink(limit: Int.max), vs = OutputSink(limit: Int.max)
                let st = ks.with { kp in
                    vs.with { vp in
                        h.kv_next?(h.host_ctx, ptr(prefix), prefix.count, ptr(after), after.count,
                                   want & 1 != 0 ? kp : nil, want & 2 != 0 ? vp : nil) ?? BERTH_INTERNAL
                    }
                }
                reply(st) { w in
                    if st == BERTH_OK {
                        ks.bytes.withUnsafeBytes { w.blob($0) }
                        vs.bytes.withUnsafeBytes { w.raw($0) }
                    }
                }
            case .event:
                let t = try rd.string() ?? ""
                let json = rd.rest()
                let st = t.withCString { h.emit_event?(h.host_ctx, $0, ptr(json), json.count) ?? BERTH_INTERNAL }
                reply(st)
            case .onComplete, .kvLen, .kvCountPrefix, .kvDeletePrefix:
                try serveV12(type, &rd, h, r, reply)
            case .eventAsync:
                // From a plugin thread outside any call: appended in its own transaction, like in process.
                let t = try rd.string() ?? ""
                let json = Array(rd.rest())
                let hostPtr = host
                Detached.run {
                    guard let h = hostPtr?.pointee else { return }
                    _ = t.withCString { tp in json.withUnsafeBufferPointer { j in
                        h.emit_event?(h.host_ctx, tp, UnsafeRawPointer(j.baseAddress)?.assumingMemoryBound(to: CChar.self), j.count)
                    } }
                }
            default:
                throw WireError(description: "unexpected frame \(type) from the runner")
            }
        }
    }

    /// Runs the runner's completion callback `id` (registered by runner `pid`): dropped when that runner is gone
    /// (its callbacks died with it; the re-created instance recovers from its namespace).
    func fireCompletion(pid: pid_t, id: UInt64, committed: Bool) {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        guard !destroyed, let r = runner, r.pid == pid else { return }
        var w = WireWriter(.complete, capacity: 9)
        w.u64(id)
        w.u8(committed ? 1 : 0)
        if case .failed(_, let msg) = exchange(w.finish(), op: committed ? "after_commit" : "after_rollback") { log(BERTH_LOG_ERROR, msg) }
    }

    /// The runner is gone (EOF, timeout or protocol error): reap it, account for the death, and say what happened.
    private func died(_ op: String, timedOut: Bool, protocolError: String? = nil) -> String {
        guard let r = runner else { return "plugin \"\(name)\" has no runner" }
        if timedOut || protocolError != nil { r.kill9() }
        let st = r.reap()
        let sig = st & 0x7f
        let cause: String
        if timedOut {
            cause = "timed out after \(plugin.callTimeoutMs) ms during \(op)"
        } else if let p = protocolError, !(sig != 0 && sig != 0x7f && sig != SIGKILL) {
            cause = "runner broke the protocol during \(op) (\(p)) and was killed"
        } else if sig != 0 && sig != 0x7f {
            cause = "crashed (\(signalName(sig))) during \(op)"
        } else {
            cause = "runner exited with status \((st >> 8) & 0xff) during \(op)"
        }
        let now = monotonicNanos()
        var msg = "plugin \"\(name)\" \(cause)"
        state.with {
            runner = nil
            crashes += 1
            deaths = deaths.filter { now - $0 < Self.window } + [now]
            lastDeath = cause
            if deaths.count >= Self.maxDeaths {
                failed = "plugin \"\(name)\" failed: crashed \(deaths.count) times in \(Self.window / 1_000_000_000)s (last: \(cause)); `berth plugins reload \(name)` retries it"
                msg += "; \(failed!)"
            } else {
                // Backoff: the first restart is immediate, then 100 ms, 200 ms, 400 ms ... (at most 5 s).
                let k = deaths.count
                restartAt = k <= 1 ? 0 : now + min(100_000_000 << UInt64(k - 2), 5_000_000_000)
                msg += timedOut ? "; the runner was killed and restarts on the next call" : "; restarting"
            }
        }
        log(BERTH_LOG_ERROR, msg)
        return msg
    }

    /// Starts a new runner and re-creates the instance with its configuration (inside the caller's call, so the
    /// plugin's create() sees the caller's transaction). Nil on success, else the status and message to fail with.
    private func restart(before op: String) -> (berth_status, String)? {
        let now = monotonicNanos()
        let wait: UInt64 = state.with { restartAt > now ? restartAt - now : 0 }
        if wait > 0 {
            return (BERTH_UNAVAILABLE, "plugin \"\(name)\" is restarting after it \(state.with { lastDeath }); retry in \((wait + 999_999) / 1_000_000) ms")
        }
        let r: RunnerProcess
        do {
            (r, _) = try plugin.startRunner(pinned: true, log: { [weak self] l, m in self?.log(l, m) })
        } catch {
            let msg = "plugin \"\(name)\" cannot restart its runner: \(error)"
            state.with {
                deaths = deaths.filter { now - $0 < Self.window } + [now]
                restartAt = now + 1_000_000_000
                lastDeath = "could not be restarted"
                if deaths.count >= Self.maxDeaths { failed = "plugin \"\(name)\" failed: \(msg)" }
            }
            log(BERTH_LOG_ERROR, msg)
            return (BERTH_UNAVAILABLE, msg)
        }
        state.with { runner = r }
        switch exchange(createFrame(), op: "create (restart before \(op))") {
        case .failed(let st, let msg):
            return (st, msg)
        case .result(let st, let msg, _, _):
            if st != BERTH_OK {
                r.kill9()
                _ = r.reap()
                state.with { runner = nil }
                return (st, "plugin \"\(name)\" could not be re-created after a restart: \(msg)")
            }
        }
        log(BERTH_LOG_INFO, "runner restarted (pid \(r.pid))")
        return nil
    }

    private func createFrame() -> [UInt8] {
        var w = WireWriter(.create, capacity: config.count)
        config.withUnsafeBytes { w.raw($0) }
        return w.finish()
    }

    /// One call: fail fast when failed, restart when needed, exchange, and map the result.
    func perform(_ op: String, _ frame: [UInt8], _ err: UnsafeMutablePointer<CChar>?, _ cap: Int,
                 _ done: (UnsafeRawBufferPointer) -> berth_status = { _ in BERTH_OK }) -> berth_status {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        if let f = failedReason { writeError(err, cap, f); return BERTH_UNAVAILABLE }
        if destroyed { writeError(err, cap, "plugin \"\(name)\" instance was destroyed"); return BERTH_FAILED_PRECONDITION }
        if runner == nil, let (st, msg) = restart(before: op) { writeError(err, cap, msg); return st }
        switch exchange(frame, op: op) {
        case .failed(let st, let msg):
            writeError(err, cap, msg)
            return st
        case .result(let st, let msg, let flags, let out):
            if flags & resultOutputOverflowed != 0 {
                writeError(err, cap, "output exceeds the limit of \(plugin.outputLimit) bytes")
                return BERTH_INTERNAL
            }
            if st != BERTH_OK {
                writeError(err, cap, msg)
                return st
            }
            return out.withUnsafeBytes { done($0) }
        }
    }

    static func writeOutput(_ out: UnsafePointer<berth_sink>?, _ bytes: UnsafeRawBufferPointer) -> berth_status {
        guard bytes.count > 0, let out else { return BERTH_OK }
        return out.pointee.write(out.pointee.ctx, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    static func connection(_ instance: UnsafeMutableRawPointer?) -> RemoteConnection? {
        instance.map { Unmanaged<RemoteConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    // MARK: trampolines (each C function pointer of the synthesized descriptor lands in one of these)

    static func createTrampoline(_ host: UnsafePointer<berth_host_services>?, _ cfg: UnsafePointer<CChar>?, _ len: Int,
                                 _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        let ctxName = host?.pointee.host_ctx.map { Unmanaged<PluginContext>.fromOpaque($0).takeUnretainedValue().name }
        guard let ctxName, let rp = RemotePlugin.pending(for: ctxName) else {
            writeError(err, cap, "a process-isolated plugin must be instantiated through RemotePlugin.instantiate")
            return BERTH_INTERNAL
        }
        let config = cfg.map { Array(UnsafeRawBufferPointer(start: $0, count: len)) } ?? []
        let c = RemoteConnection(plugin: rp, host: host, config: config)
        if let spare = rp.takeSpare() {
            c.runner = spare
        } else {
            do { (c.runner, _) = try rp.startRunner(pinned: true, log: { l, m in c.log(l, m) }) } catch {
                writeError(err, cap, "\(error)")
                return BERTH_UNAVAILABLE
            }
        }
        let st = c.perform("create", c.createFrame(), err, cap)
        guard st == BERTH_OK else {
            if let r = c.runner { r.kill9(); _ = r.reap() }
            c.runner = nil
            return st
        }
        rp.adopt(c)
        out?.pointee = Unmanaged.passUnretained(c).toOpaque()
        return BERTH_OK
    }

    static func destroyTrampoline(_ instance: UnsafeMutableRawPointer?) {
        connection(instance)?.shutdown()
    }

    /// Destroys the instance in its runner and lets the runner exit.
    func shutdown() {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        guard !destroyed else { return }
        destroyed = true
        guard let r = runner else { return }
        var w = WireWriter(.destroy)
        if r.channel.send(w.finish()) {
            let deadline = monotonicNanos() + UInt64(plugin.callTimeoutMs) * 1_000_000
            loop: while true {
                switch r.channel.receive(deadline: deadline) {
                case .frame(.result, _), .timeout, .closed: break loop
                case .frame(let t, let p):
                    if t == .log || t == .eventAsync { try? serve(t, p, r) } else { break loop }
                }
            }
        }
        _ = r.reap(grace: 2_000_000_000)
        state.with { runner = nil }
    }

    static func reconfigureTrampoline(_ instance: UnsafeMutableRawPointer?, _ cfg: UnsafePointer<CChar>?, _ len: Int,
                                      _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        guard let c = connection(instance) else { return BERTH_INTERNAL }
        var w = WireWriter(.call, capacity: len + 1)
        w.u8(Slot.reconfigure.rawValue)
        w.raw(cfg, len)
        let st = c.perform("reconfigure", w.finish(), err, cap)
        if st == BERTH_OK { c.config = cfg.map { Array(UnsafeRawBufferPointer(start: $0, count: len)) } ?? [] }
        return st
    }

    static func jsonTrampoline(_ slot: Slot, _ instance: UnsafeMutableRawPointer?, _ req: UnsafePointer<CChar>?, _ len: Int,
                               _ out: UnsafePointer<berth_sink>?, _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        guard let c = connection(instance) else { return BERTH_INTERNAL }
        var w = WireWriter(.call, capacity: len + 1)
        w.u8(slot.rawValue)
        w.raw(req, len)
        return c.perform(slot.opName, w.finish(), err, cap) { writeOutput(out, $0) }
    }

    /// `call` (method name) and network `admin` (operation name).
    static func namedTrampoline(_ slot: Slot, _ instance: UnsafeMutableRawPointer?, _ name: UnsafePointer<CChar>?,
                                _ req: UnsafePointer<CChar>?, _ len: Int, _ out: UnsafePointer<berth_sink>?,
                                _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        guard let c = connection(instance) else { return BERTH_INTERNAL }
        var w = WireWriter(.call, capacity: len + 32)
        w.u8(slot.rawValue)
        w.cstring(name)
        w.raw(req, len)
        let n = name.map { String(cString: $0) } ?? ""
        return c.perform(slot == .call ? "call(\(n))" : n, w.finish(), err, cap) { writeOutput(out, $0) }
    }

    /// The typed batch travels serialised: the instance, then each node's fields and labels. Strings carry their
    /// NUL so the runner points into the frame instead of copying. One sizing pass, then raw stores: this is the
    /// scheduler's hot path.
    static func batchFrame(_ slot: Slot, _ inst: UnsafePointer<berth_sched_instance>?, _ batch: UnsafePointer<berth_node_batch>?) -> [UInt8] {
        var w = WireWriter(.call, capacity: 256)
        w.u8(slot.rawValue)
        let i = inst?.pointee
        w.cstringZ(i?.kind); w.cstringZ(i?.app); w.i32(i?.ordinal ?? -1); w.cstringZ(i?.spec_json); w.cstringZ(i?.state_json)
        guard let b = batch?.pointee, let nodes = b.nodes, b.count > 0 else { w.u64(0); return w.finish() }
        w.u64(UInt64(b.count))
        let stride = Int(b.node_size)
        let copy = min(stride, MemoryLayout<berth_node_view>.size)
        func view(_ k: Int) -> berth_node_view {
            var v = berth_node_view()
            if copy == MemoryLayout<berth_node_view>.size {
                v = (UnsafeRawPointer(nodes) + k * stride).loadUnaligned(as: berth_node_view.self)
            } else {
                memcpy(&v, UnsafeRawPointer(nodes) + k * stride, copy)
            }
            return v
        }
        func zlen(_ p: UnsafePointer<CChar>?) -> Int { p.map { 4 + strlen($0) + 1 } ?? 4 }
        var size = 0
        for k in 0..<b.count {
            let v = view(k)
            size += zlen(v.name) + 4 + 4 + 32 + 4
            if let labels = v.labels {
                for l in 0..<Int(v.label_count) { size += zlen(labels[l].key) + zlen(labels[l].value) }
            }
        }
        let base = w.bytes.count
        w.bytes.append(contentsOf: repeatElement(0, count: size))
        w.bytes.withUnsafeMutableBytes { raw in
            var p = raw.baseAddress! + base
            func u32(_ x: UInt32) { p.storeBytes(of: x.littleEndian, as: UInt32.self); p += 4 }
            func i64(_ x: Int64) { p.storeBytes(of: x.littleEndian, as: Int64.self); p += 8 }
            func str(_ s: UnsafePointer<CChar>?) {
                guard let s else { u32(.max); return }
                let n = strlen(s)
                u32(UInt32(n))
                memcpy(p, s, n + 1)
                p += n + 1
            }
            for k in 0..<b.count {
                let v = view(k)
                str(v.name); u32(v.index); u32(v.zone)
                i64(v.cpu_free_milli); i64(v.memory_free); i64(v.disk_free); i64(v.free_addresses)
                u32(v.labels == nil ? 0 : v.label_count)
                if let labels = v.labels {
                    for l in 0..<Int(v.label_count) { str(labels[l].key); str(labels[l].value) }
                }
            }
        }
        return w.finish()
    }

    static func filterTrampoline(_ instance: UnsafeMutableRawPointer?, _ inst: UnsafePointer<berth_sched_instance>?,
                                 _ batch: UnsafePointer<berth_node_batch>?, _ codes: UnsafeMutablePointer<UInt8>?,
                                 _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        guard let c = connection(instance) else { return BERTH_INTERNAL }
        let n = batch.map { Int($0.pointee.count) } ?? 0
        return c.perform("filter", batchFrame(.schedFilter, inst, batch), err, cap) { out in
            guard out.count == n else { writeError(err, cap, "runner returned \(out.count) filter codes for \(n) nodes"); return BERTH_INTERNAL }
            if n > 0, let codes { memcpy(codes, out.baseAddress!, n) }
            return BERTH_OK
        }
    }

    static func scoreTrampoline(_ instance: UnsafeMutableRawPointer?, _ inst: UnsafePointer<berth_sched_instance>?,
                                _ batch: UnsafePointer<berth_node_batch>?, _ scores: UnsafeMutablePointer<Int64>?,
                                _ err: UnsafeMutablePointer<CChar>?, _ cap: Int) -> berth_status {
        guard let c = connection(instance) else { return BERTH_INTERNAL }
        let n = batch.map { Int($0.pointee.count) } ?? 0
        return c.perform("score", batchFrame(.schedScore, inst, batch), err, cap) { out in
            guard out.count == n * 8 else { writeError(err, cap, "runner returned \(out.count / 8) scores for \(n) nodes"); return BERTH_INTERNAL }
            if n > 0, let scores {
                for k in 0..<n { scores[k] = Int64(littleEndian: out.loadUnaligned(fromByteOffset: k * 8, as: Int64.self)) }
            }
            return BERTH_OK
        }
    }
}

// MARK: - what the rest of the host sees

extension PluginInstance {
    /// The runner connection of a process-isolated instance.
    var connection: RemoteConnection? {
        guard plugin.remote != nil, let h = handle else { return nil }
        return Unmanaged<RemoteConnection>.fromOpaque(h).takeUnretainedValue()
    }
    /// True when the instance runs in a berth-plugin-runner.
    public var isolated: Bool { plugin.remote != nil }
    /// Why a process-isolated instance stopped serving (repeated crashes), or nil.
    public var failedReason: String? { connection?.failedReason }
    /// Deaths of the instance's runner (crashes, kills after a timeout) since it was loaded.
    public var crashCount: UInt64 { connection?.crashCount ?? 0 }
    /// The pid of the current runner, when there is one.
    public var runnerPid: Int32? { connection?.runnerPid }
}

// MARK: - runner side (berth-plugin-runner)

/// The whole of berth-plugin-runner: load one plugin with the same Loader, then serve its calls on fd 3.
public enum PluginRunner {
    final class State {
        let ch: FrameChannel
        let outputLimit: Int
        var plugin: LoadedPlugin?
        var instance: UnsafeMutableRawPointer?
        var created = false
        var inCall = false
        var callThread = pthread_self()
        var services = berth_host_services()
        /// ABI 1.2: completion callbacks registered by the plugin, by the id the daemon knows them by.
        var completions: [UInt64: (commit: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?,
                                   rollback: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?, arg: UnsafeMutableRawPointer?)] = [:]
        var nextCompletion: UInt64 = 1

        init(ch: FrameChannel, outputLimit: Int) {
            self.ch = ch
            self.outputLimit = outputLimit
        }

        /// Waits for the daemon's reply to a host-service request. The daemon gone means we are done.
        func awaitReply() -> [UInt8] {
            switch ch.receive(deadline: nil) {
            case .frame(.reply, let p): return p
            case .closed: exit(0)
            default: exit(70)
            }
        }

        var mayUseKV: Bool { inCall && pthread_equal(pthread_self(), callThread) != 0 }
    }

    nonisolated(unsafe) static var state: State!

    static func parseArgs(_ args: [String]) -> [String: String] {
        var o: [String: String] = [:]
        var i = 1
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                if a == "--allow-insecure-permissions" || a == "--dry-run" { o[a] = "1"; i += 1; continue }
                if i + 1 < args.count { o[a] = args[i + 1]; i += 2; continue }
            }
            i += 1
        }
        return o
    }

    static func setLimit(_ resource: Int32, _ value: UInt64, _ what: String) {
        var rl = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        if setrlimit(__rlimit_resource_t(UInt32(resource)), &rl) != 0 {
            let m = "berth-plugin-runner: cannot set \(what) to \(value): \(String(cString: strerror(errno)))\n"
            _ = m.withCString { write(2, $0, strlen($0)) }
        }
    }

    public static func main(_ args: [String]) -> Never {
        let o = parseArgs(args)
        guard let name = o["--name"], let path = o["--path"], let copyDir = o["--copy-dir"] else {
            let m = "usage: berth-plugin-runner --name NAME --path FILE --copy-dir DIR [--sha256 HEX] [--memory-bytes N] [--open-files N]\n" +
                "  started by berthd for plugins with \"isolation\": \"process\"; serves the plugin ABI on fd 3\n"
            _ = m.withCString { write(2, $0, strlen($0)) }
            exit(2)
        }
        // Die with the daemon, however it exits: SIGKILL when the parent goes, and exit on EOF below.
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        if let sym = dlsym(nil, "prctl") { _ = unsafeBitCast(sym, to: Prctl.self)(1 /* PR_SET_PDEATHSIG */, UInt(SIGKILL), 0, 0, 0) }
        if let p = o["--parent"].flatMap({ pid_t($0) }), getppid() != p { exit(0) }
        signal(SIGPIPE, SIG_IGN)
        // Nothing of the daemon's but fd 3 (everything it opens is close-on-exec; this is belt and braces).
        typealias CloseRange = @convention(c) (UInt32, UInt32, Int32) -> Int32
        if let sym = dlsym(nil, "close_range") { _ = unsafeBitCast(sym, to: CloseRange.self)(4, UInt32.max, 0) }
        setLimit(Int32(RLIMIT_CORE.rawValue), 0, "RLIMIT_CORE")
        if let m = o["--memory-bytes"].flatMap({ UInt64($0) }) { setLimit(Int32(RLIMIT_AS.rawValue), m, "RLIMIT_AS") }
        if let f = o["--open-files"].flatMap({ UInt64($0) }) { setLimit(Int32(RLIMIT_NOFILE.rawValue), f, "RLIMIT_NOFILE") }

        let ch = FrameChannel(fd: 3)
        let st = State(ch: ch, outputLimit: o["--output-limit"].flatMap { Int($0) } ?? (16 << 20))
        state = st
        installServices(st)

        var spec = PluginSpec(name: name, path: path)
        spec.sha256 = o["--sha256"]
        spec.allowInsecurePermissions = o["--allow-insecure-permissions"] != nil
        let hostMinor = o["--host-minor"].flatMap { UInt16($0) } ?? UInt16(BERTH_ABI_MINOR)
        let loader = Loader(copyDir: copyDir, hostMinor: hostMinor, warn: { msg in
            var w = WireWriter(.log)
            w.u8(UInt8(BERTH_LOG_WARN.rawValue))
            w.bytes.append(contentsOf: msg.utf8)
            ch.send(w.finish())
        })
        let err = UnsafeMutablePointer<CChar>.allocate(capacity: Int(BERTH_ERR_CAP))

        while true {
            switch ch.receive(deadline: nil) {
            case .closed, .timeout:
                exit(0)
            case .frame(.describe, _):
                var w = WireWriter(.described)
                do {
                    let p: LoadedPlugin
                    if let loaded = st.plugin { p = loaded } else { p = try loader.load(spec, dryRun: o["--dry-run"] != nil); st.plugin = p }
                    Described(p).encode(into: &w)
                } catch let e as LoadError {
                    w.u8(1)
                    LoadErrorCodec.encode(e, into: &w)
                } catch {
                    w.u8(1)
                    LoadErrorCodec.encode(LoadError(plugin: name, file: path, cause: .badDescriptor("\(error)")), into: &w)
                }
                ch.send(w.finish())
            case .frame(.create, let config):
                guard let p = st.plugin, !st.created else { exit(70) }
                err[0] = 0
                var handle: UnsafeMutableRawPointer?
                st.inCall = true
                st.callThread = pthread_self()
                let status = config.withUnsafeBufferPointer { b in
                    withUnsafePointer(to: &st.services) { s in
                        p.d.pointee.create!(s, UnsafeRawPointer(b.baseAddress)?.assumingMemoryBound(to: CChar.self), b.count, &handle, err, Int(BERTH_ERR_CAP))
                    }
                }
                st.inCall = false
                if status == BERTH_OK { st.instance = handle; st.created = true }
                sendResult(st, status, err, 0, nil)
            case .frame(.call, let payload):
                guard let p = st.plugin, st.created else { exit(70) }
                payload.withUnsafeBytes { b in serveCall(st, p, b, err) }
            case .frame(.complete, let payload):
                runCompletion(st, payload, err)
            case .frame(.destroy, _):
                if let p = st.plugin, st.created { p.d.pointee.destroy?(st.instance) }
                st.created = false
                sendResult(st, BERTH_OK, err, 0, nil)
                exit(0)
            case .frame:
                exit(70)
            }
        }
    }

    static func sendResult(_ st: State, _ status: berth_status, _ err: UnsafeMutablePointer<CChar>, _ flags: UInt8, _ output: UnsafeRawBufferPointer?) {
        var w = WireWriter(.result, capacity: 16 + (output?.count ?? 0))
        w.u32(status.rawValue)
        if status != BERTH_OK {
            err[Int(BERTH_ERR_CAP) - 1] = 0
            var msg = String(cString: err)
            if msg.isEmpty { msg = "(the plugin gave no message)" }
            w.string(msg)
        } else {
            w.string(nil)
        }
        w.u8(flags)
        if status == BERTH_OK, flags == 0, let output { w.raw(output) }
        st.ch.send(w.finish())
    }

    static func serveCall(_ st: State, _ p: LoadedPlugin, _ b: UnsafeRawBufferPointer, _ err: UnsafeMutablePointer<CChar>) {
        var rd = WireReader(b)
        guard let raw = try? rd.u8(), let slot = Slot(rawValue: raw) else { exit(70) }
        let cap = Int(BERTH_ERR_CAP)
        err[0] = 0
        st.inCall = true
        st.callThread = pthread_self()
        defer { st.inCall = false }
        func cptr(_ x: UnsafeRawBufferPointer) -> UnsafePointer<CChar>? { x.baseAddress?.assumingMemoryBound(to: CChar.self) }
        let sink = OutputSink(limit: st.outputLimit)
        var status = BERTH_UNIMPLEMENTED
        switch slot {
        case .call, .netAdmin:
            guard let nameBytes = try? rd.blob() else { exit(70) }
            let nm = String(decoding: nameBytes, as: UTF8.self)
            let req = rd.rest()
            if slot == .call, let fn = p.d.pointee.call {
                status = sink.with { out in nm.withCString { fn(st.instance, $0, cptr(req), req.count, out, err, cap) } }
            } else if slot == .netAdmin, let fn = p.network?.pointee.admin {
                status = sink.with { out in nm.withCString { fn(st.instance, $0, cptr(req), req.count, out, err, cap) } }
            } else {
                writeError(err, cap, "the plugin does not implement \(slot.opName)")
            }
        case .reconfigure:
            let cfg = rd.rest()
            if let fn = p.d.pointee.reconfigure { status = fn(st.instance, cptr(cfg), cfg.count, err, cap) } else {
                writeError(err, cap, "the plugin does not implement reconfigure")
            }
        case .schedFilter, .schedScore:
            do {
                try withBatch(&rd) { inst, batch, n in
                    if slot == .schedFilter {
                        var codes = [UInt8](repeating: 0, count: n)
                        if let fn = p.scheduler?.pointee.filter {
                            status = codes.withUnsafeMutableBufferPointer { fn(st.instance, inst, batch, $0.baseAddress, err, cap) }
                        }
                        if status == BERTH_OK { codes.withUnsafeBytes { sink.bytes.append(contentsOf: $0) } }
                    } else {
                        var scores = [Int64](repeating: 0, count: n)
                        if let fn = p.scheduler?.pointee.score {
                            status = scores.withUnsafeMutableBufferPointer { fn(st.instance, inst, batch, $0.baseAddress, err, cap) }
                        }
                        if status == BERTH_OK {
                            for s in scores { withUnsafeBytes(of: s.littleEndian) { sink.bytes.append(contentsOf: $0) } }
                        }
                    }
                }
            } catch { exit(70) }
        case .create, .destroy:
            exit(70)
        default:
            let req = rd.rest()
            if let fn = slot.jsonOp(p) {
                status = sink.with { out in fn(st.instance, cptr(req), req.count, out, err, cap) }
            } else {
                writeError(err, cap, "the plugin does not implement \(slot.opName)")
            }
        }
        st.inCall = false
        sink.bytes.withUnsafeBytes { sendResult(st, status, err, sink.overflowed ? resultOutputOverflowed : 0, $0) }
    }

    /// Rebuilds the typed batch from its frame; its strings point into the frame, which outlives the call.
    static func withBatch(_ rd: inout WireReader, _ body: (UnsafePointer<berth_sched_instance>, UnsafePointer<berth_node_batch>, Int) -> Void) throws {
        func cstr(_ rd: inout WireReader) throws -> UnsafePointer<CChar>? {
            let n = try rd.u32()
            if n == .max { return nil }
            let bytes = try rd.take(Int(n) + 1)
            guard bytes[Int(n)] == 0 else { throw WireError(description: "string without its NUL") }
            return bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
        }
        let kind = try cstr(&rd), app = try cstr(&rd)
        let ordinal = try rd.i32()
        let spec = try cstr(&rd), stateJSON = try cstr(&rd)
        let count = Int(try rd.u64())
        guard count <= 10_000_000 else { throw WireError(description: "implausible node count") }
        let views = UnsafeMutablePointer<berth_node_view>.allocate(capacity: max(count, 1))
        var labelArrays: [UnsafeMutablePointer<berth_label>] = []
        defer {
            views.deallocate()
            for l in labelArrays { l.deallocate() }
        }
        // The nodes: one bounds check per field group, raw loads (the scheduler's hot path).
        let rest = rd.rest()
        var p = rest.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        let end = p + rest.count
        func need(_ n: Int) throws { if end - p < n { throw WireError(description: "truncated node batch") } }
        func u32() -> UInt32 { defer { p += 4 }; return UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)) }
        func i64() -> Int64 { defer { p += 8 }; return Int64(littleEndian: p.loadUnaligned(as: Int64.self)) }
        func str() throws -> UnsafePointer<CChar>? {
            try need(4)
            let n = Int(u32())
            if n == Int(UInt32.max) { return nil }
            try need(n + 1)
            guard p.load(fromByteOffset: n, as: UInt8.self) == 0 else { throw WireError(description: "string without its NUL") }
            defer { p += n + 1 }
            return p.assumingMemoryBound(to: CChar.self)
        }
        for k in 0..<count {
            let nm = try str()
            try need(44)
            let index = u32(), zone = u32()
            let cpu = i64(), mem = i64(), disk = i64(), free = i64()
            let lc = Int(u32())
            guard lc <= 1_000_000 else { throw WireError(description: "implausible label count") }
            var labels: UnsafeMutablePointer<berth_label>? = nil
            if lc > 0 {
                let l = UnsafeMutablePointer<berth_label>.allocate(capacity: lc)
                labelArrays.append(l)
                for j in 0..<lc { l[j] = berth_label(key: try str(), value: try str()) }
                labels = l
            }
            views[k] = berth_node_view(name: nm, index: index, zone: zone, cpu_free_milli: cpu, memory_free: mem, disk_free: disk,
                                       free_addresses: free, label_count: UInt32(lc), labels: labels)
        }
        var inst = berth_sched_instance(struct_size: UInt32(MemoryLayout<berth_sched_instance>.size), kind: kind, app: app,
                                        ordinal: ordinal, spec_json: spec, state_json: stateJSON)
        var batch = berth_node_batch(struct_size: UInt32(MemoryLayout<berth_node_batch>.size),
                                     node_size: UInt32(MemoryLayout<berth_node_view>.stride), count: count, nodes: views)
        body(&inst, &batch, count)
    }

    /// The host services a plugin sees in its runner: each one a request frame to the daemon (log and events
    /// from other threads are fire-and-forget).
    static func installServices(_ st: State) {
        st.services.struct_size = UInt32(MemoryLayout<berth_host_services>.size)
        st.services.host_abi_major = UInt16(BERTH_ABI_MAJOR)
        st.services.host_abi_minor = UInt16(BERTH_ABI_MINOR)
        st.services.host_ctx = nil
        st.services.log = { _, level, msg, len in
            var w = WireWriter(.log, capacity: len + 1)
            w.u8(UInt8(truncatingIfNeeded: level.rawValue))
            w.raw(msg, len)
            PluginRunner.state.ch.send(w.finish())
        }
        st.services.kv_get = { _, key, klen, out in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            var w = WireWriter(.kvGet, capacity: klen)
            w.raw(key, klen)
            s.ch.send(w.finish())
            let reply = s.awaitReply()
            return reply.withUnsafeBytes { b in
                var rd = WireReader(b)
                guard let raw = try? rd.u32() else { return BERTH_INTERNAL }
                let status = berth_status(rawValue: raw)
                guard status == BERTH_OK, let out else { return status }
                return RemoteConnection.writeOutput(out, rd.rest())
            }
        }
        st.services.kv_put = { _, key, klen, value, vlen in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            var w = WireWriter(.kvPut, capacity: klen + vlen + 4)
            w.blob(key, klen)
            w.raw(value, vlen)
            s.ch.send(w.finish())
            return PluginRunner.replyStatus(s.awaitReply())
        }
        st.services.kv_delete = { _, key, klen in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            var w = WireWriter(.kvDelete, capacity: klen)
            w.raw(key, klen)
            s.ch.send(w.finish())
            return PluginRunner.replyStatus(s.awaitReply())
        }
        st.services.kv_next = { _, prefix, plen, after, alen, kout, vout in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            var w = WireWriter(.kvNext, capacity: plen + alen + 8)
            w.u8((kout != nil ? 1 : 0) | (vout != nil ? 2 : 0))
            w.blob(prefix, plen)
            w.raw(after, alen)
            s.ch.send(w.finish())
            let reply = s.awaitReply()
            return reply.withUnsafeBytes { b in
                var rd = WireReader(b)
                guard let raw = try? rd.u32() else { return BERTH_INTERNAL }
                let status = berth_status(rawValue: raw)
                guard status == BERTH_OK else { return status }
                guard let k = try? rd.blob() else { return BERTH_INTERNAL }
                let v = rd.rest()
                if let kout {
                    let r = RemoteConnection.writeOutput(kout, k)
                    if r != BERTH_OK { return r }
                }
                if let vout { return RemoteConnection.writeOutput(vout, v) }
                return BERTH_OK
            }
        }
        st.services.emit_event = { _, type, json, len in
            let s = PluginRunner.state!
            guard let type else { return BERTH_INVALID_ARGUMENT }
            if s.mayUseKV {
                var w = WireWriter(.event, capacity: len + 32)
                w.cstring(type)
                w.raw(json, len)
                s.ch.send(w.finish())
                return PluginRunner.replyStatus(s.awaitReply())
            }
            var w = WireWriter(.eventAsync, capacity: len + 32)
            w.cstring(type)
            w.raw(json, len)
            s.ch.send(w.finish())
            return BERTH_OK
        }
        installV12Services(st)
    }

    static func replyStatus(_ reply: [UInt8]) -> berth_status {
        reply.withUnsafeBytes { b in
            var rd = WireReader(b)
            return (try? rd.u32()).map { berth_status(rawValue: $0) } ?? BERTH_INTERNAL
        }
    }
}
