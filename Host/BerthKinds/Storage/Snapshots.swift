// The storage kind's snapshots: create (idempotent by name, checked against the host's record), delete, get and list,
// each the plugin's call and the host's row in one transaction.
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

extension StorageService {

    func snapshotJSON(_ plugin: String, _ r: SnapshotRow) -> JSON {
        var out: JSON = ["plugin": .string(plugin), "snapshotId": .string(r.id), "name": .string(r.name),
                         "sourceVolumeId": .string(r.sourceVolume), "sizeBytes": JSON(Int64(r.size)), "created": .number(r.created)]
        for (k, v) in r.snapshot.object ?? [] where out[k] == nil { out = out.setting(k, v) }
        return out
    }

    public func createSnapshot(plugin: String, name: String?, sourceVolumeId: String?, parameters: JSON? = nil) async throws -> (JSON, Bool) {
        _ = try self.plugin(plugin)
        let name = try Self.checkName(name)
        guard let source = sourceVolumeId, !source.isEmpty else { throw BerthError(.invalidArgument, "sourceVolumeId is required") }
        let store = host.store
        return try await host.executor.run {
            let ops = try self.ops(plugin)
            guard ops.has(.createSnapshot) else {
                throw BerthError(.unimplemented, "storage plugin \"\(plugin)\" does not support snapshots")
            }
            _ = try self.requireVolume(plugin, source)
            let out = try ops.createSnapshot(["name": .string(name), "sourceVolumeId": .string(source),
                                              "parameters": parameters ?? .object([])])
            guard let id = out["snapshotId"]?.string, !id.isEmpty else {
                throw BerthError(.internal, "plugin \"\(plugin)\" create_snapshot returned no snapshotId; nothing was committed")
            }
            if let known = try store.snapshot(plugin: plugin, id: id, orName: name) {
                guard known.id == id, known.name == name else {
                    throw BerthError(.internal, "plugin \"\(plugin)\" returned snapshot \(id) for \"\(name)\", which disagrees with the host's record \(known.id) \"\(known.name)\"")
                }
                return (self.snapshotJSON(plugin, known), false)
            }
            let row = SnapshotRow(id: id, name: name, sourceVolume: source, size: Int64(out["sizeBytes"]?.int ?? 0), snapshot: out, created: wallClock())
            try store.insertSnapshot(plugin: plugin, row)
            try self.event("snapshot.created", plugin, id, ["name": .string(name), "sourceVolumeId": .string(source), "sizeBytes": JSON(Int64(row.size))])
            return (self.snapshotJSON(plugin, row), true)
        }
    }

    public func deleteSnapshot(plugin: String, id: String) async throws {
        _ = try self.plugin(plugin)
        let store = host.store
        try await host.executor.run {
            let ops = try self.ops(plugin)
            guard ops.has(.deleteSnapshot) else { throw BerthError(.unimplemented, "storage plugin \"\(plugin)\" does not support snapshots") }
            _ = try ops.deleteSnapshot(["snapshotId": .string(id)])
            if try store.deleteSnapshot(plugin: plugin, id: id) { try self.event("snapshot.deleted", plugin, id) }
        }
    }

    public func getSnapshot(plugin: String, id: String) async throws -> JSON {
        _ = try self.plugin(plugin)
        let store = host.store
        return try await host.executor.run {
            guard let r = try store.snapshot(plugin: plugin, id: id) else { throw BerthError(.notFound, "no snapshot \"\(id)\" in storage plugin \"\(plugin)\"") }
            return self.snapshotJSON(plugin, r)
        }
    }

    public func listSnapshots(plugin: String, sourceVolumeId: String? = nil, limit: Int? = nil, pageToken: String? = nil) async throws -> JSON {
        _ = try self.plugin(plugin)
        let n = try Self.pageLimit(limit)
        let after = try pageToken.map { try Self.decodeToken($0) } ?? ""
        let store = host.store
        return try await host.executor.run {
            var out = try store.snapshots(plugin: plugin, after: after, sourceVolume: sourceVolumeId ?? "", limit: n + 1).map { self.snapshotJSON(plugin, $0) }
            let more = out.count > n
            if more { out.removeLast() }
            var j: JSON = ["snapshots": .array(out)]
            if more, let last = out.last?["snapshotId"]?.string { j = j.setting("nextPageToken", .string(Self.encodeToken(last))) }
            return j
        }
    }
}
