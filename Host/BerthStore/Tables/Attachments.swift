// The host's record of network attachments, keyed by (network, container id, interface): what the network kind
// keeps beside the plugin's own state (table attachments, migration 2). The result is the plugin's ADD answer as JSON text.
import CSQLite

/// One attachment as the host keeps it.
public struct AttachmentRow: Sendable {
    public let containerID: String
    public let ifname: String
    public let node: String
    public let result: String
    public let created: Double
}

extension Store {
    /// The recorded ADD result (JSON text) of one attachment, or nil when there is none.
    public func attachmentResult(network: String, containerID: String, ifname: String) throws -> String? {
        let s = try prepare("SELECT result FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
        s.bind(1, network); s.bind(2, containerID); s.bind(3, ifname)
        return try s.step() ? s.text(0) : nil
    }

    public func insertAttachment(network: String, containerID: String, ifname: String, node: String, result: String, created: Double) throws {
        let s = try prepare("INSERT INTO attachments(network, container_id, ifname, node, result, created) VALUES(?1,?2,?3,?4,?5,?6)")
        s.bind(1, network); s.bind(2, containerID); s.bind(3, ifname); s.bind(4, node); s.bind(5, result); s.bind(6, created)
        try s.run()
    }

    /// Deletes one attachment's record; true when there was one.
    @discardableResult
    public func deleteAttachment(network: String, containerID: String, ifname: String) throws -> Bool {
        let s = try prepare("DELETE FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
        s.bind(1, network); s.bind(2, containerID); s.bind(3, ifname)
        try s.run()
        return sqlite3_changes(db) > 0
    }

    /// The (container id, interface) of every attachment of a network.
    public func attachmentKeys(network: String) throws -> [(containerID: String, ifname: String)] {
        let s = try prepare("SELECT container_id, ifname FROM attachments WHERE network=?1")
        s.bind(1, network)
        var out: [(String, String)] = []
        while try s.step() { out.append((s.text(0), s.text(1))) }
        return out
    }

    /// Every attachment of a network, oldest first.
    public func attachments(network: String) throws -> [AttachmentRow] {
        let s = try prepare("SELECT container_id, ifname, node, result, created FROM attachments WHERE network=?1 ORDER BY created")
        s.bind(1, network)
        var out: [AttachmentRow] = []
        while try s.step() {
            out.append(AttachmentRow(containerID: s.text(0), ifname: s.text(1), node: s.text(2), result: s.text(3), created: s.double(4)))
        }
        return out
    }

    /// Deletes the records of every attachment of a network on a node (the node is gone).
    public func deleteAttachments(network: String, node: String) throws {
        let s = try prepare("DELETE FROM attachments WHERE network=?1 AND node=?2")
        s.bind(1, network); s.bind(2, node)
        try s.run()
    }

    /// How many attachments a network has (the live-state probe: a network with attachments is not disabled unless forced).
    public func attachmentCount(network: String) throws -> Int {
        let s = try prepare("SELECT count(*) FROM attachments WHERE network=?1")
        s.bind(1, network)
        _ = try s.step()
        return Int(s.int(0))
    }
}
