// What the node agent converges to: the instances placed on its node whose app has a `run` spec (read from the
// workload model by the composition root's closure), and what it reports back per instance.
import BerthPlugins
import BerthWire

/// One instance that should run on this node.
public struct PlacedRun: Sendable, Equatable {
    /// kind/app/ordinal (the workload instance's subject).
    public var kind: String
    public var app: String
    public var ordinal: Int
    /// The runtime and CNI id: the placement's container id (app-ordinal-incarnation), the key of its network attachment.
    public var containerID: String
    /// The Berth network the instance is attached to, and its first address (without prefix); nil without a network.
    public var network: String?
    public var ip: String?
    public var rootfs: String
    public var command: String
    public var args: [String]
    public var env: [String: String]
    public var workingDir: String?
    /// always, on-failure or never.
    public var restartPolicy: String
    public var graceSeconds: Int
    public var cpuMillis: Int?
    public var memoryBytes: Int?
    /// The workload state (placed or running).
    public var state: String
    /// The instance's published volumes: (where the storage coordinator published it on the node, the path inside
    /// the instance: /volumes/<template name>).
    public var mounts: [RuntimeMount] = []
    /// `spec.run.health`, probed while the instance runs (nil: none).
    public var health: HealthCheck?

    public init(kind: String, app: String, ordinal: Int, containerID: String, network: String?, ip: String?, rootfs: String, command: String,
                args: [String], env: [String: String], workingDir: String?, restartPolicy: String, graceSeconds: Int,
                cpuMillis: Int?, memoryBytes: Int?, state: String) {
        self.kind = kind; self.app = app; self.ordinal = ordinal; self.containerID = containerID; self.network = network; self.ip = ip
        self.rootfs = rootfs; self.command = command; self.args = args; self.env = env; self.workingDir = workingDir
        self.restartPolicy = restartPolicy; self.graceSeconds = graceSeconds; self.cpuMillis = cpuMillis; self.memoryBytes = memoryBytes
        self.state = state
    }

    public var subject: String { "\(kind)/\(app)/\(ordinal)" }
}

/// The agent's view of one instance it runs (shown as `runtime` in GET /v1/instances and `berth instances`).
public struct RunStatus: Sendable {
    /// starting, running, exited, restarting, failed, stopping.
    public var phase = "starting"
    public var restarts = 0
    /// Restarts in a row without a run long enough to reset the backoff.
    public var streak = 0
    public var lastExitCode: Int?
    public var pid = 0
    public var startedAt: String?
    public var reason: String?
    /// The finishedAt of the last exit already counted (an exit is counted once).
    var countedExit: String?
    /// Not before (monotonic seconds) the next start attempt.
    var notBefore: Double = 0
    var graceSeconds = 10
    var subject = ""
    var network: String?
    /// Monotonic seconds when this agent saw it start running (a long enough run resets the backoff streak).
    var runningSince: Double = 0
    /// This berthd has started or reattached to the current process (not persisted: a new berthd reattaches).
    var attached = false
    /// The runtime plugin's log file of the instance (its state object's logPath).
    var logPath: String?
    /// The health check's view: healthy or unhealthy (nil: not probed since the start), failures in a row, the last failure.
    var health: String?
    var healthFailures = 0
    var lastHealthFailure: String?
    /// Not before (monotonic seconds) the next probe.
    var nextProbe: Double = 0

    public var json: JSON {
        var j: JSON = ["phase": .string(phase), "restarts": .number(Double(restarts)), "pid": .number(Double(pid))]
        j = j.setting("lastExitCode", lastExitCode.map { .number(Double($0)) } ?? .null)
        j = j.setting("startedAt", startedAt.map { .string($0) } ?? .null)
        j = j.setting("reason", reason.map { .string($0) } ?? .null)
        if health != nil || lastHealthFailure != nil {
            j = j.setting("health", ["status": .string(health ?? "unknown"), "consecutiveFailures": .number(Double(healthFailures)),
                                     "lastFailure": lastHealthFailure.map { .string($0) } ?? .null])
        }
        return j
    }
}
