// The network kind in the host: attachments keyed by (network, container id, interface). Each operation runs
// the network plugin's call inside the store transaction, together with the host's own attachment record and
// its event, so both commit or neither does.
import BerthWire
import Foundation

public struct NetworkService: Sendable {
    public let runtime: BerthRuntime
    public init(runtime: BerthRuntime) { self.runtime = runtime }

    static func key(_ cid: String, _ ifname: String) throws -> (String, String) {
        // Foundation's trim costs a few microseconds per call; most ids have no space at either end to trim.
        let edge = { (b: UInt8?) in b.map { $0 == 0x20 || $0 == 0x09 || $0 >= 0x80 } ?? false }
        let c = edge(cid.utf8.first) || edge(cid.utf8.last) ? cid.trimmingCharacters(in: .whitespaces) : cid
        guard !c.isEmpty else { throw APIError(400, "containerID is required") }
        guard c.utf8.count <= 256 else { throw APIError(400, "containerID is longer than 256 bytes") }
        let i = ifname.isEmpty ? "eth0" : ifname
        guard i.utf8.count <= 15, !i.contains("/") else { throw APIError(400, "ifname \"\(i)\" is not a valid interface name") }
        return (c, i)
    }

    func plugin(_ network: String) throws -> PluginInstance { try runtime.instance(network, kind: .network) }

    /// ADD: idempotent per key. Returns the plugin's result (ips, routes, dns).
    public func add(network: String, request: JSON) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await runtime.executor.run { try self.attachInTransaction(network: network, request: request) }
    }

    /// The most attachments one batch ADD may carry (`POST /v1/networks/{net}/attachments/batch`).
    public static let maxBatch = 1024

    /// Batch ADD: every request in one store transaction, each in its own savepoint, so one that fails (exhausted
    /// pool, address taken, bad request) rolls back alone and the others commit. The answers are in request order.
    /// An orchestrator placing a rollout allocates its addresses in one round trip and one commit.
    public func addBatch(network: String, requests: [JSON]) async throws -> [Result<JSON, APIError>] {
        guard requests.count <= Self.maxBatch else {
            throw APIError(413, "a batch holds at most \(Self.maxBatch) attachments, got \(requests.count)")
        }
        _ = try plugin(network)
        return try await runtime.executor.run { self.attachBatchInTransaction(network: network, requests: requests) }
    }

    /// The body of `addBatch`, for a caller already on the executor (the synchronous form used by benchmarks and tests).
    /// A plugin with add_batch (ABI 1.1) gets every new attachment in one call; when that call fails, or the plugin has
    /// none, each request runs on its own through add, so every request gets its own answer either way.
    public func attachBatchInTransaction(network: String, requests: [JSON]) -> [Result<JSON, APIError>] {
        if requests.isEmpty { return [] }
        do {
            let answers = try runtime.store.savepoint("batch") { try attachAllInOneCall(network: network, requests: requests) }
            runtime.countBatch(network: network, oneCall: true)
            return answers.map { .success($0) }
        } catch is NoBatchPath {
        } catch {
            // Expected now and then (the pool runs out at item 700): each item gets its own answer below.
            runtime.logger.debug("network \(network): add_batch of \(requests.count) failed (\(error)); adding them one at a time")
        }
        runtime.countBatch(network: network, oneCall: false)
        let store = runtime.store
        return requests.map { r in
            do {
                return .success(try store.savepoint("item") { try attachInTransaction(network: network, request: r) })
            } catch let e as APIError {
                return .failure(e)
            } catch let e as PluginCallError {
                return .failure(APIError.from(e))
            } catch {
                return .failure(APIError(500, "\(error)"))
            }
        }
    }

    /// Thrown by `attachAllInOneCall` when the one-call path does not apply (the caller then goes item by item).
    struct NoBatchPath: Error {}

    /// Every request of a batch through one add_batch call: the attachments already recorded answer from the record,
    /// the others go to the plugin together and get their records and events here. Throws when the plugin has no
    /// add_batch, a request is malformed, or the call fails; the caller's savepoint then undoes everything.
    func attachAllInOneCall(network: String, requests: [JSON]) throws -> [JSON] {
        let inst = try plugin(network)
        guard let fn = inst.network?.pointee.add_batch, requests.count > 1 else { throw NoBatchPath() }
        let store = runtime.store
        var answers = [JSON?](repeating: nil, count: requests.count)
        var fresh: [(index: Int, cid: String, ifname: String, node: String)] = []
        var items: [JSON] = []
        var seen = Set<String>()
        let s = try store.prepare("SELECT result FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
        for (i, request) in requests.enumerated() {
            let (cid, ifname) = try Self.key(request["containerID"]?.string ?? "", request["ifname"]?.string ?? "eth0")
            guard seen.insert("\(cid)\u{0}\(ifname)").inserted else { throw NoBatchPath() }  // a key twice: item by item
            _ = s.reset()
            s.bind(1, network); s.bind(2, cid); s.bind(3, ifname)
            if try s.step(), let existing = try? JSON.parse(s.text(0)) {
                answers[i] = existing
                continue
            }
            fresh.append((i, cid, ifname, request["node"]?.string ?? ""))
            items.append(request.setting("network", .string(network)).setting("containerID", .string(cid)).setting("ifname", .string(ifname)))
        }
        if !items.isEmpty {
            let out = try inst.callObject("add_batch", fn, ["network": .string(network), "items": .array(items)])
            guard let results = out["results"]?.array, results.count == items.count else {
                runtime.logger.warning("plugin \"\(network)\" add_batch returned \(out["results"]?.array?.count ?? 0) results for \(items.count) items; adding them one at a time")
                throw NoBatchPath()
            }
            // Every result checked before any row is written (no event is noted for a row that is then undone).
            guard results.allSatisfy({ $0["ips"]?.array != nil }) else {
                runtime.logger.warning("plugin \"\(network)\" add_batch returned a result without an \"ips\" array; adding the items one at a time")
                throw NoBatchPath()
            }
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
        try await runtime.executor.run { try self.detachInTransaction(network: network, containerID: containerID, ifname: ifname, final: final) }
    }

    /// ADD for a caller already inside a transaction on the executor (the API through `add`, the scheduler's wiring): the same
    /// attachment record and event as `add`.
    func attachInTransaction(network: String, request: JSON) throws -> JSON {
        let inst = try plugin(network)
        let (cid, ifname) = try Self.key(request["containerID"]?.string ?? "", request["ifname"]?.string ?? "eth0")
        let node = request["node"]?.string ?? ""
        let req = request.setting("network", .string(network)).setting("containerID", .string(cid)).setting("ifname", .string(ifname))
        let store = runtime.store
        let s = try store.prepare("SELECT result FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
        s.bind(1, network); s.bind(2, cid); s.bind(3, ifname)
        if try s.step(), let existing = try? JSON.parse(s.text(0)) { return existing }
        let result: JSON
        do { result = try inst.callObject("add", inst.network!.pointee.add, req) } catch let e as PluginCallError { throw APIError.from(e) }
        guard result["ips"]?.array != nil else { throw APIError(500, "plugin \"\(network)\" add returned no \"ips\" array") }
        try record(network: network, cid: cid, ifname: ifname, node: node, result: result)
        return result
    }

    /// The host's record of a new attachment and its event (ADD, one at a time or in a batch).
    private func record(network: String, cid: String, ifname: String, node: String, result: JSON) throws {
        let store = runtime.store
        let ins = try store.prepare("INSERT INTO attachments(network, container_id, ifname, node, result, created) VALUES(?1,?2,?3,?4,?5,?6)")
        ins.bind(1, network); ins.bind(2, cid); ins.bind(3, ifname); ins.bind(4, node); ins.bind(5, result.serialized); ins.bind(6, wallClock())
        try ins.run()
        let addrs = JSON.array((result["ips"]?.array ?? []).compactMap { $0["address"] })
        runtime.executor.noteEvent(try store.appendEvent(type: "network.attached", subject: "\(network)/\(cid)/\(ifname)",
                                                         data: ["node": .string(node), "ips": addrs]))
    }

    /// DEL for a caller already inside a transaction on the executor: the same record and event as `del`.
    func detachInTransaction(network: String, containerID: String, ifname: String, final: Bool) throws {
        let inst = try plugin(network)
        let (cid, ifn) = try Self.key(containerID, ifname)
        do {
            _ = try inst.callObject("del", inst.network!.pointee.del,
                                    ["network": .string(network), "containerID": .string(cid), "ifname": .string(ifn), "final": .bool(final)])
        } catch let e as PluginCallError { throw APIError.from(e) }
        let store = runtime.store
        let d = try store.prepare("DELETE FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
        d.bind(1, network); d.bind(2, cid); d.bind(3, ifn)
        try d.run()
        if sqlite3Changes(store) > 0 {
            runtime.executor.noteEvent(try store.appendEvent(type: "network.detached", subject: "\(network)/\(cid)/\(ifn)"))
        }
    }

    /// CHECK: the attachment exists in the host and the plugin confirms its reservation.
    public func check(network: String, containerID: String, ifname: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let (cid, ifn) = try Self.key(containerID, ifname)
        let store = runtime.store
        return try await runtime.executor.run {
            let inst = try self.plugin(network)
            let s = try store.prepare("SELECT result FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
            s.bind(1, network); s.bind(2, cid); s.bind(3, ifn)
            guard try s.step() else {
                let msg = "no attachment \(cid)/\(ifn) on network \"\(network)\""
                throw APIError(404, msg, details: ["status": "NOT_FOUND", "message": .string(msg)])
            }
            let result = (try? JSON.parse(s.text(0))) ?? .object([])
            do {
                _ = try inst.callObject("check", inst.network!.pointee.check, ["network": .string(network), "containerID": .string(cid), "ifname": .string(ifn)])
            } catch let e as PluginCallError { throw APIError.from(e) }
            return result
        }
    }

    /// GC: release every attachment not in `valid`.
    public func gc(network: String, valid: [(String, String)]) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let store = runtime.store
        let validJSON = JSON.array(valid.map { ["containerID": .string($0.0), "ifname": .string($0.1)] })
        return try await runtime.executor.run {
            let inst = try self.plugin(network)
            let out: JSON
            do { out = try inst.callObject("gc", inst.network!.pointee.gc, ["network": .string(network), "valid": validJSON]) } catch let e as PluginCallError { throw APIError.from(e) }
            let keep = Set(valid.map { "\($0.0)\u{0}\($0.1)" })
            let s = try store.prepare("SELECT container_id, ifname FROM attachments WHERE network=?1")
            s.bind(1, network)
            var gone: [(String, String)] = []
            while try s.step() {
                if !keep.contains("\(s.text(0))\u{0}\(s.text(1))") { gone.append((s.text(0), s.text(1))) }
            }
            for (c, i) in gone {
                let d = try store.prepare("DELETE FROM attachments WHERE network=?1 AND container_id=?2 AND ifname=?3")
                d.bind(1, network); d.bind(2, c); d.bind(3, i)
                try d.run()
            }
            self.runtime.executor.noteEvent(try store.appendEvent(type: "network.gc", subject: network, data: ["released": .number(Double(gone.count))]))
            return out.setting("releasedAttachments", .number(Double(gone.count)))
        }
    }

    public func status(network: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await runtime.executor.run {
            let inst = try self.plugin(network)
            do { return try inst.callObject("status", inst.network!.pointee.status, ["network": .string(network)]) } catch let e as PluginCallError { throw APIError.from(e) }
        }
    }

    public func capacity(network: String, node: String?) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        return try await runtime.executor.run {
            let inst = try self.plugin(network)
            do {
                return try inst.callObject("capacity", inst.network!.pointee.capacity, ["network": .string(network), "node": node.map { .string($0) } ?? .null])
            } catch let e as PluginCallError { throw APIError.from(e) }
        }
    }

    public func list(network: String) async throws -> JSON {
        _ = try plugin(network)
        let store = runtime.store
        return try await runtime.executor.run {
            let s = try store.prepare("SELECT container_id, ifname, node, result, created FROM attachments WHERE network=?1 ORDER BY created")
            s.bind(1, network)
            var out: [JSON] = []
            while try s.step() {
                out.append(["containerID": .string(s.text(0)), "ifname": .string(s.text(1)), "node": .string(s.text(2)),
                            "result": (try? JSON.parse(s.text(3))) ?? .null, "created": .number(s.double(4))])
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
            let out = try await runtime.executor.run {
                let inst = try self.plugin(network)
                do { return try inst.networkAdmin(op, r) } catch let e as PluginCallError { throw APIError.from(e) }
            }
            guard let token = out["continue"] else { return out }
            req = req.setting("continue", token)
        }
        throw APIError(500, "plugin \"\(network)\" did not finish \(op) in \(Self.maxAdminSteps) steps")
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
        throw APIError(500, "\(op) did not finish in \(maxAdminSteps) steps")
    }

    /// Every attachment on a node is released (the node is gone): plugin node.release plus host records.
    public func releaseNode(network: String, node: String) async throws -> JSON {
        _ = try plugin(network)  // fail fast; resolved again on the executor, where a reload swaps instances
        let store = runtime.store
        return try await runtime.executor.run {
            let inst = try self.plugin(network)
            let out: JSON
            do { out = try inst.networkAdmin("node.release", ["network": .string(network), "node": .string(node)]) } catch let e as PluginCallError { throw APIError.from(e) }
            let d = try store.prepare("DELETE FROM attachments WHERE network=?1 AND node=?2")
            d.bind(1, network); d.bind(2, node)
            try d.run()
            return out
        }
    }
}

import CSQLite
func sqlite3Changes(_ store: Store) -> Int32 { sqlite3_changes(store.db) }
