// The etcd engine's exclusive commit: a transaction that read more keys and ranges than one Txn may compare
// (--max-txn-ops) holds the site's exclusive key while it checks its reads in several Txns and then commits.
//
// Every writing Txn of every berthd compares that R + "exclusive" does not exist. While one berthd holds it (a key
// under a lease of its own, so a holder that dies releases it within the lease's TTL), no other berthd's write can
// commit; so reads it has checked after taking the key stay true until its own commit, which compares only that it
// still holds the key (and the scheduling term, when fenced). The key is released by revoking its lease. Writers
// that find the key held wait for its release before they run again, rather than spend their retries on it.
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

extension EtcdStore {
    /// The site's exclusive key: present while one berthd commits a transaction whose reads do not fit one Txn.
    var exclusiveKey: [UInt8] { root + Array("exclusive".utf8) }

    /// The lease TTL of the exclusive key: how long a dead holder can keep every other writer waiting.
    static let exclusiveTTLSeconds = 5

    /// Commits `t` exclusively: takes the exclusive key, checks `compares` in Txns of at most --max-txn-ops, and then
    /// applies `operations` in one Txn that compares the key (and `term`). A read found changed, or the key held by
    /// another berthd, is a conflict (ABORTED: nothing was applied, the operation runs again).
    func sendExclusive(_ t: EtcdTxn, compares: [EtcdTxnPart], operations: [EtcdTxnPart], term: Leadership?) throws {
        // A conflict runs the operation again on etcd itself (the local copy may not have the change yet).
        var succeeded = false
        defer { if !succeeded { nextRead = .etcd } }
        let (held, lease): (EtcdTxnPart, Int64)
        do {
            (held, lease) = try takeExclusive()
        } catch let e as BerthError where e.status == .unavailable {
            throw BerthError(.aborted, "etcd did not answer while an exclusive commit took its key (\(e.message)); nothing was applied, run it again")
        }
        defer { try? client.revokeLease(lease) }
        do {
            var i = 0, renewed = monotonicNanos()
            while i < compares.count {
                let chunk = Array(compares[i..<min(i + settings.maxTxnOps - 1, compares.count)])
                if try !client.txn(compares: chunk + [held], operations: []).succeeded {
                    throw BerthError(.aborted, "etcd transaction conflict: a key or range it read (at revision \(t.snapshot)) was changed by another writer before its exclusive commit; nothing was applied, run it again")
                }
                i += chunk.count
                // Many chunks on a slow etcd: the key's lease is renewed every second, so it outlives the checks.
                if monotonicNanos() - renewed > 1_000_000_000 {
                    _ = try client.keepLeaseAlive(lease)
                    renewed = monotonicNanos()
                }
            }
        } catch let e as BerthError where e.status == .unavailable {
            // Only reads (and the lease) so far: nothing of the transaction was applied.
            throw BerthError(.aborted, "etcd did not answer during an exclusive commit's checks (\(e.message)); nothing was applied, run it again")
        }
        let r = try client.txn(compares: [held] + (term.map { [$0.compare] } ?? []), operations: operations)
        guard r.succeeded else {
            if let f = term, try !termLasts(f) {
                throw BerthError(.failedPrecondition, "this berthd is no longer the leader (its term of \(String(decoding: f.key, as: UTF8.self)), created at revision \(f.createRevision), has ended); the commit was refused and nothing was applied")
            }
            throw BerthError(.aborted, "etcd transaction conflict: the exclusive key's lease ended before the commit (etcd too slow?); nothing was applied, run it again")
        }
        succeeded = true
        exclusiveCommits.add(1, ordering: .relaxed)
        committed(t, at: r.revision)
    }

    /// Grants the exclusive key's lease and creates the key under it; returns the compare that holds while this
    /// berthd holds the key, and the lease. The key held by another berthd: waits for its release, then ABORTED.
    private func takeExclusive() throws -> (held: EtcdTxnPart, lease: Int64) {
        let key = exclusiveKey
        let lease = try client.grantLease(ttlSeconds: Self.exclusiveTTLSeconds).id
        do {
            let take = try client.txn(compares: [EtcdClient.compareAbsent(key)], operations: [EtcdClient.put(key, eventWriter, lease: lease)],
                                      failure: [EtcdClient.get(key)])
            if take.succeeded { return (EtcdClient.compareCreated(key, take.revision), lease) }
        } catch {
            try? client.revokeLease(lease)
            throw error
        }
        try? client.revokeLease(lease)
        waitForExclusive()
        throw BerthError(.aborted, "etcd transaction conflict: another berthd is committing exclusively; nothing was applied, run it again")
    }

    /// True when a failed Txn's failure branch (a get of the exclusive key) found the key.
    static func exclusiveHeld(_ responses: [JSON]) -> Bool {
        guard let kvs = responses.last?["response_range"]?["kvs"]?.array else { return false }
        return !kvs.isEmpty
    }

    /// Waits (polling) until the exclusive key is gone, at most about twice its lease's TTL (etcd may raise a TTL
    /// below its minimum, and extends leases when its leader changes). Past that the caller runs again anyway.
    func waitForExclusive() {
        let deadline = monotonicNanos() + UInt64(2 * Self.exclusiveTTLSeconds + 1) * 1_000_000_000
        var pause: UInt32 = 2_000
        while monotonicNanos() < deadline {
            guard let r = try? client.range(exclusiveKey, [], revision: 0, countOnly: true), r.count > 0 else { return }
            usleep(pause)
            pause = min(pause * 2, 50_000)
        }
    }
}
