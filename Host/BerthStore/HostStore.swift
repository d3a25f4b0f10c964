// What the host keeps beside the plugins' key spaces — network attachments, volumes, workloads, discovery cursors —
// and the event log's retention, as one protocol that both engines implement: SQLite with its tables (Tables/*.swift,
// the SQL), etcd with key spaces of the store interface (Tables/Keyed.swift). Kinds and the scheduler use only this.
import BerthWire

public protocol HostStore: StateStore {
    /// "sqlite" or "etcd" (what `berth status` shows).
    var engineName: String { get }

    // MARK: attachments (network kind)
    func attachmentResult(network: String, containerID: String, ifname: String) throws -> String?
    func insertAttachment(network: String, containerID: String, ifname: String, node: String, result: String, created: Double) throws
    @discardableResult func deleteAttachment(network: String, containerID: String, ifname: String) throws -> Bool
    func attachmentKeys(network: String) throws -> [(containerID: String, ifname: String)]
    func attachments(network: String) throws -> [AttachmentRow]
    func deleteAttachments(network: String, node: String) throws
    func attachmentCount(network: String) throws -> Int

    // MARK: volumes (storage kind)
    func volume(plugin: String, id: String) throws -> VolumeRow?
    func volume(plugin: String, name: String) throws -> VolumeRow?
    func volumes(plugin: String, after: String, limit: Int) throws -> [VolumeRow]
    func insertVolume(plugin: String, _ v: VolumeRow) throws
    func updateVolume(plugin: String, id: String, capacity: Int64, volume: JSON) throws
    @discardableResult func deleteVolume(plugin: String, id: String) throws -> Bool
    func volumeNodes(plugin: String, id: String) throws -> [VolumeNodeRow]
    func insertVolumeNode(plugin: String, id: String, node: String, readonly: Bool, publishContext: JSON, stagingPath: String, created: Double) throws
    func setVolumeStaged(plugin: String, id: String, node: String, _ staged: Bool) throws
    func deleteVolumeNode(plugin: String, id: String, node: String) throws
    func volumeTargets(plugin: String, id: String) throws -> [VolumeTargetRow]
    func volumeTarget(plugin: String, target: String) throws -> VolumeTargetRow?
    func insertVolumeTarget(plugin: String, id: String, node: String, target: String, readonly: Bool, created: Double) throws
    func deleteVolumeTarget(plugin: String, target: String) throws
    func snapshot(plugin: String, id: String) throws -> SnapshotRow?
    func snapshot(plugin: String, id: String, orName name: String) throws -> SnapshotRow?
    func snapshots(plugin: String, after: String, sourceVolume: String, limit: Int) throws -> [SnapshotRow]
    func insertSnapshot(plugin: String, _ r: SnapshotRow) throws
    @discardableResult func deleteSnapshot(plugin: String, id: String) throws -> Bool

    // MARK: workloads (the scheduler's model is loaded from and written through these)
    /// On an engine shared by many berthd: a value that changes with every commit that writes nodes, objects or
    /// instances (read in the transaction, so a concurrent change to them is a conflict); the model reloads when it is
    /// not the one it last saw. nil on one host, where the model is the only writer.
    func workloadsVersion() throws -> [UInt8]?
    func forEachNode(_ body: (NodeRecord) throws -> Void) throws
    func saveNode(_ n: NodeRecord) throws
    func deleteNode(name: String) throws
    func forEachObject(_ body: (ObjectRecord) throws -> Void) throws
    func saveObject(_ o: ObjectRecord) throws
    func deleteObject(kind: String, name: String) throws
    func forEachInstance(_ body: (InstanceRecord) throws -> Void) throws
    func saveInstance(_ r: InstanceRecord) throws
    func deleteInstance(kind: String, app: String, ordinal: Int64) throws

    // MARK: counts for the live-state probes, discovery cursors
    func volumeCount(plugin: String) throws -> Int
    func objectCount(kind: String) throws -> Int
    func discoveryCursor(_ plugin: String) throws -> (rev: Int64, resyncRev: Int64)?
    func setDiscoveryCursor(_ plugin: String, rev: Int64, resyncRev: Int64) throws

    // MARK: event retention (Retention.swift; Etcd/EtcdRetention.swift)
    /// The highest event revision compacted away (0 when none).
    var compactedThrough: Int64 { get }
    /// Throws `EventsCompacted` when events after `since` (> 0) are no longer kept.
    func checkRetained(since: Int64) throws
    /// One bounded compaction step, on the executor in a transaction.
    func compactEvents(retain: Int, maxAge: Double?, limit: Int) throws -> (deleted: Int, more: Bool, empty: Bool)

    /// Marks the open transaction as the scheduling leader's: on an engine shared by many berthd, its commit fails
    /// (FAILED_PRECONDITION, nothing applied) unless this berthd still holds leadership. A no-op on one host.
    func fenceTransaction()
}

extension HostStore {
    public func fenceTransaction() {}
}

extension Store: HostStore {
    public var engineName: String { "sqlite" }
    public func workloadsVersion() throws -> [UInt8]? { nil }
}
