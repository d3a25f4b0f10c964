// The core scheduler: a small Nomad-like pipeline, run on the executor thread inside one store transaction per
// pass (each placement in its own savepoint, so a failed one rolls back alone):
//
//   feasibility   node up · free cpu, memory, disk · host ports · labels (nodeSelector, constraints; the mask is
//                 cached per app until the node table changes) · free addresses of the app's network (the
//                 network plugin's capacity per node, cached 2 s; instances that keep their address skip it).
//                 Like kube-scheduler's percentageOfNodesToScore, a pass over a large cluster stops once it has
//                 enough feasible nodes (all nodes below 100; 10% at 5,000), starting where the last one ended;
//                 the instance's previous node and volume node are always considered.
//   plugin        a custom kind's scheduler plugin gets the feasible nodes in ONE typed batch: filter (kube
//                 status codes per node), then score 0..100 over the survivors
//   rank          plugin score first, then bin-packing (the fuller node after placement wins); a node where
//                 wiring just failed for this instance comes last (a reschedule penalty, as in Nomad)
//   pick → reserve → bind → wire (network ADD with the instance's identity; volume create and publish from its
//                 templates) → record (placed + event). Any failure unwires what was taken, unreserves, rolls
//                 the savepoint back, and leaves the instance pending with the reason.
//
// Terminating instances are torn down by the same passes: unwire, then gone, then pending again when their app
// still wants the ordinal (previous node remembered), or removed for good.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

struct PassResult {
    var placed = 0
    var failed = 0
    var tornDown = 0
    var more = false
}

/// Why no node could take an instance, kube-style: "0/5 nodes are available: 2 down, 3 insufficient cpu".
struct Diagnosis {
    var down = 0, draining = 0, cpu = 0, memory = 0, disk = 0, ports = 0, labels = 0, addresses = 0
    var pluginCodes: [UInt8: Int] = [:]
    var plugin = ""
    var explanation = ""

    func text(total: Int) -> String {
        var parts: [String] = []
        for (n, what) in [(down, "down"), (draining, "draining"), (cpu, "insufficient cpu"), (memory, "insufficient memory"),
                          (disk, "insufficient disk"), (ports, "host ports in use"), (labels, "not matching nodeSelector/constraints"),
                          (addresses, "without free addresses")] where n > 0 {
            parts.append("\(n) \(what)")
        }
        if !pluginCodes.isEmpty {
            let names: [UInt8: String] = [1: "error", 2: "unschedulable", 3: "unresolvable", 4: "wait"]
            let codes = pluginCodes.sorted { $0.key < $1.key }.map { "\($0.value) \(names[$0.key] ?? "code \($0.key)")" }
            parts.append("\(pluginCodes.values.reduce(0, +)) rejected by plugin \(plugin) (\(codes.joined(separator: ", ")))")
        }
        let head = total == 0 ? "no nodes are registered (berth nodes add)" : "0/\(total) nodes are available: " + parts.joined(separator: ", ")
        return explanation.isEmpty ? head : "\(head); \(explanation)"
    }
}

final class Scheduler {
    let state: WorkloadState
    var host: PluginHost { state.host }
    /// The kinds a placement wires: addresses from the network coordinator, volumes through the storage coordinator.
    let network: NetworkService
    let volumes: VolumeWiring
    var store: Store { state.store }
    /// Network wiring (ADD/DEL) on or off; the benchmark measures the core with it off.
    var wireNetworks = true

    private var batch = NodeBatch(count: 0) { _ in (name: "", zone: 0, cpu: 0, mem: 0) }
    private var slots: [Int] = []          // batch position -> node index
    private var codes: [UInt8] = []
    private var scores: [Int64] = []
    private var nextStart = 0
    private var owners: [String: PluginInstance] = [:]
    private var netFree: [String: CapacityCache] = [:]
    private let retrySeconds = 5.0
    /// Apps whose fresh instance found no feasible node (and why), by generation: the core filter reads nothing of a
    /// fresh instance but its app's spec, so its siblings wait without a scan of every node each.
    private var unfit: [ObjectKey: (gen: UInt64, reason: String, until: Double)] = [:]

    /// Never placed, nothing remembered for it: its feasibility is its app's.
    static func fresh(_ r: InstanceRec) -> Bool {
        r.prevNode.isEmpty && r.volumeNode.isEmpty && r.incarnation == 0 && r.penaltyNodes.isEmpty
    }

    init(state: WorkloadState, network: NetworkService, storage: StorageService) {
        self.state = state
        self.network = network
        volumes = VolumeWiring(host: state.host, storage: storage)
    }

    // MARK: - a pass

    /// One pass: at most `budget` teardowns and `budget` placement attempts, and no longer than `seconds` (the
    /// pass holds the executor, so API requests wait for it; the rest is left for the next pass).
    func pass(budget: Int, seconds: Double = 0.05) -> PassResult {
        var res = PassResult()
        let now = wallClock()
        unfit = unfit.filter { $0.value.gen == state.generation }
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        owners = [:]
        for e in host.plugins {
            if let inst = e.instance, let k = inst.plugin.schedulerKind, k != "App", owners[k] == nil { owners[k] = inst }
        }
        // Apps applied or deleted in steps: their next instances (WorkloadState.reconcile).
        let reconciling = state.reconcileQueue
        state.reconcileQueue = []
        for k in reconciling {
            guard let o = state.objects[k] else { continue }
            do { try state.reconcile(o) } catch { state.dirty = true }
        }
        if !state.reconcileQueue.isEmpty { res.more = true }
        // Teardowns first: they free what pending instances may need.
        let terminating = state.terminatingQueue
        state.terminatingQueue = []
        var seen = Set<InstanceKey>()
        for (n, k) in terminating.enumerated() {
            if res.tornDown >= budget || state.dirty || (res.tornDown & 15 == 15 && monotonicNanos() > deadline) {
                state.terminatingQueue.append(contentsOf: terminating[n...])
                res.more = true
                break
            }
            guard seen.insert(k).inserted, let r = state.instance(k), r.state == .terminating else { continue }
            if r.retryAt > now || !teardown(r, now) { state.terminatingQueue.append(k) } else { res.tornDown += 1 }
        }
        // Then placements, in queue order (ordinals in order).
        let pending = state.pendingQueue
        state.pendingQueue = []
        seen = []
        for (n, k) in pending.enumerated() {
            if res.placed + res.failed >= budget || state.dirty || ((res.placed + res.failed) & 15 == 15 && monotonicNanos() > deadline) {
                // The next pass starts where this one stopped: starting over would walk the instances visited here
                // again, once per pass (with 10,000 waiting, most of a core).
                state.pendingQueue = Array(pending[n...]) + state.pendingQueue
                res.more = true
                break
            }
            guard seen.insert(k).inserted, let r = state.instance(k), r.state == .pending else { continue }
            guard r.triedGen != state.generation || now >= r.retryAt else {
                state.pendingQueue.append(k)
                continue
            }
            // A fresh instance of an app whose fresh instance found no node in this generation finds none either.
            if Self.fresh(r), let u = unfit[k.object], u.gen == state.generation, now < u.until {
                _ = fail(r, u.reason)
                state.pendingQueue.append(k)
                continue
            }
            if place(r, now) { res.placed += 1 } else {
                res.failed += 1
                if state.instance(k)?.state == .pending { state.pendingQueue.append(k) }
            }
        }
        return res
    }

    // MARK: - placement

    func place(_ r: InstanceRec, _ now: Double) -> Bool {
        guard let o = state.objects[r.key.object], !o.deleted else { return fail(r, "its app is gone") }
        let plugin = owners[o.kind]
        if o.kind != "App" && plugin == nil {
            return fail(r, "no loaded scheduler plugin owns kind \(o.kind); enable the plugin that declares it")
        }
        let m = o.model
        if !m.volumes.isEmpty && r.volumeNode.isEmpty { r.volumeNode = existingVolumeNode(r, m) ?? "" }
        var diag = Diagnosis()
        let k = feasible(r, o, &diag, views: plugin != nil, now: now)
        guard k > 0 else {
            let reason = diag.text(total: state.nodes.count)
            // (Not with volumes: where they are is the instance's. The timed retry still scans again after retrySeconds.)
            if Self.fresh(r) && m.volumes.isEmpty { unfit[o.key] = (state.generation, reason, now + retrySeconds) }
            return fail(r, reason)
        }
        var count = k
        var stateJSON = ""
        if let p = plugin {
            stateJSON = facts(r, o)
            do { count = try pluginFilter(p, r, o, stateJSON, k, &diag) } catch {
                return fail(r, "scheduler plugin \(p.name) failed: \(error)")
            }
            guard count > 0 else {
                diag.plugin = p.name
                diag.explanation = explain(p, r, o, stateJSON)
                return fail(r, diag.text(total: state.nodes.count))
            }
        }
        let best = rank(r, o, plugin, count)
        return commit(r, o, slots[best], plugin)
    }

    /// Feasibility: writes the candidate nodes' indexes into `slots` (and, for a plugin, their views into the
    /// batch); returns how many. The scan reads plain per-node values only (NodeHot).
    private func feasible(_ r: InstanceRec, _ o: ObjectRec, _ d: inout Diagnosis, views withViews: Bool, now: Double) -> Int {
        let m = o.model
        let n = state.nodes.count
        if batch.count < n {
            batch = NodeBatch(count: max(n, batch.count * 2)) { _ in (name: "", zone: 0, cpu: 0, mem: 0) }
            slots = Array(repeating: 0, count: batch.count)
            codes = Array(repeating: 0, count: batch.count)
            scores = Array(repeating: 0, count: batch.count)
        }
        if !m.constraints.isEmpty && o.labelMaskGen != state.nodesGen {
            o.labelMask = state.nodes.map { m.matches($0.labelMap) }
            o.labelMaskGen = state.nodesGen
        }
        var net: (String, Bool, CapacityCache)? = nil  // (network, identity prefers reserved addresses, its cache)
        if wireNetworks, let nr = m.network, !(nr.releasePolicy != "onDelete" && r.incarnation > 0) {
            net = (nr.name, nr.releasePolicy != "onDelete", capacityCache(nr.name))
        }
        let want = n < 100 ? n : max(100, n * max(5, 50 - n / 125) / 100)
        let start = n == 0 ? 0 : nextStart % n
        let views = batch.views
        var found = 0, scanned = 0
        let labelMask = m.constraints.isEmpty ? [] : o.labelMask
        let (cpu, mem, disk) = (m.cpu, m.memory, m.disk)
        state.hot.withUnsafeBufferPointer { hot in
            slots.withUnsafeMutableBufferPointer { slots in
                func consider(_ i: Int) {
                    let h = hot[i]
                    if !h.up {
                        if state.nodes[i].state == .draining { d.draining += 1 } else { d.down += 1 }
                        return
                    }
                    if h.cpuCap - h.cpuUsed < cpu { d.cpu += 1; return }
                    if h.memCap - h.memUsed < mem { d.memory += 1; return }
                    if h.diskCap - h.diskUsed < disk { d.disk += 1; return }
                    if !m.ports.isEmpty {
                        let used = state.nodes[i].portsUsed
                        if Int(h.portsUsed) + m.ports.count > Int(h.portsCap) || m.ports.contains(where: { used[$0] != nil }) { d.ports += 1; return }
                    }
                    if !labelMask.isEmpty && !labelMask[i] { d.labels += 1; return }
                    var free: Int64 = -1
                    if let (network, prefersReserved, cache) = net {
                        let c = freeAddresses(cache, network, i, now)
                        free = c.free
                        if c.free == 0 && !(prefersReserved && c.reserved > 0) { d.addresses += 1; return }
                    }
                    if withViews {
                        views[found] = berth_node_view(name: h.cname, index: UInt32(i), zone: h.zone, cpu_free_milli: h.cpuCap - h.cpuUsed - cpu,
                                                       memory_free: h.memCap - h.memUsed - mem, disk_free: h.diskCap - h.diskUsed - disk,
                                                       free_addresses: free, label_count: h.labelCount, labels: h.clabels)
                    }
                    slots[found] = i
                    found += 1
                }
                while scanned < n && found < want {
                    consider((start + scanned) % n)
                    scanned += 1
                }
                // The previous node and the volume node take part even when the sample did not reach them.
                for name in [r.prevNode, r.volumeNode] where !name.isEmpty && scanned < n {
                    guard let i = state.nodeIndex[name], (i - start + n) % n >= scanned, !slots[0..<found].contains(i) else { continue }
                    var ignored = Diagnosis()
                    swap(&d, &ignored)
                    consider(i)
                    swap(&d, &ignored)
                }
            }
        }
        nextStart = start + scanned
        return found
    }

    /// The host's facts for the plugin (state_json): previous node, volume node, the predecessor's state, the
    /// app's placed peers per zone id (the ids of the batch's `zone` field).
    func facts(_ r: InstanceRec, _ o: ObjectRec) -> String {
        var s = "{"
        func q(_ t: String) -> String { var out = ""; JSON.quote(t, into: &out); return out }
        func nodeState(_ name: String) -> String { state.nodeIndex[name].map { state.nodes[$0].state.rawValue } ?? "removed" }
        if !r.prevNode.isEmpty { s += "\"previousNode\":\(q(r.prevNode)),\"previousNodeState\":\"\(nodeState(r.prevNode))\"," }
        if !r.volumeNode.isEmpty { s += "\"volumeNode\":\(q(r.volumeNode)),\"volumeNodeState\":\"\(nodeState(r.volumeNode))\"," }
        if let p = o.model.predecessor(of: r.key.ordinal) {
            s += "\"predecessor\":{\"ordinal\":\(p),\"state\":\"\(o.instances[p]?.state.rawValue ?? "missing")\"},"
        }
        s += "\"peers\":\(o.placedCount),\"zoneCounts\":{"
        var first = true
        for (z, c) in o.zoneCounts where c > 0 {
            s += (first ? "" : ",") + "\"\(z)\":\(c)"
            first = false
        }
        return s + "}}"
    }

    /// The plugin's filter over the batch; the survivors are compacted to the front. Returns their number.
    private func pluginFilter(_ p: PluginInstance, _ r: InstanceRec, _ o: ObjectRec, _ facts: String, _ k: Int, _ d: inout Diagnosis) throws -> Int {
        try batch.withFirst(k, kind: o.kind, app: o.name, ordinal: Int32(r.key.ordinal), spec: o.specText, state: facts) { inst, b in
            try codes.withUnsafeMutableBufferPointer { try p.filter(inst, b, codes: $0.baseAddress!) }
        }
        var kept = 0
        let views = batch.views
        for i in 0..<k {
            let c = codes[i]
            if c == UInt8(BERTH_SCHED_SUCCESS.rawValue) || c == UInt8(BERTH_SCHED_SKIP.rawValue) {
                if kept != i {
                    views[kept] = views[i]
                    slots[kept] = slots[i]
                }
                kept += 1
            } else {
                d.pluginCodes[c, default: 0] += 1
            }
        }
        if kept > 0 {
            try batch.withFirst(kept, kind: o.kind, app: o.name, ordinal: Int32(r.key.ordinal), spec: o.specText, state: facts) { inst, b in
                try scores.withUnsafeMutableBufferPointer { try p.score(inst, b, scores: $0.baseAddress!) }
            }
        }
        return kept
    }

    /// The plugin's own words for why it rejected every node (its optional `explain` call), if it has them.
    private func explain(_ p: PluginInstance, _ r: InstanceRec, _ o: ObjectRec, _ facts: String) -> String {
        let req = "{\"kind\":\"\(o.kind)\",\"app\":\"\(o.name)\",\"ordinal\":\(r.key.ordinal),\"spec\":\(o.specText),\"state\":\(facts)}"
        guard let out = try? p.call(method: "explain", Array(req.utf8)), let j = try? JSON.parse(out) else { return "" }
        return j["reason"]?.string ?? ""
    }

    /// Plugin score first, then bin-packing: the node fullest after placement. Returns the batch position.
    private func rank(_ r: InstanceRec, _ o: ObjectRec, _ plugin: PluginInstance?, _ count: Int) -> Int {
        let m = o.model
        var best = 0
        var bestScore = Int64.min
        state.hot.withUnsafeBufferPointer { hot in
            for pos in 0..<count {
                let h = hot[slots[pos]]
                let c = h.cpuCap > 0 ? min(100, (h.cpuUsed + m.cpu) * 100 / h.cpuCap) : 100
                let mem = h.memCap > 0 ? min(100, (h.memUsed + m.memory) * 100 / h.memCap) : 100
                var s = (c + mem) / 2
                if plugin != nil { s += max(0, min(100, scores[pos])) * 101 }
                if !r.penaltyNodes.isEmpty && r.penaltyNodes.contains(state.nodes[slots[pos]].name) { s -= 1 << 20 }
                if s > bestScore { bestScore = s; best = pos }
            }
        }
        return best
    }

    /// reserve → bind → wire → placed, in a savepoint; on failure everything taken is given back.
    private func commit(_ r: InstanceRec, _ o: ObjectRec, _ i: Int, _ plugin: PluginInstance?) -> Bool {
        let node = state.nodes[i].name
        let before = Snapshot(r)
        let binding = Array("{\"kind\":\"\(o.kind)\",\"app\":\"\(o.name)\",\"ordinal\":\(r.key.ordinal),\"node\":\"\(node)\"}".utf8)
        var wired = Wiring()
        var reserved = false
        do {
            try sql("SAVEPOINT place")
        } catch { return fail(r, "store: \(error)") }
        do {
            if let p = plugin, let ops = p.scheduler?.pointee {
                reserved = true
                _ = try p.callJSON("reserve", ops.reserve, binding)
                if let bind = ops.bind { _ = try p.callJSON("bind", bind, binding) }
            }
            r.incarnation += 1
            r.containerID = "\(r.key.app)-\(r.key.ordinal)-\(r.incarnation)"
            r.node = node
            r.cpu = o.model.cpu; r.memory = o.model.memory; r.disk = o.model.disk; r.ports = o.model.ports
            try wire(r, o, node, &wired)
            try state.transition(r, to: .placed)
            try sql("RELEASE place")
        } catch {
            // Give back what was taken (for plugins with effects outside the store), then roll the records back.
            try? unwire(wired, node: node, final: false, bestEffort: true)
            if reserved, let p = plugin { _ = try? p.callJSON("unreserve", p.scheduler?.pointee.unreserve, binding) }
            try? sql("ROLLBACK TO place")
            try? sql("RELEASE place")
            before.restore(r)
            r.penaltyNodes.insert(node)
            if let n = o.model.network, wired.network == nil, wireNetworks { capacityCache(n.name).at[i] = 0 }
            let delay = min(retrySeconds, 0.1 * Double(1 << min(r.penaltyNodes.count, 6)))
            return fail(r, "placing on node \(node) failed: \(describe(error))", retryIn: delay)
        }
        state.occupy(r)
        r.penaltyNodes = []
        if let n = o.model.network, wireNetworks {
            let c = capacityCache(n.name)
            if c.free[i] > 0 { c.free[i] -= 1 }
        }
        return true
    }

    /// Leaves the instance pending with a reason (an event when the reason changed); retried when something
    /// changes or after a while.
    private func fail(_ r: InstanceRec, _ reason: String, retryIn: Double? = nil) -> Bool {
        r.triedGen = state.generation
        r.retryAt = wallClock() + (retryIn ?? retrySeconds)
        if r.reason != reason {
            r.reason = reason
            r.updated = wallClock()
            try? state.saveInstance(r)
            try? state.event(r)
        }
        return false
    }

    /// Savepoint statements, prepared once (sqlite3_exec would parse them on every placement).
    private func sql(_ statement: String) throws { try store.prepare(statement).run() }

    private func describe(_ e: Error) -> String {
        if let a = e as? BerthError { return a.message }
        return "\(e)"
    }

    // MARK: - teardown

    /// terminating → gone (unwired) → pending again when its app still wants the ordinal.
    private func teardown(_ r: InstanceRec, _ now: Double) -> Bool {
        let node = r.node
        let idx = state.nodeIndex[node]
        let lost = idx.map { state.nodes[$0].state == .down } ?? true
        let mutatedBefore = state.mutated
        state.mutated = false
        do { try sql("SAVEPOINT teardown") } catch { return false }
        do {
            // A lost node cannot be asked to unpublish: best effort there.
            try unwire(Wiring(network: r.network.isEmpty ? nil : (r.network, r.containerID), volumes: r.volumes), node: node, final: r.final,
                       bestEffort: lost)
            if r.final, let p = owners[r.key.kind] {
                let req = "{\"kind\":\"\(r.key.kind)\",\"app\":\"\(r.key.app)\",\"ordinal\":\(r.key.ordinal),\"node\":\"\(node)\",\"final\":true}"
                _ = try? p.callJSON("unreserve", p.scheduler?.pointee.unreserve, Array(req.utf8))
            }
            state.vacate(r)
            let o = state.objects[r.key.object]
            let again = !r.final && o.map { !$0.deleted && $0.model.ordinals.contains(r.key.ordinal) } ?? false
            try state.transition(r, to: .gone, reason: r.reason)
            if again {
                r.prevNode = node
                r.node = ""; r.containerID = ""; r.network = ""; r.addresses = []; r.volumes = []
                r.cpu = 0; r.memory = 0; r.disk = 0; r.ports = []
                try state.transition(r, to: .pending)
            } else if let o {
                o.instances[r.key.ordinal] = nil
                if o.deleted && o.instances.isEmpty { state.objects[o.key] = nil }
            }
            try sql("RELEASE teardown")
        } catch {
            try? sql("ROLLBACK TO teardown")
            try? sql("RELEASE teardown")
            if state.mutated { state.dirty = true }  // rebuilt from the store before the next pass
            r.retryAt = now + retrySeconds
            state.mutated = mutatedBefore || state.mutated
            return false
        }
        state.mutated = true
        return true
    }

    // MARK: - wiring

    struct Wiring {
        var network: (String, String)? = nil   // (network, containerID)
        var volumes: [AttachedVolume] = []
    }

    /// Network ADD with the instance's identity, then each volume template: create (idempotent by name) and
    /// publish on the node. Records what it took in `w` as it goes.
    private func wire(_ r: InstanceRec, _ o: ObjectRec, _ node: String, _ w: inout Wiring) throws {
        if wireNetworks, let n = o.model.network {
            var identity: JSON = ["app": .string(o.name), "ordinal": JSON(Int64(r.key.ordinal)), "releasePolicy": .string(n.releasePolicy)]
            if let k = n.keepSeconds { identity = identity.setting("keepSeconds", JSON(Int64(k))) }
            var req: JSON = ["containerID": .string(r.containerID), "ifname": "eth0", "node": .string(node), "identity": identity]
            if let p = n.pool { req = req.setting("pool", .string(p)) }
            let result = try network.attachInTransaction(network: n.name, request: req)
            w.network = (n.name, r.containerID)
            r.network = n.name
            r.addresses = result["ips"]?.array ?? []
        }
        if !o.model.volumes.isEmpty {
            for t in o.model.volumes {
                let (v, localTo) = try volumes.publish(r.key, t, node: node)
                w.volumes.append(v)
                if let localTo { r.volumeNode = localTo }
            }
        }
        r.volumes = w.volumes
    }

    /// Gives back what `wire` took: volumes unpublished (kept: they outlive instances), then network DEL. With
    /// `bestEffort` (a failed placement, a lost node) failures are logged and the rest goes on; otherwise the
    /// first failure is thrown (the teardown is retried).
    private func unwire(_ w: Wiring, node: String, final: Bool, bestEffort: Bool) throws {
        var first: Error?
        for v in w.volumes.reversed() {
            do { try volumes.unpublish(v) } catch {
                host.logger.warning("unpublishing volume \(v.volumeID) (\(v.plugin)) at \(v.target) on node \(node): \(error)")
                first = first ?? error
            }
        }
        if let (net, cid) = w.network {
            do { try network.detachInTransaction(network: net, containerID: cid, ifname: "eth0", final: final) } catch {
                host.logger.warning("releasing the addresses of \(cid) on network \(net): \(error)")
                first = first ?? error
            }
        }
        if let first, !bestEffort { throw first }
    }

    /// Free and reserved addresses of a network per node (the plugin's capacity op), each kept for 2 s and
    /// counted down by this scheduler's own placements in between.
    final class CapacityCache {
        var free: [Int64] = [], reserved: [Int64] = [], at: [Double] = []
    }

    private func capacityCache(_ network: String) -> CapacityCache {
        let c = netFree[network] ?? CapacityCache()
        netFree[network] = c
        let n = state.nodes.count
        if c.at.count != n {
            c.free = Array(repeating: -1, count: n); c.reserved = Array(repeating: 0, count: n); c.at = Array(repeating: 0, count: n)
        }
        return c
    }

    private func freeAddresses(_ c: CapacityCache, _ network: String, _ i: Int, _ now: Double) -> (free: Int64, reserved: Int64) {
        if now - c.at[i] < 2 { return (c.free[i], c.reserved[i]) }
        var out: (Int64, Int64) = (-1, -1)
        if let inst = try? host.instance(network, kind: .network), let fn = inst.network?.pointee.capacity,
           let j = try? inst.callObject("capacity", fn, ["network": .string(network), "node": .string(state.nodes[i].name)]) {
            out = (Int64(j["free"]?.int ?? -1), Int64(j["reserved"]?.int ?? 0))
        }
        c.free[i] = out.0; c.reserved[i] = out.1; c.at[i] = now
        return out
    }

    /// A node-local volume that already exists for this instance (created by an earlier incarnation).
    private func existingVolumeNode(_ r: InstanceRec, _ m: WorkloadSpec) -> String? {
        let vw = volumes
        for t in m.volumes {
            if let node = vw.existingLocalNode(r.key, t) { return node }
        }
        return nil
    }
}

/// An instance's fields that a failed placement must put back.
private struct Snapshot {
    let state: InstanceState, node: String, incarnation: Int, containerID: String, network: String
    let addresses: [JSON], volumes: [AttachedVolume], volumeNode: String, reason: String
    let cpu: Int64, memory: Int64, disk: Int64, ports: [Int], updated: Double
    init(_ r: InstanceRec) {
        state = r.state; node = r.node; incarnation = r.incarnation; containerID = r.containerID; network = r.network
        addresses = r.addresses; volumes = r.volumes; volumeNode = r.volumeNode; reason = r.reason
        cpu = r.cpu; memory = r.memory; disk = r.disk; ports = r.ports; updated = r.updated
    }
    func restore(_ r: InstanceRec) {
        r.state = state; r.node = node; r.incarnation = incarnation; r.containerID = containerID; r.network = network
        r.addresses = addresses; r.volumes = volumes; r.volumeNode = volumeNode; r.reason = reason
        r.cpu = cpu; r.memory = memory; r.disk = disk; r.ports = ports; r.updated = updated
    }
}


// MARK: - volume wiring (the storage kind, StorageService in Storage.swift)

/// Volumes from an app's templates: one per (template, instance), named <template>-<app>-<ordinal>, created
/// idempotently and published on the instance's node at <stateDir>/instances/<app>-<ordinal>/<template>.
/// A `local` template asks the plugin for a volume on the instance's node only (topology requisite); a volume
/// whose accessible topology is one node ties its instance to that node from then on.
struct VolumeWiring {
    let host: PluginHost
    let storage: StorageService

    func plugin(for t: VolumeTemplate) throws -> String {
        if let s = t.storage { return s }
        let all = host.plugins.filter { $0.instance?.plugin.kinds.contains(.storage) ?? false }.map { $0.spec.name }
        guard all.count == 1 else { throw BerthError(.invalidArgument, "volume template \(t.name) names no storage plugin and \(all.count) are loaded") }
        return all[0]
    }

    static func volumeName(_ k: InstanceKey, _ t: VolumeTemplate) -> String { "\(t.name)-\(k.app)-\(k.ordinal)" }

    func target(_ k: InstanceKey, _ t: VolumeTemplate) -> String {
        var dir = host.site.stateDir
        if !dir.hasPrefix("/") { dir = FileManager.default.currentDirectoryPath + "/" + (dir.hasPrefix("./") ? String(dir.dropFirst(2)) : dir) }
        while dir.hasSuffix("/") && dir.count > 1 { dir.removeLast() }
        return "\(dir)/instances/\(k.app)-\(k.ordinal)/\(t.name)"
    }

    static func singleNode(_ volume: JSON) -> String? {
        let nodes = (volume["accessibleTopology"]?.array ?? []).compactMap { $0["node"]?.string }
        return nodes.count == 1 ? nodes[0] : nil
    }

    /// The node an existing volume of this instance is tied to, if it is node-local.
    func existingLocalNode(_ k: InstanceKey, _ t: VolumeTemplate) -> String? {
        guard let p = try? plugin(for: t), let s = try? host.store.prepare("SELECT volume FROM volumes WHERE plugin=?1 AND name=?2") else { return nil }
        s.bind(1, p); s.bind(2, Self.volumeName(k, t))
        guard (try? s.step()) == true, let v = try? JSON.parse(s.text(0)) else { return nil }
        return Self.singleNode(v)
    }

    /// The instance's volume from its template: the one the host already knows by that name, else a new one
    /// (StorageService.createInTransaction, in this transaction). Returns its id and the plugin's volume record.
    func createVolume(plugin: String, name: String, capacity: Int64, parameters: JSON, topology: JSON?) throws -> (String, JSON) {
        let byName = try host.store.prepare("SELECT id, volume FROM volumes WHERE plugin=?1 AND name=?2")
        byName.bind(1, plugin); byName.bind(2, name)
        if try byName.step() { return (byName.text(0), (try? JSON.parse(byName.text(1))) ?? .object([])) }
        var req: JSON = ["name": .string(name), "capacityBytes": JSON(Int64(capacity)), "accessMode": "single-node-writer",
                         "volumeMode": "mount", "parameters": parameters]
        if let topology { req = req.setting("topology", topology) }
        let (row, _) = try storage.createInTransaction(plugin: plugin, name: try StorageService.checkName(name), request: req)
        return (row.id, row.volume)
    }

    /// Create (or find) and publish; returns the attachment and the node the volume is local to, if any.
    func publish(_ k: InstanceKey, _ t: VolumeTemplate, node: String) throws -> (AttachedVolume, String?) {
        let p = try plugin(for: t)
        let topology: JSON? = t.local ? ["requisite": [["node": .string(node)]]] : nil
        let (id, volume) = try createVolume(plugin: p, name: Self.volumeName(k, t), capacity: t.size,
                                            parameters: t.parameters, topology: topology)
        let localTo = Self.singleNode(volume)
        if let localTo, localTo != node {
            throw BerthError(.failedPrecondition, "volume \(id) (\(Self.volumeName(k, t))) lives on node \(localTo), not \(node)")
        }
        let target = target(k, t)
        _ = try storage.controllerPublishStep(p, id, node, false)
        _ = try storage.stageStep(p, id, node)
        _ = try storage.nodePublishStep(p, id, node, target, false)
        return (AttachedVolume(template: t.name, plugin: p, volumeID: id, target: target, node: node), localTo)
    }

    /// Node unpublish; when no target of the volume is left on the node: unstage, controller unpublish.
    func unpublish(_ v: AttachedVolume) throws {
        _ = try storage.nodeUnpublishStep(v.plugin, v.volumeID, v.target)
        if try storage.targetRows(v.plugin, v.volumeID).contains(where: { $0.node == v.node }) { return }
        _ = try storage.unstageStep(v.plugin, v.volumeID, v.node)
        _ = try storage.controllerUnpublishStep(v.plugin, v.volumeID, v.node)
    }
}
