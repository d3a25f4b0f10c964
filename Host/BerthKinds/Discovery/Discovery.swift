// Event delivery to discovery plugins.
//
// For every loaded discovery plugin, a delivery task hands the plugin the ordered event log in batches
// (`events` op) and keeps a durable cursor per plugin in the store (table discovery_cursors). The cursor is
// written in the same transaction as the plugin's own key-value writes, so a batch is either applied and
// acknowledged together or not at all: at least once, resumed after a restart. When a plugin (instance) starts,
// when it falls more than `maxLag` events behind, or after repeated failures, it gets a full resync (`resync`
// op) of the current platform state, so it converges even if it missed events.
//
// A slow or failing plugin never blocks the rest of the daemon: each delivery step is one short job on the
// executor (the plugin call, the cursor write); waiting — for new events, or for a backoff after a failure —
// happens off the executor, in the delivery's own task. A plugin whose calls are slow gets smaller batches and a
// pause as long as its call after each batch, so it can hold the executor at most about half of the time.
// Plugins are followed by name: a reload, upgrade or re-enable (a new instance) gets a resync; a plugin enabled at
// run time gets a delivery of its own within a second.
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation
import Logging

/// The platform's instances as the event log tells them: the last `instance.*` event of each instance, without
/// those that are gone. The fallback resync snapshot when no workload coordinator provides one.
func instancesFromEventLog(_ store: any HostStore) throws -> JSON {
    var latest: [String: JSON] = [:]
    var order: [String] = []
    for e in try store.events(since: 0, limit: Int(Int32.max), type: "instance", subject: nil) where e.type.hasPrefix("instance.") {
        guard case .object = e.data else { continue }
        let key = DiscoveryEventKey.of(subject: e.subject, data: e.data)
        if latest[key] == nil { order.append(key) }
        let state = e.data["state"]?.string ?? String(e.type.dropFirst("instance.".count))
        latest[key] = e.data.setting("state", .string(state))
    }
    let live = order.compactMap { latest[$0] }.filter { $0["state"]?.string != "gone" }
    return ["instances": .array(live)]
}

/// The identity of an instance in an event: kind/app/ordinal from the data, else the subject.
enum DiscoveryEventKey {
    static func of(subject: String, data: JSON) -> String {
        if let app = data["app"]?.string {
            let ord = data["ordinal"].map { $0.int.map(String.init) ?? $0.serialized } ?? "-"
            return "\(data["kind"]?.string ?? "")/\(app)/\(ord)"
        }
        return subject
    }
}

// MARK: - the service

/// All discovery deliveries of a host.
/// How delivery paces itself; the defaults are what berthd runs with (tests inject smaller ones).
public struct DiscoverySettings: Sendable {
    /// Events per batch at most (the batch shrinks while a plugin is slow).
    public var maxBatch = 500
    /// A plugin further behind than this gets a resync instead of the events.
    public var maxLag: Int64 = 10_000
    /// After this many failures in a row, the next attempt is a resync.
    public var resyncAfterFailures = 3
    /// Backoff after a failure: first delay and ceiling, in seconds.
    public var backoffBase = 0.1
    public var backoffMax = 10.0
    /// When idle, look at the store this often even without a commit notification (events appended by another
    /// process sharing the store).
    public var idlePoll = 1.0
    public init() {}
}

/// The platform state a resync hands each discovery plugin, a page at a time: up to `limit` instances after the token
/// `after` (nil: from the start), and the token of the next page (nil: the last). Called on the executor thread, each
/// page in a transaction of its own, so a resync does not hold the store while it gathers a large snapshot.
public typealias DiscoverySnapshotPage = (_ after: JSON?, _ limit: Int) throws -> (instances: [JSON], next: JSON?)

/// The discovery kind's coordinator: delivers the event log to every loaded discovery plugin.
public final class DiscoveryService: @unchecked Sendable {
    public let settings: DiscoverySettings
    /// Where resync snapshots come from (the workload coordinator); without one, instances are rebuilt from the event log.
    let snapshotPage: DiscoverySnapshotPage?
    unowned let host: PluginHost
    private let lock = NSLock()
    private var deliveries: [String: DiscoveryDelivery] = [:]
    private var stopped = false
    private var supervisor: Task<Void, Never>?
    /// The newest revision known to exist (commits of this process, and what delivery steps read).
    private var head: Int64 = 0
    /// Commits that appended events, counted on the executor thread: a delivery that found nothing to do waits
    /// only if no such commit happened since it looked.
    private var commitSeq: UInt64 = 0

    /// Requires the plugin host and, for resyncs, the workloads' snapshot. Delivery starts with `start()`.
    public init(host: PluginHost, snapshotPage: DiscoverySnapshotPage?, settings: DiscoverySettings = DiscoverySettings()) {
        self.host = host
        self.snapshotPage = snapshotPage
        self.settings = settings
    }

    var headRev: Int64 { lock.withLock { head } }

    var commits: UInt64 { lock.withLock { commitSeq } }

    func noteCommit(_ rev: Int64) {
        lock.withLock {
            commitSeq &+= 1
            head = max(head, rev)
        }
    }

    /// The head as read from the store on the executor thread (authoritative: an event appended by an operation
    /// that rolled back never existed). Returns true when it is newer than any commit of this process announced.
    func setHead(_ rev: Int64) -> Bool {
        lock.withLock {
            let newer = rev > head
            head = rev
            return newer
        }
    }

    package func start() {
        let ex = host.executor
        // Track the head revision from every commit (on the executor thread, where the hook is read).
        try? ex.runSync {
            let previous = ex.onCommit
            ex.onCommit = { [weak self] rev in
                previous?(rev)
                self?.noteCommit(rev)
            }
            _ = self.setHead(try self.host.store.lastRevision())
        }
        reconcile()
        supervisor = Task.detached { [weak self] in
            while let s = self, !s.isStopped {
                await s.host.waiters.wait(timeout: 1)
                s.reconcile()
            }
        }
    }

    var isStopped: Bool { lock.withLock { stopped } }

    /// Starts a delivery for every loaded discovery plugin that has none.
    func reconcile() {
        guard !isStopped else { return }
        for e in host.plugins {
            guard let inst = e.instance, inst.plugin.kinds.contains(.discovery) else { continue }
            let name = e.spec.name
            let d: DiscoveryDelivery? = lock.withLock {
                if let existing = deliveries[name], !existing.isFinished { return nil }
                let d = DiscoveryDelivery(name: name, service: self)
                deliveries[name] = d
                return d
            }
            if let d {
                e.discoveryStatus = { [weak d] in d?.json ?? .null }
                d.start()
            } else if e.discoveryStatus == nil, let existing = delivery(name) {
                e.discoveryStatus = { [weak existing] in existing?.json ?? .null }
            }
        }
    }

    public func delivery(_ name: String) -> DiscoveryDelivery? { lock.withLock { deliveries[name] } }

    public var all: [DiscoveryDelivery] { lock.withLock { deliveries.values.sorted { $0.name < $1.name } } }

    /// Stops every delivery. When it returns no delivery call is in flight and none will follow.
    public func stop() {
        let ds: [DiscoveryDelivery] = lock.withLock {
            stopped = true
            return Array(deliveries.values)
        }
        supervisor?.cancel()
        for d in ds { d.stop() }
        // A barrier on the executor: a step already running finishes before this returns; later ones see `stopped`.
        try? host.executor.runSync {}
    }

    /// Prometheus text for /metrics.
    public func metricsText() -> String {
        let ds = all
        guard !ds.isEmpty else { return "" }
        var lag = "# HELP berth_discovery_lag_events Events in the log not yet acknowledged by the discovery plugin.\n# TYPE berth_discovery_lag_events gauge\n"
        var fails = "# HELP berth_discovery_failures_total Failed deliveries (events or resync) to the discovery plugin.\n# TYPE berth_discovery_failures_total counter\n"
        var deliv = "# HELP berth_discovery_delivered_events_total Events acknowledged by the discovery plugin.\n# TYPE berth_discovery_delivered_events_total counter\n"
        var res = "# HELP berth_discovery_resyncs_total Full resyncs acknowledged by the discovery plugin.\n# TYPE berth_discovery_resyncs_total counter\n"
        var cur = "# HELP berth_discovery_cursor The last revision the discovery plugin acknowledged.\n# TYPE berth_discovery_cursor gauge\n"
        for d in ds {
            let s = d.status
            let l = "{plugin=\"\(d.name)\"}"
            lag += "berth_discovery_lag_events\(l) \(s.lag)\n"
            fails += "berth_discovery_failures_total\(l) \(s.failures)\n"
            deliv += "berth_discovery_delivered_events_total\(l) \(s.delivered)\n"
            res += "berth_discovery_resyncs_total\(l) \(s.resyncs)\n"
            cur += "berth_discovery_cursor\(l) \(s.cursor)\n"
        }
        return lag + fails + deliv + res + cur
    }
}


// MARK: - one plugin's delivery

public struct DiscoveryStatus: Sendable {
    public var phase = "starting"
    public var cursor: Int64 = 0
    public var head: Int64 = 0
    public var lag: Int64 { max(0, head - cursor) }
    public var delivered: UInt64 = 0
    public var batches: UInt64 = 0
    public var resyncs: UInt64 = 0
    public var lastResyncRev: Int64 = 0
    public var failures: UInt64 = 0
    public var consecutiveFailures: Int = 0
    public var lastError: String?
    public var lastErrorAt: Double?
    public var lastDeliveryAt: Double?
    public var batchSize = 0
}

public final class DiscoveryDelivery: @unchecked Sendable {
    public let name: String
    unowned let service: DiscoveryService
    private let lock = NSLock()
    private var st = DiscoveryStatus()
    private var stopped = false
    private var task: Task<Void, Never>?
    /// True once the loop has ended (the plugin went away); the service may start a new delivery for the name.
    private var finished = false
    var isFinished: Bool { lock.withLock { finished } }

    // Owned by the loop (read by steps on the executor thread while the loop awaits them).
    private var resyncDue = true
    /// Before the start-up resync, deliver the events up to this revision (resume from the durable cursor).
    private var catchUpTo: Int64?
    private var firstStep = true
    private var instanceID: ObjectIdentifier?
    /// The service's commit count when the last step found nothing to deliver.
    private var idleSeq: UInt64 = 0
    /// A snapshot gathered in pages for the next resync, and the revision the paging started at.
    private var prepared: (rev: Int64, instances: [JSON])?
    /// Instances per page of a resync snapshot (one short read transaction each).
    static let snapshotPage = 1000

    init(name: String, service: DiscoveryService) {
        self.name = name
        self.service = service
        st.batchSize = service.settings.maxBatch
    }

    public var status: DiscoveryStatus {
        var s = lock.withLock { st }
        s.head = service.headRev
        return s
    }

    public var json: JSON {
        let s = status
        var o: JSON = ["phase": .string(s.phase), "cursor": .number(Double(s.cursor)), "lastRev": .number(Double(s.head)),
                       "lag": .number(Double(s.lag)), "delivered": .number(Double(s.delivered)), "batches": .number(Double(s.batches)),
                       "resyncs": .number(Double(s.resyncs)), "lastResyncRev": .number(Double(s.lastResyncRev)),
                       "failures": .number(Double(s.failures)), "consecutiveFailures": .number(Double(s.consecutiveFailures)),
                       "batchSize": .number(Double(s.batchSize))]
        if let e = s.lastError { o = o.setting("lastError", .string(e)) }
        if let t = s.lastErrorAt { o = o.setting("lastErrorAt", .number(t)) }
        if let t = s.lastDeliveryAt { o = o.setting("lastDeliveryAt", .number(t)) }
        return o
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    func start() {
        task = Task.detached { [self] in
            await self.loop()
            self.lock.withLock { self.finished = true; self.st.phase = "stopped" }
        }
    }

    func stop() {
        lock.withLock { stopped = true }
        task?.cancel()
    }

    private func update(_ f: (inout DiscoveryStatus) -> Void) { lock.withLock { f(&st) } }

    enum StepResult {
        case idle
        /// A resync is due: gather the snapshot in pages first (each in its own transaction), as of this revision.
        case snapshotNeeded(rev: Int64)
        case delivered(count: Int, to: Int64, nanos: UInt64)
        case resynced(at: Int64, instances: Int, nanos: UInt64, instance: ObjectIdentifier)
        /// The plugin is no longer a loaded discovery plugin (disabled, failed, removed), or the service stopped.
        case gone
    }

    struct StepError: Error {
        let error: Error
        let wasResync: Bool
    }

    private func loop() async {
        let log = service.host.logger
        while !isStopped && !Task.isCancelled {
            let result: StepResult
            do {
                result = try await service.host.executor.run { try self.step() }
            } catch {
                let e = (error as? StepError)
                let message = "\(e?.error ?? error)"
                let n: Int = lock.withLock {
                    st.failures += 1
                    st.consecutiveFailures += 1
                    st.lastError = message
                    st.lastErrorAt = wallClock()
                    st.phase = "backoff"
                    // A plugin that keeps failing on its batch gets smaller ones, down to single events (so one
                    // event it cannot take is isolated, and the resync after repeated failures moves past it).
                    if !(e?.wasResync ?? false) && st.consecutiveFailures >= 2 { st.batchSize = max(1, st.batchSize / 2) }
                    return st.consecutiveFailures
                }
                if n >= service.settings.resyncAfterFailures && !resyncDue {
                    resyncDue = true
                    catchUpTo = nil
                }
                if n == 1 || n & (n - 1) == 0 {
                    log.warning("discovery plugin \"\(name)\": delivery failed (\(n) in a row), retrying with backoff: \(message)")
                }
                let delay = min(service.settings.backoffMax, service.settings.backoffBase * pow(2, Double(min(n - 1, 20))))
                await sleep(seconds: delay * Double.random(in: 0.8...1.2))
                continue
            }
            switch result {
            case .gone:
                return
            case .snapshotNeeded(let rev):
                update { $0.phase = "resyncing" }
                do { prepared = (rev, try await gatherSnapshot()) } catch {
                    log.warning("discovery plugin \"\(name)\": reading the resync snapshot failed: \(error)")
                    await sleep(seconds: service.settings.backoffBase)
                }
            case .idle:
                update { $0.phase = "idle" }
                // Wait for a commit that appends events (or poll now and then); never on the executor.
                if service.commits == idleSeq {
                    await service.host.waiters.wait(timeout: service.settings.idlePoll)
                }
            case .delivered(let count, let to, let nanos):
                update {
                    $0.cursor = to
                    $0.delivered += UInt64(count)
                    $0.batches += 1
                    $0.consecutiveFailures = 0
                    $0.lastDeliveryAt = wallClock()
                    $0.phase = "delivering"
                    $0.batchSize = Self.nextBatch($0.batchSize, nanos, max: service.settings.maxBatch)
                }
                await pace(nanos)
            case .resynced(let at, let count, let nanos, let id):
                resyncDue = false
                catchUpTo = nil
                instanceID = id
                update {
                    $0.cursor = at
                    $0.resyncs += 1
                    $0.lastResyncRev = at
                    $0.consecutiveFailures = 0
                    $0.lastDeliveryAt = wallClock()
                    $0.phase = "delivering"
                }
                log.info("discovery plugin \"\(name)\": resync at rev \(at) with \(count) instance(s)")
                await pace(nanos)
            }
        }
    }

    /// Every page of the snapshot, each read in its own transaction: other changes run between the pages. A change
    /// made while paging may show in the snapshot already; its event comes after the snapshot's revision and is
    /// delivered again after the resync (handlers are idempotent), so the plugin converges all the same.
    private func gatherSnapshot() async throws -> [JSON] {
        let rt = service.host
        guard let page = service.snapshotPage else { return [] }
        var all: [JSON] = []
        var after: JSON? = nil
        repeat {
            let from = after
            let p = try await rt.executor.run { try page(from, Self.snapshotPage) }
            all += p.instances
            after = p.next
        } while after != nil && !isStopped
        return all
    }

    /// Batches shrink while calls take longer than 100 ms and grow back while they take less than 50 ms.
    static func nextBatch(_ current: Int, _ nanos: UInt64, max: Int) -> Int {
        if nanos > 100_000_000 { return Swift.max(1, current / 2) }
        if nanos < 50_000_000 { return min(max, current * 2) }
        return current
    }

    /// After a slow call, pause as long as it took: the executor is free at least half of the time.
    private func pace(_ nanos: UInt64) async {
        if nanos > 20_000_000 { await sleep(seconds: Double(nanos) / 1e9) }
    }

    private func sleep(seconds: Double) async {
        try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
    }

    /// One delivery step, on the executor thread inside its own transaction: a resync or one batch of events,
    /// and the cursor that acknowledges it. Throws (rolling back the plugin's writes and the cursor) on failure.
    /// Where this plugin's cursor is kept: by its name; in cluster mode by node and name, since every berthd runs its
    /// own instance of a discovery plugin (its sidecar on that host), which must see every event itself.
    private func cursorKey(_ host: PluginHost) -> String {
        host.store.engineName == "sqlite" ? name : "\(host.site.nodeName)/\(name)"
    }

    private func step() throws -> StepResult {
        if isStopped || service.isStopped { return .gone }
        let ready = prepared  // a snapshot gathered for this step; never kept for a later one
        prepared = nil
        let rt = service.host
        guard let entry = rt.entry(name), let inst = entry.instance, !inst.destroyed,
              inst.plugin.kinds.contains(.discovery), let ops = inst.discoveryOps else { return .gone }
        let store = rt.store
        let head = try store.lastRevision()
        // Events that no commit of this process announced were appended by another process sharing the store:
        // wake the event watchers too.
        if service.setHead(head) { rt.waiters.notifyAll() }
        idleSeq = service.commits
        let saved = try store.discoveryCursor(cursorKey(rt))
        let cursor = saved?.rev ?? 0
        update { $0.cursor = cursor }
        let id = ObjectIdentifier(inst)
        if firstStep {
            // Start-up: resume the events from the durable cursor up to the current head, then resync.
            firstStep = false
            if saved != nil && cursor < head { catchUpTo = head }
        } else if instanceID != id && !resyncDue {
            // A new instance (reload, upgrade, re-enable) starts from its namespace: resync it.
            resyncDue = true
            catchUpTo = nil
        }
        // Events the plugin has not seen were compacted away (events.retain): only a resync brings it up to date.
        let lost = cursor < store.compactedThrough
        if saved == nil || lost || head - cursor > service.settings.maxLag { catchUpTo = nil; resyncDue = true }

        if resyncDue && !(catchUpTo.map { cursor < $0 } ?? false) {
            update { $0.phase = "resyncing" }
            var at = head
            let snapshot: JSON
            if service.snapshotPage != nil {
                // Paged: gathered by the loop between transactions, as of the revision the paging began at.
                guard let p = ready else { return .snapshotNeeded(rev: head) }
                at = p.rev
                snapshot = ["instances": .array(p.instances)]
            } else {
                snapshot = try instancesFromEventLog(store)
            }
            var req: JSON = ["rev": JSON(Int64(at)), "site": .string(rt.site.site),
                             "instances": snapshot["instances"] ?? .array([])]
            for (k, v) in snapshot.object ?? [] where req[k] == nil { req = req.setting(k, v) }
            let t0 = monotonicNanos()
            do { try ops.resync(req) } catch { throw StepError(error: error, wasResync: true) }
            let dt = monotonicNanos() - t0
            try store.setDiscoveryCursor(cursorKey(rt), rev: at, resyncRev: at)
            return .resynced(at: at, instances: req["instances"]?.array?.count ?? 0, nanos: dt, instance: id)
        }

        let size = lock.withLock { st.batchSize }
        let evs = try store.events(since: cursor, limit: size)
        guard let last = evs.last else { return .idle }
        update { $0.phase = catchUpTo != nil ? "catching-up" : "delivering" }
        let req: JSON = ["events": .array(evs.map { e in
            ["rev": JSON(Int64(e.rev)), "type": .string(e.type), "subject": .string(e.subject), "data": e.data]
        })]
        let t0 = monotonicNanos()
        do { try ops.events(req) } catch { throw StepError(error: error, wasResync: false) }
        let dt = monotonicNanos() - t0
        try store.setDiscoveryCursor(cursorKey(rt), rev: last.rev, resyncRev: saved?.resyncRev ?? 0)
        return .delivered(count: evs.count, to: last.rev, nanos: dt)
    }
}
