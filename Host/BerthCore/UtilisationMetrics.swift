// /metrics series that need the store: address pool utilisation per network and pool (from each network plugin's
// `capacity`), and pending instances per app with the reason they wait (from the workload model).
import BerthPlugins
import BerthScheduler
import BerthWire
import Foundation

extension BerthRuntime {
    /// The pool and pending-instance series, in the Prometheus text format. They are read on the store's executor;
    /// /metrics must still answer when that is stuck (an in-process plugin call that does not return), so past
    /// `deadline` seconds they are left out, with a comment saying why.
    public func utilisationMetrics(deadline: Double = 1) async -> String {
        let skipped = "# berth_pool_addresses and berth_instances_pending left out: the store executor is busy (see berth_executor_busy_seconds)\n"
        // Already stuck: queue nothing more behind it (a scrape every few seconds would pile up jobs).
        if let busy = executor.busy, busy.seconds > deadline { return skipped }
        return await withCheckedContinuation { (c: CheckedContinuation<String, Never>) in
            let once = Once(c)
            Task { once.resume(await self.readUtilisation()) }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(deadline * 1e9))
                once.resume(skipped)
            }
        }
    }

    private func readUtilisation() async -> String {
        var pools = "# HELP berth_pool_addresses Addresses of each pool by state: free (can be handed out), reserved (kept out of allocation), active (attached), held (kept for a stateful identity); from the network plugin's capacity.\n# TYPE berth_pool_addresses gauge\n"
        for e in plugins {
            guard let inst = e.instance, inst.plugin.kinds.contains(.network), let ops = inst.networkOps, ops.has(.capacity) else { continue }
            let net = e.spec.name
            guard let cap = try? await executor.run({ try ops.capacity(["network": .string(net), "node": .null]) }) else { continue }
            for p in cap["pools"]?.array ?? [] {
                guard let pool = p["name"]?.string else { continue }
                for state in ["free", "reserved", "active", "held"] {
                    guard let n = p[state]?.int else { continue }
                    pools += "berth_pool_addresses{network=\"\(label(net))\",pool=\"\(label(pool))\",state=\"\(state)\"} \(n)\n"
                }
            }
        }
        var pending = "# HELP berth_instances_pending Instances waiting to be placed, per app and the reason they wait (as `berth instances` shows it).\n# TYPE berth_instances_pending gauge\n"
        if let counts = try? await workloads.pendingByReason() {
            for (k, n) in counts.sorted(by: { ($0.key.kind, $0.key.app, $0.key.reason) < ($1.key.kind, $1.key.app, $1.key.reason) }) {
                pending += "berth_instances_pending{kind=\"\(label(k.kind))\",app=\"\(label(k.app))\",reason=\"\(label(k.reason))\"} \(n)\n"
            }
        }
        return pools + pending
    }

    /// A Prometheus label value: backslash, quote and newline escaped.
    func label(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// Resumes a continuation once, with the first value given; later values are dropped.
final class Once<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Never>?
    init(_ c: CheckedContinuation<T, Never>) { continuation = c }

    func resume(_ value: T) {
        let c: CheckedContinuation<T, Never>? = lock.withLock {
            defer { continuation = nil }
            return continuation
        }
        c?.resume(returning: value)
    }
}

