// The discovery kind's plugin functions, typed: one method per entry of `berth_discovery_ops` (berth_plugin.h), JSON
// in, each through PluginInstance's one call path. The host calls discovery plugins only through this.
import BerthPluginABI
import BerthWire

/// A discovery plugin instance's ops table. Both functions are required; their output is not interpreted (it is
/// returned as the plugin wrote it).
public struct DiscoveryOps: @unchecked Sendable {
    /// The functions of the table; the raw value is the operation's name in errors and statistics.
    public enum Op: String, CaseIterable, Sendable {
        case events, resync
    }

    public let instance: PluginInstance
    private let table: berth_discovery_ops

    init?(_ instance: PluginInstance) {
        guard let t = instance.plugin.discovery else { return nil }
        self.instance = instance
        table = t.pointee
    }

    private func function(_ op: Op) -> berth_json_op? {
        switch op {
        case .events: return table.events
        case .resync: return table.resync
        }
    }

    /// Whether the plugin provides `op`.
    public func has(_ op: Op) -> Bool { function(op) != nil }

    /// Calls `op` with a request of raw bytes (which need not be valid JSON) and returns its raw output.
    public func callRaw(_ op: Op, _ request: [UInt8]) throws -> [UInt8] { try instance.callJSON(op.rawValue, function(op), request) }

    /// A batch of events: {"events": [{rev, type, subject, data}, ...]}.
    @discardableResult public func events(_ request: JSON) throws -> [UInt8] { try callRaw(.events, request.bytes) }
    /// The full current state as of a revision: {"rev", "site", "instances": [...]}.
    @discardableResult public func resync(_ request: JSON) throws -> [UInt8] { try callRaw(.resync, request.bytes) }
}

extension PluginInstance {
    /// The instance's discovery functions, or nil when the plugin is not a discovery plugin.
    public var discoveryOps: DiscoveryOps? { DiscoveryOps(self) }
}

extension PluginHost {
    /// The discovery functions of the live instance named `name`, or a `BerthError` that says why there is none.
    public func discovery(named name: String) throws -> DiscoveryOps {
        let inst = try instance(name, kind: .discovery)
        guard let ops = inst.discoveryOps else { throw BerthError(.internal, "plugin \"\(name)\" declares the discovery kind but has no discovery table") }
        return ops
    }
}
