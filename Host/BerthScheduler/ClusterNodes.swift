// The workload side of cluster mode: a berthd's own node joins (created with its host's capacity, up again after it
// was lost), and the scheduling leader marks down the nodes whose berthd's lease expired (as `berth nodes down`).
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire

extension WorkloadService {
    /// This berthd's node joins the site: created with `capacity` when unknown; set up again when it was down (its
    /// lease had expired). A node an operator set draining stays draining. Returns what it did, for the log.
    public func joinNode(_ name: String, capacity: JSON) throws -> String {
        try Self.checkNodeName(name)
        let r: String = try txSync {
            guard let i = self.state.nodeIndex[name] else {
                _ = try self.putNodeInTransaction(name, ["capacity": capacity])
                return "node \(name) added"
            }
            guard self.state.nodes[i].state == .down else { return "node \(name) is \(self.state.nodes[i].state.rawValue)" }
            _ = try self.setNodeStateInTransaction(name, .up)
            return "node \(name) is up again"
        }
        kick()
        return r
    }

    /// The leader, for the members whose lease is gone: those of `names` that are up are set down (their instances
    /// evicted and rescheduled by their kind's rules). Fenced: a berthd that no longer leads changes nothing. Returns
    /// the nodes it set down, and those of `names` that are no node of the site any more (removed).
    public func markLost(_ names: [String]) throws -> (down: [String], removed: [String]) {
        let (down, removed): ([String], [String]) = try txSync {
            self.store.fenceTransaction()
            var out: [String] = [], gone: [String] = []
            for n in names {
                guard let i = self.state.nodeIndex[n] else {
                    gone.append(n)  // removed (`berth nodes rm`): no longer a node of the site
                    continue
                }
                guard self.state.nodes[i].state == .up else { continue }
                _ = try self.setNodeStateInTransaction(n, .down)
                out.append(n)
            }
            return (out, gone)
        }
        if !down.isEmpty { kick() }
        return (down, removed)
    }
}
