// The placement pipeline's working state, kept between placements: the node batch and its parallel arrays, the
// per-network address capacity cache, and the Diagnosis that says why no node could take an instance.
import BerthKinds

/// Why no node could take an instance, kube-style: "0/5 nodes are available: 2 down, 3 insufficient cpu".
struct Diagnosis {
    var counts = SIMD8<Int>()  // by Rejection
    var pluginCodes: [UInt8: Int] = [:]
    var plugin = ""
    var explanation = ""

    mutating func count(_ r: Rejection) { counts[r.rawValue] += 1 }

    func text(total: Int) -> String {
        var parts = Rejection.allCases.filter { counts[$0.rawValue] > 0 }.map { "\(counts[$0.rawValue]) \($0.text)" }
        if !pluginCodes.isEmpty {
            let names: [UInt8: String] = [1: "error", 2: "unschedulable", 3: "unresolvable", 4: "wait"]
            let codes = pluginCodes.sorted { $0.key < $1.key }.map { "\($0.value) \(names[$0.key] ?? "code \($0.key)")" }
            parts.append("\(pluginCodes.values.reduce(0, +)) rejected by plugin \(plugin) (\(codes.joined(separator: ", ")))")
        }
        let head = total == 0 ? "no nodes are registered (berth nodes add)" : "0/\(total) nodes are available: " + parts.joined(separator: ", ")
        return explanation.isEmpty ? head : "\(head); \(explanation)"
    }
}

/// Free and reserved addresses of a network per node, each kept for 2 s and counted down by this scheduler's own
/// placements in between.
final class CapacityCache {
    var free: [Int64] = [], reserved: [Int64] = [], at: [Double] = []
    func resize(_ n: Int) {
        if at.count != n { free = Array(repeating: -1, count: n); reserved = Array(repeating: 0, count: n); at = Array(repeating: 0, count: n) }
    }
    func get(_ i: Int, _ now: Double, _ lookup: (Int) -> (free: Int64, reserved: Int64)) -> (free: Int64, reserved: Int64) {
        if now - at[i] < 2 { return (free[i], reserved[i]) }
        let out = lookup(i)
        free[i] = out.free; reserved[i] = out.reserved; at[i] = now
        return out
    }
}

extension Scheduler {
    /// Grows the batch and its parallel arrays (slots, codes, scores) to hold at least `n` nodes.
    func growBatch(_ n: Int) {
        guard batch.count < n else { return }
        batch = NodeBatch(count: max(n, batch.count * 2)) { _ in (name: "", zone: 0, cpu: 0, mem: 0) }
        slots = Array(repeating: 0, count: batch.count)
        codes = Array(repeating: 0, count: batch.count)
        scores = Array(repeating: 0, count: batch.count)
    }

    /// The address capacity cache of `network`, sized to the node table.
    func capacityCache(_ network: String) -> CapacityCache {
        let c = netFree[network] ?? CapacityCache()
        netFree[network] = c
        c.resize(state.nodes.count)
        return c
    }
}
