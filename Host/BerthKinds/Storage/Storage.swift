// The storage kind in the host: CSI-style volumes. The host keeps the records that make the lifecycle safe across
// restarts: volumes, per (volume, node) the controller publication and the staging, per target the node
// publication (the rows of volume_targets ARE the reference counts), and snapshots. The order is the host's:
//
//     controller publish (once per node) -> node stage (once per node) -> node publish (once per target)
//     node unpublish (per target) -> when the last target on a node goes: node unstage -> controller unpublish
//
// Each step is one executor transaction holding the plugin's call, its key-value writes, the host's record and the
// event: all commit or none does. A multi-step publish is several such transactions, so a daemon killed between
// stage and publish restarts with the volume controller-published and staged and no target, and the next publish
// continues from there (stage is not repeated).
//
// Requests to the plugin (JSON; unknown fields are ignored by plugins):
//   create_volume        {name, capacityBytes, limitBytes?, accessMode, volumeMode, parameters, topology?, source?}
//                        -> the volume {volumeId, name, capacityBytes, accessMode, volumeMode, ...}
//   delete_volume        {volumeId}
//   controller_publish   {volumeId, nodeId, readonly, accessMode, volumeMode} -> {publishContext}
//   controller_unpublish {volumeId, nodeId}
//   node_stage           {volumeId, nodeId, stagingPath, publishContext, accessMode, volumeMode}
//   node_unstage         {volumeId, nodeId, stagingPath}
//   node_publish         {volumeId, nodeId, targetPath, stagingPath, readonly, publishContext, accessMode, volumeMode}
//   node_unpublish       {volumeId, nodeId, targetPath}
//   expand_volume        {volumeId, capacityBytes} -> {capacityBytes, nodeExpansionRequired}
//   create_snapshot      {name, sourceVolumeId, parameters} -> {snapshotId, name, sourceVolumeId, sizeBytes, ...}
//   delete_snapshot      {snapshotId}
//   list_snapshots       {maxEntries, startingToken, sourceVolumeId?, snapshotId?} -> {entries, nextToken?}
//   list_volumes         {maxEntries, startingToken} -> {entries, nextToken?}   (bad token: ABORTED)
//   get_capacity         {parameters, topology?, volumeMode?} -> {totalCapacity, availableCapacity, maximumVolumeSize, ...}
//   validate_capabilities {volumeId, volumeCapabilities: [{accessMode, volumeMode}], parameters} -> {confirmed, message?}
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

public let storageAccessModes = ["single-node-writer", "single-node-reader-only", "multi-node-reader-only", "multi-node-single-writer",
                                 "multi-node-multi-writer", "single-node-single-writer", "single-node-multi-writer"]
let storageSingleNodeModes: Set<String> = ["single-node-writer", "single-node-reader-only", "single-node-single-writer", "single-node-multi-writer"]
let storageReadOnlyModes: Set<String> = ["single-node-reader-only", "multi-node-reader-only"]

/// The storage kind's coordinator (one per host, built by the composition root).
public final class StorageService: Sendable {
    public let host: PluginHost

    /// Requires the plugin host; registers the live-state probe (a storage plugin with volumes is not disabled unless forced).
    public init(host: PluginHost) {
        self.host = host
        let store = host.store
        host.liveStateProbes.append { name in (try store.volumeCount(plugin: name), "volumes") }
    }

    func plugin(_ name: String) throws -> PluginInstance { try host.instance(name, kind: .storage) }

    func ops(_ name: String) throws -> StorageOps { try host.storage(named: name) }

    // MARK: - input checks (the host refuses bad input before any plugin sees it)

    package static func checkName(_ name: String?, _ field: String = "name") throws -> String {
        guard let name, !name.isEmpty else { throw BerthError(.invalidArgument, "\(field) is required") }
        guard name.utf8.count <= 128 else { throw BerthError(.invalidArgument, "\(field) is \(name.utf8.count) bytes long; at most 128 bytes are allowed") }
        guard !name.contains("/") else { throw BerthError(.invalidArgument, "\(field) \"\(name)\" contains \"/\"; names may not contain path separators") }
        guard !name.contains("..") else { throw BerthError(.invalidArgument, "\(field) \"\(name)\" contains \"..\"") }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw BerthError(.invalidArgument, "\(field) contains control characters")
        }
        return name
    }

    static func checkNode(_ node: String?) throws -> String {
        guard let node, !node.isEmpty else { throw BerthError(.invalidArgument, "node is required (the node to publish the volume to)") }
        guard node.utf8.count <= 256 else { throw BerthError(.invalidArgument, "node is longer than 256 bytes") }
        guard !node.unicodeScalars.contains(where: { $0.value < 0x20 }) else { throw BerthError(.invalidArgument, "node contains control characters") }
        return node
    }

    static func checkTarget(_ target: String?) throws -> String {
        guard let target, !target.isEmpty else { throw BerthError(.invalidArgument, "target is required (an absolute path to publish the volume at)") }
        guard target.hasPrefix("/"), target.utf8.count <= 4096, !target.contains("\u{0}") else {
            throw BerthError(.invalidArgument, "target \"\(target)\" must be an absolute path of at most 4096 bytes")
        }
        let parts = target.split(separator: "/")
        guard !parts.contains(where: { $0 == ".." || $0 == "." }), !parts.isEmpty else {
            throw BerthError(.invalidArgument, "target \"\(target)\" must not contain \".\" or \"..\" components or be /")
        }
        return "/" + parts.joined(separator: "/")
    }

    static func checkVolumeID(_ id: String) throws -> String {
        guard !id.isEmpty, id.utf8.count <= 256, !id.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw BerthError(.invalidArgument, "volume id \"\(id)\" is not valid")
        }
        return id
    }

    /// A path component that is safe and unique for any string.
    static func safeComponent(_ s: String) -> String {
        let ok = s.utf8.allSatisfy { c in (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E }
        if ok && !s.isEmpty && s.utf8.count <= 64 && s != "." && s != ".." { return s }
        var h: UInt64 = 0xcbf29ce484222325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        let clean = String(s.unicodeScalars.prefix(40).map { c -> Character in
            (c.isASCII && (CharacterSet.alphanumerics.contains(c) || c == "-" || c == "_")) ? Character(c) : "_"
        })
        return clean + "-" + String(h, radix: 16)
    }

    /// Where the host asks a plugin to stage a volume for a node: under the state directory.
    func stagingPath(_ plugin: String, _ id: String, _ node: String) -> String {
        var dir = host.site.stateDir
        if !dir.hasPrefix("/") {
            let cwd = FileManager.default.currentDirectoryPath
            dir = cwd + "/" + (dir.hasPrefix("./") ? String(dir.dropFirst(2)) : dir)
        }
        while dir.hasSuffix("/") && dir.count > 1 { dir.removeLast() }
        return "\(dir)/storage/\(Self.safeComponent(plugin))/staging/\(Self.safeComponent(node))/\(Self.safeComponent(id))"
    }

    // MARK: - records (called on the executor thread, inside a transaction)

    package typealias VolumeRow = BerthStore.VolumeRow
    package typealias NodeRow = VolumeNodeRow
    package typealias TargetRow = VolumeTargetRow

    func volumeRow(_ plugin: String, _ id: String) throws -> VolumeRow? { try host.store.volume(plugin: plugin, id: id) }

    func requireVolume(_ plugin: String, _ id: String) throws -> VolumeRow {
        guard let v = try volumeRow(plugin, id) else { throw BerthError(.notFound, "no volume \"\(id)\" in storage plugin \"\(plugin)\"") }
        return v
    }

    func nodeRows(_ plugin: String, _ id: String) throws -> [NodeRow] { try host.store.volumeNodes(plugin: plugin, id: id) }

    func nodeRow(_ plugin: String, _ id: String, _ node: String) throws -> NodeRow? { try nodeRows(plugin, id).first { $0.node == node } }

    package func targetRows(_ plugin: String, _ id: String) throws -> [TargetRow] { try host.store.volumeTargets(plugin: plugin, id: id) }

    func targetRow(_ plugin: String, target: String) throws -> TargetRow? { try host.store.volumeTarget(plugin: plugin, target: target) }

    func event(_ type: String, _ plugin: String, _ subject: String, _ data: JSON = .object([])) throws {
        host.executor.noteEvent(try host.store.appendEvent(type: type, subject: "\(plugin)/\(subject)", data: data))
    }

    /// The host's view of a volume: the plugin's record, then the host's per-node state and reference counts.
    func view(_ plugin: String, _ v: VolumeRow) throws -> JSON {
        let targets = try targetRows(plugin, v.id)
        let nodes = try nodeRows(plugin, v.id).map { n -> JSON in
            let ts = targets.filter { $0.node == n.node }
            return ["node": .string(n.node), "readonly": .bool(n.readonly), "controllerPublished": true, "staged": .bool(n.staged),
                    "stagingPath": n.staged ? .string(n.stagingPath) : .null, "publishContext": n.publishContext,
                    "refCount": JSON(Int64(ts.count)),
                    "targets": .array(ts.map { ["target": .string($0.target), "readonly": .bool($0.readonly)] })]
        }
        var out: JSON = ["plugin": .string(plugin), "volumeId": .string(v.id), "name": .string(v.name), "capacityBytes": JSON(Int64(v.capacity)),
                         "accessMode": .string(v.accessMode), "volumeMode": .string(v.volumeMode), "created": .number(v.created)]
        for (k, val) in v.volume.object ?? [] where out[k] == nil { out = out.setting(k, val) }
        return out.setting("nodes", .array(nodes)).setting("published", .bool(!nodes.isEmpty))
    }

    // MARK: - create, delete, get, list

    /// CreateVolume: idempotent by name (the plugin decides compatibility). Returns (volume, created).
    public func createVolume(plugin: String, request: JSON) async throws -> (JSON, Bool) {
        _ = try self.plugin(plugin)  // fail fast; resolved again on the executor, where a reload swaps instances
        let name = try Self.checkName(request["name"]?.string)
        let accessMode = request["accessMode"]?.string ?? "single-node-writer"
        guard storageAccessModes.contains(accessMode) else {
            throw BerthError(.invalidArgument, "accessMode \"\(accessMode)\" is not one of \(storageAccessModes.joined(separator: ", "))")
        }
        let volumeMode = request["volumeMode"]?.string ?? "mount"
        guard volumeMode == "mount" || volumeMode == "block" else { throw BerthError(.invalidArgument, "volumeMode \"\(volumeMode)\" must be mount or block") }
        for k in ["capacityBytes", "limitBytes"] {
            if let c = request[k], !c.isNull {
                guard let n = c.int, n >= 0 else { throw BerthError(.invalidArgument, "\(k) must be a non-negative integer number of bytes") }
            }
        }
        if let p = request["parameters"], !p.isNull {
            guard let o = p.object, o.allSatisfy({ $0.1.string != nil }) else { throw BerthError(.invalidArgument, "parameters must be an object of strings") }
            guard p.serialized.utf8.count <= 4096 else { throw BerthError(.invalidArgument, "parameters are larger than 4096 bytes") }
        }
        var req: JSON = ["name": .string(name), "capacityBytes": request["capacityBytes"] ?? 0, "accessMode": .string(accessMode),
                         "volumeMode": .string(volumeMode), "parameters": request["parameters"] ?? .object([])]
        for k in ["limitBytes", "topology", "source"] { if let v = request[k], !v.isNull { req = req.setting(k, v) } }
        return try await host.executor.run {
            let (row, created) = try self.createInTransaction(plugin: plugin, name: name, request: req)
            return (try self.view(plugin, row), created)
        }
    }

    /// CreateVolume inside the caller's transaction on the executor (the API through `createVolume`, the
    /// scheduler's wiring): the plugin call, the host's record and the event. `request` is the plugin request,
    /// already validated. Returns the volume and whether it was created now.
    package func createInTransaction(plugin: String, name: String, request req: JSON) throws -> (VolumeRow, Bool) {
        let store = host.store
        let accessMode = req["accessMode"]?.string ?? "single-node-writer"
        let volumeMode = req["volumeMode"]?.string ?? "mount"
        let ops = try self.ops(plugin)
        let out = try ops.createVolume(req)
        guard let id = out["volumeId"]?.string, !id.isEmpty, id.utf8.count <= 256 else {
            throw BerthError(.internal, "plugin \"\(plugin)\" create_volume returned no volumeId; nothing was committed")
        }
        let capacity = Int64(out["capacityBytes"]?.int ?? 0)
        if let existing = try self.volumeRow(plugin, id) {
            guard existing.name == name else {
                throw BerthError(.internal, "plugin \"\(plugin)\" returned volume \(id) for name \"\(name)\", but the host knows \(id) as \"\(existing.name)\"; nothing was committed")
            }
            return (existing, false)
        }
        if let known = try store.volume(plugin: plugin, name: name) {
            throw BerthError(.internal, "plugin \"\(plugin)\" returned a new volume \(id) for name \"\(name)\", which the host knows as \(known.id); nothing was committed")
        }
        let row = VolumeRow(id: id, name: name, capacity: capacity, accessMode: out["accessMode"]?.string ?? accessMode,
                            volumeMode: out["volumeMode"]?.string ?? volumeMode, volume: out, created: wallClock())
        try store.insertVolume(plugin: plugin, row)
        try self.event("volume.created", plugin, id, ["name": .string(name), "capacityBytes": JSON(Int64(capacity)),
                                                       "volumeMode": .string(row.volumeMode), "accessMode": .string(row.accessMode),
                                                       "source": out["source"] ?? .null])
        return (row, true)
    }

    /// DeleteVolume: unknown ids succeed; refused (409, FAILED_PRECONDITION) while the volume is published anywhere.
    public func deleteVolume(plugin: String, id: String) async throws {
        _ = try self.plugin(plugin)
        let id = try Self.checkVolumeID(id)
        let store = host.store
        try await host.executor.run {
            let ops = try self.ops(plugin)
            let nodes = try self.nodeRows(plugin, id)
            if !nodes.isEmpty {
                throw BerthError(.failedPrecondition, "volume \(id) is published to node\(nodes.count > 1 ? "s" : "") \(nodes.map { $0.node }.joined(separator: ", ")); unpublish it first",
                               details: ["status": "FAILED_PRECONDITION"])
            }
            _ = try ops.deleteVolume(["volumeId": .string(id)])
            if try store.deleteVolume(plugin: plugin, id: id) { try self.event("volume.deleted", plugin, id) }
        }
    }

    public func getVolume(plugin: String, id: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        return try await host.executor.run { try self.view(plugin, try self.requireVolume(plugin, id)) }
    }

    static func encodeToken(_ last: String) -> String { "v1." + last.utf8.map { String(format: "%02x", $0) }.joined() }

    static func decodeToken(_ token: String) throws -> String {
        let bad = BerthError(.invalidArgument, "pageToken \"\(token.prefix(80))\" is not a token this API issued (ABORTED); list again from the start",
                           details: ["status": "ABORTED"])
        guard token.hasPrefix("v1.") else { throw bad }
        let hex = Array(token.utf8.dropFirst(3))
        guard hex.count % 2 == 0, hex.count <= 1024 else { throw bad }
        var bytes: [UInt8] = []
        var i = 0
        while i < hex.count {
            guard let b = UInt8(String(decoding: hex[i...(i + 1)], as: UTF8.self), radix: 16) else { throw bad }
            bytes.append(b)
            i += 2
        }
        guard let s = String(validating: bytes, as: UTF8.self), !s.isEmpty else { throw bad }
        return s
    }

    static func pageLimit(_ limit: Int?) throws -> Int {
        guard let limit else { return 100 }
        guard limit >= 1 && limit <= 1000 else { throw BerthError(.invalidArgument, "limit must be between 1 and 1000") }
        return limit
    }

    /// Volumes in id order, `limit` per page; `pageToken` continues where the last page ended.
    public func listVolumes(plugin: String, limit: Int? = nil, pageToken: String? = nil) async throws -> JSON {
        _ = try self.plugin(plugin)
        let n = try Self.pageLimit(limit)
        let after = try pageToken.map { try Self.decodeToken($0) } ?? ""
        let store = host.store
        return try await host.executor.run {
            var rows = try store.volumes(plugin: plugin, after: after, limit: n + 1)
            let more = rows.count > n
            if more { rows.removeLast() }
            var out: JSON = ["volumes": .array(try rows.map { try self.view(plugin, $0) })]
            if more, let last = rows.last { out = out.setting("nextPageToken", .string(Self.encodeToken(last.id))) }
            return out
        }
    }

    // MARK: - the publish steps (each one transaction)

    /// Controller publish to a node (once per node; repeated calls return the existing publication).
    public func controllerPublish(plugin: String, id: String, node: String, readonly: Bool = false) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        return try await host.executor.run { try self.controllerPublishStep(plugin, id, node, readonly) }
    }

    package func controllerPublishStep(_ plugin: String, _ id: String, _ node: String, _ readonlyAsked: Bool) throws -> JSON {
        let ops = try self.ops(plugin)
        let v = try requireVolume(plugin, id)
        let readonly = readonlyAsked || storageReadOnlyModes.contains(v.accessMode)
        let nodes = try nodeRows(plugin, id)
        if let existing = nodes.first(where: { $0.node == node }) {
            if existing.readonly && !readonly {
                throw BerthError(.alreadyExists, "volume \(id) is published read-only to node \(node); a writable publication is incompatible (ALREADY_EXISTS): unpublish it first",
                               details: ["status": "ALREADY_EXISTS"])
            }
            return try view(plugin, v)
        }
        if storageSingleNodeModes.contains(v.accessMode), let other = nodes.first {
            throw BerthError(.failedPrecondition, "volume \(id) is \(v.accessMode) and already published to node \(other.node) (FAILED_PRECONDITION); unpublish it there first",
                           details: ["status": "FAILED_PRECONDITION"])
        }
        var context: JSON = .object([])
        if ops.has(.controllerPublish) {
            let out = try ops.controllerPublish(["volumeId": .string(id), "nodeId": .string(node), "readonly": .bool(readonly),
                                                 "accessMode": .string(v.accessMode), "volumeMode": .string(v.volumeMode)])
            context = out["publishContext"] ?? .object([])
        }
        try host.store.insertVolumeNode(plugin: plugin, id: id, node: node, readonly: readonly, publishContext: context,
                                        stagingPath: stagingPath(plugin, id, node), created: wallClock())
        try event("volume.controller-published", plugin, id, ["node": .string(node), "readonly": .bool(readonly)])
        return try view(plugin, v)
    }

    /// Controller unpublish from a node; refused while the volume is staged there. Unknown: OK.
    public func controllerUnpublish(plugin: String, id: String, node: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        return try await host.executor.run { try self.controllerUnpublishStep(plugin, id, node) }
    }

    /// `ifUnused`: part of a whole unpublish; a node staged again meanwhile is left alone instead of refused.
    package func controllerUnpublishStep(_ plugin: String, _ id: String, _ node: String, ifUnused: Bool = false) throws -> JSON {
        let ops = try self.ops(plugin)
        guard let v = try volumeRow(plugin, id) else { return ["volumeId": .string(id), "nodes": []] }
        guard let n = try nodeRow(plugin, id, node) else { return try view(plugin, v) }
        if n.staged && ifUnused { return try view(plugin, v) }
        if n.staged {
            throw BerthError(.failedPrecondition, "volume \(id) is still staged on node \(node) (FAILED_PRECONDITION); unstage it first", details: ["status": "FAILED_PRECONDITION"])
        }
        if ops.has(.controllerUnpublish) {
            _ = try ops.controllerUnpublish(["volumeId": .string(id), "nodeId": .string(node)])
        }
        try host.store.deleteVolumeNode(plugin: plugin, id: id, node: node)
        try event("volume.controller-unpublished", plugin, id, ["node": .string(node)])
        return try view(plugin, v)
    }

    /// Node stage (once per node): needs the controller publication on that node.
    public func stage(plugin: String, id: String, node: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        return try await host.executor.run { try self.stageStep(plugin, id, node) }
    }

    package func stageStep(_ plugin: String, _ id: String, _ node: String) throws -> JSON {
        let ops = try self.ops(plugin)
        let v = try requireVolume(plugin, id)
        guard let n = try nodeRow(plugin, id, node) else {
            throw BerthError(.failedPrecondition, "volume \(id) is not controller-published to node \(node) (FAILED_PRECONDITION); publish it to the node first",
                           details: ["status": "FAILED_PRECONDITION"])
        }
        if n.staged { return try view(plugin, v) }
        if ops.has(.nodeStage) {
            _ = try ops.nodeStage(["volumeId": .string(id), "nodeId": .string(node), "stagingPath": .string(n.stagingPath),
                                   "publishContext": n.publishContext, "accessMode": .string(v.accessMode),
                                   "volumeMode": .string(v.volumeMode)])
        }
        try host.store.setVolumeStaged(plugin: plugin, id: id, node: node, true)
        try event("volume.staged", plugin, id, ["node": .string(node), "stagingPath": .string(n.stagingPath)])
        return try view(plugin, v)
    }

    /// Node unstage; refused while targets on that node are published. Not staged: OK.
    public func unstage(plugin: String, id: String, node: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        return try await host.executor.run { try self.unstageStep(plugin, id, node) }
    }

    /// `ifUnused`: part of a whole unpublish; a target published meanwhile keeps the stage instead of an error.
    package func unstageStep(_ plugin: String, _ id: String, _ node: String, ifUnused: Bool = false) throws -> JSON {
        let ops = try self.ops(plugin)
        guard let v = try volumeRow(plugin, id) else { return ["volumeId": .string(id), "nodes": []] }
        guard let n = try nodeRow(plugin, id, node), n.staged else { return try view(plugin, v) }
        let targets = try targetRows(plugin, id).filter { $0.node == node }
        if !targets.isEmpty && ifUnused { return try view(plugin, v) }
        if !targets.isEmpty {
            throw BerthError(.failedPrecondition, "volume \(id) is still published on node \(node) at \(targets.map { $0.target }.joined(separator: ", ")) (FAILED_PRECONDITION); unpublish those first",
                           details: ["status": "FAILED_PRECONDITION"])
        }
        if ops.has(.nodeUnstage) {
            _ = try ops.nodeUnstage(["volumeId": .string(id), "nodeId": .string(node), "stagingPath": .string(n.stagingPath)])
        }
        try host.store.setVolumeStaged(plugin: plugin, id: id, node: node, false)
        try event("volume.unstaged", plugin, id, ["node": .string(node)])
        return try view(plugin, v)
    }

    /// Node publish at one target (needs the volume staged on the node). The same target again: OK; at another
    /// volume or with another readonly: 409.
    public func nodePublish(plugin: String, id: String, node: String, target: String, readonly: Bool = false) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        let target = try Self.checkTarget(target)
        return try await host.executor.run { try self.nodePublishStep(plugin, id, node, target, readonly) }
    }

    package func nodePublishStep(_ plugin: String, _ id: String, _ node: String, _ target: String, _ readonlyAsked: Bool) throws -> JSON {
        let ops = try self.ops(plugin)
        let v = try requireVolume(plugin, id)
        let readonly = readonlyAsked || storageReadOnlyModes.contains(v.accessMode)
        guard let n = try nodeRow(plugin, id, node), n.staged else {
            throw BerthError(.failedPrecondition, "volume \(id) is not staged on node \(node) (FAILED_PRECONDITION); stage it first (or use publish, which does every step)",
                           details: ["status": "FAILED_PRECONDITION"])
        }
        if n.readonly && !readonly {
            throw BerthError(.alreadyExists, "volume \(id) is published read-only to node \(node); it cannot be published writable at \(target) (ALREADY_EXISTS)",
                           details: ["status": "ALREADY_EXISTS"])
        }
        if let t = try targetRow(plugin, target: target) {
            guard t.volumeID == id else {
                throw BerthError(.failedPrecondition, "target \(target) is in use by volume \(t.volumeID) (FAILED_PRECONDITION)", details: ["status": "FAILED_PRECONDITION"])
            }
            guard t.node == node, t.readonly == readonly else {
                throw BerthError(.alreadyExists, "volume \(id) is already published at \(target) on node \(t.node) with readonly \(t.readonly) (ALREADY_EXISTS)",
                               details: ["status": "ALREADY_EXISTS"])
            }
            return try view(plugin, v)
        }
        var req: JSON = ["volumeId": .string(id), "nodeId": .string(node), "targetPath": .string(target), "readonly": .bool(readonly),
                         "publishContext": n.publishContext, "accessMode": .string(v.accessMode), "volumeMode": .string(v.volumeMode)]
        if ops.has(.nodeStage) { req = req.setting("stagingPath", .string(n.stagingPath)) }
        _ = try ops.nodePublish(req)
        try host.store.insertVolumeTarget(plugin: plugin, id: id, node: node, target: target, readonly: readonly, created: wallClock())
        try event("volume.published", plugin, id, ["node": .string(node), "target": .string(target), "readonly": .bool(readonly)])
        return try view(plugin, v)
    }

    /// Node unpublish of one target. Unknown target: the plugin is still asked (idempotent), then OK.
    public func nodeUnpublish(plugin: String, id: String, target: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        let target = try Self.checkTarget(target)
        return try await host.executor.run { try self.nodeUnpublishStep(plugin, id, target).0 }
    }

    /// Returns the view and the node the target was on (nil when the host had no record of it).
    package func nodeUnpublishStep(_ plugin: String, _ id: String, _ target: String) throws -> (JSON, String?) {
        let ops = try self.ops(plugin)
        guard let v = try volumeRow(plugin, id) else { return (["volumeId": .string(id), "nodes": []], nil) }
        let t = try targetRow(plugin, target: target)
        if let t, t.volumeID != id {
            throw BerthError(.failedPrecondition, "target \(target) belongs to volume \(t.volumeID), not \(id)", details: ["status": "FAILED_PRECONDITION"])
        }
        var req: JSON = ["volumeId": .string(id), "targetPath": .string(target)]
        if let t { req = req.setting("nodeId", .string(t.node)) }
        _ = try ops.nodeUnpublish(req)
        if let t {
            try host.store.deleteVolumeTarget(plugin: plugin, target: target)
            try event("volume.unpublished", plugin, id, ["node": .string(t.node), "target": .string(target)])
        }
        return (try view(plugin, v), t?.node)
    }

    // MARK: - the whole publish and unpublish

    /// Publish at a target on a node: controller publish (if not yet on that node) -> stage (if not yet staged on
    /// that node) -> node publish. Each step commits on its own; a repeated or resumed publish skips done steps.
    public func publish(plugin: String, id: String, node: String, target: String, readonly: Bool = false) async throws -> JSON {
        _ = try self.plugin(plugin)
        let node = try Self.checkNode(node)
        let target = try Self.checkTarget(target)
        let ex = host.executor
        let before = try await ex.run { try self.nodeRow(plugin, id, node) }
        _ = try await ex.run { try self.controllerPublishStep(plugin, id, node, readonly) }
        do {
            _ = try await ex.run { try self.stageStep(plugin, id, node) }
            return try await ex.run { try self.nodePublishStep(plugin, id, node, target, readonly) }
        } catch {
            // A refused publish changes nothing: undo the stage and the controller publication that this request made
            // (each kept when a target published meanwhile uses it, as in unpublish).
            if before?.staged != true { _ = try? await ex.run { try self.unstageStep(plugin, id, node, ifUnused: true) } }
            if before == nil { _ = try? await ex.run { try self.controllerUnpublishStep(plugin, id, node, ifUnused: true) } }
            throw error
        }
    }

    /// Unpublish a target (when given); when no target remains on the node: unstage, then controller unpublish.
    /// With only a node, tears down that node's stage and controller publication if no target is left there.
    public func unpublish(plugin: String, id: String, target: String?, node: String?) async throws -> JSON {
        _ = try self.plugin(plugin)
        let target = try target.map { try Self.checkTarget($0) }
        var node = try node.map { try Self.checkNode($0) }
        guard target != nil || node != nil else { throw BerthError(.invalidArgument, "target or node is required") }
        let ex = host.executor
        if let target {
            let (view, n) = try await ex.run { try self.nodeUnpublishStep(plugin, id, target) }
            if node == nil { node = n }
            guard node != nil else { return view }
        }
        let nd = node!
        // When the last target on the node is gone: unstage, then controller unpublish. Each step re-checks the
        // counts in its own transaction and leaves the node alone if a publish came in between.
        _ = try await ex.run { try self.unstageStep(plugin, id, nd, ifUnused: true) }
        return try await ex.run { try self.controllerUnpublishStep(plugin, id, nd, ifUnused: true) }
    }

    // MARK: - expand, capacity, validate

    public func expand(plugin: String, id: String, capacityBytes: Int) async throws -> JSON {
        _ = try self.plugin(plugin)
        guard capacityBytes > 0 else { throw BerthError(.invalidArgument, "capacityBytes must be a positive number of bytes") }
        let store = host.store
        return try await host.executor.run {
            let ops = try self.ops(plugin)
            var v = try self.requireVolume(plugin, id)
            let out = try ops.expandVolume(["volumeId": .string(id), "capacityBytes": JSON(Int64(capacityBytes)), "volumeMode": .string(v.volumeMode)])
            guard let cap = out["capacityBytes"]?.int, cap >= capacityBytes else {
                throw BerthError(.internal, "plugin \"\(plugin)\" expand_volume returned capacityBytes \(out["capacityBytes"]?.serialized ?? "none"), less than the \(capacityBytes) asked; nothing was committed")
            }
            if Int64(cap) != v.capacity {
                let old = v.capacity
                v.capacity = Int64(cap)
                v.volume = v.volume.setting("capacityBytes", JSON(Int64(cap)))
                try store.updateVolume(plugin: plugin, id: id, capacity: v.capacity, volume: v.volume)
                try self.event("volume.expanded", plugin, id, ["from": JSON(Int64(old)), "to": JSON(Int64(cap))])
            }
            return try self.view(plugin, v).setting("nodeExpansionRequired", out["nodeExpansionRequired"] ?? false)
        }
    }

    public func capacity(plugin: String, request: JSON = .object([])) async throws -> JSON {
        _ = try self.plugin(plugin)
        return try await host.executor.run {
            let ops = try self.ops(plugin)
            return try ops.getCapacity(request)
        }
    }

    public func validate(plugin: String, id: String, request: JSON) async throws -> JSON {
        _ = try self.plugin(plugin)
        return try await host.executor.run {
            let ops = try self.ops(plugin)
            let v = try self.requireVolume(plugin, id)
            let caps: JSON = request["volumeCapabilities"] ?? [["accessMode": request["accessMode"] ?? .string(v.accessMode),
                                                               "volumeMode": request["volumeMode"] ?? .string(v.volumeMode)]]
            return try ops.validateCapabilities(["volumeId": .string(id), "volumeCapabilities": caps, "parameters": request["parameters"] ?? .object([])])
        }
    }

    /// Storage plugins loaded in this daemon, with what each supports.
    public func plugins() -> JSON {
        .array(host.plugins.filter { $0.instance?.plugin.kinds.contains(.storage) ?? false }.map { e in
            let ops = e.instance!.storageOps!
            var caps: [JSON] = []
            if ops.has(.controllerPublish) { caps.append("controller-publish") }
            if ops.has(.nodeStage) { caps.append("stage") }
            if ops.has(.expandVolume) { caps.append("expand") }
            if ops.has(.createSnapshot) { caps.append("snapshots") }
            if ops.has(.listVolumes) { caps.append("list-volumes") }
            if ops.has(.getCapacity) { caps.append("capacity") }
            if ops.has(.validateCapabilities) { caps.append("validate-capabilities") }
            return e.json.setting("capabilities", .array(caps))
        })
    }
}
