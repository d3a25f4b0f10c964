// The network kind's plugin functions, typed: one method per entry of `berth_network_ops` (berth_plugin.h), JSON in
// and out, each through PluginInstance's one call path. The host calls network plugins only through this.
import BerthPluginABI
import BerthWire

/// A network plugin instance's ops table. Every method runs in the caller's transaction, like any plugin call. An
/// optional function the plugin lacks (capacity, admin, add_batch) fails with an UNIMPLEMENTED `BerthError`;
/// `has` says beforehand.
public struct NetworkOps: @unchecked Sendable {
    /// The JSON-shaped functions of the table; the raw value is the operation's name in errors and statistics.
    public enum Op: String, CaseIterable, Sendable {
        case add, del, check, gc, status, capacity
        case addBatch = "add_batch"  // ABI 1.1
    }

    public let instance: PluginInstance
    private let table: berth_network_ops

    init?(_ instance: PluginInstance) {
        guard let t = instance.plugin.network else { return nil }
        self.instance = instance
        table = t.pointee
    }

    private func function(_ op: Op) -> berth_json_op? {
        switch op {
        case .add: return table.add
        case .del: return table.del
        case .check: return table.check
        case .gc: return table.gc
        case .status: return table.status
        case .capacity: return table.capacity
        case .addBatch: return table.add_batch
        }
    }

    /// Whether the plugin provides `op`.
    public func has(_ op: Op) -> Bool { function(op) != nil }
    /// Whether the plugin has administrative operations (`admin`).
    public var hasAdmin: Bool { table.admin != nil }

    /// Calls `op`; its output must be a JSON object (empty output reads as `{}`).
    public func call(_ op: Op, _ request: JSON) throws -> JSON { try instance.callObject(op.rawValue, function(op), request) }
    /// Calls `op` with a request of raw bytes (which need not be valid JSON) and returns its raw output.
    public func callRaw(_ op: Op, _ request: [UInt8]) throws -> [UInt8] { try instance.callJSON(op.rawValue, function(op), request) }

    public func add(_ request: JSON) throws -> JSON { try call(.add, request) }
    public func del(_ request: JSON) throws -> JSON { try call(.del, request) }
    public func check(_ request: JSON) throws -> JSON { try call(.check, request) }
    public func gc(_ request: JSON) throws -> JSON { try call(.gc, request) }
    public func status(_ request: JSON) throws -> JSON { try call(.status, request) }
    public func capacity(_ request: JSON) throws -> JSON { try call(.capacity, request) }
    public func addBatch(_ request: JSON) throws -> JSON { try call(.addBatch, request) }
    /// An administrative operation by name (pool.import, node.release, ...).
    public func admin(_ op: String, _ request: JSON) throws -> JSON { try instance.networkAdmin(op, request) }
}

extension PluginInstance {
    /// The instance's network functions, or nil when the plugin is not a network plugin.
    public var networkOps: NetworkOps? { NetworkOps(self) }
}

extension PluginHost {
    /// The network functions of the live instance named `name`, or a `BerthError` that says why there is none.
    public func network(named name: String) throws -> NetworkOps {
        let inst = try instance(name, kind: .network)
        guard let ops = inst.networkOps else { throw BerthError(.internal, "plugin \"\(name)\" declares the network kind but has no network table") }
        return ops
    }
}
