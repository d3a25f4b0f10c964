// The scheduler's in-memory model: nodes (a hot part scanned per candidate, the rest), objects and their instances.
// Built from the store's workload tables (Records.swift); owned by the executor thread.
//
// Instances move pending -> placed -> running -> terminating -> gone. Every transition writes the instance's row
// and appends an event in the same transaction:
//     type  instance.<state>        subject  <kind>/<app>/<ordinal>
//     data  {"kind","app","ordinal","node","state","ips":["10.1.0.10"],"reason"?}
// (for instance.gone: the node and addresses the instance had, so that discovery can deregister it).
import BerthKinds
import BerthPluginABI
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

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
/// A volume an instance has published (the storage coordinator's record of a template volume).
typealias AttachedVolume = VolumeAttachment

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

/// An instance's fields that a failed placement must put back.
struct Snapshot {
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
