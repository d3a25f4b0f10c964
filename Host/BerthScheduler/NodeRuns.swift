// What the node agent reads from the workload model: the instances placed on a node (placed or running) whose app
// has a `run` spec, and the runtime view it adds to each instance (`runtime` in GET /v1/instances).
import BerthKinds
import BerthPlugins
import BerthWire
import Foundation

extension WorkloadService {
    /// The instances that should run on `node` now; one short transaction.
    package func runsOnNode(_ node: String) throws -> [PlacedRun] {
        try txSync {
            var out: [PlacedRun] = []
            for o in self.state.objects.values where !o.deleted {
                guard let run = o.model.run else { continue }
                for r in o.instances.values where r.node == node && (r.state == .placed || r.state == .running) {
                    var p = PlacedRun(kind: o.kind, app: o.name, ordinal: r.key.ordinal, containerID: r.containerID,
                                         network: r.network.isEmpty ? nil : r.network, ip: r.ips.first, rootfs: run.rootfs, command: run.command,
                                         args: run.args, env: Dictionary(zip(run.env, run.envValues), uniquingKeysWith: { a, _ in a }),
                                         workingDir: run.workingDir, restartPolicy: run.restartPolicy.rawValue, graceSeconds: run.graceSeconds,
                                         cpuMillis: r.cpu > 0 ? Int(r.cpu) : nil, memoryBytes: r.memory > 0 ? Int(r.memory) : nil,
                                         state: r.state.rawValue)
                    p.health = run.health
                    p.mounts = r.volumes.map { RuntimeMount(source: $0.target, target: "/volumes/\($0.template)") }
                    out.append(p)
                }
            }
            return out.sorted { ($0.kind, $0.app, $0.ordinal) < ($1.kind, $1.app, $1.ordinal) }
        }
    }

    /// An instance's JSON with the node agent's view of it, when the agent runs it.
    func withRuntime(_ r: InstanceRec) -> JSON {
        guard !r.containerID.isEmpty, let v = runtimeView.get(r.containerID) else { return r.json }
        return r.json.setting("runtime", v)
    }
}

/// Where the composition root plugs the node agent's per-instance view into the workload service (set once, read
/// from any thread).
public final class RuntimeView: @unchecked Sendable {
    private var view: (@Sendable (String) -> JSON?)?
    private let lock = NSLock()
    public init() {}
    public func set(_ f: @escaping @Sendable (String) -> JSON?) { lock.withLock { view = f } }
    func get(_ id: String) -> JSON? { lock.withLock { view }?(id) }
}
