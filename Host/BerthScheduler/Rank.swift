// Rank, the pipeline's second step: a custom kind's plugin filters and scores the feasible nodes in ONE typed batch
// (through the scheduler-kind coordinator), then the nodes are ranked: plugin score first, then bin-packing.
import BerthKinds
import BerthPlugins
import BerthPluginABI
import BerthWire

extension Scheduler {
    /// The host's facts for the plugin (state_json): previous node, volume node, the predecessor's state, the
    /// app's placed peers per zone id (the ids of the batch's `zone` field).
    func facts(_ r: InstanceRec, _ o: ObjectRec) -> String {
        var s = "{"
        func q(_ t: String) -> String { var out = ""; JSON.quote(t, into: &out); return out }
        func nodeState(_ name: String) -> String { state.nodeIndex[name].map { state.nodes[$0].state.rawValue } ?? "removed" }
        if !r.prevNode.isEmpty { s += "\"previousNode\":\(q(r.prevNode)),\"previousNodeState\":\"\(nodeState(r.prevNode))\"," }
        if !r.volumeNode.isEmpty { s += "\"volumeNode\":\(q(r.volumeNode)),\"volumeNodeState\":\"\(nodeState(r.volumeNode))\"," }
        if let p = o.model.predecessor(of: r.key.ordinal) {
            s += "\"predecessor\":{\"ordinal\":\(p),\"state\":\"\(o.instances[p]?.state.rawValue ?? "missing")\"},"
        }
        s += "\"peers\":\(o.placedCount),\"zoneCounts\":{"
        var first = true
        for (z, c) in o.zoneCounts where c > 0 {
            s += (first ? "" : ",") + "\"\(z)\":\(c)"
            first = false
        }
        return s + "}}"
    }

    /// The plugin's filter over the batch (rejections counted by code), then its score over the survivors, which are
    /// compacted to the front. Returns their number.
    func pluginFilter(_ p: SchedulerPlugin, _ r: InstanceRec, _ o: ObjectRec, _ facts: String, _ k: Int, _ d: inout Diagnosis) throws -> Int {
        let views = batch.views
        return try kinds.filterAndScore(p, batch, count: k, kind: o.kind, app: o.name, ordinal: r.key.ordinal, spec: o.specText, state: facts,
                                        codes: &codes, scores: &scores) { codes in
            var kept = 0
            for i in 0..<k {
                let c = codes[i]
                if c == UInt8(BERTH_SCHED_SUCCESS.rawValue) || c == UInt8(BERTH_SCHED_SKIP.rawValue) {
                    if kept != i {
                        views[kept] = views[i]
                        slots[kept] = slots[i]
                    }
                    kept += 1
                } else {
                    d.pluginCodes[c, default: 0] += 1
                }
            }
            return kept
        }
    }

    /// Plugin score first, then bin-packing: the node fullest after placement. A node where wiring just failed for
    /// this instance comes last (a reschedule penalty, as in Nomad). Returns the batch position.
    func rank(_ r: InstanceRec, _ o: ObjectRec, plugin: Bool, _ count: Int) -> Int {
        let m = o.model
        var best = 0
        var bestScore = Int64.min
        state.hot.withUnsafeBufferPointer { hot in
            for pos in 0..<count {
                let h = hot[slots[pos]]
                let c = h.cpuCap > 0 ? min(100, (h.cpuUsed + m.cpu) * 100 / h.cpuCap) : 100
                let mem = h.memCap > 0 ? min(100, (h.memUsed + m.memory) * 100 / h.memCap) : 100
                var s = (c + mem) / 2
                if plugin { s += max(0, min(100, scores[pos])) * 101 }
                if !r.penaltyNodes.isEmpty && r.penaltyNodes.contains(state.nodes[slots[pos]].name) { s -= 1 << 20 }
                if s > bestScore { bestScore = s; best = pos }
            }
        }
        return best
    }
}
