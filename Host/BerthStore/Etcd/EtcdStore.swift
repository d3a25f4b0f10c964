// The etcd engine of the store interface (cluster mode): optimistic transactions over etcd v3, each committed as one
// etcd Txn that compares what the transaction read and applies what it wrote; the event log in etcd too.
//
// Key layout, all under one prefix per site, R = "/berth/<site>/":
//   R + "kv/" + ns + 0x00 + key    a namespace's key (raw bytes). The separator is a NUL byte, not "/": a namespace
//                                  may contain "/" but never NUL, so "a"+"b/x" and "a/b"+"x" stay apart. etcd orders
//                                  keys as unsigned bytes, shorter first: the contract's order.
//   R + "ev/" + writer + "/" + seq an event (JSON: time, type, subject, actor, data, i). `writer` is random per store
//                                  instance and `seq` its own counter (16 hex digits), so berthds appending events at
//                                  once write different keys and never conflict: there is no shared counter. An
//                                  event's revision is given by its commit: etcd's revision of the Txn that created
//                                  it x 1024 + `i`, its index among that Txn's events. Revisions are cluster-wide and
//                                  increase with commit order, but are not dense, and not known before the commit:
//                                  appendEvent answers 0 and `committedEventRevision` has the last one after it.
import BerthWire
import Foundation
import Synchronization

public final class EtcdStore: StateStore {
    public let settings: EtcdSettings
    let client: EtcdClient
    let root: [UInt8]
    let evPrefix: [UInt8]
    /// evPrefix + this instance's writer id + "/": the keys of the events it appends.
    let eventWriter: [UInt8]
    /// The last event sequence number this instance used (its event keys).
    var eventSeq: Int64 = 0
    /// The revision of the last event the last commit made durable (nil when it appended none).
    public private(set) var committedEventRevision: Int64?
    /// The open transaction (nil outside one).
    var txn: EtcdTxn?
    public let completions = CompletionStack()
    /// The leadership term this berthd holds (nil: none). A transaction marked by `fenceTransaction()` (the
    /// scheduler's) also compares the election key at commit: after that term ended, or with no term, its commit
    /// fails with FAILED_PRECONDITION, nothing applied. Set by the leadership loop's thread, read by the executor's.
    public var fence: Leadership? {
        get { fenceLock.withLock { heldTerm } }
        set { fenceLock.withLock { heldTerm = newValue } }
    }
    private var heldTerm: Leadership?
    private let fenceLock = NSLock()
    /// The site's event compaction mark as this store knows it (EtcdRetention.swift).
    let retention = EtcdRetentionState()
    /// The local copy of the key-value state transactions read from (nil: `EtcdSettings.mirror` off), and the newest
    /// revision this store committed to it (a transaction waits for the copy to have it).
    let mirror: EtcdMirror?
    private var mirrorAtLeast: Int64 = 0
    /// Where the run after a failed commit reads (a conflict runs the operation again from the start).
    enum NextRead {
        /// The copy, as always.
        case copy
        /// The copy once it has this revision: etcd's at the conflict, which includes the change that caused it. It
        /// usually does within a millisecond or two; after `conflictCatchUpSeconds` the run reads etcd instead (and
        /// the copy is kept: the revision may have changed nothing under its prefix). A run on etcd itself costs a
        /// round trip per read, and two nodes claiming blocks at the same moment made those runs most of a busy
        /// cluster's etcd requests.
        case copyAt(Int64)
        /// etcd itself (after an exclusive commit failed: its failures carry no one revision).
        case etcd
    }
    var nextRead = NextRead.copy
    static let conflictCatchUpSeconds = 0.05
    let kvPrefix: [UInt8]
    /// Commits made exclusively (EtcdExclusive.swift): their reads did not fit one Txn's compares.
    let exclusiveCommits = Atomic<Int>(0)

    /// Connects to etcd (and checks it answers). Nothing is created: an empty site reads as an empty store.
    public init(_ settings: EtcdSettings) throws {
        let site = settings.site
        guard !site.isEmpty, !site.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "/") }) else {
            throw BerthError(.invalidArgument, "store site name \"\(site)\" must be non-empty, without \"/\" or NUL")
        }
        if let p = settings.prefix, !(p.count >= 2 && p.hasPrefix("/") && p.hasSuffix("/") && !p.utf8.contains(0)) {
            throw BerthError(.invalidArgument, "store prefix \"\(p)\" must start and end with \"/\" (e.g. /berth/prod/), without NUL")
        }
        self.settings = settings
        client = try EtcdClient(settings)
        root = Array((settings.prefix ?? "/berth/\(site)/").utf8)
        evPrefix = root + Array("ev/".utf8)
        kvPrefix = root + Array("kv/".utf8)
        mirror = settings.mirror ? EtcdMirror(settings: settings, prefix: kvPrefix) : nil
        eventWriter = evPrefix + Array(String(UInt64.random(in: 1...UInt64.max), radix: 16).utf8) + [UInt8(ascii: "/")]
        _ = try client.range(root, [], revision: 0, countOnly: true)
    }

    func nsKey(_ ns: String, _ key: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard !ns.utf8.contains(0) else { throw BerthError(.invalidArgument, "namespace \"\(ns)\" contains a NUL byte") }
        return root + Array("kv/".utf8) + Array(ns.utf8) + [0] + Array(key)
    }

    // MARK: transactions

    public func begin() throws {
        guard txn == nil else { throw BerthError(.failedPrecondition, "begin: a transaction is already open on this etcd store") }
        let t = EtcdTxn()
        if let m = mirror {
            let rev: Int64?
            switch nextRead {
            case .copy: rev = m.ready(atLeast: mirrorAtLeast, client: client)
            case .copyAt(let r): rev = m.ready(atLeast: max(mirrorAtLeast, r), client: client, within: Self.conflictCatchUpSeconds)
            case .etcd: rev = nil
            }
            if let rev {
                t.mirror = m
                t.mirrorRevision = rev
            }
        }
        nextRead = .copy
        txn = t
        committedEventRevision = nil
    }

    public func rollback() { txn = nil }

    public func commit() throws {
        guard let t = txn else { throw BerthError(.failedPrecondition, "commit: no transaction is open on this etcd store") }
        txn = nil
        try send(t)
    }

    /// Why the transaction cannot be committed under etcd's limits (nil when it can). Its writes must fit one Txn;
    /// its reads need not: a transaction that read more keys and ranges than one Txn compares commits exclusively
    /// (EtcdExclusive.swift).
    func overLimit(_ t: EtcdTxn, operations: Int, exclusive: Bool = false) -> String? {
        let limit = settings.maxTxnOps
        if operations > limit {
            return "the transaction has \(operations) writes (puts and deletes); etcd allows at most \(limit) operations per Txn (--max-txn-ops): split it into smaller transactions"
        }
        let size = t.requestBytes(readsToo: !exclusive)  // an exclusive commit sends its reads apart, in chunks
        if size > settings.maxRequestBytes {
            return "the transaction is about \(size) bytes; etcd allows at most \(settings.maxRequestBytes) bytes per request (--max-request-bytes): split it into smaller transactions"
        }
        return nil
    }

    /// Whether the open transaction still fits in one Txn: its writes, and its reads in the compares of one commit
    /// (with the exclusive key's and the term's). A group commit ends before an operation that would take it past
    /// them; an operation that alone reads more commits exclusively. The cost of counting is bounded by the limits.
    public var fitsOneCommit: Bool {
        guard let t = txn, t.touched else { return true }
        let extra = 1 + (t.fenced ? 1 : 0)
        // Upper bounds first (no sorting): most group commits are far below the limits, and this runs after each
        // operation of one.
        let compares = t.reads.count + t.versions.count + t.ranges.count + extra <= settings.maxTxnOps
            ? 0 : t.compareCount() + extra
        let operations = t.tombstones.isEmpty ? t.writes.count : t.operationCount()
        return overLimit(t, operations: operations) == nil && compares <= settings.maxTxnOps
    }

    /// Marks the open transaction as the scheduling leader's (HostStore): its commit holds only within this term.
    public func fenceTransaction() { txn?.fence() }

    public var transactionFenced: Bool { txn?.fenced ?? false }

    /// Sends the transaction as one Txn. A read-only transaction sends nothing when its reads were one snapshot of
    /// etcd; when they came from the local copy, its compares are sent alone (the copy may be behind: a reader must not
    /// be answered with what another berthd already changed). A writing one also compares that no exclusive commit is
    /// under way (EtcdExclusive.swift), or is one when its compares do not fit one Txn.
    func send(_ t: EtcdTxn) throws {
        guard t.touched else { return try validate(t) }
        let term = t.fenced ? fence : nil
        if t.fenced && term == nil {
            throw BerthError(.failedPrecondition, "this berthd is not the scheduling leader (no term held): the scheduler's commit was refused and nothing was applied")
        }
        let compares = t.compares() + (term.map { [$0.compare] } ?? []), ops = t.operations()
        let exclusive = compares.count + 1 > settings.maxTxnOps
        if let why = overLimit(t, operations: ops.count, exclusive: exclusive) { throw BerthError(.resourceExhausted, why) }
        if exclusive { return try sendExclusive(t, compares: compares, operations: ops, term: term) }
        let r = try client.txn(compares: compares + [EtcdClient.compareAbsent(exclusiveKey)], operations: ops,
                               failure: [EtcdClient.get(exclusiveKey)])
        if r.succeeded { return committed(t, at: r.revision) }
        nextRead = .copyAt(r.revision)
        if let f = term, try !termLasts(f) {
            throw BerthError(.failedPrecondition, "this berthd is no longer the leader (its term of \(String(decoding: f.key, as: UTF8.self)), created at revision \(f.createRevision), has ended); the commit was refused and nothing was applied")
        }
        if Self.exclusiveHeld(r.responses) { waitForExclusive() }
        throw BerthError(.aborted, "etcd transaction conflict: a key or range it read (at revision \(t.snapshot)) was changed by another writer; nothing was applied, run it again")
    }

    /// What a commit that succeeded at `revision` leaves: the event revision, and what the local copy must reach.
    func committed(_ t: EtcdTxn, at revision: Int64) {
        if let last = lastEventIndex(t) { committedEventRevision = revision * Self.eventsPerTxn + last }
        if mirror != nil && t.writes(under: kvPrefix) { mirrorAtLeast = max(mirrorAtLeast, revision) }
    }

    /// A read-only transaction that read the local copy: its compares, in Txns of at most --max-txn-ops each, all
    /// hold now (each Txn proves its keys unchanged since the copy's revision until it ran, so all of them held when
    /// the first ran). One that fails is a conflict; the transaction runs again, on the copy once it has etcd's
    /// revision at the conflict (as after a commit's conflict), else on etcd itself.
    private func validate(_ t: EtcdTxn) throws {
        guard t.mirror != nil else { return }
        let all = t.compares()
        var i = 0
        while i < all.count {
            let chunk = Array(all[i..<min(i + settings.maxTxnOps, all.count)])
            let r = try client.txn(compares: chunk, operations: [])
            if !r.succeeded {
                nextRead = .copyAt(r.revision)
                throw BerthError(.aborted, "etcd transaction conflict: a key or range it read in the local copy (at revision \(t.mirrorRevision)) has changed since; run it again")
            }
            i += chunk.count
        }
    }

    /// Whether the election key is still the one created in term `f`.
    func termLasts(_ f: Leadership) throws -> Bool {
        let j = try client.call("/v3/kv/range", .object([("key", .string(Base64.encode(f.key)))]), idempotent: true)
        return EtcdClient.int(j["kvs"]?.array?.first?["create_revision"]) == f.createRevision
    }

    public func savepoint<T>(_ name: StaticString, _ body: () throws -> T) throws -> T {
        guard let t = txn else { throw BerthError(.failedPrecondition, "savepoint \(name): no transaction is open on this etcd store") }
        let mark = t.mark, readMark = t.readMark
        do {
            return try completions.frame(body) { t.rollback(to: mark) }
        } catch let e as Executor.DoesNotFit {
            // The operation runs again in the next commit: what it read is not this commit's to compare (its reads
            // would take this commit over the limit it was just cut at).
            t.forgetReads(since: readMark)
            throw e
        }
    }

    /// Runs `body` in the open transaction, or in one of its own committed at once (a write outside a transaction).
    func inTxn<R>(_ body: (EtcdTxn) throws -> R) throws -> R {
        if let t = txn { return try body(t) }
        let t = EtcdTxn()
        let r = try body(t)
        try send(t)
        return r
    }

    // MARK: reads through the buffer, at the snapshot

    /// A range at the transaction's snapshot (fixed by its first read), or at the newest revision outside one.
    /// A scan of pairs (not a count, not keys alone) inside one already made in the transaction is answered from it.
    func range(_ t: EtcdTxn?, _ lo: [UInt8], _ hi: [UInt8], limit: Int = 0, countOnly: Bool = false, keysOnly: Bool = false) throws -> EtcdRange {
        let memo = t != nil && !hi.isEmpty && !countOnly && !keysOnly
        if memo, let t, t.snapshot != 0, let r = t.scanned(lo, hi, limit: limit) { return r }
        let r = try client.range(lo, hi, revision: t?.snapshot ?? 0, limit: limit, countOnly: countOnly, keysOnly: keysOnly)
        if let t, t.snapshot == 0 { t.snapshot = r.revision }
        if memo, let t { t.noteScan(lo, hi, r) }
        return r
    }

    /// The value at a full key as this transaction sees it, recorded in its read set.
    func get(_ key: [UInt8]) throws -> [UInt8]? {
        guard let t = txn else { return try range(nil, key, []).kvs.first?.value }
        if let b = t.buffered(key) { return b }
        if let seen = t.reads[key] { return seen.value }
        if let m = t.mirror {
            let row = m.rows[key]
            t.noteRead(key, row?.mod ?? 0, row?.value)
            return row?.value
        }
        let kv = try range(t, key, []).kvs.first
        t.noteRead(key, kv?.modRevision ?? 0, kv?.value)
        return kv?.value
    }

    /// The smallest key in [lo, hi) and its value as this transaction sees it (etcd merged with the buffer); the
    /// range up to it is recorded, so a key inserted there by another writer is a conflict.
    func first(_ lo: [UInt8], _ hi: [UInt8]) throws -> ([UInt8], [UInt8])? {
        guard hi.isEmpty || Keys.less(lo, hi) else { return nil }
        let t = txn
        var from = lo
        var found: EtcdKV?
        if let t, let m = t.mirror {
            m.rows.forEach(from: lo, below: hi) { k in
                guard t.buffered(k) == nil, let row = m.rows[k] else { return true }
                found = EtcdKV(key: k, value: row.value, modRevision: row.mod)
                return false
            }
        }
        scan: while t?.mirror == nil {
            // What this transaction deleted by prefix is skipped in one step, not key by key.
            while let t, let tomb = t.tombstones.first(where: { Keys.within(from, $0.lo, $0.hi) }) { from = tomb.hi }
            guard hi.isEmpty || Keys.less(from, hi) else { break }
            let r = try range(t, from, hi.isEmpty ? [0] : hi, limit: 16)
            for kv in r.kvs {
                if t?.buffered(kv.key) == nil { found = kv; break scan }
                from = kv.key + [0]
            }
            if !r.more { break }
        }
        var result = found.map { ($0.key, $0.value) }
        if let t {
            if let w = t.firstWrite(lo, found.map { $0.key } ?? hi), result == nil || Keys.less(w.0, result!.0) { result = w }
            if let found, result?.0 == found.key { t.noteRead(found.key, found.modRevision, found.value) }
            t.ranges.append((lo, result.map { $0.0 + [0] } ?? hi))
        }
        return result
    }

    /// How many keys [lo, hi) holds as this transaction sees it. The range is recorded (a key created in it is a
    /// conflict) and, when `exact`, so is every key counted (a range compare cannot see a key deleted after the
    /// snapshot): one compare per key, so a writing transaction counts at most about --max-txn-ops keys exactly.
    func count(_ lo: [UInt8], _ hi: [UInt8], exact: Bool) throws -> Int64 {
        guard let t = txn else { return try range(nil, lo, hi, countOnly: true).count }
        t.ranges.append((lo, hi))
        if let m = t.mirror {
            var n: Int64 = 0
            m.rows.forEach(from: lo, below: hi) { k in
                guard t.buffered(k) == nil, let row = m.rows[k] else { return true }
                if exact { t.noteVersion(k, row.mod) }
                n += 1
                return true
            }
            for (k, v) in t.writes where v != nil && Keys.within(k, lo, hi) { n += 1 }
            return n
        }
        if !exact && !t.touches(lo, hi) { return try range(t, lo, hi, countOnly: true).count }
        var n: Int64 = 0
        for kv in try range(t, lo, hi, keysOnly: true).kvs where t.buffered(kv.key) == nil {
            if exact { t.noteVersion(kv.key, kv.modRevision) }
            n += 1
        }
        for (k, v) in t.writes where v != nil && Keys.within(k, lo, hi) { n += 1 }
        return n
    }

    // MARK: key-value namespaces

    public func kvRead<R>(_ ns: String, _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        guard let v = try get(try nsKey(ns, key)) else { return try body(nil) }
        return try v.withUnsafeBytes { try body($0) }
    }

    public func kvPut(_ ns: String, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws {
        let k = try nsKey(ns, key), v = Array(value)
        try inTxn { $0.write(k, v) }
    }

    public func kvDelete(_ ns: String, _ key: UnsafeRawBufferPointer) throws {
        let k = try nsKey(ns, key)
        try inTxn { $0.write(k, nil) }
    }

    public func kvScanNext<R>(_ ns: String, prefix: UnsafeRawBufferPointer, after: UnsafeRawBufferPointer,
                              _ body: ((key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)?) throws -> R) throws -> R {
        let p = try nsKey(ns, prefix)
        let base = p.count - prefix.count  // where the namespace's own key starts
        let hi = Keys.prefixEnd(p)
        let lo = after.count > 0 && compareBytes(after, prefix) >= 0 ? try nsKey(ns, after) + [0] : p
        guard let (k, v) = try first(lo, hi) else { return try body(nil) }
        return try k[base...].withUnsafeBytes { kb in try v.withUnsafeBytes { try body((kb, $0)) } }
    }

    public func kvScanUnrecorded(_ ns: String, prefix: [UInt8]) throws -> [(key: [UInt8], value: [UInt8])] {
        let p = try prefix.withUnsafeBytes { try nsKey(ns, $0) }
        let base = p.count - prefix.count, hi = Keys.prefixEnd(p)
        var rows: [[UInt8]: [UInt8]] = [:]
        var from = p
        if let m = txn?.mirror {
            m.rows.forEach(from: p, below: hi) { k in
                rows[k] = m.rows[k]?.value
                return true
            }
        }
        while txn?.mirror == nil {
            let r = try range(txn, from, hi.isEmpty ? [0] : hi, limit: 1000)
            for kv in r.kvs { rows[kv.key] = kv.value }
            guard r.more, let last = r.kvs.last else { break }
            from = last.key + [0]
        }
        if let t = txn {
            for k in Array(rows.keys) where t.buffered(k) != nil { rows[k] = t.buffered(k)! }
            for (k, v) in t.writes where Keys.within(k, p, hi) { rows[k] = v }
        }
        return rows.sorted { Keys.less($0.key, $1.key) }.map { (key: Array($0.key[base...]), value: $0.value) }
    }

    public func kvCountPrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64 {
        let p = try nsKey(ns, prefix)
        return try count(p, Keys.prefixEnd(p), exact: true)
    }

    public func kvDeletePrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64 {
        let p = try nsKey(ns, prefix)
        let hi = Keys.prefixEnd(p)
        if txn == nil {
            try begin()
            do {
                let n = try kvDeletePrefix(ns, prefix)
                try commit()
                return n
            } catch {
                rollback()
                throw error
            }
        }
        let n = try count(p, hi, exact: false)  // what goes is everything under p, whatever its count
        txn!.deleteRange(p, hi)
        return n
    }
}
