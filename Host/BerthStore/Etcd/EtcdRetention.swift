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

    /// The highest event revision compacted away by any berthd of the site (0 when none); read at most about once a
    /// second (`EtcdRetentionState.ttlSeconds`), the last value known when etcd cannot be reached.
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

    /// One bounded compaction step, in the open transaction: deletes the oldest events beyond `retain` or older than
    /// `maxAge` seconds, at most `limit` of them, and raises the shared mark. Returns how many it deleted, whether more
    /// are due and whether the log is now empty.
    ///
    /// A writer's events are deleted as one key range (its keys sort by sequence number, in revision order), so a step
    /// costs one etcd operation per writer it touches; it stops early rather than exceed --max-txn-ops. The step reads
    /// the mark in the transaction's read set: two berthds compacting at once conflict on it, one commit is ABORTED
    /// and run again (it then finds the events gone), and the mark only increases.
    public func compactEvents(retain: Int, maxAge: Double?, limit: Int) throws -> (deleted: Int, more: Bool, empty: Bool) {
        guard let t = txn else { throw BerthError(.failedPrecondition, "compactEvents: no transaction is open on this etcd store") }
        guard retain >= 0, limit > 0 else {
            throw BerthError(.invalidArgument, "compactEvents: retain (\(retain)) must be >= 0 and limit (\(limit)) > 0")
        }
        let hi = Keys.prefixEnd(evPrefix)
        let total = Int(try range(t, evPrefix, hi, countOnly: true).count)
        guard total > 0 else { return (0, false, true) }
        let page = try oldestEvents(t, limit: min(limit, total))
        let byRetain = max(0, total - retain)
        var byAge = 0
        if let maxAge {
            let cutoff = wallClock() - maxAge
            byAge = (page.lastIndex { $0.time < cutoff } ?? -1) + 1  // times grow with revisions: the newest too-old one
        }
        let due = max(byRetain, byAge)
        guard due > 0 else { return (0, false, false) }
        // The oldest `due` events of the page, as far as the Txn's operation budget goes (one delete per writer).
        let budget = settings.maxTxnOps - t.operations().count - 1  // the mark's put
        var upTo: [[UInt8]: Int64] = [:], victims = 0, through: Int64 = 0
        for e in page.prefix(min(due, limit)) {
            if upTo[e.writer] == nil && upTo.count >= budget { break }
            upTo[e.writer] = max(upTo[e.writer] ?? 0, e.seq)
            victims += 1
            through = e.rev
        }
        guard victims > 0 else { return (0, false, false) }
        for (w, seq) in upTo { t.deleteRange(w, w + Self.hex16(seq + 1)) }
        let old = try get(compactionMarkKey).map(EtcdRetentionState.parse) ?? 0
        let mark = max(old, through)
        t.write(compactionMarkKey, Array(String(mark).utf8))
        // Known here at once (as the SQLite engine does): should the commit fail, this store's readers are told a
        // little early that those events are gone.
        retention.raise(mark)
        let more = victims < due || (byAge == page.count && page.count < total)
        return (victims, more, victims == total)
    }

    /// The oldest `limit` events or more, in revision order, ending on a whole Txn's events: etcd orders the events of
    /// one Txn (one create revision) arbitrarily, so when the page may end inside its last Txn, that Txn is read whole.
    func oldestEvents(_ t: EtcdTxn, limit: Int) throws -> [EtcdStoredEvent] {
        let hi = Keys.prefixEnd(evPrefix)
        let r = try client.rangeByCreation(evPrefix, hi, revision: t.snapshot, minCreate: 0, limit: limit)
        var kvs = r.kvs
        if r.more, let cut = kvs.last?.createRevision {
            kvs.removeAll { $0.createRevision == cut }
            let group = try client.rangeByCreation(evPrefix, hi, revision: t.snapshot, minCreate: cut, limit: Int(Self.eventsPerTxn) + 1)
            kvs += group.kvs.filter { $0.createRevision == cut }
        }
        return kvs.compactMap(storedEvent).sorted { $0.rev < $1.rev }
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
        let at = try etcdRevision() - keepRevisions
        guard at > 0 else { return }
        do {
            _ = try client.call("/v3/kv/compaction", .object([("revision", .string(String(at)))]), idempotent: true)
        } catch let e as BerthError where e.message.contains("required revision has been compacted") {
            // Another berthd (or etcd's auto-compaction) already compacted past it.
        }
    }
}
