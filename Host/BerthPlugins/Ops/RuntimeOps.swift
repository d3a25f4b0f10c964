// The typed face of a runtime plugin (ABI 1.3, berth_runtime_ops; sdk-docs/kinds/runtime.md): JSON requests in,
// checked state objects out. The only place in the host that reads the runtime table.
import BerthPluginABI
import BerthWire

/// What a runtime plugin reports about one instance (the "state object").
public struct RuntimeState: Sendable, Equatable {
    public enum Phase: String, Sendable { case created, running, exited, unknown }
    public let id: String
    public let phase: Phase
    public let pid: Int
    public let exitCode: Int?
    public let signal: Int?
    public let startedAt: String?
    public let finishedAt: String?
    public let reason: String?
    public let logPath: String?
    /// Everything the plugin answered (plugins may add fields).
    public let raw: JSON

    /// Reads a state object; anything malformed is the plugin's fault (INTERNAL, naming the field).
    init(_ v: JSON, plugin: String, operation: String) throws {
        func bad(_ why: String) -> BerthError {
            BerthError(plugin: plugin, operation: operation, status: .internal, message: "the plugin returned an invalid state object (\(why)): \(v.serialized)")
        }
        guard let id = v["id"]?.string, !id.isEmpty else { throw bad("no string \"id\"") }
        guard let s = v["state"]?.string, let phase = Phase(rawValue: s) else { throw bad("\"state\" must be created, running, exited or unknown") }
        self.id = id
        self.phase = phase
        pid = v["pid"]?.int ?? 0
        exitCode = v["exitCode"]?.int
        signal = v["signal"]?.int
        startedAt = v["startedAt"]?.string
        finishedAt = v["finishedAt"]?.string
        reason = v["reason"]?.string
        logPath = v["logPath"]?.string
        raw = v
    }

    public var isRunning: Bool { phase == .running || phase == .created }
}

/// A bind mount of a start request.
public struct RuntimeMount: Sendable, Equatable {
    public var source: String
    public var target: String
    public var readonly: Bool
    public init(source: String, target: String, readonly: Bool = false) {
        self.source = source
        self.target = target
        self.readonly = readonly
    }
}

/// A start request (the fields of sdk-docs/kinds/runtime.md "start"); nil fields are left out.
public struct RuntimeStartSpec: Sendable, Equatable {
    public var id: String
    public var rootfs: String
    public var command: String
    public var args: [String] = []
    public var env: [(String, String)] = []
    public var workingDir: String? = nil
    public var hostname: String? = nil
    public var cpuMillis: Int? = nil
    public var memoryBytes: Int? = nil
    public var pids: Int? = nil
    public var netns: String? = nil
    public var mounts: [RuntimeMount] = []

    public init(id: String, rootfs: String, command: String) {
        self.id = id
        self.rootfs = rootfs
        self.command = command
    }

    public static func == (a: RuntimeStartSpec, b: RuntimeStartSpec) -> Bool { a.json == b.json }

    public var json: JSON {
        var o: JSON = ["id": .string(id), "rootfs": .string(rootfs), "command": .string(command),
                       "args": .array(args.map { .string($0) }), "env": .object(env.map { ($0.0, JSON.string($0.1)) })]
        if let workingDir { o = o.setting("workingDir", .string(workingDir)) }
        if let hostname { o = o.setting("hostname", .string(hostname)) }
        var r: JSON = .object([])
        if let cpuMillis { r = r.setting("cpuMillis", .int(Int64(cpuMillis))) }
        if let memoryBytes { r = r.setting("memoryBytes", .int(Int64(memoryBytes))) }
        if let pids { r = r.setting("pids", .int(Int64(pids))) }
        if !r.keys.isEmpty { o = o.setting("resources", r) }
        if let netns { o = o.setting("netns", .string(netns)) }
        if !mounts.isEmpty {
            o = o.setting("mounts", .array(mounts.map { ["source": .string($0.source), "target": .string($0.target), "readonly": .bool($0.readonly)] }))
        }
        return o
    }
}

/// What `exec` answers.
public struct RuntimeExecResult: Sendable, Equatable {
    public let exitCode: Int
    public let output: String
    public let truncated: Bool
}

/// A runtime plugin instance. Calls do not need the store executor (a runtime keeps no state in the key-value
/// namespace), so they run on the caller's thread: a `stop` that waits out a grace period never blocks the executor.
/// The host never runs two operations on the same id at once; callers keep that promise (the node agent does).
public final class RuntimePlugin: @unchecked Sendable {
    public let instance: PluginInstance
    private let ops: berth_runtime_ops

    /// nil when the instance is not of a runtime plugin.
    public init?(_ instance: PluginInstance) {
        guard instance.plugin.kinds.contains(.runtime), let ops = instance.runtimeOps else { return nil }
        self.instance = instance
        self.ops = ops
    }

    public var name: String { instance.name }
    /// Whether the plugin offers `exec` (`berth exec`).
    public var executes: Bool { ops.exec != nil }

    private func state(_ op: String, _ fn: berth_json_op?, _ request: JSON) throws -> RuntimeState {
        try RuntimeState(try instance.callObject(op, fn, request), plugin: name, operation: op)
    }

    /// Starts an instance (idempotent per id with the same spec).
    public func start(_ spec: RuntimeStartSpec) throws -> RuntimeState { try start(raw: spec.json) }

    /// Starts from any JSON request: the conformance suite sends malformed ones on purpose.
    public func start(raw request: JSON) throws -> RuntimeState { try state("start", ops.start, request) }

    /// SIGTERM, then SIGKILL after `graceSeconds`; an unknown id answers `unknown` (succeeds).
    public func stop(_ id: String, graceSeconds: Int = 10) throws -> RuntimeState {
        try state("stop", ops.stop, ["id": .string(id), "graceSeconds": .int(Int64(graceSeconds))])
    }

    /// The state of one instance; NOT_FOUND for an id the plugin does not have.
    public func state(_ id: String) throws -> RuntimeState { try state("state", ops.state, ["id": .string(id)]) }

    /// Every instance the plugin has on the node (reattach).
    public func list() throws -> [RuntimeState] {
        let v = try instance.callObject("list", ops.list, .object([]))
        guard let items = v["instances"]?.array else {
            throw BerthError(plugin: name, operation: "list", status: .internal, message: "the plugin's list answer has no \"instances\" array: \(v.serialized)")
        }
        return try items.map { try RuntimeState($0, plugin: name, operation: "list") }
    }

    /// Deletes an instance and what the plugin made for it; unknown ids succeed. Without `force` a running
    /// instance is FAILED_PRECONDITION.
    public func remove(_ id: String, force: Bool = false) throws {
        _ = try instance.callObject("remove", ops.remove, ["id": .string(id), "force": .bool(force)])
    }

    /// Runs a command inside a running instance (UNIMPLEMENTED when the plugin has no exec).
    public func exec(_ id: String, command: String, args: [String] = [], timeoutSeconds: Int = 30) throws -> RuntimeExecResult {
        let v = try instance.callObject("exec", ops.exec, ["id": .string(id), "command": .string(command),
                                                           "args": .array(args.map { .string($0) }), "timeoutSeconds": .int(Int64(timeoutSeconds))])
        guard let code = v["exitCode"]?.int else {
            throw BerthError(plugin: name, operation: "exec", status: .internal, message: "the plugin's exec answer has no integer \"exitCode\": \(v.serialized)")
        }
        return RuntimeExecResult(exitCode: code, output: v["output"]?.string ?? "", truncated: v["truncated"]?.bool ?? false)
    }
}
