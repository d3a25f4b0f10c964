// berth-plugin-runner's calls into the plugin: a CALL frame to the plugin function of its slot (JSON operations,
// the generic call, network admin, the scheduler's typed batches), completion callbacks, and what it describes.
import BerthPluginABI
import BerthPlugins

#if canImport(Glibc)
import Glibc
#endif

extension PluginRunner {
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
            guard bytes[Int(n)] == 0 else { throw FrameError(description: "string without its NUL") }
            return bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
        }
        let kind = try cstr(&rd), app = try cstr(&rd)
        let ordinal = try rd.i32()
        let spec = try cstr(&rd), stateJSON = try cstr(&rd)
        let count = Int(try rd.u64())
        guard count <= 10_000_000 else { throw FrameError(description: "implausible node count") }
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
        func need(_ n: Int) throws { if end - p < n { throw FrameError(description: "truncated node batch") } }
        func u32() -> UInt32 { defer { p += 4 }; return UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)) }
        func i64() -> Int64 { defer { p += 8 }; return Int64(littleEndian: p.loadUnaligned(as: Int64.self)) }
        func str() throws -> UnsafePointer<CChar>? {
            try need(4)
            let n = Int(u32())
            if n == Int(UInt32.max) { return nil }
            try need(n + 1)
            guard p.load(fromByteOffset: n, as: UInt8.self) == 0 else { throw FrameError(description: "string without its NUL") }
            defer { p += n + 1 }
            return p.assumingMemoryBound(to: CChar.self)
        }
        for k in 0..<count {
            let nm = try str()
            try need(44)
            let index = u32(), zone = u32()
            let cpu = i64(), mem = i64(), disk = i64(), free = i64()
            let lc = Int(u32())
            guard lc <= 1_000_000 else { throw FrameError(description: "implausible label count") }
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

    /// COMPLETE from the daemon: run the callback (outside any call: kv_* refuse) and answer with a RESULT.
    static func runCompletion(_ st: State, _ payload: [UInt8], _ err: UnsafeMutablePointer<CChar>) {
        let parsed: (UInt64, Bool)? = payload.withUnsafeBytes { b in
            var rd = WireReader(b)
            guard let id = try? rd.u64(), let c = try? rd.u8() else { return nil }
            return (id, c != 0)
        }
        guard let parsed else { exit(70) }
        let (id, committed) = parsed
        if let e = st.completions.removeValue(forKey: id) {
            if committed { e.commit?(e.arg) } else { e.rollback?(e.arg) }
        }
        sendResult(st, BERTH_OK, err, 0, nil)
    }
}

extension Slot {
    /// The plugin's function for a JSON-shaped slot.
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

    /// Which slots a loaded plugin fills.
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

extension Described {
    /// What DESCRIBED says about a loaded plugin.
    init(_ p: LoadedPlugin) {
        let d = p.d.pointee
        self.init(name: p.name, version: d.version.map { String(cString: $0) }, summary: d.description.map { String(cString: $0) },
                  abiMinor: d.abi_minor, kinds: d.kinds, threads: d.thread_contract, configSchema: d.config_schema.map { String(cString: $0) },
                  slots: Slot.mask(p), schedulerKind: p.scheduler?.pointee.kind.map { String(cString: $0) },
                  kindSchema: p.scheduler?.pointee.kind_schema.map { String(cString: $0) }, copy: p.copy, digest: p.sha256)
    }
}
