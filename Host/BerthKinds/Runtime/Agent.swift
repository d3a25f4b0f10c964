// The node agent (the runtime kind's coordinator): level-triggered, it compares the instances placed on this node
// (PlacedRun) with what the runtime plugin reports (`list`) and converges: starts missing ones (network namespace,
// CNI chain, start), restarts exited ones per their restart policy with exponential backoff, and stops and tears
// down in reverse the ones that should not run. Runs on its own thread, woken by commits, a tick and backoff timers;
// plugin calls and process spawns never run on the store's executor.
import BerthPlugins
import BerthStore
import BerthWire
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class NodeAgent: @unchecked Sendable {
    let host: PluginHost
    let desired: @Sendable () throws -> [PlacedRun]
    let reportRunning: @Sendable (PlacedRun) throws -> Void
    let settings: AgentSite
    let net: NodeNet
    let records: RunRecords
    let lock = NSLock()
    var statuses: [String: RunStatus] = [:]
    /// Instances one operation holds (Exec.swift: exec and convergence never overlap on one instance).
    let busy = Mutex<Set<String>>([])
    private var counters = (starts: 0, exits: 0, restarts: 0, stops: 0, failures: 0)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var kicked = false, stopping = false, running = false, done = false
    /// Monotonic seconds of the next backoff expiry (the loop wakes then rather than at the next tick).
    private var nextWake: Double = .infinity

    /// Requires the plugin host; `desired` reads the instances placed on this node that have a run spec (a short
    /// transaction), `reportRunning` moves a placed instance to running.
    public init(host: PluginHost, desired: @escaping @Sendable () throws -> [PlacedRun], reportRunning: @escaping @Sendable (PlacedRun) throws -> Void) {
        self.host = host
        self.desired = desired
        self.reportRunning = reportRunning
        let site = host.site
        settings = site.agent
        let dir = site.agent.stateDir ?? "\(site.stateDir)/agent"
        let exeDir = ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]) as NSString
        net = NodeNet(bridge: site.agent.bridge, cniPath: site.agent.cniPath ?? "/usr/lib/cni:/opt/cni/bin:\(exeDir.deletingLastPathComponent)",
                      socket: site.socketPath, node: site.nodeName, confDir: "\(dir)/cni")
        records = RunRecords(dir: "\(dir)/instances")
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    // MARK: the loop

    /// Starts the loop (after the plugins are loaded); every commit that appends events wakes it.
    public func start() {
        pthread_mutex_lock(&mutex)
        guard !running else { pthread_mutex_unlock(&mutex); return }
        running = true
        kicked = true  // converge at once: reattach before the first tick
        pthread_mutex_unlock(&mutex)
        let ex = host.executor
        try? ex.runSync {
            let previous = ex.onCommit
            ex.onCommit = { [weak self] rev in
                previous?(rev)
                self?.kick()
            }
        }
        Detached.run { [self] in loop() }
    }

    /// Stops the loop after its current convergence. Instances keep running (the next berthd reattaches).
    public func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&cond)
        while running && !done { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }

    public func kick() {
        pthread_mutex_lock(&mutex)
        kicked = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            if !kicked && !stopping {
                let wait = max(0.01, min(settings.tickSeconds, nextWake - Self.now()))
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                let ns = Int(ts.tv_nsec) + Int((wait - floor(wait)) * 1e9)
                ts.tv_sec += Int(wait) + ns / 1_000_000_000
                ts.tv_nsec = ns % 1_000_000_000
                pthread_cond_timedwait(&cond, &mutex, &ts)
            }
            kicked = false
            if stopping {
                done = true
                pthread_cond_broadcast(&cond)
                pthread_mutex_unlock(&mutex)
                return
            }
            pthread_mutex_unlock(&mutex)
            converge()
        }
    }

    static func now() -> Double { Double(monotonicNanos()) / 1e9 }

    /// The runtime plugin: the site's `agent.runtime`, else the only loaded one.
    func runtime() -> RuntimePlugin? {
        if let name = settings.runtime { return (try? host.instance(name, kind: .runtime)).flatMap(RuntimePlugin.init) }
        let all = host.plugins.compactMap { $0.instance }.filter { $0.plugin.kinds.contains(.runtime) }
        return all.count == 1 ? RuntimePlugin(all[0]) : nil
    }

    /// One convergence: desired against actual. Nothing is stopped when either side cannot be read.
    public func converge() {
        guard let rt = runtime() else { return }
        let want: [PlacedRun]
        let actual: [String: RuntimeState]
        do {
            want = try desired()
            actual = Dictionary(try rt.list().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        } catch {
            host.logger.warning("node agent: cannot read desired or actual instances: \(error)")
            return
        }
        nextWake = .infinity
        let wanted = Set(want.map(\.containerID))
        // Retire first: a re-placed ordinal's new incarnation may take over the old one's address.
        for (id, a) in actual.sorted(by: { $0.key < $1.key }) where !wanted.contains(id) { claimed(id) { retire(id, a, rt) } }
        for r in want { claimed(r.containerID) { ensure(r, actual[r.containerID], rt) } }
        // Namespaces this agent made (it has their record) for an instance the runtime no longer has (a crash between
        // teardown steps, a start that failed); another berthd's namespaces on the same host are left alone.
        for id in NodeNet.namespaces() where !wanted.contains(id) && actual[id] == nil && records.has(id) { claimed(id) { retire(id, nil, rt) } }
    }

    /// `body` while holding the instance; an instance an exec holds is skipped and looked at again shortly.
    private func claimed(_ id: String, _ body: () -> Void) {
        guard claim(id) else { wake(at: Self.now() + 0.5); return }
        defer { release(id) }
        body()
    }

    // MARK: status for operators

    /// The agent's view of one instance by container id (nil when it does not run here).
    public func status(containerID: String) -> JSON? { lock.withLock { statuses[containerID]?.json } }

    public func metricsText() -> String {
        let c = lock.withLock { counters }
        func row(_ n: String, _ help: String, _ v: Int) -> String { "# HELP \(n) \(help)\n# TYPE \(n) counter\n\(n) \(v)\n" }
        return row("berth_instance_starts_total", "Instances the node agent started (first starts and restarts).", c.starts)
            + row("berth_instance_exits_total", "Instance exits the node agent observed.", c.exits)
            + row("berth_instance_restarts_total", "Restarts by restart policy.", c.restarts)
            + row("berth_instance_stops_total", "Instances stopped and torn down because they should no longer run here.", c.stops)
            + row("berth_instance_start_failures_total", "Start attempts that failed (network or runtime).", c.failures)
    }

    func count(_ f: (inout (starts: Int, exits: Int, restarts: Int, stops: Int, failures: Int)) -> Void) { lock.withLock { f(&counters) } }

    func event(_ type: String, _ subject: String, _ data: JSON) {
        let ex = host.executor
        do { try ex.runSync { ex.noteEvent(try ex.store.appendEvent(type: type, subject: subject, actor: "agent", data: data)) } } catch {
            host.logger.warning("node agent: recording \(type) of \(subject): \(error)")
        }
    }

    func load(_ id: String) -> RunStatus {
        if let s = lock.withLock({ statuses[id] }) { return s }
        return records.read(id) ?? RunStatus()
    }

    func save(_ id: String, _ s: RunStatus, persist: Bool) {
        lock.withLock { statuses[id] = s }
        if persist { records.write(id, s) }
    }

    func backoff(_ streak: Int) -> Double { min(settings.maxBackoffSeconds, settings.backoffSeconds * pow(2, Double(min(streak, 30)))) }

    func wake(at t: Double) { nextWake = min(nextWake, t) }
}
