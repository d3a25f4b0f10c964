// The etcd engine's local copy of the site's key-value state (R + "kv/"), loaded once and kept current by a watch,
// from which transactions read instead of asking etcd key by key. Reads from it are recorded with the revisions it
// holds, exactly as reads from etcd are, so a change the copy had not seen yet makes the commit fail as a conflict.
import BerthWire
import Foundation
import Synchronization

/// Keys in unsigned byte order with their mod revision and value: sorted chunks (a lookup is two binary searches,
/// an insert moves at most one chunk) and a dictionary.
struct SortedRows {
    private(set) var rows = BytesMap<(mod: Int64, value: [UInt8])>()
    private var chunks: [[[UInt8]]] = []
    private static let chunkLimit = 512

    var count: Int { rows.count }

    /// The chunk that holds `key` or would: the last whose first key is not above it (0 when none).
    private func chunkIndex(_ key: [UInt8]) -> Int {
        var lo = 0, hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Keys.less(key, chunks[mid][0]) { hi = mid } else { lo = mid + 1 }
        }
        return max(lo - 1, 0)
    }

    /// The position of the first key >= `key` in chunk `c`.
    private func position(_ key: [UInt8], in c: Int) -> Int {
        let chunk = chunks[c]
        var lo = 0, hi = chunk.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Keys.less(chunk[mid], key) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func put(_ key: [UInt8], _ value: [UInt8], mod: Int64) {
        if rows.updateValue((mod, value), forKey: key) != nil { return }
        if chunks.isEmpty { chunks = [[key]]; return }
        let c = chunkIndex(key)
        chunks[c].insert(key, at: position(key, in: c))
        if chunks[c].count > Self.chunkLimit {
            let upper = Array(chunks[c][(Self.chunkLimit / 2)...])
            chunks[c].removeSubrange((Self.chunkLimit / 2)...)
            chunks.insert(upper, at: c + 1)
        }
    }

    mutating func delete(_ key: [UInt8]) {
        guard rows.removeValue(forKey: key) != nil else { return }
        let c = chunkIndex(key)
        let p = position(key, in: c)
        guard p < chunks[c].count, chunks[c][p] == key else { return }
        chunks[c].remove(at: p)
        if chunks[c].isEmpty { chunks.remove(at: c) }
    }

    subscript(key: [UInt8]) -> (mod: Int64, value: [UInt8])? { rows[key] }

    /// Calls `body` with each key in [lo, hi) (hi empty: no end) in order, until it returns false.
    func forEach(from lo: [UInt8], below hi: [UInt8], _ body: ([UInt8]) throws -> Bool) rethrows {
        guard !chunks.isEmpty else { return }
        var c = chunkIndex(lo), p = position(lo, in: c)
        while c < chunks.count {
            let chunk = chunks[c]
            while p < chunk.count {
                let k = chunk[p]
                if !hi.isEmpty && !Keys.less(k, hi) { return }
                if try !body(k) { return }
                p += 1
            }
            c += 1
            p = 0
        }
    }
}

/// The copy. Its watch thread queues what it sees; the executor's thread applies it when a transaction begins, so
/// a transaction reads one revision throughout.
final class EtcdMirror: @unchecked Sendable {
    private let settings: EtcdSettings
    private let prefix: [UInt8]
    private let lock = NSCondition()
    // Guarded by `lock`:
    private var inbox: [WatchedChange] = []
    private var inboxRevision: Int64 = 0
    private var lost = false
    // The executor's thread only:
    private(set) var rows = SortedRows()
    /// The revision the copy is at: every change of the prefix up to it is applied, none after it.
    private var revision: Int64 = 0
    private var watch: EtcdWatch?
    private var loaded = false
    /// Times the copy was (re)loaded, transactions that read etcd because the copy was not current in time, and how
    /// long transactions waited for the copy to have this berthd's own last commit (nanoseconds).
    let loads = Atomic<Int>(0), fallbacks = Atomic<Int>(0), waited = Atomic<Int>(0)
    /// How long a transaction waits for the copy to reach a revision this berthd wrote before it reads etcd instead.
    private let waitSeconds: Double
    /// How many changes may wait for a transaction to apply them; past that (no transaction for a long while, others
    /// busy) the queue is dropped and the copy loaded again.
    private let inboxLimit: Int

    init(settings: EtcdSettings, prefix: [UInt8], waitSeconds: Double = 0.5, inboxLimit: Int = 200_000) {
        self.settings = settings
        self.prefix = prefix
        self.waitSeconds = waitSeconds
        self.inboxLimit = inboxLimit
    }

    deinit { watch?.stop() }

    func stop() {
        watch?.stop()
        watch = nil
    }

    /// Makes the copy current up to at least `atLeast` (a revision this berthd committed to the prefix) and returns
    /// its revision, or nil when it cannot be used for this transaction: it could not be loaded, its watch lost
    /// changes, or it did not reach `atLeast` in time (the transaction then reads etcd, as without a copy).
    /// `within`: wait at most that long, and not reaching `atLeast` then is no sign of a stuck watch (the revision
    /// may be one that changed nothing under the prefix): the copy is kept, only this transaction reads etcd.
    func ready(atLeast: Int64, client: EtcdClient, within: Double? = nil) -> Int64? {
        lock.lock()
        if lost {
            lost = false
            loaded = false
        }
        lock.unlock()
        if !loaded {
            do { try load(client) } catch {
                fallbacks.add(1, ordering: .relaxed)
                return nil
            }
        }
        lock.lock()
        if inboxRevision < atLeast {
            let t0 = monotonicNanos(), deadline = Date().addingTimeInterval(within ?? waitSeconds)
            while inboxRevision < atLeast && !lost && lock.wait(until: deadline) {}
            waited.add(Int(monotonicNanos() - t0), ordering: .relaxed)
        }
        let changes = inbox, rev = inboxRevision, ok = !lost && rev >= atLeast
        inbox.removeAll(keepingCapacity: true)
        // Not there in time: its watch is stuck or gone. Load it again for the next transaction rather than have
        // every one wait.
        if !ok && within == nil { lost = true }
        lock.unlock()
        for c in changes where c.mod > revision {
            if let v = c.value { rows.put(c.key, v, mod: c.mod) } else { rows.delete(c.key) }
        }
        revision = max(revision, rev)
        if !ok { fallbacks.add(1, ordering: .relaxed) }
        return ok ? revision : nil
    }

    /// Reads the whole prefix at one revision (in pages) and watches it from the next one.
    private func load(_ client: EtcdClient) throws {
        watch?.stop()
        watch = nil
        var fresh = SortedRows()
        let end = Keys.prefixEnd(prefix)
        var from = prefix, at: Int64 = 0
        while true {
            let r = try client.range(from, end, revision: at, limit: 1000)
            if at == 0 { at = r.revision }
            for kv in r.kvs { fresh.put(kv.key, kv.value, mod: kv.modRevision) }
            guard r.more, let last = r.kvs.last else { break }
            from = last.key + [0]
        }
        lock.lock()
        inbox.removeAll()
        inboxRevision = at
        lost = false
        lock.unlock()
        rows = fresh
        revision = at
        loads.add(1, ordering: .relaxed)
        let w = EtcdWatch(settings, key: prefix, from: at + 1, onChanges: { [weak self] in self?.received($0) },
                          onCompacted: { [weak self] in self?.markLost() })
        watch = w
        w.start()
        loaded = true
    }

    /// The watch's thread: one message's changes (a revision's changes always come in one message).
    private func received(_ changes: [WatchedChange]) {
        lock.lock()
        inbox += changes
        if inbox.count > inboxLimit {
            inbox.removeAll()
            lost = true
        }
        if let m = changes.map(\.mod).max() { inboxRevision = max(inboxRevision, m) }
        lock.broadcast()
        lock.unlock()
    }

    /// The copy missed changes: the next transaction loads it again (and watches from there).
    func markLost() {
        lock.lock()
        lost = true
        lock.broadcast()
        lock.unlock()
    }
}
