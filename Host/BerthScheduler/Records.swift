// The model's records: WorkloadState holds nodes, objects and instances in memory, loads them from the store's
// workload tables (BerthStore/Tables/Workloads.swift) and is the only code that writes their rows.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire
import Foundation


/// The in-memory model of nodes, objects and instances, and the only code that writes their rows. Executor
/// thread only. Every cache change follows the row it mirrors, inside the same transaction; when a transaction
/// fails after the cache changed, the model is marked dirty and rebuilt from the store before its next use.
final class WorkloadState {
    let host: PluginHost
    var store: any HostStore { host.store }
    var loaded = false
    var dirty = false
    /// Set by every cache mutation; lets a failed operation know whether the cache may have diverged.
    var mutated = false

    var nodes: [NodeInfo] = []
    var hot: [NodeHot] = []
    var nodeIndex: [String: Int] = [:]
    var zoneIDs: [String: UInt32] = [:]
    /// Bumped when the node table changes (label masks are recomputed).
    var nodesGen: UInt64 = 0
    /// Bumped when anything happens that could make a pending instance placeable (retry gate).
    var generation: UInt64 = 0

    var objects: [ObjectKey: ObjectRec] = [:]
    var pendingQueue: [InstanceKey] = []
    var terminatingQueue: [InstanceKey] = []
    /// Objects whose instances are not yet all created or ended (see `reconcile`).
    var reconcileQueue: [ObjectKey] = []

    init(host: PluginHost) { self.host = host }

    func zoneID(_ labels: [String: String]) -> UInt32 {
        guard let z = labels["zone"], !z.isEmpty else { return 0 }
        if let id = zoneIDs[z] { return id }
        let id = UInt32(zoneIDs.count + 1)
        zoneIDs[z] = id
        return id
    }

    func instance(_ k: InstanceKey) -> InstanceRec? { objects[k.object]?.instances[k.ordinal] }

    // MARK: loading

    /// The workload tables' version the cache holds (HostStore.workloadsVersion: nil on one host).
    var version: [UInt8]?

    /// Loads the model unless the cache is current. On a store shared by many berthd, the version read here (in the
    /// transaction, so a concurrent change is a conflict at commit) says whether another berthd changed the tables.
    func ensureLoaded() throws {
        let v = try store.workloadsVersion()
        if loaded && !dirty && v == version { return }
        try load()
        version = v
    }

    /// After an operation wrote its rows: the version its own writes left (the cache is that state, once committed;
    /// if the commit fails, the stored version differs and the next use reloads).
    func noteOwnWrites() throws {
        if version != nil { version = try store.workloadsVersion() }
    }

    func load() throws {
        nodes = []; hot = []; nodeIndex = [:]; zoneIDs = [:]; objects = [:]; pendingQueue = []; terminatingQueue = []; reconcileQueue = []
        nodesGen &+= 1
        generation &+= 1
        try store.forEachNode { row in
            let labels = ((try? JSON.parse(row.labels))?.object ?? []).map { ($0.0, $0.1.string ?? "") }
            let info = NodeInfo(name: row.name, state: NodeState(rawValue: row.state) ?? .up, labels: labels, created: row.created, updated: row.updated)
            nodeIndex[info.name] = nodes.count
            nodes.append(info)
            hot.append(NodeHot(up: info.state == .up, zone: zoneID(info.labelMap), cpuCap: row.cpu, memCap: row.memory, diskCap: row.disk,
                               portsCap: Int32(clamping: row.ports), cname: info.cname, clabels: info.clabels, labelCount: UInt32(info.labels.count)))
        }
        try store.forEachObject { row in
            let spec = (try? JSON.parse(row.spec)) ?? .object([])
            let model = (try? WorkloadSpec.parse(spec)) ?? WorkloadSpec()
            let o = ObjectRec(kind: row.kind, name: row.name, spec: spec, model: model, generation: Int(row.generation), created: row.created, updated: row.updated)
            objects[o.key] = o
        }
        try store.forEachInstance { s in
            let key = InstanceKey(kind: s.kind, app: s.app, ordinal: Int(s.ordinal))
            let r = InstanceRec(key: key, now: s.created)
            r.state = InstanceState(rawValue: s.state) ?? .pending
            r.node = s.node; r.prevNode = s.prevNode; r.volumeNode = s.volumeNode
            r.incarnation = Int(s.incarnation); r.containerID = s.containerID; r.network = s.network
            r.addresses = (try? JSON.parse(s.addresses))?.array ?? []
            r.volumes = ((try? JSON.parse(s.volumes))?.array ?? []).compactMap { AttachedVolume($0) }
            r.cpu = s.cpu; r.memory = s.memory; r.disk = s.disk
            r.ports = ((try? JSON.parse(s.ports))?.array ?? []).compactMap { $0.int }
            r.reason = s.reason; r.final = s.final; r.updated = s.updated
            let ok = key.object
            let obj: ObjectRec
            if let o = objects[ok] { obj = o } else {
                // The app was deleted while this instance was still terminating.
                obj = ObjectRec(kind: key.kind, name: key.app, spec: .object([]), model: WorkloadSpec(), generation: 0, created: r.created, updated: r.updated)
                obj.deleted = true
                objects[ok] = obj
            }
            obj.instances[key.ordinal] = r
            if r.state == .placed || r.state == .running || r.state == .terminating { occupy(r) }
            if r.state == .pending { pendingQueue.append(key) }
            if r.state == .terminating { terminatingQueue.append(key) }
        }
        // A reconcile in steps may have been cut short (berthd stopped): the scheduler's passes finish it.
        reconcileQueue = objects.keys.sorted()
        loaded = true
        dirty = false
        mutated = false
    }

    // MARK: accounting

    /// The instance holds resources on its node (placed, running, or terminating until its teardown is done).
    func occupy(_ r: InstanceRec) {
        mutated = true
        guard let i = nodeIndex[r.node] else { return }
        hot[i].cpuUsed += r.cpu; hot[i].memUsed += r.memory; hot[i].diskUsed += r.disk
        for p in r.ports { nodes[i].portsUsed[p, default: 0] += 1 }
        hot[i].portsUsed += Int32(r.ports.count)
        nodes[i].instances += 1
        r.zone = hot[i].zone
        if let o = objects[r.key.object] {
            o.zoneCounts[r.zone, default: 0] += 1
            o.placedCount += 1
        }
    }

    func vacate(_ r: InstanceRec) {
        mutated = true
        guard let i = nodeIndex[r.node] else { return }
        hot[i].cpuUsed -= r.cpu; hot[i].memUsed -= r.memory; hot[i].diskUsed -= r.disk
        for p in r.ports {
            let n = (nodes[i].portsUsed[p] ?? 1) - 1
            nodes[i].portsUsed[p] = n > 0 ? n : nil
        }
        hot[i].portsUsed -= Int32(r.ports.count)
        nodes[i].instances -= 1
        if let o = objects[r.key.object] {
            o.zoneCounts[r.zone, default: 1] -= 1
            o.placedCount -= 1
        }
    }

    // MARK: rows and events

    func saveNode(_ n: NodeInfo, _ h: NodeHot) throws {
        try store.saveNode(NodeRecord(name: n.name, state: n.state.rawValue, cpu: h.cpuCap, memory: h.memCap, disk: h.diskCap,
                                      ports: Int64(h.portsCap), labels: JSON.object(n.labels.map { ($0.0, .string($0.1)) }).serialized,
                                      created: n.created, updated: n.updated))
    }

    func saveObject(_ o: ObjectRec) throws {
        try store.saveObject(ObjectRecord(kind: o.kind, name: o.name, spec: o.specText, generation: Int64(o.generation), created: o.created, updated: o.updated))
    }

    func deleteObjectRow(_ k: ObjectKey) throws { try store.deleteObject(kind: k.kind, name: k.name) }

    func saveInstance(_ r: InstanceRec) throws {
        try store.saveInstance(InstanceRecord(
            kind: r.key.kind, app: r.key.app, ordinal: Int64(r.key.ordinal), state: r.state.rawValue, node: r.node, prevNode: r.prevNode,
            volumeNode: r.volumeNode, incarnation: Int64(r.incarnation), containerID: r.containerID, network: r.network,
            addresses: r.addresses.isEmpty ? "[]" : JSON.array(r.addresses).serialized,
            volumes: r.volumes.isEmpty ? "[]" : JSON.array(r.volumes.map { $0.json }).serialized,
            cpu: r.cpu, memory: r.memory, disk: r.disk, ports: r.ports.isEmpty ? "[]" : JSON.array(r.ports.map { .number(Double($0)) }).serialized,
            reason: r.reason, final: r.final, created: r.created, updated: r.updated))
    }

    func deleteInstanceRow(_ k: InstanceKey) throws { try store.deleteInstance(kind: k.kind, app: k.app, ordinal: Int64(k.ordinal)) }

    func event(_ r: InstanceRec) throws {
        host.executor.noteEvent(try store.appendEvent(type: "instance.\(r.state.rawValue)", subject: r.key.subject, data: r.eventData))
    }

    /// Moves an instance to `state`: its row and its event, in the current transaction.
    func transition(_ r: InstanceRec, to state: InstanceState, reason: String = "") throws {
        mutated = true
        r.state = state
        r.reason = reason
        r.updated = wallClock()
        r.retryAt = 0  // a retry delay belongs to the state it was set in
        if state == .gone {
            try deleteInstanceRow(r.key)
        } else {
            try saveInstance(r)
        }
        try event(r)
        switch state {
        case .pending:
            r.triedGen = .max
            pendingQueue.append(r.key)
        case .terminating: terminatingQueue.append(r.key)
        case .running, .gone: generation &+= 1
        case .placed: break
        }
    }

    /// A new pending instance of an object.
    func createInstance(_ o: ObjectRec, ordinal: Int) throws {
        let r = InstanceRec(key: InstanceKey(kind: o.kind, app: o.name, ordinal: ordinal), now: wallClock())
        o.instances[ordinal] = r
        try transition(r, to: .pending)
    }

    /// Instances one reconcile creates or ends at most (a row and an event each): an apply or deletion of a large app
    /// is done in steps, the rest by the scheduler's next passes (`reconcileQueue`), each its own transaction, so
    /// other changes run between them.
    static let reconcileStep = 500

    /// Brings an object's instances in line with its spec: creates the missing ordinals (pending) and ends
    /// those no longer wanted (pending ones at once, placed ones through terminating); at most `reconcileStep` of
    /// them, queueing the object for the next scheduler pass when more remain.
    func reconcile(_ o: ObjectRec) throws {
        let wanted = o.deleted ? [] : o.model.ordinals
        let want = Set(wanted)
        var budget = WorkloadState.reconcileStep
        defer {
            if budget <= 0 && !reconcileQueue.contains(o.key) { reconcileQueue.append(o.key) }
        }
        for ord in wanted where o.instances[ord] == nil {
            if budget <= 0 { return }
            try createInstance(o, ordinal: ord)
            budget -= 1
        }
        for (ord, r) in o.instances.sorted(by: { $0.key < $1.key }) where !want.contains(ord) {
            if budget <= 0 { return }
            switch r.state {
            case .pending:
                try transition(r, to: .gone, reason: o.deleted ? "app deleted" : "scaled down")
                o.instances[ord] = nil
                budget -= 1
            case .placed, .running:
                r.final = true
                try transition(r, to: .terminating, reason: o.deleted ? "app deleted" : "scaled down")
                budget -= 1
            case .terminating:
                if !r.final {
                    r.final = true
                    try saveInstance(r)
                    budget -= 1
                }
            case .gone: break
            }
        }
        if o.deleted && o.instances.isEmpty {
            objects[o.key] = nil
            // glibc keeps freed heap for reuse; a large app's model is worth handing back to the system.
            if o.model.replicas >= 1000 { _ = glibcMallocTrim(0) }
        }
    }

    /// Evicts every placed or running instance of a node (node down or draining): they terminate and come back
    /// pending, to be placed again by their kind's rules.
    func evict(node: String, reason: String) throws -> Int {
        var n = 0
        for o in objects.values.sorted(by: { $0.key < $1.key }) {
            for r in o.instances.values.sorted(by: { $0.key < $1.key }) where r.node == node && (r.state == .placed || r.state == .running) {
                try transition(r, to: .terminating, reason: reason)
                n += 1
            }
        }
        return n
    }
}


/// glibc's malloc_trim (malloc.h is not in the Glibc module): returns freed heap to the system.
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
