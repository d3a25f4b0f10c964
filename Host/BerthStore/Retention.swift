// Event retention: the event log keeps its newest `events.retain` events and, with `events.maxAgeSeconds`, none
// older than that. A background compactor deletes the rest off the request path in bounded steps (each its own
// executor job of at most `EventCompactor.step` rows, so state changes interleave with it) and records how far it
// went, so that a reader asking for events that are gone gets a 410 naming the oldest revision kept.
import BerthWire
import Foundation
import Synchronization

/// Events after `since` were asked for, but the log no longer holds some of them (compacted away).
public struct EventsCompacted: Error, CustomStringConvertible, Sendable {
    public let since: Int64
    /// The oldest revision the log can still answer with (the next one when the log is empty).
    public let oldestRevision: Int64
    public var description: String {
        "events after revision \(since) are no longer kept (events.retain, events.maxAgeSeconds): the log starts at revision \(oldestRevision). "
            + "Read from since=\(oldestRevision - 1) (or since=0, everything kept) and rebuild what you derived from the events you missed"
    }
}

extension Store {
    func loadCompactedThrough() throws -> Int64 {
        let s = try prepare("SELECT value FROM meta WHERE key='events.compactedThrough'")
        guard try s.step() else { return 0 }
        return Int64(s.text(0)) ?? 0
    }

    /// The highest revision compacted away (0 when none).
    public var compactedThrough: Int64 { eventsCompactedThrough.load(ordering: .relaxed) }

    /// Throws `EventsCompacted` when events after `since` (> 0) have been compacted away. since 0 means "from the
    /// oldest event kept" and is always answered.
    public func checkRetained(since: Int64) throws {
        let through = eventsCompactedThrough.load(ordering: .relaxed)
        if since > 0 && since < through { throw EventsCompacted(since: since, oldestRevision: through + 1) }
    }

    /// One bounded compaction step: deletes the oldest events beyond `retain` or older than `maxAge` seconds, at most
    /// `limit` of them. Returns how many it deleted, whether more are due and whether the log is now empty. On the
    /// executor, in a transaction.
    public func compactEvents(retain: Int, maxAge: Double?, limit: Int) throws -> (deleted: Int, more: Bool, empty: Bool) {
        let r = try prepare("SELECT coalesce(min(rev), 0), coalesce(max(rev), 0) FROM events")
        _ = try r.step()
        let oldest = r.int(0), newest = r.int(1)
        r.reset()
        guard oldest > 0 else { return (0, false, true) }
        var target = newest - Int64(retain)  // delete rev <= target
        if let maxAge {
            // The newest too-old event among the next `limit` (revisions and times grow together): bounded, no scan.
            let a = try prepare("SELECT coalesce(max(rev), 0) FROM (SELECT rev, time FROM events ORDER BY rev LIMIT ?1) WHERE time < ?2")
            a.bind(1, Int64(limit))
            a.bind(2, wallClock() - maxAge)
            _ = try a.step()
            target = max(target, a.int(0))
            a.reset()
        }
        guard target >= oldest else { return (0, false, false) }
        let through = min(target, oldest + Int64(limit) - 1)
        let d = try prepare("DELETE FROM events WHERE rev <= ?1")
        d.bind(1, through)
        try d.run()
        let deleted = Int(changes)
        let m = try prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('events.compactedThrough', ?1)")
        let mark = max(through, eventsCompactedThrough.load(ordering: .relaxed))
        m.bind(1, String(mark))
        try m.run()
        // Set here, on the executor, where readers check it too (Runtime.events): no reader sees the rows gone
        // without the mark. (Should the commit fail, readers are told a little early that those events are gone.)
        eventsCompactedThrough.store(mark, ordering: .relaxed)
        return (deleted, through < target || (maxAge != nil && deleted == limit), through >= newest)
    }
}

/// Runs event compaction in the background: one bounded step on the executor when something may be due — after
/// other commits (new events), right away after a step that left more to do, and with an age limit at most every
/// few seconds while the log holds events — looked at once a second. An idle berthd gets no executor jobs from it.
/// Stopped (and joined) before the executor stops.
public final class EventCompactor: @unchecked Sendable {
    /// Rows deleted per step: one step is one executor job of a few milliseconds.
    static let step = 1000
    private let store: any HostStore
    private let executor: Executor
    /// The retention in force (events.retain, events.maxAgeSeconds), read before each step: a reload may change it.
    private let retention: () -> (retain: Int, maxAgeSeconds: Int?)
    private let warn: (String) -> Void
    private let cond = NSCondition()
    private var stopping = false
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)
    /// Events deleted since start (berth_events_compacted_total).
    let compacted = Atomic<UInt64>(0)

    /// Starts compacting in the background; `retention` is read before each step.
    public init(store: any HostStore, executor: Executor, retention: @escaping () -> (retain: Int, maxAgeSeconds: Int?), warn: @escaping (String) -> Void) {
        self.store = store
        self.executor = executor
        self.retention = retention
        self.warn = warn
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "berth-events-compactor"
        thread = t
        t.start()
    }

    public func stop() {
        cond.lock()
        guard !stopping else { cond.unlock(); return }
        stopping = true
        cond.signal()
        cond.unlock()
        done.wait()
    }

    private func loop() {
        var more = false, empty = false
        var seenCommits: UInt64 = .max, lastAgeCheck = 0.0, lastStep = 0.0
        while true {
            cond.lock()
            if !more && !stopping { _ = cond.wait(until: Date().addingTimeInterval(1)) }
            let stop = stopping
            cond.unlock()
            if stop { return }
            let (retain, maxAgeSeconds) = retention()
            let maxAge = maxAgeSeconds.map { Double($0) }
            let ageDue = maxAge.map { !empty && wallClock() - lastAgeCheck >= min(max($0 / 2, 1), 30) } ?? false
            // On a shared engine a step marks events first and deletes them in a later step, after a grace that lets
            // readers on other berthd see the mark (Etcd/EtcdRetention.swift): look again every few seconds.
            let graceDue = store.engineName != "sqlite" && !empty && wallClock() - lastStep >= 2.5
            guard more || ageDue || graceDue || executor.commits != seenCommits else { continue }
            lastAgeCheck = wallClock()
            lastStep = lastAgeCheck
            do {
                let r = try executor.runSync {
                    try self.store.compactEvents(retain: retain, maxAge: maxAge, limit: EventCompactor.step)
                }
                seenCommits = executor.commits  // this step's own commit included (one that raced it is looked at next time)
                empty = r.empty
                if r.deleted > 0 { compacted.add(UInt64(r.deleted), ordering: .relaxed) }
                more = r.more
            } catch {
                warn("event log compaction failed (retried in a second): \(error)")
                more = false
            }
        }
    }

    public var metricsText: String {
        "# HELP berth_events_compacted_total Events deleted from the event log by retention (events.retain, events.maxAgeSeconds) since berthd started.\n# TYPE berth_events_compacted_total counter\nberth_events_compacted_total \(compacted.load(ordering: .relaxed))\n"
            + "# HELP berth_events_oldest_revision The oldest revision the event log can still answer with; older cursors get 410.\n# TYPE berth_events_oldest_revision gauge\nberth_events_oldest_revision \(store.compactedThrough + 1)\n"
    }
}
