// Discovery conformance for `berth plugin check`: what the host's delivery relies on. Delivery is at least once
// and a resync can follow any history, so a discovery plugin's handlers must be idempotent and order-tolerant.
// The plugin's state is observed as its key-value namespace (a plugin keeps no durable state elsewhere):
//   - a repeated batch leaves the namespace unchanged;
//   - an older batch delivered after a newer one leaves it unchanged (a gone instance is not resurrected);
//   - after a resync the namespace depends only on the resync, not on the history before it (compared with a fresh
//     reference instance of the same plugin given the same resync);
//   - malformed input is refused with INVALID_ARGUMENT; unknown event types are accepted and ignored;
//   - (extended) a 4 MiB field in an event batch and in a resync is answered with a status, not a crash.
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

enum DiscoveryConformance {
    static let hugeBytes = 4 << 20

    /// `makeInstance(name)`: another instance of the same plugin and configuration under its own name, made the way the
    /// check runs the plugin (in process or in a runner).
    static func run(_ inst: PluginInstance, executor ex: Executor, extended: Bool = false,
                    makeInstance: (String) throws -> PluginInstance) -> [CheckCase] {
        var out: [CheckCase] = []
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "discovery: \(n)", passed: ok, detail: d)) }
        guard inst.discoveryOps != nil else {
            add("ops", false, "the plugin declares the discovery kind but has no discovery table")
            return out
        }
        func call(_ i: PluginInstance, _ op: String, _ raw: [UInt8]) -> BerthError? {
            let o: DiscoveryOps.Op = op == "resync" ? .resync : .events
            guard let ops = i.discoveryOps else { return BerthError(plugin: i.name, operation: op, status: .internal, message: "no discovery table") }
            var waited = 0
            while true {
                do { _ = try ex.runSync { try ops.callRaw(o, raw) }; return nil } catch let e as BerthError {
                    // A runner that crashed in an earlier case restarts after a backoff: wait for it, so that one
                    // crash fails only the case it happened in.
                    if e.status == .unavailable && e.message.contains("is restarting after") && waited < 60 { usleep(100_000); waited += 1; continue }
                    return e
                } catch {
                    return BerthError(plugin: i.name, operation: op, status: .internal, message: "\(error)")
                }
            }
        }
        func namespace(_ name: String) -> [String] {
            (try? ex.runSync { try ex.store.kvEntries(name) })?.map {
                String(decoding: $0.key, as: UTF8.self) + "=" + String(decoding: $0.value, as: UTF8.self)
            } ?? []
        }
        func diff(_ a: [String], _ b: [String]) -> String {
            let extra = Set(b).subtracting(a).sorted(), missing = Set(a).subtracting(b).sorted()
            return "changed: +\(extra.prefix(3).joined(separator: " +")) -\(missing.prefix(3).joined(separator: " -"))"
        }
        func record(_ app: String, _ ord: Int, _ state: String, _ ip: String) -> JSON {
            ["kind": "App", "app": .string(app), "ordinal": JSON(Int64(ord)), "node": "check-node", "state": .string(state), "ips": [.string(ip)]]
        }
        func ev(_ rev: Int, _ app: String, _ ord: Int, _ state: String, _ ip: String) -> JSON {
            ["rev": JSON(Int64(rev)), "type": .string("instance.\(state)"), "subject": .string("App/\(app)/\(ord)"), "data": record(app, ord, state, ip)]
        }
        func batch(_ evs: [JSON]) -> [UInt8] { JSON.object([("events", .array(evs))]).bytes }
        func resync(_ rev: Int, _ instances: [JSON]) -> [UInt8] {
            JSON.object([("rev", JSON(Int64(rev))), ("site", "check"), ("instances", .array(instances))]).bytes
        }

        // A starting state, then two batches: web-2 appears, web-1 terminates and goes away.
        if let e = call(inst, "resync", resync(100, [record("web", 0, "running", "10.0.0.1"), record("web", 1, "running", "10.0.0.2")])) {
            add("resync", false, e.description)
            return out
        }
        add("resync", true, "accepted a resync of 2 instances at rev 100")
        let b1 = [ev(101, "web", 2, "running", "10.0.0.3"), ev(102, "web", 1, "terminating", "10.0.0.2")]
        let b2 = [ev(103, "web", 1, "gone", "10.0.0.2"), ev(104, "web", 0, "running", "10.0.0.1"),
                  ["rev": 105, "type": "pool.imported", "subject": "default", "data": ["pool": "p"]]]
        for (label, b) in [("events", b1), ("events with an unknown event type", b2)] {
            if let e = call(inst, "events", batch(b)) { add(label, false, e.description); return out }
        }
        add("events", true, "accepted two batches (revs 101-105, one event of an unknown type)")
        let s1 = namespace(inst.name)

        // Repeated batch: at least once means the same batch may come again.
        var ok = true, detail = "the namespace is unchanged after the last batch, then both batches, were delivered again"
        for b in [b2, b1 + b2] {
            if let e = call(inst, "events", batch(b)) { ok = false; detail = e.description; break }
            let s = namespace(inst.name)
            if s != s1 { ok = false; detail = "redelivery changed the namespace: " + diff(s1, s); break }
        }
        add("repeated batch is idempotent", ok, detail)

        // Out of order: the older batch after the newer one, and a batch in reverse order.
        let s2 = namespace(inst.name)
        ok = true
        detail = "an older batch after a newer one, and a reversed batch, left the namespace unchanged (web-1 stays gone)"
        for b in [b1, (b1 + b2).reversed()] {
            if let e = call(inst, "events", batch(Array(b))) { ok = false; detail = e.description; break }
            let s = namespace(inst.name)
            if s != s2 { ok = false; detail = "an out-of-order batch changed the namespace: " + diff(s2, s); break }
        }
        add("out-of-order batch", ok, detail)

        // Resync converges: after history the snapshot does not show, a resync yields what a fresh instance gets.
        _ = call(inst, "events", batch([ev(106, "stale", 0, "running", "10.0.9.9"), ev(107, "web", 2, "gone", "10.0.0.3")]))
        let x = [record("web", 0, "running", "10.0.0.1"), record("api", 0, "running", "10.0.1.1")]
        if let e = call(inst, "resync", resync(200, x)) {
            add("resync converges", false, e.description)
        } else {
            let main = namespace(inst.name)
            if let ref = try? makeInstance("\(inst.name)-conformance-reference") {
                let e = call(ref, "resync", resync(200, x))
                let other = namespace(ref.name)
                ref.destroy()
                if let e { add("resync converges", false, "a fresh instance refused the same resync: \(e.description)") } else {
                    add("resync converges", main == other, main == other
                        ? "after a diverging history the namespace equals a fresh instance's after the same resync (\(main.count) keys)"
                        : "the namespace after the resync still depends on the history before it: " + diff(other, main))
                }
            } else {
                // No second instance possible (its configuration may be exclusive): at least the resync must be idempotent.
                _ = call(inst, "resync", resync(200, x))
                let again = namespace(inst.name)
                add("resync converges", main == again, main == again ? "repeated resync left the namespace unchanged (no reference instance could be created)"
                    : "a repeated resync changed the namespace: " + diff(main, again))
            }
        }

        // Malformed input is refused, and refusing it changes nothing.
        let before = namespace(inst.name)
        var refused = 0
        for (label, op, raw) in [("malformed JSON is refused (events)", "events", Array("{\"events\":[".utf8)),
                                 ("malformed JSON is refused (resync)", "resync", Array("{\"rev\":1,".utf8)),
                                 ("missing fields are refused", "events", Array("{}".utf8))] {
            if let e = call(inst, op, raw) {
                add(label, e.status == .invalidArgument, "returned \(e.statusName): \(e.message)")
                refused += 1
            } else {
                add(label, false, "\(op) accepted invalid input; want INVALID_ARGUMENT")
            }
        }
        let after = namespace(inst.name)
        if refused == 3 && after != before { add("refused input changes nothing", false, diff(before, after)) }
        guard extended else { return out }

        // Huge input: a 4 MiB field in one event of a batch, and in one instance of a resync. Any status will do
        // (OK, INVALID_ARGUMENT, OUT_OF_RANGE ...); a crash, an exit or a hang fails.
        let big = String(repeating: "x", count: hugeBytes)
        var seen: [String] = [], crashes: [String] = []
        let hugeRecord = record("huge", 0, "running", "10.0.3.1").setting("annotations", .string(big))
        let hugeEvent = ev(300, "huge", 0, "running", "10.0.3.1").setting("data", hugeRecord)
        for (op, raw) in [("events", batch([hugeEvent])), ("resync", resync(400, [hugeRecord]))] {
            let e = call(inst, op, raw)
            if let e, e.status == .unavailable && (e.message.contains("crashed") || e.message.contains("exited") || e.message.contains("timed out")) {
                crashes.append("\(op): \(e.statusName): \(e.message)")
            }
            seen.append("\(op) \(e?.statusName ?? "OK")")
        }
        add("huge input", crashes.isEmpty, crashes.isEmpty ? "4 MiB inputs answered: " + seen.joined(separator: ", ") : crashes.joined(separator: "; "))
        return out
    }
}
