// Volumes from an app's volume templates, for the scheduler's placements: one volume per (template, instance),
// named <template>-<app>-<ordinal>, created idempotently and published on the instance's node at
// <stateDir>/instances/<app>-<ordinal>/<template>. Takes plain values, so the scheduler depends on this, not back.
import BerthPlugins
import BerthStore
import BerthWire
import Foundation

/// A volume an instance has published from a template: enough to unpublish it without the spec.
public struct VolumeAttachment: Sendable {
    public var template: String
    public var plugin: String
    public var volumeID: String
    public var target: String
    public var node: String
    public var json: JSON {
        ["template": .string(template), "plugin": .string(plugin), "volumeId": .string(volumeID), "target": .string(target), "node": .string(node)]
    }
    public init(template: String, plugin: String, volumeID: String, target: String, node: String) {
        self.template = template; self.plugin = plugin; self.volumeID = volumeID; self.target = target; self.node = node
    }
    public init?(_ j: JSON) {
        guard let t = j["template"]?.string, let p = j["plugin"]?.string, let v = j["volumeId"]?.string, let tg = j["target"]?.string else { return nil }
        self.init(template: t, plugin: p, volumeID: v, target: tg, node: j["node"]?.string ?? "")
    }
}

/// One volume template of an app, as plain values: name, size in bytes, storage plugin (nil: the only one loaded),
/// node-local or not, and the plugin's parameters.
public struct TemplateVolume {
    public var app: String, ordinal: Int
    public var name: String, size: Int64, storage: String?, local: Bool, parameters: JSON
    public init(app: String, ordinal: Int, name: String, size: Int64, storage: String?, local: Bool, parameters: JSON) {
        self.app = app; self.ordinal = ordinal; self.name = name; self.size = size; self.storage = storage; self.local = local
        self.parameters = parameters
    }
    /// <template>-<app>-<ordinal>
    public var volumeName: String { "\(name)-\(app)-\(ordinal)" }
}

/// A `local` template asks the plugin for a volume on the instance's node only (topology requisite); a volume whose
/// accessible topology is one node ties its instance to that node from then on. Executor thread, in a transaction.
extension StorageService {
    func templatePlugin(_ t: TemplateVolume) throws -> String {
        if let s = t.storage { return s }
        let all = host.plugins.filter { $0.instance?.plugin.kinds.contains(.storage) ?? false }.map { $0.spec.name }
        guard all.count == 1 else { throw BerthError(.invalidArgument, "volume template \(t.name) names no storage plugin and \(all.count) are loaded") }
        return all[0]
    }

    func templateTarget(_ t: TemplateVolume) -> String {
        var dir = host.site.stateDir
        if !dir.hasPrefix("/") { dir = FileManager.default.currentDirectoryPath + "/" + (dir.hasPrefix("./") ? String(dir.dropFirst(2)) : dir) }
        while dir.hasSuffix("/") && dir.count > 1 { dir.removeLast() }
        return "\(dir)/instances/\(t.app)-\(t.ordinal)/\(t.name)"
    }

    static func singleNode(_ volume: JSON) -> String? {
        let nodes = (volume["accessibleTopology"]?.array ?? []).compactMap { $0["node"]?.string }
        return nodes.count == 1 ? nodes[0] : nil
    }

    /// The node an existing volume of this template is tied to, if it is node-local.
    package func existingLocalNode(_ t: TemplateVolume) -> String? {
        guard let p = try? templatePlugin(t), let row = try? host.store.volume(plugin: p, name: t.volumeName) else { return nil }
        return Self.singleNode(row.volume)
    }

    /// The template's volume: the one the host already knows by that name, else a new one (in this transaction).
    func templateVolume(plugin: String, _ t: TemplateVolume, topology: JSON?) throws -> (String, JSON) {
        if let row = try host.store.volume(plugin: plugin, name: t.volumeName) { return (row.id, row.volume) }
        var req: JSON = ["name": .string(t.volumeName), "capacityBytes": JSON(Int64(t.size)), "accessMode": "single-node-writer",
                         "volumeMode": "mount", "parameters": t.parameters]
        if let topology { req = req.setting("topology", topology) }
        let (row, _) = try createInTransaction(plugin: plugin, name: try Self.checkName(t.volumeName), request: req)
        return (row.id, row.volume)
    }

    /// Create (or find) and publish on `node`; returns the attachment and the node the volume is local to, if any.
    package func publishTemplate(_ t: TemplateVolume, node: String) throws -> (VolumeAttachment, String?) {
        let p = try templatePlugin(t)
        let topology: JSON? = t.local ? ["requisite": [["node": .string(node)]]] : nil
        let (id, volume) = try templateVolume(plugin: p, t, topology: topology)
        let localTo = Self.singleNode(volume)
        if let localTo, localTo != node {
            throw BerthError(.failedPrecondition, "volume \(id) (\(t.volumeName)) lives on node \(localTo), not \(node)")
        }
        let target = templateTarget(t)
        _ = try controllerPublishStep(p, id, node, false)
        _ = try stageStep(p, id, node)
        _ = try nodePublishStep(p, id, node, target, false)
        return (VolumeAttachment(template: t.name, plugin: p, volumeID: id, target: target, node: node), localTo)
    }

    /// Node unpublish; when no target of the volume is left on the node: unstage, controller unpublish.
    package func unpublishTemplate(_ v: VolumeAttachment) throws {
        _ = try nodeUnpublishStep(v.plugin, v.volumeID, v.target)
        if try targetRows(v.plugin, v.volumeID).contains(where: { $0.node == v.node }) { return }
        _ = try unstageStep(v.plugin, v.volumeID, v.node)
        _ = try controllerUnpublishStep(v.plugin, v.volumeID, v.node)
    }
}
