// Network conformance, the identity and add_batch cases: an ADD with an App identity is served, and add_batch agrees with one ADD per item.
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

extension NetworkConformance {
    /// berthd sends an `identity` in the ADD of every App instance (releasePolicy "onDelete" unless the app asks for
    /// another), so a plugin that refuses identities cannot serve any App: a failure, never a skip.
    static func identityCase(_ inst: PluginInstance, executor ex: Executor) -> [CheckCase] {
        let req: JSON = ["network": "check", "containerID": "conformance-app-0", "ifname": "eth0", "node": "check-node",
                         "identity": ["app": "check-app", "ordinal": 0, "releasePolicy": "onDelete"]]
        let ops = inst.networkOps!
        let name = "network: apps can use it (ADD with an identity)"
        do {
            let r = try ex.runSync { try ops.add(req) }
            _ = try? ex.runSync { try ops.del(req.setting("final", true)) }
            let ips = (r["ips"]?.array ?? []).compactMap { $0["address"]?.string }
            return [CheckCase(name: name, passed: !ips.isEmpty, detail: ips.isEmpty ? "ADD with identity {app, ordinal, releasePolicy: onDelete} returned no ips[].address"
                : "ADD with identity {app, ordinal, releasePolicy: onDelete} allocated \(ips.joined(separator: ", "))")]
        } catch let e as BerthError {
            return [CheckCase(name: name, passed: false, detail: "apps cannot use this network: berthd sends identity {app, ordinal, releasePolicy} in the ADD of every App instance, and the plugin refused it (\(e.statusName): \(e.message)); accept identity, treating releasePolicy onDelete as a plain attachment (sdk-docs/kinds/network.md)")]
        } catch {
            return [CheckCase(name: name, passed: false, detail: "\(error)")]
        }
    }

    /// The items of "add_batch agrees with add": distinct keys (the last a second interface of the first container),
    /// as the host sends them (network, containerID and ifname always set).
    static let batchItems: [JSON] = (0..<7).map { i -> JSON in
        ["network": "check", "containerID": .string("batch-\(i)"), "ifname": "eth0", "node": "check-node"]
    } + [["network": "check", "containerID": "batch-0", "ifname": "eth1", "node": "check-node"]]

    /// add_batch (ABI 1.1, optional): the host sends it only attachments it has no record of, and relies on each result
    /// being what add would have returned one item at a time, and on an error status (not per-item errors) when any
    /// item cannot be added. Fresh instances (own namespaces, from `makeInstance`) keep these cases independent of
    /// the state the other cases leave behind, and of each other:
    ///   "check-batch-a" takes the items in one add_batch, "check-batch-b" one at a time through add (the reference),
    ///   "check-batch-c" gets the failing and malformed batches.
    static func batchCases(_ inst: PluginInstance, executor ex: Executor,
                           makeInstance: ((String) throws -> PluginInstance)?) -> [CheckCase] {
        var out: [CheckCase] = []
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "network: \(n)", passed: ok, detail: d)) }
        guard inst.networkOps?.has(.addBatch) == true else {
            out.append(.skip("network: add_batch", "not provided (the host adds one at a time)"))
            return out
        }
        /// One call in its own transaction; a runner that crashed in an earlier call restarts after a backoff: wait
        /// for it, so that a crash fails only the case it happened in.
        func call(_ i: PluginInstance, _ op: NetworkOps.Op, _ raw: [UInt8]) -> Result<JSON, BerthError> {
            let ops = i.networkOps!
            var waited = 0
            while true {
                do {
                    let bytes = try ex.runSync { try ops.callRaw(op, raw) }
                    return .success(bytes.isEmpty ? .object([]) : try JSON.parse(bytes))
                } catch let e as BerthError {
                    if e.status == .unavailable && e.message.contains("is restarting after") && waited < 60 { usleep(100_000); waited += 1; continue }
                    return .failure(e)
                } catch {
                    return .failure(BerthError(plugin: i.name, operation: op.rawValue, status: .internal, message: "\(error)"))
                }
            }
        }
        func call(_ i: PluginInstance, _ op: NetworkOps.Op, _ req: JSON) -> Result<JSON, BerthError> { call(i, op, req.bytes) }
        func batch(_ items: [JSON]) -> JSON { ["network": "check", "items": .array(items)] }
        /// The runner died (or was killed) during the call: a fault whatever the case expects.
        func died(_ e: BerthError) -> Bool {
            e.status == .unavailable && (e.message.contains("crashed (") || e.message.contains("timed out") || e.message.contains("runner exited")
                               || e.message.contains("broke the protocol"))
        }
        func brief(_ j: JSON) -> String {
            let s = j.serialized
            return s.count > 300 ? String(s.prefix(300)) + "..." : s
        }
        func item(_ k: Int, _ items: [JSON]) -> String {
            "item \(k) (\(items[k]["containerID"]?.string ?? "?")/\(items[k]["ifname"]?.string ?? "?"))"
        }

        var fresh: [PluginInstance] = []
        defer { for i in fresh { i.destroy() } }
        var why = "no way to create fresh instances here"
        func instance(_ suffix: String) -> PluginInstance? {
            guard let makeInstance else { return nil }
            do {
                let i = try makeInstance("\(inst.name)-\(suffix)")
                fresh.append(i)
                return i
            } catch {
                why = "could not create a fresh instance: \((error as? LoadError)?.reason ?? "\(error)")"
                return nil
            }
        }

        // 1 and 2: one add_batch on a fresh instance against add one item at a time on another. A small pool may run
        // out before the last item: the batch then holds the items that add accepted.
        if let a = instance("check-batch-a"), let b = instance("check-batch-b") {
            var singly: [JSON] = []
            var refused = ""
            for (k, req) in batchItems.enumerated() {
                switch call(b, .add, req) {
                case .success(let r): singly.append(r)
                case .failure(let e): refused = "; add refused \(item(k, batchItems)): \(e.statusName)"
                }
                if !refused.isEmpty { break }
            }
            let items = Array(batchItems.prefix(singly.count))
            if items.isEmpty {
                add("add_batch agrees with add", false, "add on a fresh instance refused the first item\(refused)")
                add("add_batch returns one result per item", false, "not run: add on a fresh instance refused the first item")
            } else {
                switch call(a, .addBatch, batch(items)) {
                case .failure(let e):
                    add("add_batch agrees with add", false, "add_batch of \(items.count) items that add accepts one at a time: \(e.statusName): \(e.message)")
                    add("add_batch returns one result per item", false, "not run: add_batch failed (see \"add_batch agrees with add\")")
                case .success(let r):
                    let results = r["results"]?.array
                    if let results {
                        let n = min(results.count, singly.count)
                        if let k = (0..<n).first(where: { results[$0] != singly[$0] }) {
                            add("add_batch agrees with add", false, "\(item(k, items)): add_batch returned \(brief(results[k])), add one at a time \(brief(singly[k]))")
                        } else {
                            add("add_batch agrees with add", true, "\(n) of \(items.count) results equal to add one item at a time on a fresh instance\(refused)")
                        }
                    } else {
                        add("add_batch agrees with add", false, "no \"results\" array in the response: \(brief(r))")
                    }
                    var problems: [String] = []
                    if let results {
                        if results.count != items.count { problems.append("\(results.count) results for \(items.count) items") }
                        if let k = results.indices.first(where: { results[$0]["ips"]?.array == nil }) {
                            problems.append("results[\(k)] has no \"ips\" array: \(brief(results[k]))")
                        }
                    } else { problems.append("no \"results\" array in the response: \(brief(r))") }
                    add("add_batch returns one result per item", problems.isEmpty,
                        problems.isEmpty ? "\(items.count) items, \(results?.count ?? 0) results, each with ips" : problems.joined(separator: "; "))
                }
            }
        } else {
            out.append(.skip("network: add_batch agrees with add", why))
            out.append(.skip("network: add_batch returns one result per item", why))
        }

        // 3: all or nothing. The last item has no containerID: the call must fail, and the items before it must not be
        // attached (the host discards a failed call's writes; a plugin must not report per-item failures with OK).
        let c = instance("check-batch-c")
        let scratch = c ?? inst
        do {
            let good: [JSON] = (1...2).map { ["network": "check", "containerID": .string("batch-atomic-\($0)"), "ifname": "eth0", "node": "check-node"] }
            let invalid: JSON = ["network": "check", "ifname": "eth0", "node": "check-node"]
            var problems: [String] = []
            var note = "", crashed = false
            switch call(scratch, .addBatch, batch(good + [invalid])) {
            case .success(let r):
                problems.append("returned OK for a batch whose last item has no containerID (\(brief(r))); want an error status: all or nothing, never per-item failures")
            case .failure(let e) where died(e):
                problems.append("\(e.statusName): \(e.message)")
                crashed = true
            case .failure(let e):
                note = "failed with \(e.statusName): \(e.message)"
            }
            for (k, req) in good.enumerated() where !crashed {
                switch call(scratch, .check, req) {
                case .success: problems.append("\(item(k, good)) is attached after the call (check returned OK; want NOT_FOUND)")
                case .failure(let e) where e.status == .notFound: break
                case .failure(let e): problems.append("check of \(item(k, good)): \(e.statusName): \(e.message); want NOT_FOUND")
                }
            }
            if c == nil { _ = call(inst, .gc, ["network": "check", "valid": .array([])]) }
            add("add_batch is all or nothing", problems.isEmpty,
                problems.isEmpty ? "\(note); the items before the invalid one are not attached" : problems.joined(separator: "; "))
        }

        // 4: malformed input is refused with INVALID_ARGUMENT.
        do {
            var problems: [String] = [], seen: [String] = []
            for (label, raw) in [("\"items\" not an array", JSON.object([("network", "check"), ("items", "x")]).bytes),
                                 ("malformed JSON", Array("{\"network\":\"check\",\"items\":[".utf8))] {
                switch call(scratch, .addBatch, raw) {
                case .success: problems.append("\(label): accepted; want INVALID_ARGUMENT")
                case .failure(let e) where e.status == .invalidArgument: seen.append("\(label): INVALID_ARGUMENT")
                case .failure(let e): problems.append("\(label): \(e.statusName): \(e.message)")
                }
            }
            add("add_batch refuses malformed input", problems.isEmpty, problems.isEmpty ? seen.joined(separator: "; ") : problems.joined(separator: "; "))
        }
        return out
    }
}
