// Cluster mode (store.engine "etcd"): this berthd as a member of its site. It keeps a lease, registers its node
// under it and joins the node to the workload tables; it campaigns for the scheduling leadership (the leader runs the
// scheduler, its passes fenced on its term) and, while it leads, marks down the members whose lease expired.
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthWire
import Foundation
import Logging

public final class ClusterMember: @unchecked Sendable {
    let store: EtcdStore
    let workloads: WorkloadService
    let executor: Executor
    /// etcd's watch of the site's events: what other berthds commit wakes this one's event readers, node agent,
    /// discovery delivery and scheduler as its own commits do.
    private var watch: EtcdWatch?
    private var notifyQueued = false
    let node: String
    let stateDir: String
    let ttl: Int
    /// store.historySeconds (0: off); the leader's notes of etcd's revision (loop thread only); and the revision it
    /// last compacted etcd's history through (under `lock`; shown by `berth status`).
    let historySeconds: Int
    private var historyMarks: [(time: Double, revision: Int64)] = []
    private var compactedThrough: Int64?
    let info: JSON
    let logger: Logger
    /// Waked by the watch of other berthds' changes (the agent, event waiters).
    private let lock = NSCondition()
    private var stopping = false
    private let done = DispatchSemaphore(value: 0)
    private var started = false
    // Loop state (the loop's thread only, read for status under `lock`).
    private var lease: EtcdLease?
    private var term: Leadership?
    private var leaderNode: String?
    private var lastKeepAlive = 0.0
    /// Whether this lease's node is in the workload tables (joined, up); retried each round until it is.
    private var joined = false
    private var lastError: String?

    /// nil on one host (SQLite).
    public init?(host: PluginHost, workloads: WorkloadService) {
        guard let etcd = host.store as? EtcdStore else { return nil }
        store = etcd
        self.workloads = workloads
        executor = host.executor
        node = host.site.nodeName
        stateDir = host.site.stateDir
        ttl = host.site.store.leaseSeconds
        historySeconds = host.site.store.historySeconds
        logger = host.logger
        info = ["node": .string(node), "version": .string(BerthVersion.current), "pid": .int(Int64(getpid())), "started": .number(wallClock()),
                "socket": .string(host.site.socketPath), "listen": host.site.listen.map { .string($0) } ?? .null]
        workloads.setLeading(false)
    }

    /// Joins the site and starts the member's loop (after the plugins are loaded).
    public func start() {
        let w = EtcdWatch(store.settings, onEvents: { [weak self] in self?.changed($0) })
        watch = w
        w.start()
        started = true
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "berth-cluster"
        t.start()
    }

    /// Steps down: resigns the leadership (another berthd takes the scheduling over now, not after the TTL). The lease
    /// is left to expire: a berthd restarted within the TTL (an upgrade) registers again before its node is missed,
    /// and its instances stay where they are; one that does not come back is down after the TTL.
    public func stop() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
        if started { done.wait() }
        watch?.stop()
        workloads.setLeading(false)
        store.fence = nil
        if let lease, let term { try? lease.resign(term) }
    }

    /// What `berth status` shows of the cluster: this node, the leader, the live and known members, the etcd members.
    public func status() -> JSON {
        lock.lock()
        let leader = leaderNode, leads = term != nil, err = lastError, leaseID = lease?.id, compacted = compactedThrough
        lock.unlock()
        var live: [(node: String, info: JSON)] = []
        var members: [String] = []
        var etcd: JSON = .null
        if let m = try? EtcdLease.membership(store.settings) { (members, live) = m }
        // The first endpoint that answers (clusterInfo alone fails when any endpoint listed does not).
        let answer = store.settings.endpoints.lazy.compactMap { e -> EtcdClusterInfo? in
            var one = self.store.settings
            one.endpoints = [e]
            return try? EtcdStore.clusterInfo(one).first
        }.first
        if let c = answer {
            etcd = ["endpoint": .string(c.endpoint), "version": .string(c.version),
                    "members": .array(c.members.map { ["name": .string($0.name), "clientURLs": .array($0.clientURLs.map { .string($0) })] })]
        }
        let liveNames = Set(live.map(\.node))
        var j: JSON = ["node": .string(node), "leader": leader.map { .string($0) } ?? .null, "leading": .bool(leads),
                       "watch": ["on": watch.flatMap { $0.endpoint }.map { .string($0) } ?? .null, "over": watch.flatMap { $0.transport }.map { .string($0) } ?? .null, "reconnects": .int(Int64(watch?.reconnects ?? 0)),
                                 "lastFailure": watch.flatMap { $0.lastFailure }.map { .string($0) } ?? .null],
                       "leaseSeconds": .int(Int64(ttl)), "lease": leaseID.map { .string(String($0)) } ?? .null,
                       "history": ["seconds": .int(Int64(historySeconds)), "compactedThrough": compacted.map { .int($0) } ?? .null],
                       "members": .array(members.map { m in ["node": .string(m), "live": .bool(liveNames.contains(m))] }),
                       "etcd": etcd]
        if let err { j = j.setting("lastError", .string(err)) }
        return j
    }

    /// Events were committed (by any berthd): the newest revision is announced to everything that follows commits
    /// (Executor.onCommit), and the scheduler looks again unless every event was an address taken (which can make no
    /// instance placeable; the scheduler's tick covers the rest). When the watch cannot say which events (it was
    /// created or reconnected), one job on the executor reads the newest revision; changes that come while it is
    /// queued ride along with it.
    private func changed(_ events: [EtcdWatchedEvent]?) {
        if let events {
            guard let rev = events.map(\.revision).max() else { return }
            executor.onCommit?(rev)
            if events.contains(where: { $0.type != "network.attached" }) { workloads.wake() }
            return
        }
        guard lock.withLock({ () -> Bool in
            if notifyQueued { return false }
            notifyQueued = true
            return true
        }) else { return }
        let (ex, st, w) = (executor, store, workloads)
        Task.detached { [weak self] in
            try? await ex.run {
                self?.lock.withLock { self?.notifyQueued = false }
                let rev = try st.lastRevision()
                ex.onCommit?(rev)
            }
            w.wake()
        }
    }

    // MARK: the loop

    private func loop() {
        while true {
            step()
            lock.lock()
            if !stopping { _ = lock.wait(until: Date().addingTimeInterval(min(0.25, Double(ttl) / 8))) }
            let stop = stopping
            lock.unlock()
            if stop { return }
        }
    }

    private func note(_ error: String?) { lock.withLock { lastError = error } }

    private func step() {
        do {
            try keepLease()
            try join()
            try campaign()
            if term != nil {
                try markLostMembers()
                try compactHistory()
            }
            note(nil)
        } catch {
            note("\(error)")
            logger.warning("cluster: \(error)")
        }
    }

    /// Grants and registers a lease when there is none; renews it every TTL/3. A lease found expired (etcd was out of
    /// reach for longer than the TTL) ends the term at once: another berthd may lead by now.
    private func keepLease() throws {
        let now = wallClock()
        if let l = lease {
            guard now - lastKeepAlive >= Double(ttl) / 3 else { return }
            do {
                try l.keepAlive()
                lastKeepAlive = now
            } catch let e as BerthError where e.status == .notFound {
                logger.warning("cluster: lease \(l.id) of node \(node) expired; joining again")
                stepDown()
                lock.withLock { lease = nil }
            } catch {
                if now - lastKeepAlive > Double(ttl) { stepDown() }  // the lease has lapsed by now: lead no more
                throw error
            }
            return
        }
        let l = try EtcdLease(store.settings, ttlSeconds: ttl)
        try l.register(node: node, info: info)
        try l.recordMember(node: node)
        lock.withLock { lease = l }
        lastKeepAlive = now
        joined = false
    }

    /// Puts this node in the workload tables (or up again), once per lease; a failure is retried next round.
    private func join() throws {
        guard !joined, let l = lease else { return }
        let what = try workloads.joinNode(node, capacity: Self.hostCapacity(stateDir: stateDir))
        joined = true
        logger.info("cluster: joined site as node \(node) (lease \(l.id), TTL \(l.ttlSeconds) s): \(what)")
    }

    private func campaign() throws {
        guard let l = lease else { return }
        if let t = try l.campaign("scheduler", value: node) {
            if term != t {
                store.fence = t
                lock.withLock { term = t; leaderNode = node }
                workloads.setLeading(true)
                logger.info("cluster: node \(node) is the scheduling leader (term created at etcd revision \(t.createRevision))")
            }
            return
        }
        if term != nil { stepDown() }
        let leader = try l.leader("scheduler")?.value
        lock.withLock { leaderNode = leader }
    }

    /// The leader's duty when `store.historySeconds` is set: every that many seconds it notes etcd's revision, and
    /// compacts etcd's history to the revision it noted that many seconds before (the way Kubernetes' API server
    /// does), so every version of the last `historySeconds` stays for watches and transactions to read.
    private func compactHistory() throws {
        guard historySeconds > 0 else { return }
        let now = Double(monotonicNanos()) / 1e9
        if let last = historyMarks.last, now - last.time < Double(historySeconds) { return }
        // On connections of its own: the store's client is the executor thread's.
        historyMarks.append((now, try EtcdStore.etcdRevision(store.settings)))
        guard let i = historyMarks.lastIndex(where: { now - $0.time >= Double(historySeconds) }) else { return }
        let through = historyMarks[i].revision
        historyMarks.removeFirst(i + 1)
        try EtcdStore.compactHistory(store.settings, through: through)
        lock.withLock { compactedThrough = through }
        logger.info("cluster: compacted etcd's history through revision \(through) (store.historySeconds \(historySeconds))")
    }

    private func stepDown() {
        historyMarks = []
        lock.withLock { compactedThrough = nil }
        guard term != nil else { return }
        workloads.setLeading(false)
        store.fence = nil
        lock.withLock { term = nil; leaderNode = nil }
        logger.warning("cluster: node \(node) is no longer the scheduling leader")
    }

    /// The leader's duty: members whose registration went with their lease are down; those whose node was removed
    /// are members no more.
    private func markLostMembers() throws {
        guard let l = lease else { return }
        let live = Set(try l.liveNodes().map(\.node))
        let lost = try l.members().filter { !live.contains($0) }
        guard !lost.isEmpty else { return }
        let (down, removed) = try workloads.markLost(lost)
        if !down.isEmpty { logger.warning("cluster: node(s) \(down.joined(separator: ", ")) lost (lease expired): set down, their instances rescheduled") }
        for n in removed {
            try l.forgetMember(node: n)
            logger.info("cluster: node \(n) was removed (berth nodes rm) and its berthd is gone: no longer a member of the site")
        }
    }

    /// This host's capacity for its node: its processors, memory, and the disk of the state directory.
    static func hostCapacity(stateDir: String) -> JSON {
        var disk: Int64 = 0
        var fs = statvfs()
        if statvfs(stateDir, &fs) == 0 { disk = Int64(fs.f_blocks) * Int64(fs.f_frsize) }
        return ["cpu": .int(Int64(ProcessInfo.processInfo.activeProcessorCount) * 1000),
                "memory": .int(Int64(ProcessInfo.processInfo.physicalMemory)), "disk": .int(disk)]
    }
}
