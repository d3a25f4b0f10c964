// The host's records of the storage kind (migration 3): volumes, per (volume, node) the controller publication and
// the staging, per target the node publication (these rows ARE the reference counts), and snapshots.
import BerthWire

/// A volume as the host keeps it: the plugin's record (`volume`) and the fields the host decides on.
public struct VolumeRow: Sendable {
    public var id: String
    public var name: String
    public var capacity: Int64
    public var accessMode: String
    public var volumeMode: String
    public var volume: JSON
    public var created: Double
    public init(id: String, name: String, capacity: Int64, accessMode: String, volumeMode: String, volume: JSON, created: Double) {
        self.id = id; self.name = name; self.capacity = capacity; self.accessMode = accessMode
        self.volumeMode = volumeMode; self.volume = volume; self.created = created
    }
}

/// A volume's controller publication to one node, and whether it is staged there.
public struct VolumeNodeRow: Sendable {
    public var node: String
    public var readonly: Bool
    public var publishContext: JSON
    public var staged: Bool
    public var stagingPath: String
}

/// One node publication (a reference) of a volume at a target path.
public struct VolumeTargetRow: Sendable {
    public var volumeID: String
    public var node: String
    public var target: String
    public var readonly: Bool
}

/// A snapshot as the host keeps it (`snapshot` is the plugin's record).
public struct SnapshotRow: Sendable {
    public var id: String
    public var name: String
    public var sourceVolume: String
    public var size: Int64
    public var snapshot: JSON
    public var created: Double
    public init(id: String, name: String, sourceVolume: String, size: Int64, snapshot: JSON, created: Double) {
        self.id = id; self.name = name; self.sourceVolume = sourceVolume; self.size = size; self.snapshot = snapshot; self.created = created
    }
}

extension Store {
    private static let volumeColumns = "id, name, capacity, access_mode, volume_mode, volume, created"
    private func volumeRow(_ s: Statement) -> VolumeRow {
        VolumeRow(id: s.text(0), name: s.text(1), capacity: s.int(2), accessMode: s.text(3), volumeMode: s.text(4),
                  volume: (try? JSON.parse(s.text(5))) ?? .object([]), created: s.double(6))
    }

    public func volume(plugin: String, id: String) throws -> VolumeRow? {
        let s = try prepare("SELECT \(Self.volumeColumns) FROM volumes WHERE plugin=?1 AND id=?2")
        s.bind(1, plugin); s.bind(2, id)
        return try s.step() ? volumeRow(s) : nil
    }

    public func volume(plugin: String, name: String) throws -> VolumeRow? {
        let s = try prepare("SELECT \(Self.volumeColumns) FROM volumes WHERE plugin=?1 AND name=?2")
        s.bind(1, plugin); s.bind(2, name)
        return try s.step() ? volumeRow(s) : nil
    }

    /// Up to `limit` volumes of a plugin with ids after `after`, in id order.
    public func volumes(plugin: String, after: String, limit: Int) throws -> [VolumeRow] {
        let s = try prepare("SELECT \(Self.volumeColumns) FROM volumes WHERE plugin=?1 AND id>?2 ORDER BY id LIMIT ?3")
        s.bind(1, plugin); s.bind(2, after); s.bind(3, Int64(limit))
        var rows: [VolumeRow] = []
        while try s.step() { rows.append(volumeRow(s)) }
        return rows
    }

    public func insertVolume(plugin: String, _ v: VolumeRow) throws {
        let s = try prepare("INSERT INTO volumes(plugin, id, name, capacity, access_mode, volume_mode, volume, created) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)")
        s.bind(1, plugin); s.bind(2, v.id); s.bind(3, v.name); s.bind(4, v.capacity); s.bind(5, v.accessMode)
        s.bind(6, v.volumeMode); s.bind(7, v.volume.serialized); s.bind(8, v.created)
        try s.run()
    }

    /// Records a new capacity and plugin record (expansion).
    public func updateVolume(plugin: String, id: String, capacity: Int64, volume: JSON) throws {
        let s = try prepare("UPDATE volumes SET capacity=?3, volume=?4 WHERE plugin=?1 AND id=?2")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, capacity); s.bind(4, volume.serialized)
        try s.run()
    }

    /// Deletes a volume's record; true when there was one.
    @discardableResult
    public func deleteVolume(plugin: String, id: String) throws -> Bool {
        let s = try prepare("DELETE FROM volumes WHERE plugin=?1 AND id=?2")
        s.bind(1, plugin); s.bind(2, id)
        try s.run()
        return changes > 0
    }

    // MARK: per node

    /// The nodes a volume is controller-published to, in node order.
    public func volumeNodes(plugin: String, id: String) throws -> [VolumeNodeRow] {
        let s = try prepare("SELECT node, readonly, publish_context, staged, staging_path FROM volume_nodes WHERE plugin=?1 AND volume_id=?2 ORDER BY node")
        s.bind(1, plugin); s.bind(2, id)
        var out: [VolumeNodeRow] = []
        while try s.step() {
            out.append(VolumeNodeRow(node: s.text(0), readonly: s.int(1) != 0, publishContext: (try? JSON.parse(s.text(2))) ?? .object([]),
                                     staged: s.int(3) != 0, stagingPath: s.text(4)))
        }
        return out
    }

    /// Records a controller publication (not staged yet).
    public func insertVolumeNode(plugin: String, id: String, node: String, readonly: Bool, publishContext: JSON, stagingPath: String, created: Double) throws {
        let s = try prepare("INSERT INTO volume_nodes(plugin, volume_id, node, readonly, publish_context, staged, staging_path, created) VALUES(?1,?2,?3,?4,?5,0,?6,?7)")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, node); s.bind(4, Int64(readonly ? 1 : 0)); s.bind(5, publishContext.serialized)
        s.bind(6, stagingPath); s.bind(7, created)
        try s.run()
    }

    public func setVolumeStaged(plugin: String, id: String, node: String, _ staged: Bool) throws {
        let s = try prepare("UPDATE volume_nodes SET staged=?4 WHERE plugin=?1 AND volume_id=?2 AND node=?3")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, node); s.bind(4, Int64(staged ? 1 : 0))
        try s.run()
    }

    public func deleteVolumeNode(plugin: String, id: String, node: String) throws {
        let s = try prepare("DELETE FROM volume_nodes WHERE plugin=?1 AND volume_id=?2 AND node=?3")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, node)
        try s.run()
    }

    // MARK: per target (the reference counts)

    /// Every node publication of a volume, in target order.
    public func volumeTargets(plugin: String, id: String) throws -> [VolumeTargetRow] {
        let s = try prepare("SELECT volume_id, node, target, readonly FROM volume_targets WHERE plugin=?1 AND volume_id=?2 ORDER BY target")
        s.bind(1, plugin); s.bind(2, id)
        var out: [VolumeTargetRow] = []
        while try s.step() { out.append(VolumeTargetRow(volumeID: s.text(0), node: s.text(1), target: s.text(2), readonly: s.int(3) != 0)) }
        return out
    }

    /// The publication at a target path, whichever volume it is.
    public func volumeTarget(plugin: String, target: String) throws -> VolumeTargetRow? {
        let s = try prepare("SELECT volume_id, node, target, readonly FROM volume_targets WHERE plugin=?1 AND target=?2")
        s.bind(1, plugin); s.bind(2, target)
        guard try s.step() else { return nil }
        return VolumeTargetRow(volumeID: s.text(0), node: s.text(1), target: s.text(2), readonly: s.int(3) != 0)
    }

    public func insertVolumeTarget(plugin: String, id: String, node: String, target: String, readonly: Bool, created: Double) throws {
        let s = try prepare("INSERT INTO volume_targets(plugin, volume_id, node, target, readonly, created) VALUES(?1,?2,?3,?4,?5,?6)")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, node); s.bind(4, target); s.bind(5, Int64(readonly ? 1 : 0)); s.bind(6, created)
        try s.run()
    }

    public func deleteVolumeTarget(plugin: String, target: String) throws {
        let s = try prepare("DELETE FROM volume_targets WHERE plugin=?1 AND target=?2")
        s.bind(1, plugin); s.bind(2, target)
        try s.run()
    }

    // MARK: snapshots

    private static let snapshotColumns = "id, name, source_volume, size, snapshot, created"
    private func snapshotRow(_ s: Statement) -> SnapshotRow {
        SnapshotRow(id: s.text(0), name: s.text(1), sourceVolume: s.text(2), size: s.int(3),
                    snapshot: (try? JSON.parse(s.text(4))) ?? .object([]), created: s.double(5))
    }

    public func snapshot(plugin: String, id: String) throws -> SnapshotRow? {
        let s = try prepare("SELECT \(Self.snapshotColumns) FROM snapshots WHERE plugin=?1 AND id=?2")
        s.bind(1, plugin); s.bind(2, id)
        return try s.step() ? snapshotRow(s) : nil
    }

    /// The snapshot with this id or this name (a plugin's answer is checked against both).
    public func snapshot(plugin: String, id: String, orName name: String) throws -> SnapshotRow? {
        let s = try prepare("SELECT \(Self.snapshotColumns) FROM snapshots WHERE plugin=?1 AND (id=?2 OR name=?3)")
        s.bind(1, plugin); s.bind(2, id); s.bind(3, name)
        return try s.step() ? snapshotRow(s) : nil
    }

    /// Up to `limit` snapshots after the id `after`, of one source volume when `sourceVolume` is not empty.
    public func snapshots(plugin: String, after: String, sourceVolume: String, limit: Int) throws -> [SnapshotRow] {
        let s = try prepare("""
            SELECT \(Self.snapshotColumns) FROM snapshots
            WHERE plugin=?1 AND id>?2 AND (?3 = '' OR source_volume=?3) ORDER BY id LIMIT ?4
            """)
        s.bind(1, plugin); s.bind(2, after); s.bind(3, sourceVolume); s.bind(4, Int64(limit))
        var out: [SnapshotRow] = []
        while try s.step() { out.append(snapshotRow(s)) }
        return out
    }

    public func insertSnapshot(plugin: String, _ r: SnapshotRow) throws {
        let s = try prepare("INSERT INTO snapshots(plugin, id, name, source_volume, size, snapshot, created) VALUES(?1,?2,?3,?4,?5,?6,?7)")
        s.bind(1, plugin); s.bind(2, r.id); s.bind(3, r.name); s.bind(4, r.sourceVolume); s.bind(5, r.size); s.bind(6, r.snapshot.serialized); s.bind(7, r.created)
        try s.run()
    }

    @discardableResult
    public func deleteSnapshot(plugin: String, id: String) throws -> Bool {
        let s = try prepare("DELETE FROM snapshots WHERE plugin=?1 AND id=?2")
        s.bind(1, plugin); s.bind(2, id)
        try s.run()
        return changes > 0
    }
}
