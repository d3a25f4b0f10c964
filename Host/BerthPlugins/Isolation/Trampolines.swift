// The daemon's stand-in for a plugin that runs in a runner: the synthesised descriptor and ops tables, whose C
// function pointers are trampolines that forward each call over the instance's socket (RemoteConnection).
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// The synthesised descriptor: what DESCRIBED said, with every function the runner serves as a C trampoline.
extension Described {
    /// A descriptor whose functions are trampolines to the runner. Never freed, like a dlopen'ed plugin's.
    func synthesize() -> UnsafeMutablePointer<berth_plugin_descriptor> {
        let d = UnsafeMutablePointer<berth_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: berth_plugin_descriptor())
        d.pointee.struct_size = UInt32(MemoryLayout<berth_plugin_descriptor>.size)
        d.pointee.abi_major = UInt16(BERTH_ABI_MAJOR)
        d.pointee.abi_minor = abiMinor
        d.pointee.name = Self.cstr(name)
        d.pointee.version = Self.cstr(version)
        d.pointee.description = Self.cstr(summary)
        d.pointee.kinds = kinds
        d.pointee.thread_contract = threads
        d.pointee.config_schema = Self.cstr(configSchema)
        if has(.create) { d.pointee.create = { h, c, n, o, e, cap in RemoteConnection.createTrampoline(h, c, n, o, e, cap) } }
        if has(.destroy) { d.pointee.destroy = { RemoteConnection.destroyTrampoline($0) } }
        if has(.reconfigure) { d.pointee.reconfigure = { i, c, n, e, cap in RemoteConnection.reconfigureTrampoline(i, c, n, e, cap) } }
        if has(.call) { d.pointee.call = { i, m, r, n, o, e, c in RemoteConnection.namedTrampoline(.call, i, m, r, n, o, e, c) } }
        if kinds & UInt32(BERTH_KIND_NETWORK) != 0 { d.pointee.network = UnsafePointer(networkOps()) }
        if kinds & UInt32(BERTH_KIND_STORAGE) != 0 { d.pointee.storage = UnsafePointer(storageOps()) }
        if kinds & UInt32(BERTH_KIND_SCHEDULER) != 0 { d.pointee.scheduler = UnsafePointer(schedulerOps()) }
        if kinds & UInt32(BERTH_KIND_DISCOVERY) != 0 { d.pointee.discovery = UnsafePointer(discoveryOps()) }
        if kinds & UInt32(BERTH_KIND_RUNTIME) != 0 { d.pointee.runtime = UnsafePointer(runtimeOps()) }
        return d
    }

    private static func cstr(_ s: String?) -> UnsafePointer<CChar>? { s.map { UnsafePointer(strdup($0)!) } }

    /// A zeroed ops table, never freed.
    private static func table<T>(_ empty: T) -> UnsafeMutablePointer<T> {
        let t = UnsafeMutablePointer<T>.allocate(capacity: 1)
        t.initialize(to: empty)
        return t
    }

    private func networkOps() -> UnsafeMutablePointer<berth_network_ops> {
        let t = Self.table(berth_network_ops())
        t.pointee.struct_size = UInt32(MemoryLayout<berth_network_ops>.size)
        if has(.netAdd) { t.pointee.add = { RemoteConnection.jsonTrampoline(.netAdd, $0, $1, $2, $3, $4, $5) } }
        if has(.netDel) { t.pointee.del = { RemoteConnection.jsonTrampoline(.netDel, $0, $1, $2, $3, $4, $5) } }
        if has(.netCheck) { t.pointee.check = { RemoteConnection.jsonTrampoline(.netCheck, $0, $1, $2, $3, $4, $5) } }
        if has(.netGc) { t.pointee.gc = { RemoteConnection.jsonTrampoline(.netGc, $0, $1, $2, $3, $4, $5) } }
        if has(.netStatus) { t.pointee.status = { RemoteConnection.jsonTrampoline(.netStatus, $0, $1, $2, $3, $4, $5) } }
        if has(.netCapacity) { t.pointee.capacity = { RemoteConnection.jsonTrampoline(.netCapacity, $0, $1, $2, $3, $4, $5) } }
        if has(.netAddBatch) { t.pointee.add_batch = { RemoteConnection.jsonTrampoline(.netAddBatch, $0, $1, $2, $3, $4, $5) } }
        if has(.netAdmin) { t.pointee.admin = { i, op, r, n, o, e, c in RemoteConnection.namedTrampoline(.netAdmin, i, op, r, n, o, e, c) } }
        return t
    }

    private func storageOps() -> UnsafeMutablePointer<berth_storage_ops> {
        let t = Self.table(berth_storage_ops())
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
        return t
    }

    private func schedulerOps() -> UnsafeMutablePointer<berth_scheduler_ops> {
        let t = Self.table(berth_scheduler_ops())
        t.pointee.struct_size = UInt32(MemoryLayout<berth_scheduler_ops>.size)
        t.pointee.kind = Self.cstr(schedulerKind)
        t.pointee.kind_schema = Self.cstr(kindSchema)
        if has(.schedFilter) { t.pointee.filter = { i, inst, b, codes, e, c in RemoteConnection.filterTrampoline(i, inst, b, codes, e, c) } }
        if has(.schedScore) { t.pointee.score = { i, inst, b, scores, e, c in RemoteConnection.scoreTrampoline(i, inst, b, scores, e, c) } }
        if has(.schedReserve) { t.pointee.reserve = { RemoteConnection.jsonTrampoline(.schedReserve, $0, $1, $2, $3, $4, $5) } }
        if has(.schedUnreserve) { t.pointee.unreserve = { RemoteConnection.jsonTrampoline(.schedUnreserve, $0, $1, $2, $3, $4, $5) } }
        if has(.schedBind) { t.pointee.bind = { RemoteConnection.jsonTrampoline(.schedBind, $0, $1, $2, $3, $4, $5) } }
        return t
    }

    private func discoveryOps() -> UnsafeMutablePointer<berth_discovery_ops> {
        let t = Self.table(berth_discovery_ops())
        t.pointee.struct_size = UInt32(MemoryLayout<berth_discovery_ops>.size)
        if has(.discEvents) { t.pointee.events = { RemoteConnection.jsonTrampoline(.discEvents, $0, $1, $2, $3, $4, $5) } }
        if has(.discResync) { t.pointee.resync = { RemoteConnection.jsonTrampoline(.discResync, $0, $1, $2, $3, $4, $5) } }
        return t
    }
}

extension Described {
    /// A runtime plugin is never run in a runner (its instances outlive it: the loader refuses "isolation": "process"
    /// for it), but a dry run stages every plugin in one: the staged instance is created and destroyed there and gets
    /// no runtime call. Its table answers UNAVAILABLE, saying so, should one ever come.
    fileprivate func runtimeOps() -> UnsafeMutablePointer<berth_runtime_ops> {
        let t = UnsafeMutablePointer<berth_runtime_ops>.allocate(capacity: 1)
        t.initialize(to: berth_runtime_ops())
        t.pointee.struct_size = UInt32(MemoryLayout<berth_runtime_ops>.size)
        let refuse: berth_json_op = { _, _, _, _, err, cap in
            writeError(err, cap, "runtime calls are not served across process isolation (a plugin staged for a dry run)")
            return BERTH_UNAVAILABLE
        }
        t.pointee.start = refuse
        t.pointee.stop = refuse
        t.pointee.state = refuse
        t.pointee.list = refuse
        t.pointee.remove = refuse
        return t
    }
}

/// Each C function pointer of the synthesised descriptor lands in one of these.
extension RemoteConnection {
    static func connection(_ instance: UnsafeMutableRawPointer?) -> RemoteConnection? {
        instance.map { Unmanaged<RemoteConnection>.fromOpaque($0).takeUnretainedValue() }
    }

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
        return c.perform(slot.opName, w.finish(), err, cap) { writeSink(out, $0) }
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
        return c.perform(slot == .call ? "call(\(n))" : n, w.finish(), err, cap) { writeSink(out, $0) }
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
