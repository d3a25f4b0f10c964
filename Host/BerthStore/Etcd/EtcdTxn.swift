// One optimistic transaction of the etcd engine: its snapshot revision, its read set (point reads with the mod
// revision seen, scanned ranges), its buffered writes with an undo log for savepoints, and the one Txn it commits as.
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// Byte-string helpers on etcd keys (unsigned byte order, shorter first on a common prefix: `[UInt8]` comparison).
enum Keys {
    static func less(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        // memcmp, not lexicographicallyPrecedes (an iterator per element): the local copy's lookups and the commit's
        // range merging compare keys many times per operation.
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                let n = min(pa.count, pb.count)
                let c = n == 0 ? 0 : memcmp(pa.baseAddress!, pb.baseAddress!, n)
                return c != 0 ? c < 0 : pa.count < pb.count
            }
        }
    }
    /// The smallest key after every key that starts with `p` ([] when there is none: p is all 0xFF).
    static func prefixEnd(_ p: [UInt8]) -> [UInt8] {
        var e = p
        while let last = e.last {
            if last < 0xFF { e[e.count - 1] = last + 1; return e }
            e.removeLast()
        }
        return []
    }
    /// True when `k` is in [lo, hi) (hi empty: no upper bound).
    static func within(_ k: [UInt8], _ lo: [UInt8], _ hi: [UInt8]) -> Bool {
        !less(k, lo) && (hi.isEmpty || less(k, hi))
    }
}

final class EtcdTxn {
    /// The store revision every read of this transaction is made at (0 until the first read fixes it).
    var snapshot: Int64 = 0
    /// The local copy the key-value reads of this transaction come from (nil: they go to etcd at `snapshot`), and the
    /// revision it is at: the scanned ranges are compared against it instead of `snapshot`.
    var mirror: EtcdMirror?
    var mirrorRevision: Int64 = 0
    /// Point reads: key -> (mod revision seen, 0 when absent; the value seen, nil when absent).
    var reads = BytesMap<(mod: Int64, value: [UInt8]?)>()
    /// Keys counted: key -> mod revision seen (their values were not read).
    var versions = BytesMap<Int64>()
    /// Scanned ranges [lo, hi): at commit no key in them may have been modified after `snapshot`.
    var ranges: [(lo: [UInt8], hi: [UInt8])] = []
    /// Buffered writes: key -> value, or nil for a delete. They override `tombstones`.
    var writes = BytesMap<[UInt8]?>()
    /// Buffered prefix deletes [lo, hi), applied before `writes`.
    var tombstones: [(lo: [UInt8], hi: [UInt8])] = []
    /// The store's event sequence number of this transaction's first appended event (-1: none appended yet); an
    /// event's index in the Txn is its sequence number minus this.
    var eventBase: Int64 = -1

    /// What range reads at `snapshot` answered (etcd's keys, before this transaction's writes): at a fixed revision
    /// etcd answers a range the same every time, so a range inside one already read is answered from here. An
    /// operation that scans the same range as the one before it in a group commit (a plugin's configuration, an
    /// empty index) costs no round trip.
    private var scans: [(lo: [UInt8], covered: [UInt8], kvs: [EtcdKV])] = []

    /// The answer to a range read of [lo, hi) (hi [0]: no upper bound) with `limit` (0: all), when a range read
    /// earlier in this transaction covers it.
    func scanned(_ lo: [UInt8], _ hi: [UInt8], limit: Int) -> EtcdRange? {
        for s in scans.reversed() where !Keys.less(lo, s.lo) && (s.covered.isEmpty || Keys.less(lo, s.covered)) {
            var kvs: [EtcdKV] = []
            for kv in s.kvs where !Keys.less(kv.key, lo) && Self.below(kv.key, hi) {
                if limit > 0 && kvs.count == limit { return EtcdRange(kvs: kvs, count: 0, revision: snapshot, more: true) }
                kvs.append(kv)
            }
            // Complete when the earlier read covered [lo, hi) to its end; else what it holds, with more after the last
            // key (the caller reads on from there). Nothing it holds: ask etcd.
            if s.covered.isEmpty || (hi != [0] && !Keys.less(s.covered, hi)) {
                return EtcdRange(kvs: kvs, count: Int64(kvs.count), revision: snapshot, more: false)
            }
            if !kvs.isEmpty { return EtcdRange(kvs: kvs, count: 0, revision: snapshot, more: true) }
        }
        return nil
    }

    /// Notes what a range read of [lo, hi) made at `snapshot` answered (small answers only).
    func noteScan(_ lo: [UInt8], _ hi: [UInt8], _ r: EtcdRange) {
        guard r.kvs.count <= 64, !r.more || !r.kvs.isEmpty else { return }
        let covered = r.more ? r.kvs.last!.key + [0] : (hi == [0] ? [] : hi)  // []: to the end of the key space
        scans.append((lo, covered, r.kvs))
        // The recent ones only: a long scan of a table (a list of thousands of rows) must not cost the square of it.
        if scans.count > 32 { scans.removeFirst(scans.count - 32) }
    }

    /// True when `k` is below the range end `hi` ([0]: no end).
    private static func below(_ k: [UInt8], _ hi: [UInt8]) -> Bool { hi == [0] || Keys.less(k, hi) }

    /// Keys in `reads` (or, counted, in `versions`) in the order first read, so that what an operation deferred to
    /// the next commit read can be forgotten (EtcdStore.savepoint).
    private var readLog: [(key: [UInt8], counted: Bool)] = []
    var readMark: (log: Int, ranges: Int) { (readLog.count, ranges.count) }

    func noteRead(_ key: [UInt8], _ mod: Int64, _ value: [UInt8]?) {
        if reads[key] == nil { readLog.append((key, false)) }
        reads[key] = (mod, value)
    }

    func noteVersion(_ key: [UInt8], _ mod: Int64) {
        if versions[key] == nil { readLog.append((key, true)) }
        versions[key] = mod
    }

    /// Drops the point reads, counted keys and scanned ranges recorded after `m`.
    func forgetReads(since m: (log: Int, ranges: Int)) {
        while readLog.count > m.log {
            let e = readLog.removeLast()
            if e.counted { versions.removeValue(forKey: e.key) } else { reads.removeValue(forKey: e.key) }
        }
        if ranges.count > m.ranges { ranges.removeSubrange(m.ranges...) }
    }

    private enum Undo {
        case write(key: [UInt8], old: [UInt8]??)
        case tombstone(removed: [([UInt8], [UInt8]?)])
        case fence
    }
    private var undo: [Undo] = []

    // MARK: buffer

    /// What this transaction wrote at `key`: .some(value or nil for deleted), or nil when it did not touch it.
    func buffered(_ key: [UInt8]) -> [UInt8]?? {
        if let w = writes[key] { return .some(w) }
        if tombstones.contains(where: { Keys.within(key, $0.lo, $0.hi) }) { return .some(nil) }
        return nil
    }

    func write(_ key: [UInt8], _ value: [UInt8]?) {
        undo.append(.write(key: key, old: writes[key]))
        writes[key] = value
    }

    func deleteRange(_ lo: [UInt8], _ hi: [UInt8]) {
        let inside = writes.filter { Keys.within($0.key, lo, hi) }
        for (k, _) in inside { writes[k] = nil }
        undo.append(.tombstone(removed: inside.map { ($0.key, $0.value) }))
        tombstones.append((lo, hi))
    }

    /// The smallest key in [lo, hi) that this transaction put (not deleted), with its value.
    func firstWrite(_ lo: [UInt8], _ hi: [UInt8]) -> ([UInt8], [UInt8])? {
        var best: ([UInt8], [UInt8])?
        for (k, v) in writes {
            guard let v, Keys.within(k, lo, hi) else { continue }
            if best == nil || Keys.less(k, best!.0) { best = (k, v) }
        }
        return best
    }

    /// The scheduling leader's transaction: its commit compares the leadership term (EtcdStore.fence).
    private(set) var fenced = false

    /// Marks the transaction as the leader's; a savepoint rolled back past this mark unmarks it.
    func fence() {
        guard !fenced else { return }
        fenced = true
        undo.append(.fence)
    }

    var touched: Bool { !writes.isEmpty || !tombstones.isEmpty }
    /// True when a write or prefix delete of this transaction is under `p`.
    func writes(under p: [UInt8]) -> Bool {
        writes.keys.contains { $0.starts(with: p) } || tombstones.contains { $0.lo.starts(with: p) }
    }
    func touches(_ lo: [UInt8], _ hi: [UInt8]) -> Bool {
        writes.keys.contains { Keys.within($0, lo, hi) }
            || tombstones.contains { ($0.hi.isEmpty || Keys.less(lo, $0.hi)) && (hi.isEmpty || Keys.less($0.lo, hi)) }
    }

    // MARK: savepoints

    var mark: Int { undo.count }

    /// Discards every write made after `mark`.
    func rollback(to mark: Int) {
        while undo.count > mark {
            switch undo.removeLast() {
            case .write(let key, let old):
                if let old { writes[key] = .some(old) } else { writes.removeValue(forKey: key) }
            case .tombstone(let removed):
                tombstones.removeLast()
                for (k, v) in removed { writes[k] = .some(v) }
            case .fence:
                fenced = false
            }
        }
    }

    // MARK: commit

    /// The Txn's compares: every point read still at the mod revision seen, every scanned range unmodified since the
    /// snapshot. Overlapping ranges are merged, and point reads inside a merged range still need their own compare (a
    /// delete leaves no key to compare in a range).
    func compares() -> [EtcdTxnPart] {
        var out: [EtcdTxnPart] = reads.map { EtcdClient.compareMod($0.key, [], .equal, $0.value.mod) }
        for (k, mod) in versions where reads[k] == nil { out.append(EtcdClient.compareMod(k, [], .equal, mod)) }
        let seen = mirror != nil ? mirrorRevision : snapshot
        for r in Self.merged(ranges) { out.append(EtcdClient.compareMod(r.lo, r.hi, .less, seen + 1)) }
        return out
    }

    /// How many compares `compares()` makes, without making them (checked after every operation of a group commit).
    func compareCount() -> Int {
        var counted = 0
        for (k, _) in versions where reads[k] == nil { counted += 1 }
        return reads.count + counted + Self.merged(ranges).count
    }

    /// How many operations `operations()` makes, without making them.
    func operationCount() -> Int {
        var n = 0
        let puts = writes.compactMap { $0.value == nil ? nil : $0.key }
        for t in Self.merged(tombstones) {
            let inside = puts.filter { Keys.within($0, t.lo, t.hi) }.sorted(by: Keys.less)
            var lo = t.lo
            for k in inside {
                if Keys.less(lo, k) { n += 1 }
                lo = k + [0]
            }
            if t.hi.isEmpty || Keys.less(lo, t.hi) { n += 1 }
        }
        for (k, v) in writes where v != nil || !tombstones.contains(where: { Keys.within(k, $0.lo, $0.hi) }) { n += 1 }
        return n
    }

    /// The Txn's operations: the prefix deletes (split around keys put inside them: etcd refuses a put inside a
    /// delete of the same Txn), then every put and single-key delete not already covered by a prefix delete.
    func operations() -> [EtcdTxnPart] {
        var out: [EtcdTxnPart] = []
        let puts = writes.compactMap { $0.value == nil ? nil : $0.key }.sorted(by: Keys.less)
        for t in Self.merged(tombstones) {
            var lo = t.lo
            for k in puts where Keys.within(k, t.lo, t.hi) {
                if Keys.less(lo, k) { out.append(EtcdClient.delete(lo, k)) }
                lo = k + [0]
            }
            if t.hi.isEmpty || Keys.less(lo, t.hi) { out.append(EtcdClient.delete(lo, t.hi.isEmpty ? [0] : t.hi)) }
        }
        for (k, v) in writes {
            if let v { out.append(EtcdClient.put(k, v)); continue }
            if !tombstones.contains(where: { Keys.within(k, $0.lo, $0.hi) }) { out.append(EtcdClient.delete(k, [])) }
        }
        return out
    }

    /// A bound on the protobuf size etcd checks against --max-request-bytes (keys, values and a few bytes per field).
    /// `readsToo` false: the writes alone (an exclusive commit sends its compares in other requests).
    func requestBytes(readsToo: Bool = true) -> Int {
        var n = 0
        if readsToo {
            for k in reads.keys { n += k.count + 24 }
            for k in versions.keys { n += k.count + 24 }
            for r in ranges { n += r.lo.count + r.hi.count + 24 }
        }
        for (k, v) in writes { n += k.count + (v?.count ?? 0) + 16 }
        for t in tombstones { n += t.lo.count + t.hi.count + 16 }
        return n
    }

    static func merged(_ rs: [(lo: [UInt8], hi: [UInt8])]) -> [(lo: [UInt8], hi: [UInt8])] {
        var out: [(lo: [UInt8], hi: [UInt8])] = []
        for r in rs.sorted(by: { Keys.less($0.lo, $1.lo) }) {
            if let last = out.last, last.hi.isEmpty || !Keys.less(last.hi, r.lo) {
                if !last.hi.isEmpty && (r.hi.isEmpty || Keys.less(last.hi, r.hi)) { out[out.count - 1].hi = r.hi }
            } else {
                out.append(r)
            }
        }
        return out
    }
}
