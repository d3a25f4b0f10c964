// The network kind in the host: attachments keyed by (network, container id, interface). Each operation runs
// the network plugin's call inside the store transaction, together with the host's own attachment record and
// its event, so both commit or neither does.
import BerthPlugins
import BerthStore
import BerthWire
import Foundation
import Synchronization

/// The network kind's coordinator (one per host, built by the composition root).
public final class NetworkService: Sendable {
    public let host: PluginHost
    /// Per network: batch ADDs served by one add_batch call, and those that went item by item (no add_batch, a key
    /// twice, or the one call failed). /metrics shows both, so an operator sees when batches stop taking the fast path.
    let batchPaths = Mutex<[String: (oneCall: UInt64, itemByItem: UInt64)]>([:])

    /// Requires the plugin host; registers the live-state probe (a network with attachments is not disabled unless forced).
    public init(host: PluginHost) {
        self.host = host
        let store = host.store
        host.liveStateProbes.append { name in (try store.attachmentCount(network: name), "network attachments") }
    }

    func countBatch(network: String, oneCall: Bool) {
        batchPaths.withLock { m in
            var c = m[network] ?? (0, 0)
            if oneCall { c.oneCall += 1 } else { c.itemByItem += 1 }
            m[network] = c
        }
    }

    /// The batch-path counters in the Prometheus text format.
    public func metricsText() -> String {
        "# HELP berth_network_batches_total Batch ADDs, by how the plugin served them: one add_batch call, or one add per item.\n# TYPE berth_network_batches_total counter\n"
            + batchPaths.withLock { m in
                m.keys.sorted().map { n in
                    "berth_network_batches_total{network=\"\(n)\",path=\"add_batch\"} \(m[n]!.oneCall)\nberth_network_batches_total{network=\"\(n)\",path=\"item_by_item\"} \(m[n]!.itemByItem)\n"
                }.joined()
            }
    }

    public static func key(_ cid: String, _ ifname: String) throws -> (String, String) {
        // Foundation's trim costs a few microseconds per call; most ids have no space at either end to trim.
        let edge = { (b: UInt8?) in b.map { $0 == 0x20 || $0 == 0x09 || $0 >= 0x80 } ?? false }
        let c = edge(cid.utf8.first) || edge(cid.utf8.last) ? cid.trimmingCharacters(in: .whitespaces) : cid
        guard !c.isEmpty else { throw BerthError(.invalidArgument, "containerID is required") }
        guard c.utf8.count <= 256 else { throw BerthError(.invalidArgument, "containerID is longer than 256 bytes") }
        do {
            try Names.check(c, "containerID")
            try Names.interface(ifname, "ifname")
        } catch let e as Names.Invalid { throw BerthError(e) }
        return (c, ifname)
    }

    /// The key and node of an ADD request, each checked for its type (a string; ifname defaults to eth0, node to "")
    /// and as a name, and the requested addresses ("ips", each checked: see `requestedAddresses`).
    static func addFields(_ r: JSON) throws -> (cid: String, ifname: String, node: String, ips: [RequestedAddress]) {
        func text(_ k: String, _ dflt: String?) throws -> String {
            guard let v = r[k], !v.isNull else {
                guard let dflt else { throw BerthError(.invalidArgument, "\(k) is required") }
                return dflt
            }
            guard let s = v.string else { throw BerthError(.invalidArgument, "\(k) must be a string, got \(v.typeName)") }
            return s
        }
        let (cid, ifname) = try key(try text("containerID", nil), try text("ifname", "eth0"))
        let node = try text("node", "")
        do { try Names.check(node, "node") } catch let e as Names.Invalid { throw BerthError(e) }
        return (cid, ifname, node, try requestedAddresses(r["ips"]))
    }

    /// The "ips" of an ADD request: an array of addresses, each with an optional prefix length that must be in range
    /// for its family (the plugin's result must then carry the same prefix: `checkPrefixes`).
    public static func requestedAddresses(_ v: JSON?) throws -> [RequestedAddress] {
        guard let v, !v.isNull else { return [] }
        guard let a = v.array else { throw BerthError(.invalidArgument, "\"ips\" must be an array of addresses, got \(v.typeName)") }
        return try a.enumerated().map { i, e in
            guard let s = e.string else { throw BerthError(.invalidArgument, "ips[\(i)] must be a string, got \(e.typeName)") }
            guard let r = RequestedAddress(s) else {
                throw BerthError(.invalidArgument, "ips[\(i)] \"\(s.prefix(60))\" is not an IP address with an optional prefix length (/0-32 for IPv4, /0-128 for IPv6)")
            }
            return r
        }
    }

    /// A requested address whose prefix disagrees with what the plugin assigned (say /8 from a /24 pool) is refused:
    /// the caller would configure a different network than the one it was given. Throws; the caller's savepoint undoes the call.
    static func checkPrefixes(_ requested: [RequestedAddress], _ result: JSON, network: String) throws {
        for r in requested {
            guard let want = r.prefix else { continue }
            for ip in result["ips"]?.array ?? [] {
                guard let got = ip["address"]?.string.flatMap(RequestedAddress.init), got.bytes == r.bytes, let have = got.prefix else { continue }
                if have != want {
                    throw BerthError(.invalidArgument, "requested address \(r.text) has prefix /\(want), but network \"\(network)\" assigns \(got.text) (/\(have)): request it as /\(have) or without a prefix")
                }
            }
        }
    }

    func plugin(_ network: String) throws -> PluginInstance { try host.instance(network, kind: .network) }
    func ops(_ network: String) throws -> NetworkOps { try host.network(named: network) }

    /// ADD: idempotent per key. Returns the plugin's result (ips, routes, dns).
    public func add(network: String, request: JSON) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await host.executor.run { try self.attachInTransaction(network: network, request: request) }
    }

    /// The most attachments one batch ADD may carry (`POST /v1/networks/{net}/attachments/batch`).
    public static let maxBatch = 1024

    /// Batch ADD: every request in one store transaction, each in its own savepoint, so one that fails (exhausted
    /// pool, address taken, bad request) rolls back alone and the others commit. The answers are in request order.
    /// An orchestrator placing a rollout allocates its addresses in one round trip and one commit.
    public func addBatch(network: String, requests: [JSON]) async throws -> [Result<JSON, BerthError>] {
        guard requests.count <= Self.maxBatch else {
            throw BerthError(.outOfRange, "a batch holds at most \(Self.maxBatch) attachments, got \(requests.count)")
        }
        _ = try plugin(network)
        return try await host.executor.run { self.attachBatchInTransaction(network: network, requests: requests) }
    }

    /// The body of `addBatch`, for a caller already on the executor (the synchronous form used by benchmarks and tests).
    /// A plugin with add_batch (ABI 1.1) gets every new attachment in one call; when that call fails, or the plugin has
    /// none, each request runs on its own through add, so every request gets its own answer either way.
    public func attachBatchInTransaction(network: String, requests: [JSON]) -> [Result<JSON, BerthError>] {
        if requests.isEmpty { return [] }
        do {
            let answers = try host.store.savepoint("batch") { try attachAllInOneCall(network: network, requests: requests) }
            countBatch(network: network, oneCall: true)
            return answers.map { .success($0) }
        } catch is NoBatchPath {
        } catch {
            // Expected now and then (the pool runs out at item 700): each item gets its own answer below.
            host.logger.debug("network \(network): add_batch of \(requests.count) failed (\(error)); adding them one at a time")
        }
        countBatch(network: network, oneCall: false)
        let store = host.store
        return requests.map { r in
            do {
                return .success(try store.savepoint("item") { try attachInTransaction(network: network, request: r) })
            } catch let e as BerthError {
                return .failure(e)
            } catch {
                return .failure(BerthError(.internal, "\(error)"))
            }
        }
    }

    /// Thrown by `attachAllInOneCall` when the one-call path does not apply (the caller then goes item by item).
    struct NoBatchPath: Error {}

    /// Every request of a batch through one add_batch call: the attachments already recorded answer from the record,
    /// the others go to the plugin together and get their records and events here. Throws when the plugin has no
    /// add_batch, a request is malformed, or the call fails; the caller's savepoint then undoes everything.
    func attachAllInOneCall(network: String, requests: [JSON]) throws -> [JSON] {
        let ops = try self.ops(network)
        guard ops.has(.addBatch), requests.count > 1 else { throw NoBatchPath() }
        let store = host.store
        var answers = [JSON?](repeating: nil, count: requests.count)
        var fresh: [(index: Int, cid: String, ifname: String, node: String, ips: [RequestedAddress])] = []
        var items: [JSON] = []
        var seen = Set<String>()
        for (i, request) in requests.enumerated() {
            let (cid, ifname, node, ips) = try Self.addFields(request)
            guard seen.insert("\(cid)\u{0}\(ifname)").inserted else { throw NoBatchPath() }  // a key twice: item by item
            if let text = try store.attachmentResult(network: network, containerID: cid, ifname: ifname), let existing = try? JSON.parse(text) {
                answers[i] = existing
                continue
            }
            fresh.append((i, cid, ifname, node, ips))
            items.append(request.setting("network", .string(network)).setting("containerID", .string(cid)).setting("ifname", .string(ifname)))
        }
        if !items.isEmpty {
            let out = try ops.addBatch(["network": .string(network), "items": .array(items)])
            guard let results = out["results"]?.array, results.count == items.count else {
                host.logger.warning("plugin \"\(network)\" add_batch returned \(out["results"]?.array?.count ?? 0) results for \(items.count) items; adding them one at a time")
                throw NoBatchPath()
            }
            // Every result checked before any row is written (no event is noted for a row that is then undone).
            guard results.allSatisfy({ $0["ips"]?.array != nil }) else {
                host.logger.warning("plugin \"\(network)\" add_batch returned a result without an \"ips\" array; adding the items one at a time")
                throw NoBatchPath()
            }
            // A prefix that disagrees: item by item, where that item alone is refused.
            do { for (f, result) in zip(fresh, results) { try Self.checkPrefixes(f.ips, result, network: network) } } catch { throw NoBatchPath() }
            for (f, result) in zip(fresh, results) {
                try record(network: network, cid: f.cid, ifname: f.ifname, node: f.node, result: result)
                answers[f.index] = result
            }
        }
        return answers.map { $0! }
    }

    /// DEL: always succeeds for unknown or half-finished attachments.
    public func del(network: String, containerID: String, ifname: String, final: Bool = false) async throws {
        _ = try plugin(network)
        try await host.executor.run { try self.detachInTransaction(network: network, containerID: containerID, ifname: ifname, final: final) }
    }

    /// ADD for a caller already inside a transaction on the executor (the API through `add`, the scheduler's wiring): the same
    /// attachment record and event as `add`.
    package func attachInTransaction(network: String, request: JSON) throws -> JSON {
        let ops = try self.ops(network)
        let (cid, ifname, node, ips) = try Self.addFields(request)
        let req = request.setting("network", .string(network)).setting("containerID", .string(cid)).setting("ifname", .string(ifname))
        let store = host.store
        if let text = try store.attachmentResult(network: network, containerID: cid, ifname: ifname), let existing = try? JSON.parse(text) { return existing }
        let result: JSON
        result = try ops.add(req)
        guard result["ips"]?.array != nil else { throw BerthError(.internal, "plugin \"\(network)\" add returned no \"ips\" array") }
        try Self.checkPrefixes(ips, result, network: network)
        try record(network: network, cid: cid, ifname: ifname, node: node, result: result)
        return result
    }

    /// The host's record of a new attachment and its event (ADD, one at a time or in a batch).
    private func record(network: String, cid: String, ifname: String, node: String, result: JSON) throws {
        let store = host.store
        try store.insertAttachment(network: network, containerID: cid, ifname: ifname, node: node, result: result.serialized, created: wallClock())
        let addrs = JSON.array((result["ips"]?.array ?? []).compactMap { $0["address"] })
        host.executor.noteEvent(try store.appendEvent(type: "network.attached", subject: "\(network)/\(cid)/\(ifname)",
                                                         data: ["node": .string(node), "ips": addrs]))
    }

    /// DEL for a caller already inside a transaction on the executor: the same record and event as `del`.
    package func detachInTransaction(network: String, containerID: String, ifname: String, final: Bool) throws {
        let ops = try self.ops(network)
        let (cid, ifn) = try Self.key(containerID, ifname)
        do {
            _ = try ops.del(["network": .string(network), "containerID": .string(cid), "ifname": .string(ifn), "final": .bool(final)])
        }
        let store = host.store
        if try store.deleteAttachment(network: network, containerID: cid, ifname: ifn) {
            host.executor.noteEvent(try store.appendEvent(type: "network.detached", subject: "\(network)/\(cid)/\(ifn)"))
        }
    }

    /// The host's record of one attachment (the plugin's ADD result), or nil when there is none.
    public func attachment(network: String, containerID: String, ifname: String) async throws -> JSON? {
        _ = try plugin(network)
        let (cid, ifn) = try Self.key(containerID, ifname)
        let store = host.store
        return try await host.executor.run { () throws -> JSON? in
            guard let text = try store.attachmentResult(network: network, containerID: cid, ifname: ifn) else { return Optional<JSON>.none }
            return (try? JSON.parse(text)) ?? .object([])
        }
    }

    /// CHECK: the attachment exists in the host and the plugin confirms its reservation.
    public func check(network: String, containerID: String, ifname: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let (cid, ifn) = try Self.key(containerID, ifname)
        let store = host.store
        return try await host.executor.run {
            let ops = try self.ops(network)
            guard let text = try store.attachmentResult(network: network, containerID: cid, ifname: ifn) else {
                let msg = "no attachment \(cid)/\(ifn) on network \"\(network)\""
                throw BerthError(.notFound, msg, details: ["status": "NOT_FOUND", "message": .string(msg)])
            }
            let result = (try? JSON.parse(text)) ?? .object([])
            do {
                _ = try ops.check(["network": .string(network), "containerID": .string(cid), "ifname": .string(ifn)])
            }
            return result
        }
    }

    /// The attachments a GC keeps, from a JSON list of {containerID, ifname} (`field` names it in errors): every entry
    /// well-formed, or the whole list is refused (a GC with a list read wrongly would release live attachments).
    /// ifname defaults to eth0 unless `ifnameRequired` (CNI's cni.dev/valid-attachments carries both).
    public static func validList(_ list: JSON, field: String, ifnameRequired: Bool) throws -> [(String, String)] {
        guard let a = list.array else { throw BerthError(.invalidArgument, "\"\(field)\" must be an array of {containerID, ifname}, got \(list.typeName)") }
        return try a.enumerated().map { i, e in
            guard case .object = e else { throw BerthError(.invalidArgument, "\(field)[\(i)] must be an object {containerID, ifname}, got \(e.typeName)") }
            guard let c = e["containerID"]?.string else { throw BerthError(.invalidArgument, "\(field)[\(i)].containerID must be a string") }
            var ifname = "eth0"
            if let v = e["ifname"], !v.isNull {
                guard let s = v.string else { throw BerthError(.invalidArgument, "\(field)[\(i)].ifname must be a string, got \(v.typeName)") }
                ifname = s
            } else if ifnameRequired {
                throw BerthError(.invalidArgument, "\(field)[\(i)].ifname is required")
            }
            do { return try key(c, ifname) } catch let err as BerthError { throw BerthError(.invalidArgument, "\(field)[\(i)]: \(err.message)") }
        }
    }

    /// GC: release every attachment not in `valid`.
    public func gc(network: String, valid: [(String, String)]) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let store = host.store
        let validJSON = JSON.array(valid.map { ["containerID": .string($0.0), "ifname": .string($0.1)] })
        return try await host.executor.run {
            let ops = try self.ops(network)
            let out: JSON
            out = try ops.gc(["network": .string(network), "valid": validJSON])
            let keep = Set(valid.map { "\($0.0)\u{0}\($0.1)" })
            let gone = try store.attachmentKeys(network: network).filter { !keep.contains("\($0.containerID)\u{0}\($0.ifname)") }
            for (c, i) in gone { try store.deleteAttachment(network: network, containerID: c, ifname: i) }
            self.host.executor.noteEvent(try store.appendEvent(type: "network.gc", subject: network, data: ["released": .number(Double(gone.count))]))
            return out.setting("releasedAttachments", .number(Double(gone.count)))
        }
    }

    public func status(network: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await host.executor.run {
            let ops = try self.ops(network)
            return try ops.status(["network": .string(network)])
        }
    }

    public func capacity(network: String, node: String?) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await host.executor.run {
            let ops = try self.ops(network)
            do {
                return try ops.capacity(["network": .string(network), "node": node.map { .string($0) } ?? .null])
            }
        }
    }

    public func list(network: String) async throws -> JSON {
        _ = try plugin(network)
        let store = host.store
        return try await host.executor.run {
            let out: [JSON] = try store.attachments(network: network).map { a in
                ["containerID": .string(a.containerID), "ifname": .string(a.ifname), "node": .string(a.node),
                 "result": (try? JSON.parse(a.result)) ?? .null, "created": .number(a.created)]
            }
            return ["attachments": .array(out)]
        }
    }

    /// Administrative operations (pool.import, pool.list, ...), passed to the plugin in a transaction. An operation
    /// may run in steps: while the plugin answers {"continue": token}, it is called again with the request plus that
    /// token, each call in a transaction of its own, so other operations run between the steps (a large pool import
    /// does not hold up allocations). The last answer is the result.
    public func admin(network: String, op: String, request: JSON) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        var req = request.setting("network", .string(network))
        for _ in 0..<Self.maxAdminSteps {
            let r = req
            let out = try await host.executor.run {
                let inst = try self.plugin(network)
                return try inst.networkAdmin(op, r)
            }
            guard let token = out["continue"] else { return out }
            req = req.setting("continue", token)
        }
        throw BerthError(.internal, "plugin \"\(network)\" did not finish \(op) in \(Self.maxAdminSteps) steps")
    }

    /// Most steps of one administrative operation (see `admin`); a plugin that never finishes fails here.
    public static let maxAdminSteps = 1_000_000

    /// `admin` for threads outside Swift concurrency (tests, benchmarks): each step through `executor.runSync`.
    public static func adminInSteps(_ executor: Executor, _ inst: @escaping () -> PluginInstance, _ op: String, _ request: JSON) throws -> JSON {
        var req = request
        for _ in 0..<maxAdminSteps {
            let r = req
            let out = try executor.runSync { try inst().networkAdmin(op, r) }
            guard let token = out["continue"] else { return out }
            req = req.setting("continue", token)
        }
        throw BerthError(.internal, "\(op) did not finish in \(maxAdminSteps) steps")
    }

    /// Every attachment on a node is released (the node is gone): plugin node.release plus host records.
    public func releaseNode(network: String, node: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let store = host.store
        return try await host.executor.run {
            let inst = try self.plugin(network)
            let out: JSON
            out = try inst.networkAdmin("node.release", ["network": .string(network), "node": .string(node)])
            try store.deleteAttachments(network: network, node: node)
            return out
        }
    }
}


/// An address requested in an ADD ("10.1.0.5", "10.1.0.5/24", "fd00::5/64"): its 4 or 16 bytes and the prefix
/// length when one was given, in range for the family.
public struct RequestedAddress {
    let text: String
    let bytes: [UInt8]
    let prefix: Int?

    init?(_ s: String) {
        let parts = s.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let addr = String(parts[0])
        var buf = [UInt8](repeating: 0, count: 16)
        let v6 = addr.contains(":")
        guard inet_pton(v6 ? AF_INET6 : AF_INET, addr, &buf) == 1 else { return nil }
        bytes = Array(buf.prefix(v6 ? 16 : 4))
        if parts.count == 2 {
            let p = parts[1]
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(p), n <= (v6 ? 128 : 32) else { return nil }
            prefix = n
        } else {
            prefix = nil
        }
        text = s
    }
}
