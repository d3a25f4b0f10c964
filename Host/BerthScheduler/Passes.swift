// The scheduler's passes: each takes the apps being reconciled in steps, then tears down terminating instances and
// runs the placement pipeline (Scheduler.place) over pending ones, within a budget and a deadline.
import BerthKinds
import BerthPlugins
import BerthStore

struct PassResult {
    var placed = 0, failed = 0, tornDown = 0
    var more = false
}

extension Scheduler {
    /// One pass: the apps being reconciled in steps, then at most `budget` teardowns and `budget` placement attempts,
    /// and no longer than `seconds` (the pass holds the executor; the rest is left for the next pass).
    func pass(budget: Int, seconds: Double = 0.05) -> PassResult {
        var res = PassResult()
        store.fenceTransaction()  // cluster mode: only the scheduling leader's pass commits (EtcdStore.fence)
        let now = wallClock()
        unfit = unfit.filter { $0.value.gen == state.generation }
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        owners = kinds.owners()
        let reconciling = state.reconcileQueue
        state.reconcileQueue = []
        for k in reconciling {
            guard let o = state.objects[k] else { continue }
            do { try state.reconcile(o) } catch { state.dirty = true }
        }
        if !state.reconcileQueue.isEmpty { res.more = true }
        func stop(_ done: Int) -> Bool { done >= budget || state.dirty || (done & 15 == 15 && monotonicNanos() > deadline) }
        // Teardowns first: they free what pending instances may need.
        let terminating = state.terminatingQueue
        state.terminatingQueue = []
        var seen = Set<InstanceKey>()
        for (n, k) in terminating.enumerated() {
            if stop(res.tornDown) {
                state.terminatingQueue.append(contentsOf: terminating[n...])
                res.more = true
                break
            }
            guard seen.insert(k).inserted, let r = state.instance(k), r.state == .terminating else { continue }
            if r.retryAt > now || !teardown(r, now) { state.terminatingQueue.append(k) } else { res.tornDown += 1 }
        }
        // Then placements, in queue order (ordinals in order).
        let pending = state.pendingQueue
        state.pendingQueue = []
        seen = []
        for (n, k) in pending.enumerated() {
            if stop(res.placed + res.failed) {
                // The next pass starts where this one stopped (starting over would walk these instances again).
                state.pendingQueue = Array(pending[n...]) + state.pendingQueue
                res.more = true
                break
            }
            guard seen.insert(k).inserted, let r = state.instance(k), r.state == .pending else { continue }
            guard r.triedGen != state.generation || now >= r.retryAt else {
                state.pendingQueue.append(k)
                continue
            }
            // A fresh instance of an app whose fresh instance found no node in this generation finds none either.
            if Self.fresh(r), let u = unfit[k.object], u.gen == state.generation, now < u.until {
                _ = fail(r, u.reason)
                state.pendingQueue.append(k)
                continue
            }
            if place(r, now) { res.placed += 1 } else {
                res.failed += 1
                if state.instance(k)?.state == .pending { state.pendingQueue.append(k) }
            }
        }
        return res
    }

    /// terminating → gone (unwired) → pending again when its app still wants the ordinal.
    private func teardown(_ r: InstanceRec, _ now: Double) -> Bool {
        let node = r.node
        let lost = state.nodeIndex[node].map { state.nodes[$0].state == .down } ?? true
        let mutatedBefore = state.mutated
        state.mutated = false
        do {
            try store.savepoint("teardown") {
                // A lost node cannot be asked to unpublish: best effort there.
                try unwire(Wiring(network: r.network.isEmpty ? nil : (r.network, r.containerID), volumes: r.volumes), node: node,
                           final: r.final, bestEffort: lost)
                if r.final, let p = owners[r.key.kind] {
                    try? p.unreserve(SchedulerPlugin.binding(kind: r.key.kind, app: r.key.app, ordinal: r.key.ordinal, node: node, final: true))
                }
                state.vacate(r)
                let o = state.objects[r.key.object]
                let again = !r.final && o.map { !$0.deleted && $0.model.ordinals.contains(r.key.ordinal) } ?? false
                try state.transition(r, to: .gone, reason: r.reason)
                if again {
                    r.prevNode = node
                    r.node = ""; r.containerID = ""; r.network = ""; r.addresses = []; r.volumes = []
                    r.cpu = 0; r.memory = 0; r.disk = 0; r.ports = []
                    try state.transition(r, to: .pending)
                } else if let o {
                    o.instances[r.key.ordinal] = nil
                    if o.deleted && o.instances.isEmpty { state.objects[o.key] = nil }
                }
            }
        } catch {
            if state.mutated { state.dirty = true }  // rebuilt from the store before the next pass
            r.retryAt = now + retrySeconds
            state.mutated = mutatedBefore || state.mutated
            return false
        }
        state.mutated = true
        return true
    }
}
