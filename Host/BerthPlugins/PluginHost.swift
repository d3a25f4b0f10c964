// The plugin host: the running site configuration, the store and its executor, the registry of loaded plugins
// (with their instances), and event watchers. Every kind's coordinator is built on it (BerthCore composes them).
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation
import Synchronization
import Logging

public final class PluginEntry: @unchecked Sendable {
    public enum State: Sendable { case loaded, disabled, failed(String) }
    public let spec: PluginSpec
    public internal(set) var state: State
    public internal(set) var instance: PluginInstance?
    /// Delivery status of a discovery plugin (cursor, lag, failures), set by the discovery service.
    package var discoveryStatus: (() -> JSON)?
    init(spec: PluginSpec, state: State, instance: PluginInstance? = nil) {
        self.spec = spec
        self.state = state
        self.instance = instance
    }

    public var stateName: String {
        switch state {
        case .loaded: return instance?.failedReason != nil ? "failed" : "loaded"
        case .disabled: return "disabled"
        case .failed: return "failed"
        }
    }

    public var json: JSON {
        var o: JSON = ["name": .string(spec.name), "path": .string(spec.path), "isolation": .string(spec.isolation),
                       "state": .string(stateName)]
        if case .failed(let why) = state { o = o.setting("reason", .string(why)) }
        if let why = instance?.failedReason { o = o.setting("reason", .string(why)) }
        if let inst = instance, inst.isolated {
            o = o.setting("crashes", .number(Double(inst.crashCount))).setting("runnerPid", inst.runnerPid.map { .number(Double($0)) } ?? .null)
        }
        if let inst = instance {
            let p = inst.plugin
            let s = inst.stats.snapshot()
            o = o.setting("plugin", .string(p.name)).setting("version", .string(p.version))
                .setting("description", .string(p.summary))
                .setting("kinds", .array(p.kinds.names.map { .string($0) })).setting("sha256", .string(p.sha256))
                .setting("threads", .string(p.concurrent ? "concurrent" : "serial"))
                .setting("abi", .string("1.\(p.abiMinor)"))
                .setting("calls", .number(Double(s.calls))).setting("errors", .number(Double(s.errors)))
                .setting("meanLatencyMicros", .number(s.calls == 0 ? 0 : (Double(s.totalNanos) / Double(s.calls) / 1000 * 100).rounded() / 100))
            if let k = p.schedulerKind { o = o.setting("schedulerKind", .string(k)) }
            if let d = discoveryStatus { o = o.setting("discovery", d()) }
        }
        return o
    }
}

/// Wakes long-polling event readers after commits.
package final class EventWaiters: @unchecked Sendable {
    let lock = NSLock()
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextID: UInt64 = 0

    package func notifyAll() {
        lock.lock()
        let ws = waiters
        waiters.removeAll()
        lock.unlock()
        for (_, c) in ws { c.resume() }
    }

    /// Suspends until the next commit with events or the timeout, whichever comes first.
    package func wait(timeout: Double) async {
        let id = lock.withLock { () -> UInt64 in nextID += 1; return nextID }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.withLock { waiters[id] = c }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                self.lock.withLock { self.waiters.removeValue(forKey: id) }?.resume()
            }
        }
    }
}

public final class PluginHost: @unchecked Sendable {
    /// The running site configuration (replaced by `apply`).
    public var site: SiteConfig { lock.withLock { currentSite } }
    var currentSite: SiteConfig
    /// Where the site came from (for SIGHUP); nil for the embedded default.
    public var siteFile: String?
    /// Probes that count the live state a plugin holds (refuse disabling it unless forced).
    public var liveStateProbes: [(String) throws -> (count: Int, what: String)] = []
    public let store: any HostStore
    public let executor: Executor
    public let loader: Loader
    public var logger: Logger
    let lock = NSLock()
    private var entries: [PluginEntry] = []
    package let waiters = EventWaiters()
    public let startedAt = wallClock()
    /// Reports an executor stuck in one batch (an in-process plugin call that does not return).
    var watchdog: StallWatchdog?
    public init(site: SiteConfig, logger: Logger = Logger(label: "berthd")) throws {
        self.currentSite = site
        self.logger = logger
        try makeDirectories(site.stateDir, mode: 0o700)
        store = try Self.openStore(site)
        executor = Executor(store: store)
        let log = logger
        loader = Loader(copyDir: "\(site.stateDir)/plugins", warn: { log.warning("\($0)") })
        let w = waiters
        executor.onCommit = { _ in w.notifyAll() }
        executor.start()
        watchdog = StallWatchdog(executor: executor, logger: logger, after: Double(site.callTimeoutMs) / 1000)
    }

    /// The engine the site names: SQLite in the state directory (one host), or etcd shared by every berthd of the site
    /// (cluster mode, docs/cluster.md).
    static func openStore(_ site: SiteConfig) throws -> any HostStore {
        guard site.store.engine == "etcd" else { return try Store(path: "\(site.stateDir)/state.db", synchronous: site.sync) }
        if let why = site.store.unsupported.first { throw BerthError(.failedPrecondition, why) }
        return try EtcdStore(site.store.etcdSettings(site: site.site))
    }

    /// Replaces (or appends) the entry of a plugin name; returns the old one.
    @discardableResult
    func replaceEntry(_ entry: PluginEntry) -> PluginEntry? {
        lock.withLock {
            if let i = entries.firstIndex(where: { $0.spec.name == entry.spec.name }) {
                let old = entries[i]
                entries[i] = entry
                return old
            }
            entries.append(entry)
            return nil
        }
    }

    func removeEntry(_ name: String) -> PluginEntry? {
        lock.withLock {
            guard let i = entries.firstIndex(where: { $0.spec.name == name }) else { return nil }
            return entries.remove(at: i)
        }
    }

    /// Loads every enabled plugin. A plugin that fails is recorded as failed with its reason; the rest go on.
    public func loadPlugins() {
        for spec in site.plugins {
            let entry = load(spec)
            lock.lock()
            entries.append(entry)
            lock.unlock()
        }
    }

    func load(_ spec: PluginSpec) -> PluginEntry {
        guard spec.enabled else { return PluginEntry(spec: spec, state: .disabled) }
        do {
            let p = try loadPlugin(spec)
            let inst = try makeInstance(p, spec)
            logger.info("plugin \"\(spec.name)\" loaded: \(p.name) \(p.version) [\(p.kinds)] sha256 \(p.sha256.prefix(12))")
            try? executor.runSync {
                self.executor.noteEvent(try self.store.appendEvent(type: "plugin.loaded", subject: spec.name, actor: "berthd",
                                                                   data: ["version": .string(p.version), "sha256": .string(p.sha256)]))
            }
            return PluginEntry(spec: spec, state: .loaded, instance: inst)
        } catch let e as LoadError {
            logger.error("\(e.description)")
            return PluginEntry(spec: spec, state: .failed(e.reason))
        } catch {
            logger.error("plugin \"\(spec.name)\" (\(spec.path)): \(error)")
            return PluginEntry(spec: spec, state: .failed("\(error)"))
        }
    }

    /// Loads a plugin file: in this process, or with `"isolation": "process"` in a berth-plugin-runner (Remote.swift),
    /// which returns a descriptor of trampolines that the rest of the host uses like any other.
    func loadPlugin(_ spec: PluginSpec) throws -> LoadedPlugin {
        guard spec.isolation == "process" else { return try loader.load(spec) }
        return try RemotePlugin.load(spec, loader: loader, callTimeoutMs: site.callTimeoutMs, log: pluginLog(spec.name))
    }

    /// Creates an instance of a loaded plugin, its log lines tagged with the instance name.
    /// In process, a call cannot be abandoned safely (a C call has no cancellation point), so `callTimeoutMs` is
    /// enforced only under process isolation, where the runner is killed; in process, the safety nets are the
    /// output size limit and the validation of what the plugin returns.
    func makeInstance(_ p: LoadedPlugin, _ spec: PluginSpec) throws -> PluginInstance {
        // A plugin staged in a runner (a dry run stages every plugin there) is instantiated in it, whatever its isolation.
        if spec.isolation == "process" || p.remote != nil {
            // A plugin staged in process (e.g. by a reload) is loaded again in its runner.
            let remote = p.remote != nil ? p : try RemotePlugin.load(spec, loader: loader, callTimeoutMs: site.callTimeoutMs, log: pluginLog(spec.name))
            return try RemotePlugin.instantiate(remote, spec: spec, loader: loader, executor: executor, log: pluginLog(spec.name))
        }
        return try loader.instantiate(p, spec: spec, executor: executor, log: pluginLog(spec.name))
    }

    func pluginLog(_ name: String) -> (berth_log_level, String) -> Void {
        let log = logger
        return { level, msg in
            let m: Logger.Message = "plugin \(name): \(msg)"
            switch level {
            case BERTH_LOG_DEBUG: log.debug(m)
            case BERTH_LOG_WARN: log.warning(m)
            case BERTH_LOG_ERROR: log.error(m)
            default: log.info(m)
            }
        }
    }

    public var plugins: [PluginEntry] {
        lock.lock()
        defer { lock.unlock() }
        return entries
    }

    public func entry(_ name: String) -> PluginEntry? { plugins.first { $0.spec.name == name } }

    /// The live instance of a plugin of the given kind, or an BerthError that says why not.
    public func instance(_ name: String, kind: PluginKinds) throws -> PluginInstance {
        guard let e = entry(name) else {
            let candidates = plugins.filter { $0.instance?.plugin.kinds.contains(kind) ?? false }.map { $0.spec.name }
            throw BerthError(.notFound, "no \(kind) plugin named \"\(name)\"" + (candidates.isEmpty ? "" : " (have: \(candidates.joined(separator: ", ")))"))
        }
        guard let inst = e.instance else {
            throw BerthError(.unavailable, "plugin \"\(name)\" is \(e.stateName)" + { if case .failed(let r) = e.state { return ": \(r)" }; return "" }())
        }
        guard inst.plugin.kinds.contains(kind) else { throw BerthError(.invalidArgument, "plugin \"\(name)\" is not a \(kind) plugin (it is \(inst.plugin.kinds))") }
        return inst
    }

    // MARK: events

    /// Events after `since`; when there are none, waits up to `wait` seconds for new ones.
    /// Throws `EventsCompacted` when events after `since` (> 0) are no longer kept (events.retain).
    public func events(since: Int64, limit: Int = 1000, wait: Double = 0, type: String? = nil, subject: String? = nil) async throws -> [Event] {
        let deadline = wallClock() + wait
        while true {
            let evs = try await executor.run {
                try self.store.checkRetained(since: since)  // on the executor, like compaction: no gap unseen
                return try self.store.events(since: since, limit: limit, type: type, subject: subject)
            }
            let left = deadline - wallClock()
            if !evs.isEmpty || left <= 0 { return evs }
            await waiters.wait(timeout: min(left, 30))
        }
    }

    /// Appends a host event in its own transaction.
    public func record(type: String, subject: String, actor: String = "berthd", data: JSON = .object([])) async throws {
        try await executor.run { self.executor.noteEvent(try self.store.appendEvent(type: type, subject: subject, actor: actor, data: data)) }
    }

    // MARK: metrics

    public func metricsText() -> String {
        var out = "# HELP berth_plugin_calls_total Calls into each plugin.\n# TYPE berth_plugin_calls_total counter\n"
        let ps = plugins
        var lat = "# HELP berth_plugin_call_seconds Latency of plugin calls.\n# TYPE berth_plugin_call_seconds histogram\n"
        var errs = "# HELP berth_plugin_errors_total Plugin calls that returned an error.\n# TYPE berth_plugin_errors_total counter\n"
        var up = "# HELP berth_plugin_up 1 when the plugin is loaded, 0 when disabled or failed.\n# TYPE berth_plugin_up gauge\n"
        var crashes = "# HELP berth_plugin_crashes_total Deaths of a process-isolated plugin's runner (crashes, kills after a timeout).\n# TYPE berth_plugin_crashes_total counter\n"
        for e in ps {
            let n = e.spec.name
            up += "berth_plugin_up{plugin=\"\(n)\",state=\"\(e.stateName)\"} \(e.instance == nil || e.stateName == "failed" ? 0 : 1)\n"
            guard let inst = e.instance else { continue }
            if inst.isolated { crashes += "berth_plugin_crashes_total{plugin=\"\(n)\"} \(inst.crashCount)\n" }
            let s = inst.stats.snapshot()
            out += "berth_plugin_calls_total{plugin=\"\(n)\"} \(s.calls)\n"
            errs += "berth_plugin_errors_total{plugin=\"\(n)\"} \(s.errors)\n"
            var cum: UInt64 = 0
            for (i, b) in CallStats.bounds.enumerated() {
                cum += s.buckets[i]
                lat += "berth_plugin_call_seconds_bucket{plugin=\"\(n)\",le=\"\(b)\"} \(cum)\n"
            }
            lat += "berth_plugin_call_seconds_bucket{plugin=\"\(n)\",le=\"+Inf\"} \(s.calls)\n"
            lat += "berth_plugin_call_seconds_sum{plugin=\"\(n)\"} \(Double(s.totalNanos) / 1e9)\n"
            lat += "berth_plugin_call_seconds_count{plugin=\"\(n)\"} \(s.calls)\n"
        }
        return out + errs + lat + up + crashes + executor.metricsText
    }

    /// Stops the watchdog, the executor, then destroys every plugin instance. Coordinators whose work runs on the
    /// executor (discovery delivery, event compaction) are stopped by the composition root before this.
    public func shutdown() {
        watchdog?.stop()
        // Stop the executor first: no operation may still be inside a plugin when it is destroyed.
        executor.stop()
        for e in plugins { e.instance?.destroy() }
    }
}

/// Watches the executor: when one batch has run longer than the plugin call deadline (an in-process plugin call
/// that does not return: it cannot be abandoned safely), it logs an error naming the plugin and the operation,
/// once per stall, and logs again when the executor moves on. Process-isolated plugins are killed at their
/// deadline instead, so for them this only fires if the runner itself hangs.
final class StallWatchdog: @unchecked Sendable {
    private let executor: Executor
    private let logger: Logger
    private let after: Double
    private var stopping = false
    private var lock = NSLock()
    private var thread: Thread?

    init(executor: Executor, logger: Logger, after: Double) {
        self.executor = executor
        self.logger = logger
        self.after = max(after, 0.1)
        let t = Thread { [weak self] in self?.loop() }
        t.name = "berth-watchdog"
        thread = t
        t.start()
    }

    func stop() {
        lock.withLock { stopping = true }
    }

    private func loop() {
        var reported: (since: Double, call: String?)? = nil
        let tick = min(0.5, after / 2)
        while !lock.withLock({ stopping }) {
            Thread.sleep(forTimeInterval: tick)
            let b = executor.busy
            if let b, b.seconds >= after {
                if reported == nil || b.seconds < reported!.since {
                    logger.error("state changes are blocked: the store executor has been inside \(b.call.map { "plugin call \($0)" } ?? "one batch") for \(String(format: "%.1f", b.seconds)) s (longer than callTimeoutMs). An in-process plugin call cannot be interrupted; run that plugin with isolation \"process\" to give its calls a deadline")
                }
                reported = (b.seconds, b.call)
            } else if let r = reported, b == nil || b!.seconds < r.since {
                logger.warning("the store executor is moving again (it was blocked for at least \(String(format: "%.1f", r.since)) s in \(r.call ?? "one batch"))")
                reported = nil
            }
        }
    }
}
