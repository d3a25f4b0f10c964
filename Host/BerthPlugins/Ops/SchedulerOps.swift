// The scheduler kind's vtable (berth_scheduler_ops) as a typed wrapper: filter and score over a node batch, and
// reserve / unreserve / bind with their JSON binding. The only code that reads the scheduler table.
import BerthPluginABI
import BerthWire

/// A loaded scheduler plugin, called through its table.
public struct SchedulerPlugin {
    public let instance: PluginInstance
    private let ops: berth_scheduler_ops

    /// nil when the instance has no scheduler table.
    public init?(_ instance: PluginInstance) {
        guard let ops = instance.scheduler?.pointee else { return nil }
        self.instance = instance
        self.ops = ops
    }

    public var name: String { instance.name }
    /// The custom kind it owns.
    public var kind: String { instance.plugin.schedulerKind ?? "" }
    /// bind is optional.
    public var hasBind: Bool { ops.bind != nil }

    /// The binding JSON of reserve, bind and unreserve: {kind, app, ordinal, node[, final]}. App and node names
    /// are DNS labels and kinds identifiers, so no escaping is needed (this runs once per placement).
    public static func binding(kind: String, app: String, ordinal: Int, node: String, final: Bool = false) -> [UInt8] {
        Array("{\"kind\":\"\(kind)\",\"app\":\"\(app)\",\"ordinal\":\(ordinal),\"node\":\"\(node)\"\(final ? ",\"final\":true" : "")}".utf8)
    }

    /// One berth_sched_code per node of the batch into `codes`.
    public func filter(_ inst: UnsafePointer<berth_sched_instance>, _ batch: UnsafePointer<berth_node_batch>, codes: UnsafeMutablePointer<UInt8>) throws {
        try instance.filter(inst, batch, codes: codes)
    }

    /// One score 0..100 per node of the batch into `scores`.
    public func score(_ inst: UnsafePointer<berth_sched_instance>, _ batch: UnsafePointer<berth_node_batch>, scores: UnsafeMutablePointer<Int64>) throws {
        try instance.score(inst, batch, scores: scores)
    }

    public func reserve(_ binding: [UInt8]) throws { _ = try instance.callJSON("reserve", ops.reserve, binding) }

    /// Must not fail by contract; callers log or ignore what it returns.
    public func unreserve(_ binding: [UInt8]) throws { _ = try instance.callJSON("unreserve", ops.unreserve, binding) }

    /// Binds when the plugin has bind (optional); otherwise nothing.
    public func bind(_ binding: [UInt8]) throws {
        if let fn = ops.bind { _ = try instance.callJSON("bind", fn, binding) }
    }

    /// The plugin's own words for why it rejected every node (its optional `explain` method), or "".
    public func explain(kind: String, app: String, ordinal: Int, spec: String, state: String) -> String {
        let req = "{\"kind\":\"\(kind)\",\"app\":\"\(app)\",\"ordinal\":\(ordinal),\"spec\":\(spec),\"state\":\(state)}"
        guard let out = try? instance.call(method: "explain", Array(req.utf8)), let j = try? JSON.parse(out) else { return "" }
        return j["reason"]?.string ?? ""
    }
}
