// The core scheduler: a small Nomad-like pipeline of named steps, run on the executor thread inside one store
// transaction per pass (each placement in its own savepoint, so a failed one rolls back alone):
//
//   feasibility  (Feasibility.swift) NodeUp · FreeCPU · FreeMemory · FreeDisk · HostPorts · Labels · FreeAddresses,
//                each owning its rejection reason, over a sample of the nodes plus the sticky previous/volume node
//   plugin       (Rank.swift) a custom kind's scheduler plugin filters, then scores, the feasible nodes in ONE batch
//   rank         (Rank.swift) plugin score first, then bin-packing; a node where wiring just failed comes last
//   placement    (Placement.swift) reserve → bind → wire (network, volumes) → record (placed + event)
// (PipelineState.swift holds what the steps share: the node batch, the address capacity cache, the Diagnosis.)
//
// Terminating instances are torn down by the same passes: unwire, then gone, then pending again when their app
// still wants the ordinal (previous node remembered), or removed for good.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire

final class Scheduler {
    let state: WorkloadState
    var host: PluginHost { state.host }
    var store: any HostStore { state.store }
    /// The kinds a placement uses: addresses, volumes, and the custom kinds' plugins.
    let network: NetworkService
    let storage: StorageService
    let kinds: SchedulerCoordinator
    let settings: SchedulerSettings

    var batch = NodeBatch(count: 0) { _ in (name: "", zone: 0, cpu: 0, mem: 0) }
    var slots: [Int] = []          // batch position -> node index
    var codes: [UInt8] = []
    var scores: [Int64] = []
    var nextStart = 0
    var owners: [String: SchedulerPlugin] = [:]
    var netFree: [String: CapacityCache] = [:]
    let retrySeconds = 5.0
    /// Apps whose fresh instance found no feasible node (and why), by generation: the core filter reads nothing of a
    /// fresh instance but its app's spec, so its siblings wait without a scan of every node each.
    var unfit: [ObjectKey: (gen: UInt64, reason: String, until: Double)] = [:]

    init(state: WorkloadState, network: NetworkService, storage: StorageService, kinds: SchedulerCoordinator, settings: SchedulerSettings) {
        self.state = state
        self.network = network
        self.storage = storage
        self.kinds = kinds
        self.settings = settings
    }

    /// Never placed, nothing remembered for it: its feasibility is its app's.
    static func fresh(_ r: InstanceRec) -> Bool {
        r.prevNode.isEmpty && r.volumeNode.isEmpty && r.incarnation == 0 && r.penaltyNodes.isEmpty
    }

    /// The pipeline for one instance: feasibility → the plugin's filter and score → rank → placement.
    func place(_ r: InstanceRec, _ now: Double) -> Bool {
        guard let o = state.objects[r.key.object], !o.deleted else { return fail(r, "its app is gone") }
        let plugin = owners[o.kind]
        if o.kind != "App" && plugin == nil {
            return fail(r, "no loaded scheduler plugin owns kind \(o.kind); enable the plugin that declares it")
        }
        let m = o.model
        if !m.volumes.isEmpty && r.volumeNode.isEmpty {
            r.volumeNode = m.volumes.lazy.compactMap { self.storage.existingLocalNode($0.volume(app: r.key.app, ordinal: r.key.ordinal)) }.first ?? ""
        }
        var diag = Diagnosis()
        let k = feasible(r, o, &diag, views: plugin != nil, now: now)
        guard k > 0 else {
            let reason = diag.text(total: state.nodes.count)
            // (Not with volumes: where they are is the instance's. The timed retry still scans again after retrySeconds.)
            if Self.fresh(r) && m.volumes.isEmpty { unfit[o.key] = (state.generation, reason, now + retrySeconds) }
            return fail(r, reason)
        }
        var count = k
        if let p = plugin {
            let stateJSON = facts(r, o)
            do { count = try pluginFilter(p, r, o, stateJSON, k, &diag) } catch {
                return fail(r, "scheduler plugin \(p.name) failed: \(error)")
            }
            guard count > 0 else {
                diag.plugin = p.name
                diag.explanation = p.explain(kind: o.kind, app: o.name, ordinal: r.key.ordinal, spec: o.specText, state: stateJSON)
                return fail(r, diag.text(total: state.nodes.count))
            }
        }
        return commit(r, o, slots[rank(r, o, plugin: plugin != nil, count)], plugin)
    }

    /// Leaves the instance pending with a reason (an event when the reason changed); retried when something
    /// changes or after a while.
    func fail(_ r: InstanceRec, _ reason: String, retryIn: Double? = nil) -> Bool {
        r.triedGen = state.generation
        r.retryAt = wallClock() + (retryIn ?? retrySeconds)
        if r.reason != reason {
            r.reason = reason
            r.updated = wallClock()
            try? state.saveInstance(r)
            try? state.event(r)
        }
        return false
    }
}
