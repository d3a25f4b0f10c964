// What the two ends of the runner protocol agree on beyond the frames: the slot ids of the ABI's functions, the
// DESCRIBED answer (a plugin's descriptor minus its code), and load errors carried across intact.
import BerthPluginABI

/// Every function pointer of the ABI that a runner can serve. The raw value is the slot's wire id and its bit in
/// the DESCRIBED presence mask.
package enum Slot: UInt8, CaseIterable {
    case create, destroy, reconfigure, call
    case netAdd, netDel, netCheck, netGc, netStatus, netCapacity, netAdmin
    case stCreateVolume, stDeleteVolume, stNodePublish, stNodeUnpublish, stControllerPublish, stControllerUnpublish,
         stNodeStage, stNodeUnstage, stExpandVolume, stCreateSnapshot, stDeleteSnapshot, stListSnapshots, stListVolumes,
         stGetCapacity, stValidateCapabilities
    case schedFilter, schedScore, schedReserve, schedUnreserve, schedBind
    case discEvents, discResync
    case netAddBatch  // ABI 1.1 (appended: the numbering is the wire's)

    package var bit: UInt64 { 1 << UInt64(rawValue) }

    /// The operation's name in messages (as PluginInstance names it in process).
    package var opName: String {
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
}

// MARK: - DESCRIBE

/// What a runner reports about the plugin it loaded: everything the descriptor says, minus the code.
package struct Described {
    package var name: String
    package var version: String?
    package var summary: String?
    package var abiMinor: UInt16
    package var kinds: UInt32
    package var threads: UInt32
    package var configSchema: String?
    package var slots: UInt64
    package var schedulerKind: String?
    package var kindSchema: String?
    package var copy: String
    package var digest: String

    package init(name: String, version: String?, summary: String?, abiMinor: UInt16, kinds: UInt32, threads: UInt32,
                 configSchema: String?, slots: UInt64, schedulerKind: String?, kindSchema: String?, copy: String, digest: String) {
        self.name = name; self.version = version; self.summary = summary
        self.abiMinor = abiMinor; self.kinds = kinds; self.threads = threads
        self.configSchema = configSchema; self.slots = slots; self.schedulerKind = schedulerKind; self.kindSchema = kindSchema
        self.copy = copy; self.digest = digest
    }

    package func encode(into w: inout WireWriter) {
        w.u8(0)
        w.string(name); w.string(version); w.string(summary)
        w.u32(UInt32(abiMinor)); w.u32(kinds); w.u32(threads)
        w.string(configSchema); w.u64(slots); w.string(schedulerKind); w.string(kindSchema)
        w.string(copy); w.string(digest)
    }

    package init(_ r: inout WireReader) throws {
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

    package func has(_ s: Slot) -> Bool { slots & s.bit != 0 }
}

/// LoadError crosses the socket intact, so a plugin that fails to load in its runner is reported with exactly the
/// reason it would have had in process.
package enum LoadErrorCodec {
    package static func encode(_ e: LoadError, into w: inout WireWriter) {
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

    /// A failure to load as DESCRIBED carries it: a LoadError as it is, anything else as a bad descriptor.
    package static func encode(_ error: any Error, plugin: String, file: String, into w: inout WireWriter) {
        encode(error as? LoadError ?? LoadError(plugin: plugin, file: file, cause: .badDescriptor("\(error)")), into: &w)
    }

    package static func decode(_ r: inout WireReader, plugin: String, file: String) throws -> LoadError {
        let tag = try r.u8()
        let n = Int(try r.u32())
        guard n <= 4096 else { throw FrameError(description: "implausible load error field count \(n)") }
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
