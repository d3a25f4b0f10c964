// Scheduler conformance for `berth plugin check`: what berthd's scheduler relies on (sdk-docs/kinds/scheduler.md).
//   - filter writes a valid code for every node, the same codes for the same batch, and a node's code does not
//     depend on its position or on the other nodes (the host filters the candidates and later re-sends survivors);
//   - score writes 0..100 for every node, the same scores for the same input;
//   - reserve records a reservation (repeating it replaces it), unreserve undoes it, and unreserve is idempotent
//     and never fails: twice, of something never reserved, with "final": true;
//   - robustness: malformed JSON and missing fields to reserve and bind are INVALID_ARGUMENT (nothing changes); unreserve of them
//     must not fail the plugin; huge inputs and very large node batches are answered without a crash.
// The plugin's state is observed as its key-value namespace. reserve, bind and unreserve run on the executor, each
// in its own transaction as in berthd; filter and score run outside one (kv_* return FAILED_PRECONDITION there).
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

enum SchedulerConformance {
    /// Nodes in the "large node batch" case, and the size of the string in the "huge input" case.
    static let largeBatch = 20_000
    static let hugeBytes = 4 << 20

    static func run(_ inst: PluginInstance, executor ex: Executor, extended: Bool = false) -> [CheckCase] {
        var out: [CheckCase] = []
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "scheduler: \(n)", passed: ok, detail: d)) }
        func skip(_ n: String, _ d: String) { out.append(.skip("scheduler: \(n)", d)) }
        guard let sched = SchedulerPlugin(inst) else {
            add("ops", false, "the plugin declares the scheduler kind but has no scheduler table")
            return out
        }
        let kind = inst.plugin.schedulerKind ?? ""

        /// True when a call failed because the plugin's runner died (crash, exit or hang), not with a status of its own.
        func died(_ e: BerthError) -> Bool {
            e.status == .unavailable && (e.message.contains("crashed") || e.message.contains("exited") || e.message.contains("timed out"))
        }
        /// Retries while a runner that died in an earlier case is restarting (its backoff), so that one crash fails
        /// only the case it happened in.
        func retrying<T>(_ body: () throws -> T) throws -> T {
            var waited = 0
            while true {
                do { return try body() } catch let e as BerthError where e.status == .unavailable && e.message.contains("is restarting after") && waited < 60 {
                    usleep(100_000)
                    waited += 1
                }
            }
        }
        /// reserve, bind or unreserve through the plugin's typed wrapper, on the executor.
        func call(_ op: String, _ raw: [UInt8]) -> BerthError? {
            let fn: ([UInt8]) throws -> Void = op == "reserve" ? sched.reserve : op == "bind" ? sched.bind : sched.unreserve
            do { try retrying { try ex.runSync { try fn(raw) } }; return nil } catch let e as BerthError { return e } catch {
                return BerthError(plugin: inst.name, operation: op, status: .internal, message: "\(error)")
            }
        }
        func namespace() -> [String] {
            (try? ex.runSync { try ex.store.kvEntries(inst.name) })?.map {
                String(decoding: $0.key, as: UTF8.self) + "=" + String(decoding: $0.value, as: UTF8.self)
            } ?? []
        }
        func diff(_ a: [String], _ b: [String]) -> String {
            let extra = Set(b).subtracting(a).sorted(), missing = Set(a).subtracting(b).sorted()
            return "+\(extra.prefix(3).joined(separator: " +")) -\(missing.prefix(3).joined(separator: " -"))"
        }
        func binding(_ app: String, _ ordinal: Int, _ node: String, final: Bool? = nil) -> [UInt8] {
            var pairs: [(String, JSON)] = [("kind", .string(kind)), ("app", .string(app)), ("ordinal", JSON(Int64(ordinal))), ("node", .string(node))]
            if let final { pairs.append(("final", .bool(final))) }
            return JSON.object(pairs).bytes
        }
        func said(_ e: BerthError?) -> String { e.map { "\($0.statusName): \($0.message)" } ?? "OK" }

        // MARK: filter and score over one batch
        let n = 64
        func node(_ i: Int) -> (name: String, zone: UInt32, cpu: Int64, mem: Int64) {
            (name: "node-\(i)", zone: UInt32(i % 3 + 1), cpu: Int64(i % 5 == 0 ? -1 : i * 500), mem: 1 << 30)
        }
        /// Filter (and optionally score) over the nodes `order` (indexes into node(_:)), each keeping its own `index`
        /// as the host does when it compacts a batch. Codes start at 255 and scores at -1, so unwritten entries show.
        func run(_ order: [Int], spec: String = "{}", score: Bool = true) throws -> (codes: [UInt8], scores: [Int64]) {
            let b = NodeBatch(count: order.count) { node(order[$0]) }
            for (k, i) in order.enumerated() { b.setIndex(k, i) }
            var codes = [UInt8](repeating: 255, count: order.count)
            var scores = [Int64](repeating: -1, count: order.count)
            try retrying {
                try b.with(kind: kind, app: "check", ordinal: 0, spec: spec) { i, bb in
                    try codes.withUnsafeMutableBufferPointer { try sched.filter(i, bb, codes: $0.baseAddress!) }
                    if score { try scores.withUnsafeMutableBufferPointer { try sched.score(i, bb, scores: $0.baseAddress!) } }
                }
            }
            return (codes, scores)
        }
        func describe(_ e: Error) -> String { (e as? BerthError)?.description ?? "\(e)" }
        let all = Array(0..<n)
        do {
            let first = try run(all)
            let second = try run(all)
            let codes = first.codes, scores = first.scores
            let bad = all.filter { codes[$0] > 5 }
            add("filter writes a code per node", bad.isEmpty, bad.isEmpty ? "codes \(Set(codes).sorted())"
                : "node-\(bad[0]) got \(codes[bad[0]]) (\(bad.count) nodes without a valid code 0..5; 255 = not written)")
            let fdiff = all.filter { codes[$0] != second.codes[$0] }
            add("filter is deterministic", fdiff.isEmpty, fdiff.isEmpty ? "two filter calls over the same batch gave the same codes"
                : "two filter calls over the same batch differ at \(fdiff.count) nodes (node-\(fdiff[0]): \(codes[fdiff[0]]) then \(second.codes[fdiff[0]]))")
            // The host sends the survivors again, compacted; a node's verdict must not depend on where it sits.
            let reversed = try run(all.reversed(), score: false)
            let kept = all.filter { codes[$0] == UInt8(BERTH_SCHED_SUCCESS.rawValue) || codes[$0] == UInt8(BERTH_SCHED_SKIP.rawValue) }
            let survivors = kept.isEmpty ? (codes: [UInt8](), scores: [Int64]()) : try run(kept, score: false)
            var moved: [String] = []
            for (k, i) in all.reversed().enumerated() where reversed.codes[k] != codes[i] {
                moved.append("node-\(i): \(codes[i]) in order, \(reversed.codes[k]) reversed")
            }
            for (k, i) in kept.enumerated() where survivors.codes[k] != codes[i] {
                moved.append("node-\(i): \(codes[i]) in the full batch, \(survivors.codes[k]) among the \(kept.count) survivors")
            }
            add("filter is consistent", moved.isEmpty, moved.isEmpty
                ? "the batch reversed, and its \(kept.count) surviving nodes alone, got the same code per node"
                : "a node's code depends on its position or on the other nodes: \(moved.prefix(2).joined(separator: "; ")) (\(moved.count) in all)")
            let inRange = scores.allSatisfy { (0...100).contains($0) }
            add("scores in 0..100", inRange, "min \(scores.min()!), max \(scores.max()!)")
            let sdiff = all.filter { scores[$0] != second.scores[$0] }
            add("deterministic", sdiff.isEmpty, sdiff.isEmpty ? "same scores for the same input"
                : "two score calls over the same batch differ at \(sdiff.count) nodes (node-\(sdiff[0]): \(scores[sdiff[0]]) then \(second.scores[sdiff[0]]))")
        } catch {
            add("filter/score", false, describe(error))
        }

        // MARK: reserve, bind, unreserve
        let ns0 = namespace()
        let r1 = call("reserve", binding("check", 0, "node-1"))
        add("reserve", r1 == nil, r1 == nil ? "{kind, app: \"check\", ordinal: 0, node: \"node-1\"} → OK" : r1!.description)
        do {
            let after = namespace()
            let again = call("reserve", binding("check", 0, "node-1"))
            let same = namespace()
            let other = call("reserve", binding("check", 0, "node-2"))
            var problems: [String] = []
            if let again { problems.append("the same reserve again: \(said(again))") } else if same != after {
                problems.append("the same reserve again changed the namespace: \(diff(after, same))")
            }
            if let other { problems.append("reserve of the same ordinal on another node (must replace the reservation): \(said(other))") }
            add("reserve is idempotent", problems.isEmpty, problems.isEmpty
                ? "the same reserve again left the namespace unchanged; reserving on node-2 replaced it" : problems.joined(separator: "; "))
        }
        if sched.hasBind {
            let e = call("bind", binding("check", 0, "node-2"))
            add("bind", e == nil, e == nil ? "OK after reserve" : e!.description)
        } else {
            skip("bind", "not implemented (optional)")
        }
        do {
            let before = namespace()
            let r = call("reserve", binding("check", 1, "node-3"))
            let u = call("unreserve", binding("check", 1, "node-3"))
            let after = namespace()
            if let r { add("reserve then unreserve works", false, "reserve of ordinal 1: \(said(r))") } else if let u {
                add("reserve then unreserve works", false, "unreserve after a reserve: \(said(u)); unreserve must not fail")
            } else {
                add("reserve then unreserve works", after == before, after == before
                    ? "unreserve gave the namespace back as it was before the reserve (\(before.count) key(s))"
                    : "the namespace after reserve and unreserve differs from before the reserve: \(diff(before, after))")
            }
            let u2 = call("unreserve", binding("check", 1, "node-3"))
            let again = namespace()
            add("unreserve is idempotent", u2 == nil && again == after, u2 != nil ? "the second unreserve: \(said(u2)); unreserve must always return OK"
                : again == after ? "the second unreserve returned OK and changed nothing" : "the second unreserve changed the namespace: \(diff(after, again))")
        }
        do {
            let before = namespace()
            let e = call("unreserve", binding("never-reserved", 7, "node-5"))
            let after = namespace()
            add("unreserve of something never reserved", e == nil && after == before, e != nil ? "\(said(e)); unreserve must always return OK"
                : after == before ? "OK, nothing changed" : "changed the namespace: \(diff(before, after))")
        }
        do {
            // The instance of ordinal 0 (reserved, and bound when the plugin binds) ends for good: final unreserve, twice.
            let f1 = call("unreserve", binding("check", 0, "node-2", final: true))
            let after = namespace()
            let f2 = call("unreserve", binding("check", 0, "node-2", final: true))
            let again = namespace()
            let f3 = call("unreserve", binding("never-reserved", 8, "node-5", final: true))
            var problems: [String] = []
            if let f1 { problems.append("final unreserve: \(said(f1))") }
            if let f2 { problems.append("the second final unreserve: \(said(f2))") } else if again != after {
                problems.append("the second final unreserve changed the namespace: \(diff(after, again))")
            }
            if let f3 { problems.append("final unreserve of something never reserved: \(said(f3))") }
            let forgot = after == ns0 ? "; the ordinal is forgotten" : ""
            add("final unreserve is idempotent", problems.isEmpty, problems.isEmpty
                ? "\"final\": true twice, and of something never reserved: OK\(forgot)" : problems.joined(separator: "; ") + " (unreserve must always return OK)")
        }

        // MARK: robustness
        func refused(_ label: String, _ op: String, _ raw: [UInt8]) {
            let before = namespace()
            if let e = call(op, raw) {
                let after = namespace()
                add(label, e.status == .invalidArgument && after == before, e.status != .invalidArgument ? "returned \(e.statusName): \(e.message); want INVALID_ARGUMENT"
                    : after == before ? "returned \(e.statusName): \(e.message)" : "refused, but the namespace changed: \(diff(before, after))")
            } else {
                add(label, false, "\(op) accepted invalid input; want INVALID_ARGUMENT naming the field")
            }
        }
        let malformed = Array("{\"kind\":\"\(kind)\",\"app\":".utf8), empty = Array("{}".utf8)
        refused("malformed JSON is refused (reserve)", "reserve", malformed)
        refused("missing fields are refused (reserve)", "reserve", empty)
        if sched.hasBind {
            refused("malformed JSON is refused (bind)", "bind", malformed)
            refused("missing fields are refused (bind)", "bind", empty)
        } else {
            skip("malformed JSON is refused (bind)", "bind not implemented (optional)")
            skip("missing fields are refused (bind)", "bind not implemented (optional)")
        }
        do {
            // unreserve never fails: OK or INVALID_ARGUMENT are both fine, as long as the plugin survives and changes nothing.
            let before = namespace()
            var seen: [String] = [], problems: [String] = []
            for (what, raw) in [("malformed JSON", malformed), ("{}", empty)] {
                let e = call("unreserve", raw)
                if let e, died(e) || e.status != .invalidArgument { problems.append("\(what): \(e.statusName): \(e.message)") }
                seen.append("\(what): \(e?.statusName ?? "OK")")
            }
            let after = namespace()
            if after != before { problems.append("the namespace changed: \(diff(before, after))") }
            add("malformed input is handled (unreserve)", problems.isEmpty, problems.isEmpty ? seen.joined(separator: "; ")
                : problems.joined(separator: "; ") + " (want OK or INVALID_ARGUMENT, and no change)")
        }
        guard extended else { return out }

        // Huge input: a 4 MiB app name to reserve, bind and unreserve, and a 4 MiB spec to filter and score: any status, no crash.
        do {
            // Built as bytes: serialising a 4 MiB string through JSON is slow in a debug build.
            let big = String(repeating: "x", count: hugeBytes)
            let hugeBinding = Array("{\"kind\":".utf8) + JSON.string(kind).bytes + Array(",\"app\":\"\(big)\",\"ordinal\":0,\"node\":\"node-1\"}".utf8)
            var seen: [String] = [], crashes: [String] = []
            for op in sched.hasBind ? ["reserve", "bind", "unreserve"] : ["reserve", "unreserve"] {
                let e = call(op, hugeBinding)
                if let e, died(e) { crashes.append("\(op): \(e.statusName): \(e.message)") }
                seen.append("\(op) \(e?.statusName ?? "OK")")
            }
            let spec = "{\"replicas\":1,\"description\":\"\(big)\"}"
            do {
                let r = try run(all, spec: spec)
                if r.codes.contains(where: { $0 > 5 }) || !r.scores.allSatisfy({ (0...100).contains($0) }) {
                    crashes.append("filter/score with a 4 MiB spec wrote invalid codes or scores")
                }
                seen.append("filter and score OK")
            } catch let e as BerthError {
                if died(e) { crashes.append("filter/score: \(e.statusName): \(e.message)") }
                seen.append("filter/score \(e.statusName)")
            } catch { crashes.append("filter/score: \(error)") }
            _ = call("unreserve", binding("check", 0, "node-1", final: true))
            add("huge input", crashes.isEmpty, crashes.isEmpty ? "4 MiB inputs answered: " + seen.joined(separator: ", ") : crashes.joined(separator: "; "))
        }

        // A very large node batch: a code and a score in range for every node, no crash.
        do {
            let r = try run(Array(0..<largeBatch))
            let badCode = r.codes.firstIndex { $0 > 5 }, badScore = r.scores.firstIndex { !(0...100).contains($0) }
            add("large node batch", badCode == nil && badScore == nil,
                badCode.map { "node-\($0) got code \(r.codes[$0]) (255 = not written)" }
                    ?? badScore.map { "node-\($0) got score \(r.scores[$0])" }
                    ?? "filter and score over \(largeBatch) nodes: a valid code and score for each")
        } catch {
            add("large node batch", false, "filter/score over \(largeBatch) nodes: \(describe(error))")
        }
        return out
    }
}
