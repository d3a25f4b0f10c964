// Process isolation (`"isolation": "process"`): the plugin runs in a `berth-plugin-runner` child process and the
// daemon talks to it over a socket pair. The rest of the host cannot tell the difference: the runner answers a
// DESCRIBE with the plugin's descriptor metadata, and the daemon SYNTHESISES a `berth_plugin_descriptor` (plus
// ops tables) whose function pointers are C trampolines forwarding each call over the socket. That descriptor
// goes through the normal `Loader.validate` and `Loader.instantiate`, so configuration validation, the
// PluginInstance call path (serialisation, statistics, error buffer, output limit, JSON validation) and the
// transactions are the very same code as in process.
//
// While a trampoline waits for the RESULT of a call it serves the runner's host-service requests (log, kv_*,
// emit_event) by calling the real host services table of the instance: the trampoline runs inside
// `PluginInstance.invoke` on the caller's thread (the executor thread for every transactional operation), so
// the key-value operations act on the current transaction exactly as they do in process.
//
// Supervision, per instance: a crash (EOF on the socket) fails the call in flight with BERTH_UNAVAILABLE and a
// message naming the plugin and the signal; the runner is restarted on the next call (with backoff) and the
// instance re-created with the same configuration (instance state lives in the key-value namespace, so that is
// safe). A call that exceeds the site's `callTimeoutMs` kills the runner (SIGKILL) and fails the same way.
// Five deaths within 60 s put the instance into a failed state: calls fail fast and `failedReason` says why.
//
// Files: Wire.swift and FrameChannel.swift (frames, codec, socket) and Protocol.swift (slots, DESCRIBED, load
// errors) are shared with the runner; this file (the plugin and its instances), RunnerProcess.swift (spawning),
// RemoteConnection.swift (calls and supervision), Trampolines.swift (the synthesised descriptor) and
// RemoteCompletion.swift (ABI 1.2 callbacks) are the daemon's side; the runner's side is the berth-plugin-runner
// executable (Host/berth-plugin-runner).
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// A failure of the isolation machinery itself (runner missing, runner died while loading).
public struct IsolationError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A plugin loaded under process isolation: the synthesized descriptor and the connections of its instances.
public final class RemotePlugin: @unchecked Sendable {
    let spec: PluginSpec
    let loader: Loader
    let runnerPath: String
    let callTimeoutMs: Int
    let outputLimit: Int
    var described: Described!
    private let lock = PthreadLock()
    /// Every instance's connection. Kept for the life of the process: instance handles point at them.
    private var connections: [RemoteConnection] = []
    /// The runner that answered DESCRIBE, handed to the first instance.
    private var spare: RunnerProcess?
    /// Staged for a dry run: the runner opens the checked file itself and makes no content-addressed copy.
    var dryRun = false

    /// Set, per instance name, while `instantiate` runs Loader.instantiate: the synthesized create() has no other
    /// way to know which plugin it creates an instance of (C function pointers carry no context); it finds the
    /// name through its host services (the instance's PluginContext).
    nonisolated(unsafe) private static var pending: [String: [RemotePlugin]] = [:]
    private static let pendingLock = PthreadLock()

    static func pending(for name: String) -> RemotePlugin? { pendingLock.with { pending[name]?.last } }

    init(spec: PluginSpec, loader: Loader, runnerPath: String, callTimeoutMs: Int, outputLimit: Int) {
        self.spec = spec
        self.loader = loader
        self.runnerPath = runnerPath
        self.callTimeoutMs = callTimeoutMs
        self.outputLimit = outputLimit
    }

    /// Loads `spec` in a berth-plugin-runner: the runner validates the file with the same Loader, and the
    /// descriptor it describes is synthesised here and validated again by `loader`. `callTimeoutMs` is the
    /// deadline of each call; the runner applies `spec`'s memory and open-file limits.
    /// `dryRun`: only stage it (a dry run of a site): no copy is made; `discardDryRun` ends the runner.
    public static func load(_ spec: PluginSpec, loader: Loader, callTimeoutMs: Int, runnerPath: String = pluginRunnerPath,
                            dryRun: Bool = false,
                            log: @escaping (berth_log_level, String) -> Void = { _, _ in }) throws -> LoadedPlugin {
        let rp = RemotePlugin(spec: spec, loader: loader, runnerPath: runnerPath, callTimeoutMs: max(1, callTimeoutMs), outputLimit: 16 << 20)
        rp.dryRun = dryRun
        let (runner, described) = try rp.startRunner(pinned: false, log: log)
        rp.described = described
        rp.spare = runner
        let raw = described.synthesize()
        let loaded: LoadedPlugin
        do {
            loaded = try loader.validate(UnsafePointer(raw), spec: spec, file: spec.path, copy: described.copy, digest: described.digest)
        } catch {
            rp.takeSpare()?.kill9()
            throw error
        }
        loaded.remote = rp
        return loaded
    }

    /// Ends the runner that staged a plugin for a dry run (it never gets an instance).
    public static func discardDryRun(_ loaded: LoadedPlugin) {
        guard let rp = loaded.remote, let r = rp.takeSpare() else { return }
        r.kill9()
        _ = r.reap()
    }

    /// Creates an instance of a plugin loaded by `load`, through the normal Loader.instantiate (configuration
    /// validated against the plugin's schema, create() inside a transaction on `executor`).
    public static func instantiate(_ loaded: LoadedPlugin, spec: PluginSpec, loader: Loader, executor: Executor?,
                                   log: @escaping (berth_log_level, String) -> Void) throws -> PluginInstance {
        guard let rp = loaded.remote else {
            throw IsolationError(description: "plugin \"\(spec.name)\" was not loaded in a runner")
        }
        pendingLock.with { pending[spec.name, default: []].append(rp) }
        defer {
            pendingLock.with {
                if let i = pending[spec.name]?.lastIndex(where: { $0 === rp }) { pending[spec.name]!.remove(at: i) }
                if pending[spec.name]?.isEmpty == true { pending[spec.name] = nil }
            }
        }
        let inst = try loader.instantiate(loaded, spec: spec, executor: executor, log: log)
        inst.outputLimit = rp.outputLimit
        return inst
    }

    /// `load` then `instantiate`.
    public static func instantiate(_ spec: PluginSpec, loader: Loader, executor: Executor?, callTimeoutMs: Int,
                                   runnerPath: String = pluginRunnerPath,
                                   log: @escaping (berth_log_level, String) -> Void) throws -> PluginInstance {
        let loaded = try load(spec, loader: loader, callTimeoutMs: callTimeoutMs, runnerPath: runnerPath, log: log)
        return try instantiate(loaded, spec: spec, loader: loader, executor: executor, log: log)
    }

    /// Spawns a runner and has it load the plugin. `pinned`: load the content-addressed copy with its digest
    /// (restarts run exactly the code that was loaded first).
    func startRunner(pinned: Bool, log: (berth_log_level, String) -> Void) throws -> (RunnerProcess, Described) {
        let r = try RunnerProcess.spawn(runnerPath, runnerArguments(pinned: pinned))
        var w = WireWriter(.describe)
        r.channel.send(w.finish())
        return (r, try awaitDescribed(r, log: log))
    }

    /// The runner's command line: what to load, from where, and the limits it applies to itself.
    private func runnerArguments(pinned: Bool) -> [String] {
        var args = ["--name", spec.name, "--copy-dir", loader.copyDir, "--host-minor", "\(loader.hostMinor)",
                    "--parent", "\(getpid())", "--output-limit", "\(outputLimit)"]
        if pinned, let d = described {
            args += ["--path", d.copy, "--sha256", d.digest]
        } else {
            args += ["--path", spec.path]
            if let s = spec.sha256 { args += ["--sha256", s] }
            if spec.allowInsecurePermissions { args.append("--allow-insecure-permissions") }
            if dryRun { args.append("--dry-run") }
        }
        if let m = spec.memoryLimitBytes { args += ["--memory-bytes", "\(m)"] }
        if let f = spec.openFilesLimit { args += ["--open-files", "\(f)"] }
        return args
    }

    /// Waits for the runner's DESCRIBED (passing on what it logs meanwhile); a runner that fails to load the plugin,
    /// dies, or does not answer in time is reaped and its failure thrown.
    private func awaitDescribed(_ r: RunnerProcess, log: (berth_log_level, String) -> Void) throws -> Described {
        let deadline = monotonicNanos() + UInt64(max(callTimeoutMs, 10_000)) * 1_000_000
        func died(_ why: String) -> IsolationError {
            r.kill9()
            let st = r.reap()
            let sig = st & 0x7f
            let how = sig != 0 && sig != 0x7f ? "crashed (\(signalName(sig)))" : "exited with status \((st >> 8) & 0xff)"
            return IsolationError(description: "the plugin runner \(how) while loading the plugin\(why.isEmpty ? "" : " (\(why))")")
        }
        while true {
            switch r.channel.receive(deadline: deadline) {
            case .timeout:
                r.kill9()
                _ = r.reap()
                throw IsolationError(description: "the plugin runner did not describe the plugin within \(max(callTimeoutMs, 10_000)) ms")
            case .closed(let why):
                throw died(why ?? "")
            case .frame(.log, let payload):
                if payload.count >= 1 {
                    let msg = String(decoding: payload[1...], as: UTF8.self)
                    if payload[0] == UInt8(BERTH_LOG_WARN.rawValue) { loader.warn(msg) } else { log(berth_log_level(rawValue: UInt32(payload[0])), msg) }
                }
            case .frame(.described, let payload):
                do {
                    return try decodeDescribed(payload)
                } catch {
                    r.kill9()
                    _ = r.reap()
                    throw error
                }
            case .frame(let t, _):
                throw died("unexpected frame \(t) before DESCRIBED")
            }
        }
    }

    /// A DESCRIBED payload: the plugin's description, or the load error the runner met (thrown as it is).
    private func decodeDescribed(_ payload: [UInt8]) throws -> Described {
        try payload.withUnsafeBytes { b in
            var rd = WireReader(b)
            if try rd.u8() != 0 {
                throw try LoadErrorCodec.decode(&rd, plugin: spec.name, file: spec.path)
            }
            let d = try Described(&rd)
            if let pin = described, pin.digest != d.digest {
                throw IsolationError(description: "the restarted runner loaded different code (sha256 \(d.digest), expected \(pin.digest))")
            }
            return d
        }
    }

    func takeSpare() -> RunnerProcess? {
        lock.lock()
        defer { lock.unlock() }
        let r = spare
        spare = nil
        return r
    }

    func adopt(_ c: RemoteConnection) {
        lock.lock()
        connections.append(c)
        lock.unlock()
    }
}

// MARK: - what the rest of the host sees

extension PluginInstance {
    /// The runner connection of a process-isolated instance.
    var connection: RemoteConnection? {
        guard plugin.remote != nil, let h = handle else { return nil }
        return Unmanaged<RemoteConnection>.fromOpaque(h).takeUnretainedValue()
    }
    /// True when the instance runs in a berth-plugin-runner.
    public var isolated: Bool { plugin.remote != nil }
    /// Why a process-isolated instance stopped serving (repeated crashes), or nil.
    public var failedReason: String? { connection?.failedReason }
    /// Deaths of the instance's runner (crashes, kills after a timeout) since it was loaded.
    public var crashCount: UInt64 { connection?.crashCount ?? 0 }
    /// The pid of the current runner, when there is one.
    public var runnerPid: Int32? { connection?.runnerPid }
}
