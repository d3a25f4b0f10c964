// Event retention on the etcd engine, as Retention.swift does it for SQLite: bounded compaction steps that delete the
// oldest events (by key range per writer) and a compaction mark shared by every berthd of the site; and the
// compaction of etcd's own MVCC history.
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What an EtcdStore knows of the site's compaction mark (R + "meta/events.compactedThrough"): the value last read and
/// when, read through a connection of its own so that any thread may ask (an HTTP handler checks a cursor off the
/// executor).
final class EtcdRetentionState: @unchecked Sendable {
    /// How long a mark read is trusted before it is read again (a mark set by this store is known at once).
    static let ttlSeconds = 1.0
    private let lock = NSLock()
    private var mark: Int64 = 0
    private var readAt = -Double.infinity
    private var client: EtcdClient?

    /// The mark, read again from etcd when the last read is older than the TTL (or `fresh`).
    func current(_ settings: EtcdSettings, _ key: [UInt8], fresh: Bool = false) throws -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        let now = Self.monotonic()
        if !fresh && now - readAt < Self.ttlSeconds { return mark }
        if client == nil { client = try EtcdClient(settings) }
        let kv = try client!.range(key, [], revision: 0).kvs.first
        mark = max(mark, kv.map { EtcdRetentionState.parse($0.value) } ?? 0)
        readAt = now  // taken before the read: trusted for no longer than the TTL after it
        return mark
    }

    /// The mark as last known, without a read.
    var known: Int64 { lock.lock(); defer { lock.unlock() }; return mark }

    /// Raises the known mark (this store compacted).
    func raise(_ m: Int64) { lock.lock(); mark = max(mark, m); lock.unlock() }

    static func parse(_ b: [UInt8]) -> Int64 { Int64(String(decoding: b, as: UTF8.self)) ?? 0 }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// One stored event as compaction sees it: its revision, time and where its key is.
struct EtcdStoredEvent {
    var rev: Int64
    var time: Double
    var createRevision: Int64
    /// evPrefix + writer + "/": the range of its writer's events.
    var writer: [UInt8]
    var seq: Int64
}

extension EtcdStore {
    /// The key of the site's compaction mark: the highest event revision compacted away, shared by every berthd.
    var compactionMarkKey: [UInt8] { root + Array("meta/events.compactedThrough".utf8) }

    /// The highest event revision compacted away by any berthd of the site (0 when none): events up to it are gone or
    /// go within seconds (`compactEvents`). Read at most about once a second (`EtcdRetentionState.ttlSeconds`); the
    /// last value known when etcd cannot be reached.
    public var compactedThrough: Int64 {
        (try? retention.current(settings, compactionMarkKey)) ?? retention.known
    }

    /// Throws `EventsCompacted` when events after `since` (> 0) have been compacted away, by any berthd of the site.
    /// since 0 means "from the oldest event kept" and is always answered. A cursor below the known mark is answered
    /// without a round trip.
    public func checkRetained(since: Int64) throws {
        guard since > 0 else { return }
        var through = retention.known
        if since >= through { through = try retention.current(settings, compactionMarkKey) }
        if since < through { throw EventsCompacted(since: since, oldestRevision: through + 1) }
    }

    /// The key of the mark's raises whose events are not all deleted yet, oldest first:
    /// {"raises": [[through, wall-clock seconds, events left], …]}.
    var compactionStepKey: [UInt8] { root + Array("meta/events.compaction".utf8) }

    /// How long events stay after the raise of the mark that covers them: longer than a reader trusts the mark it read
    /// (`EtcdRetentionState.ttlSeconds`), plus up to half a second of clock difference between hosts and the time
    /// from a reader's check to its read of the events, and commit latency.
    static let compactionGraceSeconds = 2.0
    /// Raises of the mark awaiting their deletion at most (more: deletion is stuck; the mark waits).
    static let pendingRaises = 16

    /// One raise of the mark: the events up to `through`, `left` of them not deleted yet, covered since `at`.
    struct MarkRaise { var through: Int64; var at: Double; var left: Int }

    /// One bounded compaction step, in the open transaction. Returns how many events it deleted, whether more can be
    /// deleted right away, and whether the log is now empty.
    ///
    /// The mark goes first, so that no reader on any berthd sees a gap without it (a reader trusts the mark it read
    /// for up to a second): a step deletes, at most `limit`, the oldest events covered by raises of the mark at least
    /// `compactionGraceSeconds` old, then raises the mark over at most `limit` more of the oldest events beyond
    /// `retain` or older than `maxAge` seconds, for a later step to delete. A writer's events are deleted as one key
    /// range (its keys sort by sequence number, in revision order), one etcd operation per writer; a step stops early
    /// rather than exceed --max-txn-ops. The mark and its raises are in the read set: two berthds compacting at once
    /// conflict, one commit is ABORTED and run again, and the mark only increases.
    public func compactEvents(retain: Int, maxAge: Double?, limit: Int) throws -> (deleted: Int, more: Bool, empty: Bool) {
        guard let t = txn else { throw BerthError(.failedPrecondition, "compactEvents: no transaction is open on this etcd store") }
        guard retain >= 0, limit > 0 else {
            throw BerthError(.invalidArgument, "compactEvents: retain (\(retain)) must be >= 0 and limit (\(limit)) > 0")
        }
        let total = Int(try range(t, evPrefix, Keys.prefixEnd(evPrefix), countOnly: true).count)
        guard total > 0 else { return (0, false, true) }
        let mark = try get(compactionMarkKey).map(EtcdRetentionState.parse) ?? 0
        let stored = try get(compactionStepKey)
        var raises = Self.raises(stored)
        retention.raise(mark)
        let now = wallClock()
        // Deletion: the oldest events, as far as raises past their grace cover them (a mark without raises: all of it).
        let graced = raises.isEmpty ? mark : raises.filter { now - $0.at >= Self.compactionGraceSeconds }.map(\.through).max() ?? 0
        let cutoff = maxAge.map { now - $0 }
        let oldest = try duePage(t, after: 0, want: max(total - retain, raises.reduce(0) { $0 + $1.left }), limit: limit, cutoff: cutoff)
        guard !oldest.isEmpty else { return (0, false, false) }
        let covered = oldest.prefix { $0.rev <= mark }
        let due = covered.prefix { $0.rev <= graced }
        let deleted = deleteOldest(t, due.prefix(limit))
        var left = deleted
        while left > 0, !raises.isEmpty {
            let n = min(left, raises[0].left)
            raises[0].left -= n
            left -= n
            if raises[0].left <= 0 { raises.removeFirst() }
        }
        // A raise whose events are all gone is done (also when its count was off: the log itself says so).
        if deleted < oldest.count { let first = oldest[deleted].rev; raises.removeAll { $0.through < first } }
        // Raising: the events after the mark. How many are covered still is known from the page when it holds every
        // covered event, else from the raises' counts.
        let stillCovered = covered.count < oldest.count ? covered.count - deleted : raises.isEmpty ? -1 : raises.reduce(0) { $0 + $1.left }
        if stillCovered >= 0 && raises.count < Self.pendingRaises {
            let byCount = total - deleted - stillCovered - retain
            let next = covered.count < oldest.count ? Array(oldest.dropFirst(covered.count))
                : try duePage(t, after: mark, want: byCount, limit: limit, cutoff: cutoff)
            var byAge = 0
            if let cutoff { byAge = (next.lastIndex { $0.time < cutoff } ?? -1) + 1 }  // times grow with revisions
            let n = min(max(byCount, byAge), next.count, limit)
            if n > 0 {
                let through = next[n - 1].rev
                raises.append(MarkRaise(through: through, at: now, left: n))
                t.write(compactionMarkKey, Array(String(through).utf8))
                // Known here at once: should the commit fail, this store's readers are told a little early.
                retention.raise(through)
            }
        }
        let list: [JSON] = raises.map { [.number(Double($0.through)), .number($0.at), .number(Double($0.left))] }
        let value = (["raises": .array(list)] as JSON).bytes
        if value != stored ?? [] && !(stored == nil && raises.isEmpty) { t.write(compactionStepKey, value) }
        let more = deleted < due.count || (deleted > 0 && due.count == oldest.count && oldest.count < total)
        return (deleted, more, deleted == total)
    }

    /// The oldest events after `after` that may be due: `want` of them (a step after each commit reads a few, not
    /// `limit`), or with an age limit (`cutoff`, a wall-clock time) at least 16 and all `limit` when those are all
    /// older than it.
    func duePage(_ t: EtcdTxn, after: Int64, want: Int, limit: Int, cutoff: Double?) throws -> [EtcdStoredEvent] {
        let size = min(limit, max(want, cutoff == nil ? 0 : 16))
        guard size > 0 else { return [] }
        let page = try oldestEvents(t, after: after, limit: size)
        if let cutoff, size < limit, page.count >= size, let last = page.last, last.time < cutoff {
            return try oldestEvents(t, after: after, limit: limit)
        }
        return page
    }

    static func raises(_ value: [UInt8]?) -> [MarkRaise] {
        guard let v = value, let j = try? JSON.parse(v) else { return [] }
        return (j["raises"]?.array ?? []).compactMap { e in
            guard let th = e[0]?.double, let at = e[1]?.double, let n = e[2]?.double else { return nil }
            return MarkRaise(through: Int64(th), at: at, left: Int(n))
        }
    }

    /// Deletes `events` (the oldest of the log, in order) as one key range per writer, as many as the Txn's operation
    /// budget allows; returns how many.
    func deleteOldest(_ t: EtcdTxn, _ events: ArraySlice<EtcdStoredEvent>) -> Int {
        let budget = settings.maxTxnOps - t.operations().count - 2  // room for the mark and its raises
        var upTo: [[UInt8]: Int64] = [:], n = 0
        for e in events {
            if upTo[e.writer] == nil && upTo.count >= budget { break }
            upTo[e.writer] = max(upTo[e.writer] ?? 0, e.seq)
            n += 1
        }
        for (w, seq) in upTo { t.deleteRange(w, w + Self.hex16(seq + 1)) }
        return n
    }

    /// The oldest `limit` events or more after revision `after`, in revision order, ending on a whole Txn's events:
    /// etcd orders the events of one Txn (one create revision) arbitrarily, so when the page may end inside its last
    /// Txn, that Txn is read whole.
    func oldestEvents(_ t: EtcdTxn, after: Int64, limit: Int) throws -> [EtcdStoredEvent] {
        // From the Txn of `after`: up to its index + 1 of that Txn's events are at or before it.
        let hi = Keys.prefixEnd(evPrefix), from = after / Self.eventsPerTxn, skip = after > 0 ? Int(after % Self.eventsPerTxn) + 1 : 0
        let r = try client.rangeByCreation(evPrefix, hi, revision: t.snapshot, minCreate: from, limit: limit + skip)
        var kvs = r.kvs
        if r.more, let cut = kvs.last?.createRevision {
            kvs.removeAll { $0.createRevision == cut }
            let group = try client.rangeByCreation(evPrefix, hi, revision: t.snapshot, minCreate: cut, limit: Int(Self.eventsPerTxn) + 1)
            kvs += group.kvs.filter { $0.createRevision == cut }
        }
        return kvs.compactMap(storedEvent).filter { $0.rev > after }.sorted { $0.rev < $1.rev }
    }

    /// An event key and value as compaction needs them (nil: not an event key of this layout).
    func storedEvent(_ kv: EtcdKV) -> EtcdStoredEvent? {
        guard kv.key.count > evPrefix.count + 17, kv.key[kv.key.count - 17] == UInt8(ascii: "/"),
              let seq = Int64(String(decoding: kv.key.suffix(16), as: UTF8.self), radix: 16),
              let j = try? JSON.parse(kv.value), let i = j["i"]?.int, i >= 0, Int64(i) < Self.eventsPerTxn else { return nil }
        return EtcdStoredEvent(rev: kv.createRevision * Self.eventsPerTxn + Int64(i), time: j["time"]?.double ?? 0,
                               createRevision: kv.createRevision, writer: Array(kv.key.dropLast(16)), seq: seq)
    }

    /// Compacts etcd's own MVCC history up to `keepRevisions` revisions before the current one (nothing when that is
    /// not positive): every key's older versions below it are dropped, and etcd's database stops growing once
    /// defragmented. A transaction or watch still reading below it gets "required revision has been compacted" (the
    /// engine runs the transaction again; EtcdWatch restarts and tells its consumer). The operator's alternative is
    /// etcd's own `--auto-compaction-mode revision --auto-compaction-retention N` on every member.
    public func compactHistory(keepRevisions: Int64) throws {
        guard keepRevisions >= 0 else {
            throw BerthError(.invalidArgument, "compactHistory: keepRevisions (\(keepRevisions)) must be >= 0")
        }
        try compactHistory(through: try etcdRevision() - keepRevisions)
    }

    /// Compacts etcd's MVCC history up to revision `at` (nothing when it is not positive, or already compacted).
    public func compactHistory(through at: Int64) throws { try Self.compactHistory(client, through: at) }

    /// The same on a connection of its own (another thread than the executor's: a connection serves one thread).
    public static func compactHistory(_ settings: EtcdSettings, through at: Int64) throws {
        try compactHistory(try EtcdClient(settings), through: at)
    }

    /// etcd's store revision now, on a connection of its own.
    public static func etcdRevision(_ settings: EtcdSettings) throws -> Int64 {
        let root = Array((settings.prefix ?? "/berth/\(settings.site)/").utf8)
        return try EtcdClient(settings).range(root, [], revision: 0, countOnly: true).revision
    }

    static func compactHistory(_ client: EtcdClient, through at: Int64) throws {
        guard at > 0 else { return }
        do {
            _ = try client.call("/v3/kv/compaction", .object([("revision", .string(String(at)))]), idempotent: true)
        } catch let e as BerthError where e.message.contains("required revision has been compacted") {
            // Another berthd (or etcd's auto-compaction) already compacted past it.
        }
    }
}
