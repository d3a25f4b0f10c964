// Liveness and leadership on etcd (issue 18): a lease that a berthd keeps alive, a node's registration as a key bound
// to it (gone when the lease expires), and one leader among many berthd by campaign (the first to create the election
// key under its lease wins), whose commits are fenced on that key so that a berthd that lost leadership cannot commit.
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// A lease granted by etcd. Keys put under it vanish when it expires (no keep-alive within its TTL) or is revoked.
/// Not thread-safe: one owner calls `keepAlive` (about every TTL/3) from one thread; it has its own connection.
public final class EtcdLease {
    public let id: Int64
    public let ttlSeconds: Int
    let client: EtcdClient
    let root: [UInt8]

    /// Grants a lease of `ttlSeconds` (etcd raises a TTL below its minimum, about 2 s with default timings).
    public init(_ settings: EtcdSettings, ttlSeconds: Int) throws {
        guard ttlSeconds > 0 else { throw BerthError(.invalidArgument, "a lease needs a TTL of at least 1 second, got \(ttlSeconds)") }
        client = try EtcdClient(settings.validated())
        root = Array((settings.prefix ?? "/berth/\(settings.site)/").utf8)
        (id, self.ttlSeconds) = try client.grantLease(ttlSeconds: ttlSeconds)
    }

    /// Renews the lease; returns the TTL it has again. NOT_FOUND when it already expired (its keys are gone).
    @discardableResult
    public func keepAlive() throws -> Int { try client.keepLeaseAlive(id) }

    /// Ends the lease now: every key bound to it is deleted. An expired lease is fine.
    public func revoke() throws {
        try client.revokeLease(id)
    }

    // MARK: nodes

    func nodeKey(_ node: String) -> [UInt8] { root + Array("nodes/".utf8) + Array(node.utf8) }

    /// Registers `node` as alive for as long as this lease lives; `info` is what others read about it.
    public func register(node: String, info: JSON) throws {
        try Names.check(node, "node")
        _ = try client.txn(compares: [], operations: [put(nodeKey(node), info.bytes)])
    }

    /// Records `node` as a member of the site for good (no lease): a member without a live registration is down.
    public func recordMember(node: String) throws {
        try Names.check(node, "node")
        _ = try client.txn(compares: [], operations: [EtcdClient.put(root + Array("members/".utf8) + Array(node.utf8), Array("{}".utf8))])
    }

    /// Forgets `node` as a member of the site, unless it is registered (live) at that moment: a node removed for good.
    /// A berthd of that node that starts again records itself again.
    public func forgetMember(node: String) throws {
        try Names.check(node, "node")
        _ = try client.txn(compares: [EtcdClient.compareAbsent(nodeKey(node))],
                           operations: [EtcdClient.delete(root + Array("members/".utf8) + Array(node.utf8), [])])
    }

    /// Every node that ever joined the site (`recordMember`), live or not.
    public func members() throws -> [String] { try Self.members(client, root) }

    /// The nodes registered under live leases, with their info.
    public func liveNodes() throws -> [(node: String, info: JSON)] { try Self.liveNodes(client, root) }

    /// What a reader without a lease of its own sees of a site (`berth status`): its members and its live nodes, read
    /// through a connection of its own. Granting a lease only to read them would cost etcd a write per status.
    public static func membership(_ settings: EtcdSettings) throws -> (members: [String], live: [(node: String, info: JSON)]) {
        let client = try EtcdClient(settings.validated())
        let root = Array((settings.prefix ?? "/berth/\(settings.site)/").utf8)
        return (try members(client, root), try liveNodes(client, root))
    }

    static func members(_ client: EtcdClient, _ root: [UInt8]) throws -> [String] {
        let p = root + Array("members/".utf8)
        return try client.range(p, Keys.prefixEnd(p), revision: 0, keysOnly: true).kvs.map { String(decoding: $0.key.dropFirst(p.count), as: UTF8.self) }
    }

    static func liveNodes(_ client: EtcdClient, _ root: [UInt8]) throws -> [(node: String, info: JSON)] {
        let p = root + Array("nodes/".utf8)
        return try client.range(p, Keys.prefixEnd(p), revision: 0).kvs.map { kv in
            (String(decoding: kv.key.dropFirst(p.count), as: UTF8.self), (try? JSON.parse(kv.value)) ?? .null)
        }
    }

    // MARK: leadership

    func electionKey(_ name: String) -> [UInt8] { root + Array("election/".utf8) + Array(name.utf8) }

    /// Tries once to become the leader of `election`: creates its key under this lease unless it exists. Returns the
    /// leadership won, or nil when another holder has it (see `leader`). Already ours: the same leadership again.
    public func campaign(_ election: String, value: String) throws -> Leadership? {
        let key = electionKey(election)
        _ = try client.txn(compares: [EtcdClient.compareCreated(key, 0)], operations: [put(key, Array(value.utf8))])
        guard let held = try leader(election) else { return nil }
        return held.lease == id ? held : nil
    }

    /// Who leads `election` now (nil: nobody; the key went with its holder's lease).
    public func leader(_ election: String) throws -> Leadership? {
        let key = electionKey(election)
        let j = try client.call("/v3/kv/range", .object([("key", .string(Base64.encode(key)))]), idempotent: true)
        guard let kv = j["kvs"]?.array?.first else { return nil }
        return Leadership(key: key, createRevision: EtcdClient.int(kv["create_revision"]), lease: EtcdClient.int(kv["lease"]),
                          value: String(decoding: try EtcdClient.bytes(kv["value"]), as: UTF8.self))
    }

    /// Steps down: deletes the election key if this lease still holds it.
    public func resign(_ l: Leadership) throws {
        _ = try client.txn(compares: [l.compare], operations: [EtcdClient.delete(l.key, [])])
    }

    func put(_ key: [UInt8], _ value: [UInt8]) -> EtcdTxnPart { EtcdClient.put(key, value, lease: id) }
}

/// One term of a leader: the election key as created by its holder. A later holder's key has a higher create
/// revision, so comparing it fences every commit of this term (`EtcdStore.fence`).
public struct Leadership: Equatable, Sendable {
    public let key: [UInt8]
    public let createRevision: Int64
    public let lease: Int64
    public let value: String

    /// The compare that holds only while this term lasts.
    var compare: EtcdTxnPart {
        EtcdClient.compareCreated(key, createRevision)
    }
}
