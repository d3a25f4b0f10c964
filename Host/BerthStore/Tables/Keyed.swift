// The host's tables as key spaces of the store interface, for an engine without SQL (etcd): one namespace per table
// ("berth:…"; plugin instance names cannot hold ":"), keys made of the row's key columns joined by NUL bytes (names
// and ids never hold NUL), values JSON. Every read goes through the transaction, so it is in its read set.
import BerthWire

/// An engine that keeps the host's tables in its key spaces (adopt it together with HostStore).
public protocol KeyedHostTables: StateStore {}

enum HostNS {
    static let attachments = "berth:attachments"
    static let volumes = "berth:volumes"
    static let volumeNames = "berth:volume-names"
    static let volumeNodes = "berth:volume-nodes"
    static let volumeTargets = "berth:volume-targets"
    static let snapshots = "berth:snapshots"
    static let nodes = "berth:nodes"
    static let objects = "berth:objects"
    static let instances = "berth:instances"
    static let cursors = "berth:discovery-cursors"
    /// One key, rewritten (a fresh random value) by every transaction that writes nodes, objects or instances, and
    /// read by every transaction that reads them: the workload tables are scanned without a read set (thousands of
    /// rows, one compare), and two transactions that touch them still conflict. The model also knows from it whether
    /// its cache is current (HostStore.workloadsVersion).
    static let meta = "berth:meta"
    static let workloadsVersion = Array("workloads.version".utf8)

    /// The key of a row: its key columns joined by NUL; with `open`, a trailing NUL (the prefix of the rows under it).
    static func key(_ parts: String..., open: Bool = false) -> [UInt8] {
        var k: [UInt8] = []
        for (i, p) in parts.enumerated() {
            if i > 0 { k.append(0) }
            k += Array(p.utf8)
        }
        if open { k.append(0) }
        return k
    }

    /// An ordinal as a key part that sorts numerically.
    static func ordinal(_ n: Int64) -> String {
        let d = String(n)
        return String(repeating: "0", count: max(0, 20 - d.count)) + d
    }
}

extension KeyedHostTables {
    // MARK: rows as JSON

    func getRow(_ ns: String, _ key: [UInt8]) throws -> JSON? {
        guard let v = try key.withUnsafeBytes({ kb in try kvRead(ns, kb) { $0.map { Array($0) } } }) else { return nil }
        return try JSON.parse(v)
    }

    func putRow(_ ns: String, _ key: [UInt8], _ row: JSON) throws {
        let v = row.bytes
        try key.withUnsafeBytes { kb in try v.withUnsafeBytes { try kvPut(ns, kb, $0) } }
    }

    /// Deletes a row; true when there was one.
    @discardableResult
    func deleteRow(_ ns: String, _ key: [UInt8]) throws -> Bool {
        guard try key.withUnsafeBytes({ kb in try kvRead(ns, kb) { $0 != nil } }) else { return false }
        try key.withUnsafeBytes { try kvDelete(ns, $0) }
        return true
    }

    /// The rows under a prefix after the key `after` (the prefix itself when empty), in key order, up to `limit`.
    func scanRows(_ ns: String, prefix: [UInt8], after: [UInt8] = [], limit: Int = .max, _ body: ([UInt8], JSON) throws -> Bool) throws {
        var from = after
        var n = 0
        while n < limit, let (k, v) = try prefix.withUnsafeBytes({ p in
            try from.withUnsafeBytes { a in try kvScanNext(ns, prefix: p, after: a) { $0.map { (Array($0.key), Array($0.value)) } } }
        }) {
            n += 1
            guard try body(k, try JSON.parse(v)) else { return }
            from = k
        }
    }

    func countRows(_ ns: String, prefix: [UInt8]) throws -> Int {
        Int(try prefix.withUnsafeBytes { try kvCountPrefix(ns, $0) })
    }

    // MARK: attachments

    public func attachmentResult(network: String, containerID: String, ifname: String) throws -> String? {
        try getRow(HostNS.attachments, HostNS.key(network, containerID, ifname))?["result"]?.string
    }

    public func insertAttachment(network: String, containerID: String, ifname: String, node: String, result: String, created: Double) throws {
        let k = HostNS.key(network, containerID, ifname)
        if try getRow(HostNS.attachments, k) != nil {
            throw BerthError(.alreadyExists, "attachment \(containerID)/\(ifname) of network \(network) is already recorded")
        }
        try putRow(HostNS.attachments, k, ["node": .string(node), "result": .string(result), "created": .number(created)])
    }

    @discardableResult
    public func deleteAttachment(network: String, containerID: String, ifname: String) throws -> Bool {
        try deleteRow(HostNS.attachments, HostNS.key(network, containerID, ifname))
    }

    /// Every attachment of a network, in key order.
    func attachmentRows(_ network: String) throws -> [AttachmentRow] {
        let p = HostNS.key(network, open: true)
        var out: [AttachmentRow] = []
        try scanRows(HostNS.attachments, prefix: p) { k, j in
            let parts = k[p.count...].split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { return true }
            out.append(AttachmentRow(containerID: String(decoding: parts[0], as: UTF8.self), ifname: String(decoding: parts[1], as: UTF8.self),
                                     node: j["node"]?.string ?? "", result: j["result"]?.string ?? "", created: j["created"]?.double ?? 0))
            return true
        }
        return out
    }

    public func attachmentKeys(network: String) throws -> [(containerID: String, ifname: String)] {
        try attachmentRows(network).map { ($0.containerID, $0.ifname) }
    }

    public func attachments(network: String) throws -> [AttachmentRow] {
        try attachmentRows(network).sorted { $0.created < $1.created }
    }

    public func deleteAttachments(network: String, node: String) throws {
        for a in try attachmentRows(network) where a.node == node {
            try deleteRow(HostNS.attachments, HostNS.key(network, a.containerID, a.ifname))
        }
    }

    public func attachmentCount(network: String) throws -> Int {
        try countRows(HostNS.attachments, prefix: HostNS.key(network, open: true))
    }

    // MARK: volumes

    func volumeRow(_ j: JSON) -> VolumeRow {
        VolumeRow(id: j["id"]?.string ?? "", name: j["name"]?.string ?? "", capacity: Int64(j["capacity"]?.int ?? 0),
                  accessMode: j["accessMode"]?.string ?? "", volumeMode: j["volumeMode"]?.string ?? "",
                  volume: j["volume"] ?? .object([]), created: j["created"]?.double ?? 0)
    }

    func volumeJSON(_ v: VolumeRow) -> JSON {
        ["id": .string(v.id), "name": .string(v.name), "capacity": .int(v.capacity), "accessMode": .string(v.accessMode),
         "volumeMode": .string(v.volumeMode), "volume": v.volume, "created": .number(v.created)]
    }

    public func volume(plugin: String, id: String) throws -> VolumeRow? {
        try getRow(HostNS.volumes, HostNS.key(plugin, id)).map(volumeRow)
    }

    public func volume(plugin: String, name: String) throws -> VolumeRow? {
        guard let id = try getRow(HostNS.volumeNames, HostNS.key(plugin, name))?["id"]?.string else { return nil }
        return try volume(plugin: plugin, id: id)
    }

    public func volumes(plugin: String, after: String, limit: Int) throws -> [VolumeRow] {
        var out: [VolumeRow] = []
        try scanRows(HostNS.volumes, prefix: HostNS.key(plugin, open: true), after: after.isEmpty ? [] : HostNS.key(plugin, after), limit: limit) { _, j in
            out.append(volumeRow(j))
            return true
        }
        return out
    }

    public func insertVolume(plugin: String, _ v: VolumeRow) throws {
        let k = HostNS.key(plugin, v.id), nk = HostNS.key(plugin, v.name)
        if try getRow(HostNS.volumes, k) != nil || getRow(HostNS.volumeNames, nk) != nil {
            throw BerthError(.alreadyExists, "volume \(v.name) (\(v.id)) of \(plugin) is already recorded")
        }
        try putRow(HostNS.volumes, k, volumeJSON(v))
        try putRow(HostNS.volumeNames, nk, ["id": .string(v.id)])
    }

    public func updateVolume(plugin: String, id: String, capacity: Int64, volume: JSON) throws {
        guard var v = try self.volume(plugin: plugin, id: id) else { return }
        v.capacity = capacity
        v.volume = volume
        try putRow(HostNS.volumes, HostNS.key(plugin, id), volumeJSON(v))
    }

    @discardableResult
    public func deleteVolume(plugin: String, id: String) throws -> Bool {
        guard let v = try volume(plugin: plugin, id: id) else { return false }
        try deleteRow(HostNS.volumeNames, HostNS.key(plugin, v.name))
        return try deleteRow(HostNS.volumes, HostNS.key(plugin, id))
    }

    public func volumeNodes(plugin: String, id: String) throws -> [VolumeNodeRow] {
        var out: [VolumeNodeRow] = []
        try scanRows(HostNS.volumeNodes, prefix: HostNS.key(plugin, id, open: true)) { _, j in
            out.append(VolumeNodeRow(node: j["node"]?.string ?? "", readonly: j["readonly"]?.bool ?? false, publishContext: j["publishContext"] ?? .object([]),
                                     staged: j["staged"]?.bool ?? false, stagingPath: j["stagingPath"]?.string ?? ""))
            return true
        }
        return out
    }

    public func insertVolumeNode(plugin: String, id: String, node: String, readonly: Bool, publishContext: JSON, stagingPath: String, created: Double) throws {
        let k = HostNS.key(plugin, id, node)
        if try getRow(HostNS.volumeNodes, k) != nil { throw BerthError(.alreadyExists, "volume \(id) of \(plugin) is already published to node \(node)") }
        try putRow(HostNS.volumeNodes, k, ["node": .string(node), "readonly": .bool(readonly), "publishContext": publishContext, "staged": .bool(false),
                                           "stagingPath": .string(stagingPath), "created": .number(created)])
    }

    public func setVolumeStaged(plugin: String, id: String, node: String, _ staged: Bool) throws {
        let k = HostNS.key(plugin, id, node)
        guard let j = try getRow(HostNS.volumeNodes, k) else { return }
        try putRow(HostNS.volumeNodes, k, j.setting("staged", .bool(staged)))
    }

    public func deleteVolumeNode(plugin: String, id: String, node: String) throws {
        try deleteRow(HostNS.volumeNodes, HostNS.key(plugin, id, node))
    }

    func targetRow(_ j: JSON) -> VolumeTargetRow {
        VolumeTargetRow(volumeID: j["volumeID"]?.string ?? "", node: j["node"]?.string ?? "", target: j["target"]?.string ?? "",
                        readonly: j["readonly"]?.bool ?? false)
    }

    public func volumeTargets(plugin: String, id: String) throws -> [VolumeTargetRow] {
        var out: [VolumeTargetRow] = []
        try scanRows(HostNS.volumeTargets, prefix: HostNS.key(plugin, open: true)) { _, j in
            if j["volumeID"]?.string == id { out.append(targetRow(j)) }
            return true
        }
        return out
    }

    public func volumeTarget(plugin: String, target: String) throws -> VolumeTargetRow? {
        try getRow(HostNS.volumeTargets, HostNS.key(plugin, target)).map(targetRow)
    }

    public func insertVolumeTarget(plugin: String, id: String, node: String, target: String, readonly: Bool, created: Double) throws {
        let k = HostNS.key(plugin, target)
        if try getRow(HostNS.volumeTargets, k) != nil { throw BerthError(.alreadyExists, "target \(target) of \(plugin) is already published") }
        try putRow(HostNS.volumeTargets, k, ["volumeID": .string(id), "node": .string(node), "target": .string(target), "readonly": .bool(readonly),
                                             "created": .number(created)])
    }

    public func deleteVolumeTarget(plugin: String, target: String) throws {
        try deleteRow(HostNS.volumeTargets, HostNS.key(plugin, target))
    }

    // MARK: snapshots

    func snapshotRow(_ j: JSON) -> SnapshotRow {
        SnapshotRow(id: j["id"]?.string ?? "", name: j["name"]?.string ?? "", sourceVolume: j["sourceVolume"]?.string ?? "",
                    size: Int64(j["size"]?.int ?? 0), snapshot: j["snapshot"] ?? .object([]), created: j["created"]?.double ?? 0)
    }

    public func snapshot(plugin: String, id: String) throws -> SnapshotRow? {
        try getRow(HostNS.snapshots, HostNS.key(plugin, id)).map(snapshotRow)
    }

    public func snapshot(plugin: String, id: String, orName name: String) throws -> SnapshotRow? {
        if let s = try snapshot(plugin: plugin, id: id) { return s }
        var found: SnapshotRow?
        try scanRows(HostNS.snapshots, prefix: HostNS.key(plugin, open: true)) { _, j in
            if j["name"]?.string == name { found = snapshotRow(j); return false }
            return true
        }
        return found
    }

    public func snapshots(plugin: String, after: String, sourceVolume: String, limit: Int) throws -> [SnapshotRow] {
        var out: [SnapshotRow] = []
        try scanRows(HostNS.snapshots, prefix: HostNS.key(plugin, open: true), after: after.isEmpty ? [] : HostNS.key(plugin, after)) { _, j in
            let s = snapshotRow(j)
            if sourceVolume.isEmpty || s.sourceVolume == sourceVolume { out.append(s) }
            return out.count < limit
        }
        return out
    }

    public func insertSnapshot(plugin: String, _ r: SnapshotRow) throws {
        let k = HostNS.key(plugin, r.id)
        if try getRow(HostNS.snapshots, k) != nil { throw BerthError(.alreadyExists, "snapshot \(r.id) of \(plugin) is already recorded") }
        try putRow(HostNS.snapshots, k, ["id": .string(r.id), "name": .string(r.name), "sourceVolume": .string(r.sourceVolume), "size": .int(r.size),
                                         "snapshot": r.snapshot, "created": .number(r.created)])
    }

    @discardableResult
    public func deleteSnapshot(plugin: String, id: String) throws -> Bool {
        try deleteRow(HostNS.snapshots, HostNS.key(plugin, id))
    }

    // MARK: workloads

    public func workloadsVersion() throws -> [UInt8]? {
        try HostNS.workloadsVersion.withUnsafeBytes { k in try kvRead(HostNS.meta, k) { $0.map { Array($0) } ?? [] } }
    }

    func bumpWorkloads() throws {
        let v = Array(String(UInt64.random(in: 1...UInt64.max), radix: 16).utf8)
        try HostNS.workloadsVersion.withUnsafeBytes { k in try v.withUnsafeBytes { try kvPut(HostNS.meta, k, $0) } }
    }

    /// The rows of a workload table, read without a read set but after the version key (which is in it).
    func workloadRows(_ ns: String, _ body: (JSON) throws -> Void) throws {
        _ = try workloadsVersion()
        for (_, v) in try kvScanUnrecorded(ns, prefix: []) { try body(try JSON.parse(v)) }
    }

    public func forEachNode(_ body: (NodeRecord) throws -> Void) throws {
        try workloadRows(HostNS.nodes) { j in
            try body(NodeRecord(name: j["name"]?.string ?? "", state: j["state"]?.string ?? "up", cpu: Int64(j["cpu"]?.int ?? 0),
                                memory: Int64(j["memory"]?.int ?? 0), disk: Int64(j["disk"]?.int ?? 0), ports: Int64(j["ports"]?.int ?? 0),
                                labels: j["labels"]?.string ?? "{}", created: j["created"]?.double ?? 0, updated: j["updated"]?.double ?? 0))
        }
    }

    public func saveNode(_ n: NodeRecord) throws {
        try putRow(HostNS.nodes, HostNS.key(n.name), ["name": .string(n.name), "state": .string(n.state), "cpu": .int(n.cpu), "memory": .int(n.memory),
                                                      "disk": .int(n.disk), "ports": .int(n.ports), "labels": .string(n.labels),
                                                      "created": .number(n.created), "updated": .number(n.updated)])
        try bumpWorkloads()
    }

    public func deleteNode(name: String) throws {
        try deleteRow(HostNS.nodes, HostNS.key(name))
        try bumpWorkloads()
    }

    public func forEachObject(_ body: (ObjectRecord) throws -> Void) throws {
        try workloadRows(HostNS.objects) { j in
            try body(ObjectRecord(kind: j["kind"]?.string ?? "", name: j["name"]?.string ?? "", spec: j["spec"]?.string ?? "{}",
                                  generation: Int64(j["generation"]?.int ?? 0), created: j["created"]?.double ?? 0, updated: j["updated"]?.double ?? 0))
        }
    }

    public func saveObject(_ o: ObjectRecord) throws {
        try putRow(HostNS.objects, HostNS.key(o.kind, o.name), ["kind": .string(o.kind), "name": .string(o.name), "spec": .string(o.spec),
                                                               "generation": .int(o.generation), "created": .number(o.created), "updated": .number(o.updated)])
        try bumpWorkloads()
    }

    public func deleteObject(kind: String, name: String) throws {
        try deleteRow(HostNS.objects, HostNS.key(kind, name))
        try bumpWorkloads()
    }

    public func forEachInstance(_ body: (InstanceRecord) throws -> Void) throws {
        try workloadRows(HostNS.instances) { j in
            func s(_ k: String) -> String { j[k]?.string ?? "" }
            func i(_ k: String) -> Int64 { Int64(j[k]?.int ?? 0) }
            try body(InstanceRecord(kind: s("kind"), app: s("app"), ordinal: i("ordinal"), state: s("state"), node: s("node"), prevNode: s("prevNode"),
                                    volumeNode: s("volumeNode"), incarnation: i("incarnation"), containerID: s("containerID"), network: s("network"),
                                    addresses: s("addresses"), volumes: s("volumes"), cpu: i("cpu"), memory: i("memory"), disk: i("disk"),
                                    ports: s("ports"), reason: s("reason"), final: j["final"]?.bool ?? false,
                                    created: j["created"]?.double ?? 0, updated: j["updated"]?.double ?? 0))
        }
    }

    public func saveInstance(_ r: InstanceRecord) throws {
        let row: JSON = ["kind": .string(r.kind), "app": .string(r.app), "ordinal": .int(r.ordinal), "state": .string(r.state), "node": .string(r.node),
                         "prevNode": .string(r.prevNode), "volumeNode": .string(r.volumeNode), "incarnation": .int(r.incarnation),
                         "containerID": .string(r.containerID), "network": .string(r.network), "addresses": .string(r.addresses),
                         "volumes": .string(r.volumes), "cpu": .int(r.cpu), "memory": .int(r.memory), "disk": .int(r.disk), "ports": .string(r.ports),
                         "reason": .string(r.reason), "final": .bool(r.final), "created": .number(r.created), "updated": .number(r.updated)]
        try putRow(HostNS.instances, HostNS.key(r.kind, r.app, HostNS.ordinal(r.ordinal)), row)
        try bumpWorkloads()
    }

    public func deleteInstance(kind: String, app: String, ordinal: Int64) throws {
        try deleteRow(HostNS.instances, HostNS.key(kind, app, HostNS.ordinal(ordinal)))
        try bumpWorkloads()
    }

    // MARK: counts, cursors

    public func volumeCount(plugin: String) throws -> Int { try countRows(HostNS.volumes, prefix: HostNS.key(plugin, open: true)) }

    public func objectCount(kind: String) throws -> Int { try countRows(HostNS.objects, prefix: HostNS.key(kind, open: true)) }

    public func discoveryCursor(_ plugin: String) throws -> (rev: Int64, resyncRev: Int64)? {
        guard let j = try getRow(HostNS.cursors, HostNS.key(plugin)) else { return nil }
        return (Int64(j["rev"]?.int ?? 0), Int64(j["resyncRev"]?.int ?? 0))
    }

    public func setDiscoveryCursor(_ plugin: String, rev: Int64, resyncRev: Int64) throws {
        try putRow(HostNS.cursors, HostNS.key(plugin), ["rev": .int(rev), "resyncRev": .int(resyncRev), "updated": .number(wallClock())])
    }
}
