// Workloads: nodes, apps (the built-in kind `App` and the custom kinds that scheduler plugins declare) and their
// instances. The records live in the store (tables nodes, objects, instances: Store.migrations 5); an in-memory
// model of them, owned by the executor thread, feeds the scheduler (Scheduler.swift) without a query per node.
//
// Instances move pending -> placed -> running -> terminating -> gone. Every transition writes the instance's row
// and appends an event in the same transaction:
//     type  instance.<state>        subject  <kind>/<app>/<ordinal>
//     data  {"kind","app","ordinal","node","state","ips":["10.1.0.10"],"reason"?}
// (for instance.gone: the node and addresses the instance had, so that discovery can deregister it).
//
// Conventions every kind shares (the host reads them from any kind's spec): replicas, reservedOrdinals,
// resources {cpu, memory, disk}, ports, network {name, releasePolicy, pool, keepSeconds}, volumes
// [{name, size, storage, local, parameters}], nodeSelector {label: value}, constraints [{key, operator, values}].
// Object names are DNS labels and unique across kinds (they name network identities, volumes and DNS records).
import BerthKinds
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// MARK: - quantities

enum Quantity {
    /// CPU in millicores: an integer is millicores; a string is "500m" (millicores) or "2" / "1.5" (cores).
    static func cpu(_ v: JSON?, _ path: String) throws -> Int64 {
        guard let v, !v.isNull else { return 0 }
        if let i = v.int, i >= 0 { return Int64(i) }
        if let s = v.string?.trimmingCharacters(in: .whitespaces) {
            if s.hasSuffix("m"), let m = Int64(s.dropLast()), m >= 0 { return m }
            if let c = Double(s), c >= 0, c < 1e12 { return Int64((c * 1000).rounded()) }
        }
        throw BerthError(.invalidArgument, "\(path): \(v.serialized) is not a CPU quantity (millicores as an integer, or \"500m\", or cores as \"2\")")
    }

    /// Bytes: an integer, or a string with a suffix Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000).
    static func bytes(_ v: JSON?, _ path: String) throws -> Int64 {
        guard let v, !v.isNull else { return 0 }
        if let i = v.int, i >= 0 { return Int64(i) }
        if let s = v.string?.trimmingCharacters(in: .whitespaces) {
            let units: [(String, Double)] = [("Ki", 1024), ("Mi", 1_048_576), ("Gi", 1_073_741_824), ("Ti", 1_099_511_627_776),
                                             ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)]
            for (u, f) in units where s.hasSuffix(u) {
                if let n = Double(s.dropLast(u.count)), n >= 0, n * f < 9e18 { return Int64(n * f) }
            }
            if let n = Int64(s), n >= 0 { return n }
        }
        throw BerthError(.invalidArgument, "\(path): \(v.serialized) is not a size (bytes as an integer, or a string such as \"512Mi\" or \"10Gi\")")
    }
}

// MARK: - nodes

public enum NodeState: String, Sendable { case up, down, draining }

/// A node's fields the scheduler reads for every candidate: plain values, no references, scanned in a tight loop.
struct NodeHot {
    var up: Bool
    var zone: UInt32
    var cpuCap: Int64, memCap: Int64, diskCap: Int64
    var cpuUsed: Int64 = 0, memUsed: Int64 = 0, diskUsed: Int64 = 0
    var portsCap: Int32
    var portsUsed: Int32 = 0
    /// The node's name and labels as C strings (owned by its NodeInfo), for the plugins' batch views.
    var cname: UnsafeMutablePointer<CChar>? = nil
    var clabels: UnsafeMutablePointer<berth_label>? = nil
    var labelCount: UInt32 = 0
}

/// The rest of a node: names (also as C strings for the plugins' batches), labels, ports in use.
final class NodeInfo {
    let name: String
    let cname: UnsafeMutablePointer<CChar>
    var state: NodeState
    var labels: [(String, String)]
    var labelMap: [String: String]
    var clabels: UnsafeMutablePointer<berth_label>?
    var labelStrings: [UnsafeMutablePointer<CChar>] = []
    var created: Double
    var updated: Double
    var portsUsed: [Int: Int] = [:]   // host port -> instances using it
    var instances = 0

    init(name: String, state: NodeState, labels: [(String, String)], created: Double, updated: Double) {
        self.name = name
        cname = strdup(name)!
        self.state = state
        self.labels = []
        labelMap = [:]
        self.created = created
        self.updated = updated
        setLabels(labels)
    }

    func setLabels(_ ls: [(String, String)]) {
        for s in labelStrings { free(s) }
        labelStrings = []
        clabels?.deallocate()
        labels = ls.sorted { $0.0 < $1.0 }
        labelMap = Dictionary(labels, uniquingKeysWith: { a, _ in a })
        clabels = labels.isEmpty ? nil : .allocate(capacity: labels.count)
        for (i, (k, v)) in labels.enumerated() {
            let ck = strdup(k)!, cv = strdup(v)!
            labelStrings += [ck, cv]
            clabels![i] = berth_label(key: UnsafePointer(ck), value: UnsafePointer(cv))
        }
    }

    deinit {
        for s in labelStrings { free(s) }
        clabels?.deallocate()
        free(cname)
    }
}

// MARK: - workload specs

struct VolumeTemplate {
    var name: String
    var size: Int64
    var storage: String?
    var local: Bool
    var parameters: JSON
}

struct NetworkRef {
    var name: String
    var releasePolicy: String
    var pool: String?
    var keepSeconds: Int?
}

struct LabelConstraint {
    var key: String
    var op: String      // In, NotIn, Exists, DoesNotExist
    var values: [String]
    func matches(_ labels: [String: String]) -> Bool {
        let v = labels[key]
        switch op {
        case "In": return v.map { values.contains($0) } ?? false
        case "NotIn": return v.map { !values.contains($0) } ?? true
        case "Exists": return v != nil
        default: return v == nil
        }
    }
}

/// The fields of a spec that the host itself interprets, for every kind.
struct WorkloadSpec {
    /// Most instances one app may have (`replicas` plus the skipped reservedOrdinals): every instance is a row, an
    /// event, memory in the scheduler's model and an entry in each discovery resync. Larger: split the app.
    static let maxReplicas = 10_000
    var replicas = 0
    var reserved: Set<Int> = []
    var cpu: Int64 = 0, memory: Int64 = 0, disk: Int64 = 0
    var ports: [Int] = []
    var network: NetworkRef?
    var volumes: [VolumeTemplate] = []
    var constraints: [LabelConstraint] = []
    /// What each instance runs on its node (RunSpec.swift); nil: instances are only placed.
    var run: RunSpec?

    /// The ordinals that should exist: the first `replicas` non-negative integers not in reservedOrdinals.
    var ordinals: [Int] {
        var out: [Int] = []
        out.reserveCapacity(replicas)
        var o = 0
        while out.count < replicas {
            if !reserved.contains(o) { out.append(o) }
            o += 1
        }
        return out
    }

    /// The ordinal an OrderedReady instance waits for: the next lower one that exists.
    func predecessor(of ordinal: Int) -> Int? {
        var o = ordinal - 1
        while o >= 0 {
            if !reserved.contains(o) { return o }
            o -= 1
        }
        return nil
    }

    func matches(_ labels: [String: String]) -> Bool { constraints.allSatisfy { $0.matches(labels) } }

    static func parse(_ spec: JSON) throws -> WorkloadSpec {
        var w = WorkloadSpec()
        w.replicas = spec["replicas"]?.int ?? 0
        w.reserved = Set((spec["reservedOrdinals"]?.array ?? []).compactMap { $0.int })
        let r = spec["resources"]
        w.cpu = try Quantity.cpu(r?["cpu"], "spec.resources.cpu")
        w.memory = try Quantity.bytes(r?["memory"], "spec.resources.memory")
        w.disk = try Quantity.bytes(r?["disk"], "spec.resources.disk")
        w.ports = (spec["ports"]?.array ?? []).compactMap { $0.int }
        if Set(w.ports).count != w.ports.count { throw BerthError(.invalidArgument, "spec.ports: a host port is listed twice") }
        if let n = spec["network"], let name = n["name"]?.string {
            w.network = NetworkRef(name: name, releasePolicy: n["releasePolicy"]?.string ?? "onDelete", pool: n["pool"]?.string,
                                   keepSeconds: n["keepSeconds"]?.int)
        }
        w.run = try RunSpec.parse(spec["run"])
        var seen = Set<String>()
        for (i, v) in (spec["volumes"]?.array ?? []).enumerated() {
            let name = v["name"]?.string ?? ""
            guard seen.insert(name).inserted else { throw BerthError(.invalidArgument, "spec.volumes[\(i)].name: \"\(name)\" is used twice") }
            w.volumes.append(VolumeTemplate(name: name, size: try Quantity.bytes(v["size"], "spec.volumes[\(i)].size"),
                                            storage: v["storage"]?.string, local: v["local"]?.bool ?? false,
                                            parameters: v["parameters"] ?? .object([])))
        }
        for (k, v) in spec["nodeSelector"]?.object ?? [] {
            w.constraints.append(LabelConstraint(key: k, op: "In", values: [v.string ?? ""]))
        }
        for c in spec["constraints"]?.array ?? [] {
            let op = c["operator"]?.string ?? "In"
            let values = (c["values"]?.array ?? []).compactMap { $0.string }
            if (op == "In" || op == "NotIn") && values.isEmpty {
                throw BerthError(.invalidArgument, "spec.constraints: operator \(op) on \"\(c["key"]?.string ?? "")\" needs a non-empty values list")
            }
            w.constraints.append(LabelConstraint(key: c["key"]?.string ?? "", op: op, values: values))
        }
        return w
    }

    /// The schema of the fields every kind shares; the built-in App's schema is this one, closed.
    static let commonProperties = #"""
    {
      "replicas": {"type": "integer", "minimum": 0, "maximum": 10000, "description": "How many instances (ordinals 0..N-1, reserved ones skipped); at most 10,000 per app."},
      "reservedOrdinals": {"type": "array", "maxItems": 1000, "items": {"type": "integer", "minimum": 0}},
      "resources": {"type": "object", "additionalProperties": false, "properties": {
        "cpu": {"type": ["integer", "string"], "description": "millicores (integer) or \"500m\" / \"2\""},
        "memory": {"type": ["integer", "string"], "description": "bytes or \"512Mi\""},
        "disk": {"type": ["integer", "string"], "description": "bytes or \"10Gi\""}}},
      "ports": {"type": "array", "maxItems": 64, "items": {"type": "integer", "minimum": 1, "maximum": 65535}, "description": "host ports each instance needs"},
      "network": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 63, "description": "a network plugin instance"},
        "releasePolicy": {"enum": ["onDelete", "immutable", "never"]},
        "pool": {"type": "string", "minLength": 1, "maxLength": 63},
        "keepSeconds": {"type": "integer", "minimum": 0}}},
      "volumes": {"type": "array", "maxItems": 16, "items": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "size": {"type": ["integer", "string"]},
        "storage": {"type": "string", "minLength": 1, "maxLength": 63, "description": "a storage plugin instance (default: the only one loaded)"},
        "local": {"type": "boolean", "description": "create the volume on the instance's node only (node-local)"},
        "parameters": {"type": "object"}}}},
      "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
      "constraints": {"type": "array", "maxItems": 32, "items": {"type": "object", "additionalProperties": false, "required": ["key", "operator"], "properties": {
        "key": {"type": "string", "minLength": 1},
        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": {"type": "array", "items": {"type": "string"}}}}},
      "description": {"type": "string", "maxLength": 1024},
      \#(RunSpec.schemaProperty)
    }
    """#

    /// Validates the shared fields of any kind's spec (unknown keys belong to the kind).
    static let commonSchema: JSON = ["type": "object", "properties": try! JSON.parse(commonProperties)]
    /// The built-in App: the shared fields and nothing else; replicas required.
    static let appSchema: JSON = ["type": "object", "additionalProperties": false, "required": ["replicas"],
                                  "properties": try! JSON.parse(commonProperties)]
}

// MARK: - objects and instances

struct ObjectKey: Hashable, Comparable {
    let kind: String
    let name: String
    static func < (a: ObjectKey, b: ObjectKey) -> Bool { (a.kind, a.name) < (b.kind, b.name) }
}

final class ObjectRec {
    let kind: String
    let name: String
    var spec: JSON
    var specText: String
    var model: WorkloadSpec
    var generation: Int
    var created: Double
    var updated: Double
    /// Deleted by the user: no row any more; kept in memory while its instances terminate.
    var deleted = false
    var instances: [Int: InstanceRec] = [:]
    /// Placed or running instances per zone id, and their total (for the plugin's spread).
    var zoneCounts: [UInt32: Int] = [:]
    var placedCount = 0
    /// Which nodes satisfy nodeSelector/constraints, computed once per change of the node table.
    var labelMask: [Bool] = []
    var labelMaskGen: UInt64 = .max

    init(kind: String, name: String, spec: JSON, model: WorkloadSpec, generation: Int, created: Double, updated: Double) {
        self.kind = kind
        self.name = name
        self.spec = spec
        specText = spec.serialized
        self.model = model
        self.generation = generation
        self.created = created
        self.updated = updated
    }
    var key: ObjectKey { ObjectKey(kind: kind, name: name) }
}

public enum InstanceState: String, Sendable { case pending, placed, running, terminating, gone }

struct InstanceKey: Hashable, Comparable {
    let kind: String
    let app: String
    let ordinal: Int
    static func < (a: InstanceKey, b: InstanceKey) -> Bool { (a.kind, a.app, a.ordinal) < (b.kind, b.app, b.ordinal) }
    var subject: String { "\(kind)/\(app)/\(ordinal)" }
    var object: ObjectKey { ObjectKey(kind: kind, name: app) }
}

/// A volume an instance has published: enough to unpublish it without the spec.
struct AttachedVolume {
    var template: String
    var plugin: String
    var volumeID: String
    var target: String
    var node: String
    var json: JSON {
        ["template": .string(template), "plugin": .string(plugin), "volumeId": .string(volumeID), "target": .string(target), "node": .string(node)]
    }
    init(template: String, plugin: String, volumeID: String, target: String, node: String) {
        self.template = template; self.plugin = plugin; self.volumeID = volumeID; self.target = target; self.node = node
    }
    init?(_ j: JSON) {
        guard let t = j["template"]?.string, let p = j["plugin"]?.string, let v = j["volumeId"]?.string, let tg = j["target"]?.string else { return nil }
        self.init(template: t, plugin: p, volumeID: v, target: tg, node: j["node"]?.string ?? "")
    }
}

final class InstanceRec {
    let key: InstanceKey
    var state: InstanceState = .pending
    var node = ""
    var prevNode = ""
    var volumeNode = ""
    var incarnation = 0
    var containerID = ""
    var network = ""
    /// The network plugin's ips[] (address with prefix, gateway, mac, pool, vlan) of the current attachment.
    var addresses: [JSON] = []
    var volumes: [AttachedVolume] = []
    var cpu: Int64 = 0, memory: Int64 = 0, disk: Int64 = 0
    var ports: [Int] = []
    var reason = ""
    /// Terminating for good (scaled away or app deleted): identities and plugin memory are released.
    var final = false
    var created: Double
    var updated: Double
    /// Scheduling retry gate: the generation of the last attempt, and when to retry regardless.
    var triedGen: UInt64 = .max
    var retryAt: Double = 0
    var zone: UInt32 = 0
    /// Nodes where wiring failed since the last placement: ranked last on the next attempts (Nomad's reschedule
    /// penalty), retried after a delay that doubles with each failure.
    var penaltyNodes: Set<String> = []

    init(key: InstanceKey, now: Double) {
        self.key = key
        created = now
        updated = now
    }

    /// Addresses without their prefix length, as events and discovery want them.
    var ips: [String] { addresses.compactMap { $0["address"]?.string.map { String($0.split(separator: "/").first ?? "") } } }

    var eventData: JSON {
        var d: JSON = ["kind": .string(key.kind), "app": .string(key.app), "ordinal": .number(Double(key.ordinal)),
                       "node": .string(node), "state": .string(state.rawValue), "ips": .array(ips.map { .string($0) })]
        if !reason.isEmpty { d = d.setting("reason", .string(reason)) }
        return d
    }

    var json: JSON {
        var j = eventData.setting("name", .string("\(key.app)-\(key.ordinal)")).setting("incarnation", .number(Double(incarnation)))
            .setting("containerID", containerID.isEmpty ? .null : .string(containerID))
            .setting("previousNode", prevNode.isEmpty ? .null : .string(prevNode))
            .setting("volumeNode", volumeNode.isEmpty ? .null : .string(volumeNode))
            .setting("network", network.isEmpty ? .null : .string(network))
            .setting("addresses", .array(addresses))
            .setting("volumes", .array(volumes.map { $0.json }))
            .setting("resources", ["cpu": .number(Double(cpu)), "memory": .number(Double(memory)), "disk": .number(Double(disk))])
            .setting("created", .number(created)).setting("updated", .number(updated))
        if !ports.isEmpty { j = j.setting("ports", .array(ports.map { .number(Double($0)) })) }
        if reason.isEmpty { j = j.setting("reason", .null) }
        return j
    }
}

// MARK: - the model and its records

/// The in-memory model of nodes, objects and instances, and the only code that writes their rows. Executor
/// thread only. Every cache change follows the row it mirrors, inside the same transaction; when a transaction
/// fails after the cache changed, the model is marked dirty and rebuilt from the store before its next use.
final class WorkloadState {
    let host: PluginHost
    var store: Store { host.store }
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

    func ensureLoaded() throws {
        if loaded && !dirty { return }
        try load()
    }

    func load() throws {
        nodes = []; hot = []; nodeIndex = [:]; zoneIDs = [:]; objects = [:]; pendingQueue = []; terminatingQueue = []; reconcileQueue = []
        nodesGen &+= 1
        generation &+= 1
        var s = try store.prepare("SELECT name, state, cpu, memory, disk, ports, labels, created, updated FROM nodes ORDER BY name")
        while try s.step() {
            let labels = ((try? JSON.parse(s.text(6)))?.object ?? []).map { ($0.0, $0.1.string ?? "") }
            let info = NodeInfo(name: s.text(0), state: NodeState(rawValue: s.text(1)) ?? .up, labels: labels, created: s.double(7), updated: s.double(8))
            nodeIndex[info.name] = nodes.count
            nodes.append(info)
            hot.append(NodeHot(up: info.state == .up, zone: zoneID(info.labelMap), cpuCap: s.int(2), memCap: s.int(3), diskCap: s.int(4),
                               portsCap: Int32(clamping: s.int(5)), cname: info.cname, clabels: info.clabels, labelCount: UInt32(info.labels.count)))
        }
        s = try store.prepare("SELECT kind, name, spec, generation, created, updated FROM objects")
        while try s.step() {
            let spec = (try? JSON.parse(s.text(2))) ?? .object([])
            let model = (try? WorkloadSpec.parse(spec)) ?? WorkloadSpec()
            let o = ObjectRec(kind: s.text(0), name: s.text(1), spec: spec, model: model, generation: Int(s.int(3)), created: s.double(4), updated: s.double(5))
            objects[o.key] = o
        }
        s = try store.prepare("""
            SELECT kind, app, ordinal, state, node, prev_node, volume_node, incarnation, container_id, network, addresses, volumes,
                   cpu, memory, disk, ports, reason, final, created, updated FROM instances ORDER BY kind, app, ordinal
            """)
        while try s.step() {
            let key = InstanceKey(kind: s.text(0), app: s.text(1), ordinal: Int(s.int(2)))
            let r = InstanceRec(key: key, now: s.double(18))
            r.state = InstanceState(rawValue: s.text(3)) ?? .pending
            r.node = s.text(4); r.prevNode = s.text(5); r.volumeNode = s.text(6)
            r.incarnation = Int(s.int(7)); r.containerID = s.text(8); r.network = s.text(9)
            r.addresses = (try? JSON.parse(s.text(10)))?.array ?? []
            r.volumes = ((try? JSON.parse(s.text(11)))?.array ?? []).compactMap { AttachedVolume($0) }
            r.cpu = s.int(12); r.memory = s.int(13); r.disk = s.int(14)
            r.ports = ((try? JSON.parse(s.text(15)))?.array ?? []).compactMap { $0.int }
            r.reason = s.text(16); r.final = s.int(17) != 0; r.updated = s.double(19)
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
        let s = try store.prepare("""
            INSERT OR REPLACE INTO nodes(name, state, cpu, memory, disk, ports, labels, created, updated) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)
            """)
        s.bind(1, n.name); s.bind(2, n.state.rawValue); s.bind(3, h.cpuCap); s.bind(4, h.memCap); s.bind(5, h.diskCap)
        s.bind(6, Int64(h.portsCap)); s.bind(7, JSON.object(n.labels.map { ($0.0, .string($0.1)) }).serialized)
        s.bind(8, n.created); s.bind(9, n.updated)
        try s.run()
    }

    func saveObject(_ o: ObjectRec) throws {
        let s = try store.prepare("INSERT OR REPLACE INTO objects(kind, name, spec, generation, created, updated) VALUES(?1,?2,?3,?4,?5,?6)")
        s.bind(1, o.kind); s.bind(2, o.name); s.bind(3, o.specText); s.bind(4, Int64(o.generation)); s.bind(5, o.created); s.bind(6, o.updated)
        try s.run()
    }

    func deleteObjectRow(_ k: ObjectKey) throws {
        let s = try store.prepare("DELETE FROM objects WHERE kind=?1 AND name=?2")
        s.bind(1, k.kind); s.bind(2, k.name)
        try s.run()
    }

    func saveInstance(_ r: InstanceRec) throws {
        let s = try store.prepare("""
            INSERT OR REPLACE INTO instances(kind, app, ordinal, state, node, prev_node, volume_node, incarnation, container_id, network,
                addresses, volumes, cpu, memory, disk, ports, reason, final, created, updated)
            VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20)
            """)
        s.bind(1, r.key.kind); s.bind(2, r.key.app); s.bind(3, Int64(r.key.ordinal)); s.bind(4, r.state.rawValue)
        s.bind(5, r.node); s.bind(6, r.prevNode); s.bind(7, r.volumeNode); s.bind(8, Int64(r.incarnation)); s.bind(9, r.containerID)
        s.bind(10, r.network); s.bind(11, r.addresses.isEmpty ? "[]" : JSON.array(r.addresses).serialized)
        s.bind(12, r.volumes.isEmpty ? "[]" : JSON.array(r.volumes.map { $0.json }).serialized)
        s.bind(13, r.cpu); s.bind(14, r.memory); s.bind(15, r.disk)
        s.bind(16, r.ports.isEmpty ? "[]" : JSON.array(r.ports.map { .number(Double($0)) }).serialized)
        s.bind(17, r.reason); s.bind(18, Int64(r.final ? 1 : 0)); s.bind(19, r.created); s.bind(20, r.updated)
        try s.run()
    }

    func deleteInstanceRow(_ k: InstanceKey) throws {
        let s = try store.prepare("DELETE FROM instances WHERE kind=?1 AND app=?2 AND ordinal=?3")
        s.bind(1, k.kind); s.bind(2, k.app); s.bind(3, Int64(k.ordinal))
        try s.run()
    }

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

// MARK: - the service

/// Nodes, apps and instances for the API, the CLI and the benchmark; owns the scheduler loop.
public final class WorkloadService: @unchecked Sendable {
    public let host: PluginHost
    let state: WorkloadState
    let scheduler: Scheduler
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var kicked = false
    private var looping = false
    private var stopping = false
    private var loopDone = false

    /// Requires the plugin host and the network and storage coordinators (a placement wires addresses and volumes);
    /// registers the live-state probe of scheduler plugins. The scheduler loop starts with `start()`.
    public init(host: PluginHost, network: NetworkService, storage: StorageService) {
        self.host = host
        state = WorkloadState(host: host)
        scheduler = Scheduler(state: state, network: network, storage: storage)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        let store = host.store
        host.liveStateProbes.append { [weak host] name in
            // A scheduler plugin holds live state while objects of its kind exist.
            guard let kind = host?.entry(name)?.instance?.plugin.schedulerKind else { return (0, "") }
            return (try store.objectCount(kind: kind), "\(kind) objects")
        }
    }

    /// Starts the scheduler loop. Call after the plugins are loaded.
    public func start() { startLoop() }

    // MARK: transactions

    /// Runs `body` on the executor in a transaction, with the model loaded; marks the model dirty when a failure
    /// may have left it ahead of the store.
    func tx<T>(_ body: @escaping () throws -> T) async throws -> T {
        do { return try await host.executor.run(guarded(body)) } catch { throw failed(error) }
    }

    /// The blocking form (benchmark, tests, the scheduler loop).
    public func txSync<T>(_ body: @escaping () throws -> T) throws -> T {
        do { return try host.executor.runSync(guarded(body)) } catch { throw failed(error) }
    }

    /// `body` with the model loaded first; a failure after it changed the model marks the model dirty.
    private func guarded<T>(_ body: @escaping () throws -> T) -> () throws -> T {
        let st = state
        return {
            try st.ensureLoaded()
            st.mutated = false
            do { return try body() } catch {
                if st.mutated { st.dirty = true }
                throw error
            }
        }
    }

    /// A transaction that failed other than by the host's own refusal (a plugin's error, a failed commit): reload the
    /// model before its next use. A refusal of the host comes before anything changed: the model is intact.
    private func failed(_ error: Error) -> Error {
        if (error as? BerthError)?.plugin != nil || !(error is BerthError) { state.dirty = true }
        return error
    }

    // MARK: the loop

    func startLoop() {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard !looping else { return }
        looping = true
        stopping = false
        loopDone = false
        Detached.run { [self] in loop() }
    }

    /// Stops the loop after its current pass (tests and the benchmark).
    public func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_signal(&cond)
        while looping && !loopDone { pthread_cond_wait(&cond, &mutex) }
        looping = false
        pthread_mutex_unlock(&mutex)
    }

    /// Wakes the loop: something changed that may let instances be placed or torn down.
    func kick() {
        pthread_mutex_lock(&mutex)
        kicked = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            if !kicked && !stopping {
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                ts.tv_sec += 1  // retries of instances that wait on time (backoff) need a tick
                pthread_cond_timedwait(&cond, &mutex, &ts)
            }
            kicked = false
            if stopping {
                loopDone = true
                pthread_cond_broadcast(&cond)
                pthread_mutex_unlock(&mutex)
                return
            }
            pthread_mutex_unlock(&mutex)
            // Passes until there is nothing left to do right now.
            while true {
                let r = try? txSync { self.scheduler.pass(budget: 256) }
                guard let r, r.more else { break }
            }
        }
    }

    /// One scheduling pass in a transaction (the benchmark drives the scheduler with this).
    public func schedulePass(budget: Int = 256) throws -> (placed: Int, failed: Int, tornDown: Int, more: Bool) {
        let r = try txSync { self.scheduler.pass(budget: budget) }
        return (r.placed, r.failed, r.tornDown, r.more)
    }

    /// Runs passes until nothing is left to do right now; returns the number of placements.
    @discardableResult
    public func scheduleUntilIdle(budget: Int = 256) throws -> Int {
        var placed = 0
        while true {
            let r = try schedulePass(budget: budget)
            placed += r.placed
            if !r.more { return placed }
        }
    }

    /// Network wiring on or off (the benchmark measures the core without it). On by default.
    public var wireNetworks: Bool {
        get { scheduler.wireNetworks }
        set { scheduler.wireNetworks = newValue }
    }

    // MARK: kinds

    struct KindInfo {
        let kind: String
        let plugin: String?
        let schema: JSON?
    }

    /// The built-in App and every custom kind of a loaded scheduler plugin (the first plugin to claim a kind owns it).
    func kinds() -> [KindInfo] {
        var out = [KindInfo(kind: "App", plugin: nil, schema: WorkloadSpec.appSchema)]
        for e in host.plugins {
            guard let inst = e.instance, let k = inst.plugin.schedulerKind, !out.contains(where: { $0.kind == k }) else { continue }
            out.append(KindInfo(kind: k, plugin: e.spec.name, schema: inst.plugin.kindSchema))
        }
        return out
    }

    public func kindsJSON() -> JSON {
        ["kinds": .array(kinds().map { k in
            ["kind": .string(k.kind), "owner": .string(k.plugin.map { "plugin \($0)" } ?? "berthd (built-in)"), "schema": k.schema ?? .null]
        })]
    }

    func kindInfo(_ kind: String) throws -> KindInfo {
        let ks = kinds()
        guard let k = ks.first(where: { $0.kind == kind }) else {
            throw BerthError(.notFound, "no kind \"\(kind)\": nothing owns it (known kinds: \(ks.map { $0.kind }.joined(separator: ", "))); a custom kind comes from a loaded scheduler plugin")
        }
        return k
    }

    // MARK: nodes

    static func checkNodeName(_ n: String) throws {
        guard !n.isEmpty, n.utf8.count <= 253, Pattern.matches("^[a-z0-9][a-z0-9.-]*$", n) else {
            throw BerthError(.invalidArgument, "node name \"\(n)\" is not valid: 1-253 characters of a-z, 0-9, '.', '-', starting with a letter or digit")
        }
    }

    func nodeJSON(_ i: Int) -> JSON {
        let n = state.nodes[i], h = state.hot[i]
        return ["name": .string(n.name), "state": .string(n.state.rawValue),
                "capacity": ["cpu": .number(Double(h.cpuCap)), "memory": .number(Double(h.memCap)), "disk": .number(Double(h.diskCap)),
                             "ports": .number(Double(h.portsCap))],
                "allocated": ["cpu": .number(Double(h.cpuUsed)), "memory": .number(Double(h.memUsed)), "disk": .number(Double(h.diskUsed)),
                              "ports": .number(Double(h.portsUsed)), "instances": .number(Double(n.instances))],
                "labels": .object(n.labels.map { ($0.0, .string($0.1)) }), "created": .number(n.created), "updated": .number(n.updated)]
    }

    public func listNodes() async throws -> JSON {
        try await tx { ["nodes": .array(self.state.nodes.indices.map { self.nodeJSON($0) })] }
    }

    public func getNode(_ name: String) async throws -> JSON {
        try await tx {
            guard let i = self.state.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
            return self.nodeJSON(i)
        }
    }

    /// Adds or updates a node: {capacity: {cpu, memory, disk, ports}, labels: {k: v}, state?}.
    public func putNode(_ name: String, _ body: JSON) async throws -> (JSON, Bool) {
        try Self.checkNodeName(name)
        let r = try await tx { try self.putNodeInTransaction(name, body) }
        kick()
        return r
    }

    public func putNodeSync(_ name: String, _ body: JSON) throws {
        try Self.checkNodeName(name)
        _ = try txSync { try self.putNodeInTransaction(name, body) }
    }

    func putNodeInTransaction(_ name: String, _ body: JSON) throws -> (JSON, Bool) {
        let allowed: Set<String> = ["name", "kind", "capacity", "labels", "state"]
        if let unknown = body.keys.first(where: { !allowed.contains($0) }) {
            throw BerthError(.invalidArgument, "unknown field \"\(unknown)\" in node \(name) (allowed: capacity, labels, state)")
        }
        if let n = body["name"]?.string, n != name { throw BerthError(.invalidArgument, "name \"\(n)\" in the body does not match the path's \"\(name)\"") }
        let cap = body["capacity"] ?? .object([])
        guard case .object = cap else { throw BerthError(.invalidArgument, "capacity must be an object {cpu, memory, disk, ports}") }
        if let unknown = cap.keys.first(where: { !["cpu", "memory", "disk", "ports"].contains($0) }) {
            throw BerthError(.invalidArgument, "capacity.\(unknown): unknown key (allowed: cpu, memory, disk, ports)")
        }
        let cpu = try Quantity.cpu(cap["cpu"], "capacity.cpu")
        let mem = try Quantity.bytes(cap["memory"], "capacity.memory")
        let disk = try Quantity.bytes(cap["disk"], "capacity.disk")
        var ports: Int64 = 1000
        if let p = cap["ports"], !p.isNull {
            guard let v = p.int, v >= 0, v <= 65535 else { throw BerthError(.invalidArgument, "capacity.ports must be an integer 0..65535 (how many host ports instances may use)") }
            ports = Int64(v)
        }
        var labels: [(String, String)] = []
        if let l = body["labels"], !l.isNull {
            guard let o = l.object else { throw BerthError(.invalidArgument, "labels must be an object of strings") }
            for (k, v) in o {
                guard let s = v.string else { throw BerthError(.invalidArgument, "labels.\(k): expected a string, got \(v.typeName)") }
                guard !k.isEmpty, k.utf8.count <= 63, s.utf8.count <= 63 else { throw BerthError(.invalidArgument, "labels.\(k): keys and values are at most 63 bytes") }
                labels.append((k, s))
            }
        }
        var newState: NodeState?
        if let s = body["state"]?.string {
            guard let ns = NodeState(rawValue: s) else { throw BerthError(.invalidArgument, "state \"\(s)\" must be up, down or draining") }
            newState = ns
        }
        let now = wallClock()
        let st = state
        let created: Bool
        if let i = st.nodeIndex[name] {
            created = false
            let n = st.nodes[i]
            var h = st.hot[i]
            h.cpuCap = cpu; h.memCap = mem; h.diskCap = disk; h.portsCap = Int32(ports)
            n.updated = now
            let oldLabels = n.labels
            n.setLabels(labels)
            h.zone = st.zoneID(n.labelMap)
            h.clabels = n.clabels
            h.labelCount = UInt32(n.labels.count)
            try st.saveNode(n, h)
            st.mutated = true
            st.hot[i] = h
            if oldLabels.map({ "\($0.0)=\($0.1)" }) != n.labels.map({ "\($0.0)=\($0.1)" }) && n.instances > 0 {
                st.dirty = true  // zone counts of placed instances follow the new labels: rebuild after this transaction
            }
        } else {
            created = true
            let n = NodeInfo(name: name, state: newState ?? .up, labels: labels, created: now, updated: now)
            let h = NodeHot(up: n.state == .up, zone: st.zoneID(n.labelMap), cpuCap: cpu, memCap: mem, diskCap: disk, portsCap: Int32(ports),
                            cname: n.cname, clabels: n.clabels, labelCount: UInt32(n.labels.count))
            try st.saveNode(n, h)
            st.mutated = true
            st.nodeIndex[name] = st.nodes.count
            st.nodes.append(n)
            st.hot.append(h)
        }
        host.executor.noteEvent(try store.appendEvent(type: created ? "node.added" : "node.updated", subject: name,
                                                         data: ["capacity": ["cpu": .number(Double(cpu)), "memory": .number(Double(mem)),
                                                                             "disk": .number(Double(disk)), "ports": .number(Double(ports))],
                                                                "labels": .object(labels.map { ($0.0, .string($0.1)) })]))
        st.nodesGen &+= 1
        st.generation &+= 1
        if !created, let ns = newState { _ = try setNodeStateInTransaction(name, ns) }
        return (nodeJSON(st.nodeIndex[name]!), created)
    }

    var store: Store { host.store }

    /// up, down (lost: its instances are rescheduled) or draining (no new instances; its instances are moved).
    public func setNodeState(_ name: String, _ s: NodeState) async throws -> JSON {
        let r = try await tx { try self.setNodeStateInTransaction(name, s) }
        kick()
        return r
    }

    func setNodeStateInTransaction(_ name: String, _ s: NodeState) throws -> JSON {
        let st = state
        guard let i = st.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
        let n = st.nodes[i]
        var evicted = 0
        if n.state != s {
            n.state = s
            n.updated = wallClock()
            st.hot[i].up = s == .up
            try st.saveNode(n, st.hot[i])
            st.mutated = true
            host.executor.noteEvent(try store.appendEvent(type: "node.\(s.rawValue)", subject: name))
            st.generation &+= 1
        }
        if s != .up { evicted = try st.evict(node: name, reason: "node \(name) is \(s.rawValue)") }
        return nodeJSON(i).setting("evicted", .number(Double(evicted)))
    }

    /// Removes a node that runs nothing.
    public func deleteNode(_ name: String) async throws {
        try await tx {
            let st = self.state
            guard let i = st.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
            let busy = st.objects.values.flatMap { $0.instances.values }.filter { $0.node == name && $0.state != .pending }
            if !busy.isEmpty {
                throw BerthError(.failedPrecondition, "node \(name) still has \(busy.count) instance(s) (\(busy.prefix(3).map { $0.key.subject }.joined(separator: ", "))); mark it down or drain it first")
            }
            _ = i
            let d = try self.store.prepare("DELETE FROM nodes WHERE name=?1")
            d.bind(1, name)
            try d.run()
            self.host.executor.noteEvent(try self.store.appendEvent(type: "node.removed", subject: name))
            st.dirty = true  // node indexes shift: rebuild the model after this transaction
        }
    }

    // MARK: objects

    static func checkObjectName(_ n: String) throws {
        guard !n.isEmpty, n.utf8.count <= 63, Pattern.matches("^[a-z0-9][a-z0-9-]*$", n), !n.hasSuffix("-") else {
            throw BerthError(.invalidArgument, "name \"\(n)\" is not valid: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
        }
    }

    func objectJSON(_ o: ObjectRec) -> JSON {
        var counts: [InstanceState: Int] = [:]
        for r in o.instances.values { counts[r.state, default: 0] += 1 }
        let owner = kinds().first { $0.kind == o.kind }?.plugin
        return ["kind": .string(o.kind), "name": .string(o.name), "spec": o.spec, "generation": .number(Double(o.generation)),
                "owner": .string(owner.map { "plugin \($0)" } ?? (o.kind == "App" ? "berthd (built-in)" : "none loaded")),
                "created": .number(o.created), "updated": .number(o.updated),
                "status": ["replicas": .number(Double(o.model.replicas)), "pending": .number(Double(counts[.pending] ?? 0)),
                           "placed": .number(Double(counts[.placed] ?? 0)), "running": .number(Double(counts[.running] ?? 0)),
                           "terminating": .number(Double(counts[.terminating] ?? 0))]]
    }

    public func listObjects(kind: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        return try await tx {
            let objs = self.state.objects.values.filter { $0.kind == kind && !$0.deleted }.sorted { $0.name < $1.name }
            if objs.isEmpty && !known.contains(kind) {
                throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))")
            }
            return ["kind": .string(kind), "items": .array(objs.map { self.objectJSON($0) })]
        }
    }

    public func getObject(kind: String, name: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        return try await tx {
            guard let o = self.state.objects[ObjectKey(kind: kind, name: name)], !o.deleted else {
                if !known.contains(kind) { throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))") }
                throw BerthError(.notFound, "no \(kind) named \"\(name)\"")
            }
            return self.objectJSON(o)
        }
    }

    /// Validates a spec for its kind: the kind's own schema (App's, or the plugin's kind_schema), then the
    /// shared fields. Errors name the key.
    func validate(kind: KindInfo, name: String, spec: JSON) throws -> WorkloadSpec {
        guard case .object = spec else { throw BerthError(.invalidArgument, "spec must be an object, got \(spec.typeName)") }
        // Every problem, each once: the kind's schema, the shared fields (a plugin's kind), replicas.
        var errs: [SchemaError] = []
        if let s = kind.schema { errs = Schema.validate(spec, against: s, path: "spec") }
        if kind.plugin != nil {
            for e in Schema.validate(spec, against: WorkloadSpec.commonSchema, path: "spec") where !errs.contains(where: { $0.description == e.description }) {
                errs.append(e)
            }
        }
        if spec["replicas"]?.int == nil && !errs.contains(where: { $0.path == "spec.replicas" }) {
            errs.append(SchemaError(path: "spec.replicas", reason: "is required (an integer)"))
        }
        // Checked before the schemas: a kind's own schema may allow more, and this says what to do.
        if let n = spec["replicas"]?.int, n > WorkloadSpec.maxReplicas {
            throw BerthError(.invalidArgument, "invalid \(kind.kind) \"\(name)\": spec.replicas is \(n), more than the \(WorkloadSpec.maxReplicas) instances one app may have; split it into several apps")
        }
        if !errs.isEmpty {
            throw BerthError(.invalidArgument, "invalid \(kind.kind) \"\(name)\": " + errs.map { $0.description }.joined(separator: "; "),
                           details: ["problems": .array(errs.map { .string($0.description) })])
        }
        let model = try WorkloadSpec.parse(spec)
        try model.run?.checkOnNode()
        if let n = model.network {
            let nets = host.plugins.filter { $0.instance?.plugin.kinds.contains(.network) ?? false }.map { $0.spec.name }
            guard nets.contains(n.name) else {
                throw BerthError(.invalidArgument, "spec.network.name: no loaded network plugin named \"\(n.name)\"" + (nets.isEmpty ? "" : " (have: \(nets.joined(separator: ", ")))"))
            }
        }
        if !model.volumes.isEmpty {
            let stores = host.plugins.filter { $0.instance?.plugin.kinds.contains(.storage) ?? false }.map { $0.spec.name }
            for (i, v) in model.volumes.enumerated() {
                if let s = v.storage {
                    guard stores.contains(s) else {
                        throw BerthError(.invalidArgument, "spec.volumes[\(i)].storage: no loaded storage plugin named \"\(s)\"" + (stores.isEmpty ? "" : " (have: \(stores.joined(separator: ", ")))"))
                    }
                } else if stores.count != 1 {
                    throw BerthError(.invalidArgument, "spec.volumes[\(i)].storage is required: " + (stores.isEmpty ? "no storage plugin is loaded" : "several storage plugins are loaded (\(stores.joined(separator: ", ")))"))
                }
            }
        }
        return model
    }

    /// Creates or replaces an object. Body: {spec} or {kind, name, spec}. Returns (object, created).
    public func putObject(kind: String, name: String, body: JSON) async throws -> (JSON, Bool) {
        let (k, spec, model) = try prepareObject(kind: kind, name: name, body: body)
        let r = try await tx { try self.putObjectInTransaction(k, name, spec, model) }
        kick()
        return r
    }

    public func putObjectSync(kind: String, name: String, body: JSON) throws {
        let (k, spec, model) = try prepareObject(kind: kind, name: name, body: body)
        _ = try txSync { try self.putObjectInTransaction(k, name, spec, model) }
    }

    func prepareObject(kind: String, name: String, body: JSON) throws -> (KindInfo, JSON, WorkloadSpec) {
        let k = try kindInfo(kind)
        try Self.checkObjectName(name)
        guard case .object = body else { throw BerthError(.invalidArgument, "expected a JSON object {spec} or {kind, name, spec}") }
        if let unknown = body.keys.first(where: { !["kind", "name", "spec"].contains($0) }) {
            throw BerthError(.invalidArgument, "unknown field \"\(unknown)\" (an object is {kind, name, spec})")
        }
        if let bk = body["kind"]?.string, bk != kind { throw BerthError(.invalidArgument, "kind \"\(bk)\" in the body does not match the path's \"\(kind)\"") }
        if let bn = body["name"]?.string, bn != name { throw BerthError(.invalidArgument, "name \"\(bn)\" in the body does not match the path's \"\(name)\"") }
        guard let spec = body["spec"] else { throw BerthError(.invalidArgument, "spec is required") }
        return (k, spec, try validate(kind: k, name: name, spec: spec))
    }

    func putObjectInTransaction(_ k: KindInfo, _ name: String, _ spec: JSON, _ model: WorkloadSpec) throws -> (JSON, Bool) {
        let st = state
        if let other = st.objects.values.first(where: { $0.name == name && $0.kind != k.kind && !$0.deleted }) {
            throw BerthError(.failedPrecondition, "the name \"\(name)\" is taken by \(other.kind) \"\(name)\"; names are unique across kinds (they name addresses, volumes and DNS records)")
        }
        if let gone = st.objects[ObjectKey(kind: k.kind, name: name)], gone.deleted {
            throw BerthError(.failedPrecondition, "\(k.kind) \"\(name)\" is still being deleted (\(gone.instances.count) instance(s) terminating); try again shortly")
        }
        let now = wallClock()
        let key = ObjectKey(kind: k.kind, name: name)
        let created: Bool
        let o: ObjectRec
        if let existing = st.objects[key] {
            created = false
            o = existing
            if o.spec == spec { return (objectJSON(o), false) }
            o.spec = spec
            o.specText = spec.serialized
            o.model = model
            o.generation += 1
            o.updated = now
            o.labelMaskGen = .max
        } else {
            created = true
            o = ObjectRec(kind: k.kind, name: name, spec: spec, model: model, generation: 1, created: now, updated: now)
            st.objects[key] = o
        }
        st.mutated = true
        try st.saveObject(o)
        host.executor.noteEvent(try store.appendEvent(type: created ? "app.created" : "app.updated", subject: "\(k.kind)/\(name)",
                                                         data: ["kind": .string(k.kind), "name": .string(name), "generation": .number(Double(o.generation)),
                                                                "replicas": .number(Double(model.replicas))]))
        st.generation &+= 1
        try st.reconcile(o)
        return (objectJSON(o), created)
    }

    /// Deletes an object: its instances terminate (their network identities and plugin memory are released).
    public func deleteObject(kind: String, name: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        let r = try await tx {
            let st = self.state
            guard let o = st.objects[ObjectKey(kind: kind, name: name)], !o.deleted else {
                if !known.contains(kind) { throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))") }
                throw BerthError(.notFound, "no \(kind) named \"\(name)\"")
            }
            o.deleted = true
            st.mutated = true
            try st.deleteObjectRow(o.key)
            self.host.executor.noteEvent(try self.store.appendEvent(type: "app.deleted", subject: "\(kind)/\(name)",
                                                                       data: ["kind": .string(kind), "name": .string(name)]))
            st.generation &+= 1
            let terminating = o.instances.values.filter { $0.state == .placed || $0.state == .running || $0.state == .terminating }.count
            try st.reconcile(o)
            return ["deleted": true, "terminating": .number(Double(terminating))] as JSON
        }
        kick()
        return r
    }

    // MARK: instances

    static func parseKey(_ kind: String, _ app: String, _ ordinal: String) throws -> InstanceKey {
        guard let o = Int(ordinal), o >= 0 else { throw BerthError(.invalidArgument, "ordinal \"\(ordinal)\" must be a non-negative integer") }
        return InstanceKey(kind: kind, app: app, ordinal: o)
    }

    func requireInstance(_ k: InstanceKey) throws -> InstanceRec {
        guard let r = state.instance(k), r.state != .gone else { throw BerthError(.notFound, "no instance \(k.subject)") }
        return r
    }

    /// Instances, optionally filtered by kind, app, node and state.
    public func listInstances(kind: String? = nil, app: String? = nil, node: String? = nil, state want: String? = nil) async throws -> JSON {
        try await tx {
            var out: [JSON] = []
            for o in self.state.objects.values.sorted(by: { $0.key < $1.key }) {
                if let kind, o.kind != kind { continue }
                if let app, o.name != app { continue }
                for r in o.instances.values.sorted(by: { $0.key < $1.key }) {
                    if let node, r.node != node { continue }
                    if let want, r.state.rawValue != want { continue }
                    out.append(r.json)
                }
            }
            return ["instances": .array(out)]
        }
    }

    public func getInstance(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        return try await tx { try self.requireInstance(k).json }
    }

    /// placed -> running (the instance's runtime reports it started). Running again: no change.
    public func reportRunning(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        let r = try await tx { try self.reportRunningInTransaction(k) }
        kick()
        return r
    }

    public func reportRunningSync(kind: String, app: String, ordinal: Int) throws {
        _ = try txSync { try self.reportRunningInTransaction(InstanceKey(kind: kind, app: app, ordinal: ordinal)) }
        kick()
    }

    func reportRunningInTransaction(_ k: InstanceKey) throws -> JSON {
        let r = try requireInstance(k)
        switch r.state {
        case .running: return r.json
        case .placed:
            try state.transition(r, to: .running)
            return r.json
        default:
            throw BerthError(.failedPrecondition, "instance \(k.subject) is \(r.state.rawValue)\(r.reason.isEmpty ? "" : " (\(r.reason))"); only a placed instance can start running")
        }
    }

    /// Deletes one instance: it terminates, and comes back (pending, then placed by its kind's rules) while its
    /// app still wants its ordinal.
    public func deleteInstance(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        let r = try await tx { () -> JSON in
            let r = try self.requireInstance(k)
            switch r.state {
            case .placed, .running: try self.state.transition(r, to: .terminating, reason: "deleted by request")
            case .pending, .terminating, .gone: break
            }
            return r.json
        }
        kick()
        return r
    }

    // MARK: discovery

    /// {"instances":[{kind, app, ordinal, node, state, ips}]} of every live instance; executor thread.
    /// Up to `limit` instances (not gone) after the token {kind, app, ordinal}, in key order, and the next token.
    package func snapshotPage(after: JSON?, limit: Int) throws -> (instances: [JSON], next: JSON?) {
        try state.ensureLoaded()
        let from = after.map { InstanceKey(kind: $0["kind"]?.string ?? "", app: $0["app"]?.string ?? "", ordinal: $0["ordinal"]?.int ?? 0) }
        var out: [JSON] = []
        for o in state.objects.values.sorted(by: { $0.key < $1.key }) {
            if let f = from, o.key < f.object { continue }
            for r in o.instances.values.sorted(by: { $0.key < $1.key }) where r.state != .gone {
                if let f = from, !(f < r.key) { continue }
                if out.count == limit {
                    let last = out[out.count - 1]
                    return (out, ["kind": last["kind"] ?? .null, "app": last["app"] ?? .null, "ordinal": last["ordinal"] ?? .null])
                }
                out.append(r.eventData)
            }
        }
        return (out, nil)
    }

    func snapshotInTransaction() throws -> JSON {
        try state.ensureLoaded()
        var out: [JSON] = []
        for o in state.objects.values.sorted(by: { $0.key < $1.key }) {
            for r in o.instances.values.sorted(by: { $0.key < $1.key }) where r.state != .gone { out.append(r.eventData) }
        }
        return ["instances": .array(out)]
    }
}

/// glibc's malloc_trim (malloc.h is not in the Glibc module): returns freed heap to the system.
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
