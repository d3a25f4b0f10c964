// Typed, size-prefixed batches for the scheduler's hot path: one call per placement, never one per node.
import BerthPlugins
import BerthStore
import BerthPluginABI

#if canImport(Glibc)
import Glibc
#endif

/// Owns a contiguous array of berth_node_view and the C strings they point at.
public final class NodeBatch {
    public let count: Int
    package let views: UnsafeMutablePointer<berth_node_view>
    var names: [UnsafeMutablePointer<CChar>] = []

    public init(count: Int, _ node: (Int) -> (name: String, zone: UInt32, cpu: Int64, mem: Int64)) {
        self.count = count
        views = .allocate(capacity: max(count, 1))
        for i in 0..<count {
            let n = node(i)
            let cname = strdup(n.name)!
            names.append(cname)
            views[i] = berth_node_view(name: cname, index: UInt32(i), zone: n.zone, cpu_free_milli: n.cpu, memory_free: n.mem,
                                       disk_free: 0, free_addresses: -1, label_count: 0, labels: nil)
        }
    }

    deinit {
        for n in names { free(n) }
        views.deallocate()
    }

    /// Mutable access to one node's view (to update free resources between placements).
    public subscript(i: Int) -> UnsafeMutablePointer<berth_node_view> { views + i }

    /// The node index a view carries (a compacted batch keeps each node's own index).
    public func setIndex(_ position: Int, _ index: Int) { views[position].index = UInt32(index) }

    /// Calls `body` with an instance description and the batch header, both valid for the call only.
    public func with<R>(kind: String, app: String, ordinal: Int32, spec: String = "{}", state: String = "{}",
                        _ body: (UnsafePointer<berth_sched_instance>, UnsafePointer<berth_node_batch>) throws -> R) rethrows -> R {
        try withFirst(count, kind: kind, app: app, ordinal: ordinal, spec: spec, state: state, body)
    }

    /// Like `with`, over the first `n` views only (the feasible nodes the scheduler compacted to the front).
    package func withFirst<R>(_ n: Int, kind: String, app: String, ordinal: Int32, spec: String, state: String,
                      _ body: (UnsafePointer<berth_sched_instance>, UnsafePointer<berth_node_batch>) throws -> R) rethrows -> R {
        try kind.withCString { k in
            try app.withCString { a in
                try spec.withCString { s in
                    try state.withCString { st in
                        var inst = berth_sched_instance(struct_size: UInt32(MemoryLayout<berth_sched_instance>.size), kind: k, app: a,
                                                        ordinal: ordinal, spec_json: s, state_json: st)
                        var batch = berth_node_batch(struct_size: UInt32(MemoryLayout<berth_node_batch>.size),
                                                     node_size: UInt32(MemoryLayout<berth_node_view>.stride), count: min(n, count), nodes: views)
                        return try body(&inst, &batch)
                    }
                }
            }
        }
    }
}
