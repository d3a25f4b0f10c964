// The storage kind's plugin functions, typed: one method per entry of `berth_storage_ops` (berth_plugin.h), JSON in
// and out, each through PluginInstance's one call path. The host calls storage plugins only through this.
import BerthPluginABI
import BerthWire

/// A storage plugin instance's ops table. Every method runs in the caller's transaction, like any plugin call. An
/// optional function the plugin lacks fails with an UNIMPLEMENTED `BerthError`; `has` says beforehand (a missing
/// controller_publish or node_stage means the host skips that step; missing snapshot functions mean no snapshots).
public struct StorageOps: @unchecked Sendable {
    /// The functions of the table; the raw value is the operation's name in errors and statistics.
    public enum Op: String, CaseIterable, Sendable {
        case createVolume = "create_volume", deleteVolume = "delete_volume"
        case nodePublish = "node_publish", nodeUnpublish = "node_unpublish"
        case controllerPublish = "controller_publish", controllerUnpublish = "controller_unpublish"
        case nodeStage = "node_stage", nodeUnstage = "node_unstage"
        case expandVolume = "expand_volume"
        case createSnapshot = "create_snapshot", deleteSnapshot = "delete_snapshot", listSnapshots = "list_snapshots"
        case listVolumes = "list_volumes", getCapacity = "get_capacity", validateCapabilities = "validate_capabilities"
    }

    public let instance: PluginInstance
    private let table: berth_storage_ops

    init?(_ instance: PluginInstance) {
        guard let t = instance.plugin.storage else { return nil }
        self.instance = instance
        table = t.pointee
    }

    private func function(_ op: Op) -> berth_json_op? {
        switch op {
        case .createVolume: return table.create_volume
        case .deleteVolume: return table.delete_volume
        case .nodePublish: return table.node_publish
        case .nodeUnpublish: return table.node_unpublish
        case .controllerPublish: return table.controller_publish
        case .controllerUnpublish: return table.controller_unpublish
        case .nodeStage: return table.node_stage
        case .nodeUnstage: return table.node_unstage
        case .expandVolume: return table.expand_volume
        case .createSnapshot: return table.create_snapshot
        case .deleteSnapshot: return table.delete_snapshot
        case .listSnapshots: return table.list_snapshots
        case .listVolumes: return table.list_volumes
        case .getCapacity: return table.get_capacity
        case .validateCapabilities: return table.validate_capabilities
        }
    }

    /// Whether the plugin provides `op`.
    public func has(_ op: Op) -> Bool { function(op) != nil }

    /// Calls `op`; its output must be a JSON object (empty output reads as `{}`).
    public func call(_ op: Op, _ request: JSON) throws -> JSON { try instance.callObject(op.rawValue, function(op), request) }
    /// Calls `op` with a request of raw bytes (which need not be valid JSON) and returns its raw output.
    public func callRaw(_ op: Op, _ request: [UInt8]) throws -> [UInt8] { try instance.callJSON(op.rawValue, function(op), request) }

    public func createVolume(_ request: JSON) throws -> JSON { try call(.createVolume, request) }
    public func deleteVolume(_ request: JSON) throws -> JSON { try call(.deleteVolume, request) }
    public func nodePublish(_ request: JSON) throws -> JSON { try call(.nodePublish, request) }
    public func nodeUnpublish(_ request: JSON) throws -> JSON { try call(.nodeUnpublish, request) }
    public func controllerPublish(_ request: JSON) throws -> JSON { try call(.controllerPublish, request) }
    public func controllerUnpublish(_ request: JSON) throws -> JSON { try call(.controllerUnpublish, request) }
    public func nodeStage(_ request: JSON) throws -> JSON { try call(.nodeStage, request) }
    public func nodeUnstage(_ request: JSON) throws -> JSON { try call(.nodeUnstage, request) }
    public func expandVolume(_ request: JSON) throws -> JSON { try call(.expandVolume, request) }
    public func createSnapshot(_ request: JSON) throws -> JSON { try call(.createSnapshot, request) }
    public func deleteSnapshot(_ request: JSON) throws -> JSON { try call(.deleteSnapshot, request) }
    public func listSnapshots(_ request: JSON) throws -> JSON { try call(.listSnapshots, request) }
    public func listVolumes(_ request: JSON) throws -> JSON { try call(.listVolumes, request) }
    public func getCapacity(_ request: JSON) throws -> JSON { try call(.getCapacity, request) }
    public func validateCapabilities(_ request: JSON) throws -> JSON { try call(.validateCapabilities, request) }
}

extension PluginInstance {
    /// The instance's storage functions, or nil when the plugin is not a storage plugin.
    public var storageOps: StorageOps? { StorageOps(self) }
}

extension PluginHost {
    /// The storage functions of the live instance named `name`, or a `BerthError` that says why there is none.
    public func storage(named name: String) throws -> StorageOps {
        let inst = try instance(name, kind: .storage)
        guard let ops = inst.storageOps else { throw BerthError(.internal, "plugin \"\(name)\" declares the storage kind but has no storage table") }
        return ops
    }
}
