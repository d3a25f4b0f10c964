// The etcd engine's housekeeping around a site: the `etcd://HOST:PORT[,HOST:PORT…]` form of `berth plugin check
// --store`, removing a site's keys (a check run's own prefix), and what `berthd --check` reports of a cluster.
import BerthWire

extension EtcdSettings {
    /// `etcd://HOST:PORT[,HOST:PORT…]` (HOST numeric, IPv6 in brackets) as client URLs http://HOST:PORT.
    public static func endpoints(fromStoreURL url: String) throws -> [String] {
        let usage = "use etcd://HOST:PORT[,HOST:PORT…] with numeric addresses, e.g. etcd://127.0.0.1:2379"
        guard url.hasPrefix("etcd://") else {
            throw BerthError(.invalidArgument, "store URL \"\(url)\" does not start with etcd://; \(usage)")
        }
        let hosts = url.dropFirst(7).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !hosts.isEmpty, !hosts.contains(where: \.isEmpty) else {
            throw BerthError(.invalidArgument, "store URL \"\(url)\" names no endpoint (or an empty one); \(usage)")
        }
        return try hosts.map { h in
            let endpoint = "http://" + h
            do { _ = try EtcdClient.parse(endpoint) } catch {
                throw BerthError(.invalidArgument, "store URL \"\(url)\": \"\(h)\" is not HOST:PORT with a numeric address and a port from 1 to 65535; \(usage)")
            }
            return endpoint
        }
    }
}

/// What `berthd --check` reports of an etcd cluster: the version the endpoint answered with and the members.
public struct EtcdClusterInfo: Sendable {
    public struct Member: Sendable {
        public var name: String
        public var id: String
        public var clientURLs: [String]
    }
    public var endpoint: String
    public var version: String
    public var members: [Member]
    public var json: JSON {
        ["endpoint": .string(endpoint), "version": .string(version),
         "members": .array(members.map { ["name": .string($0.name), "id": .string($0.id), "clientURLs": .array($0.clientURLs.map { .string($0) })] })]
    }
}

extension EtcdStore {
    /// The key prefix of this site: every key the engine writes starts with it.
    public var prefix: String { String(decoding: root, as: UTF8.self) }

    /// Deletes every key of this site (its namespaces, events and counter) in one request. Outside a transaction.
    public func removeSite() throws {
        guard txn == nil else { throw BerthError(.failedPrecondition, "removeSite: a transaction is open on this etcd store") }
        _ = try client.txn(compares: [], operations: [EtcdClient.delete(root, Keys.prefixEnd(root))])
    }

    /// How many keys this site holds (every namespace, the events and the counter).
    public func siteKeyCount() throws -> Int64 {
        try client.range(root, Keys.prefixEnd(root), revision: 0, countOnly: true).count
    }

    /// The store revision of etcd now (every write anywhere in the cluster increases it).
    public func etcdRevision() throws -> Int64 {
        try client.range(root, [], revision: 0, countOnly: true).revision
    }

    /// Asks each endpoint for its version and the cluster's members; an endpoint that does not answer is an error
    /// naming it (`berthd --check` checks every endpoint the site lists, not just the first that answers).
    public static func clusterInfo(_ settings: EtcdSettings) throws -> [EtcdClusterInfo] {
        try settings.endpoints.map { e in
            var one = settings
            one.endpoints = [e]
            let c = try EtcdClient(one)
            let v = try c.call("/version", .object([]), idempotent: true, method: "GET")
            let m = try c.call("/v3/cluster/member/list", .object([]), idempotent: true)
            let members = (m["members"]?.array ?? []).map { j in
                EtcdClusterInfo.Member(name: j["name"]?.string ?? "", id: j["ID"]?.string ?? (j["ID"]?.int).map { String($0) } ?? "",
                                       clientURLs: (j["clientURLs"]?.array ?? []).compactMap(\.string))
            }
            return EtcdClusterInfo(endpoint: e, version: v["etcdserver"]?.string ?? "unknown", members: members)
        }
    }
}
