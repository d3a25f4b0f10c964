// The scheduler kind's coordinator: which loaded scheduler plugin owns which custom kind, and filter + score of one
// placement over a NodeBatch (Batch.swift), through the typed wrapper (BerthPlugins/Kinds/SchedulerPlugin.swift).
import BerthPluginABI
import BerthPlugins
import BerthWire

/// A kind objects can have: the built-in App (no plugin) or a scheduler plugin's custom kind.
public struct KindInfo: Sendable {
    public let kind: String
    public let plugin: String?
    public let schema: JSON?
}

public final class SchedulerCoordinator: @unchecked Sendable {
    public let host: PluginHost

    /// Requires the plugin host.
    public init(host: PluginHost) { self.host = host }

    /// The built-in App (its schema given) and every custom kind of a loaded scheduler plugin (the first plugin to
    /// claim a kind owns it).
    public func kinds(appSchema: JSON) -> [KindInfo] {
        var out = [KindInfo(kind: "App", plugin: nil, schema: appSchema)]
        for e in host.plugins {
            guard let inst = e.instance, let k = inst.plugin.schedulerKind, !out.contains(where: { $0.kind == k }) else { continue }
            out.append(KindInfo(kind: k, plugin: e.spec.name, schema: inst.plugin.kindSchema))
        }
        return out
    }

    /// The plugin that owns each custom kind, as its typed wrapper (executor thread: reloads swap instances there).
    package func owners() -> [String: SchedulerPlugin] {
        var out: [String: SchedulerPlugin] = [:]
        for e in host.plugins {
            if let inst = e.instance, let k = inst.plugin.schedulerKind, k != "App", out[k] == nil, let p = SchedulerPlugin(inst) { out[k] = p }
        }
        return out
    }

    /// The plugin's filter over the first `count` views of `batch` (codes into `codes`), then its score over the
    /// survivors, which `keep` compacts to the front (it returns how many; it also moves the caller's parallel data).
    package func filterAndScore(_ p: SchedulerPlugin, _ batch: NodeBatch, count: Int, kind: String, app: String, ordinal: Int, spec: String,
                                state: String, codes: inout [UInt8], scores: inout [Int64], keep: (_ codes: UnsafeBufferPointer<UInt8>) -> Int) throws -> Int {
        try batch.withFirst(count, kind: kind, app: app, ordinal: Int32(ordinal), spec: spec, state: state) { inst, b in
            try codes.withUnsafeMutableBufferPointer { try p.filter(inst, b, codes: $0.baseAddress!) }
        }
        let kept = codes.withUnsafeBufferPointer { keep($0) }
        if kept > 0 {
            try batch.withFirst(kept, kind: kind, app: app, ordinal: Int32(ordinal), spec: spec, state: state) { inst, b in
                try scores.withUnsafeMutableBufferPointer { try p.score(inst, b, scores: $0.baseAddress!) }
            }
        }
        return kept
    }
}
