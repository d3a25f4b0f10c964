// Event retention on the etcd engine against a real etcd started here: compaction keeps the newest events, honours an
// age limit and its step limit, shares its mark with every store of the site (a cursor below it is refused there
// too), converges when two stores compact at once, and compacts etcd's own history.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdRetentionTests: EtcdTestCase {
    func store(_ site: String) throws -> EtcdStore { try EtcdStore(EtcdSettings(endpoints: [Self.etcd!.endpoint], site: site)) }

    /// Appends `n` events, `perTxn` per transaction; returns the revisions, oldest first.
    @discardableResult
    func append(_ st: EtcdStore, _ n: Int, perTxn: Int = 1, subject: String = "s") throws -> [Int64] {
        var revs: [Int64] = []
        var left = n
        while left > 0 {
            let k = min(perTxn, left)
            try st.begin()
            for _ in 0..<k { _ = try st.appendEvent(type: "t", subject: subject, actor: "test", data: .object([])) }
            try st.commit()
            let last = try XCTUnwrap(st.committedEventRevision)
            revs += (0..<Int64(k)).map { last - Int64(k - 1) + $0 }
            left -= k
        }
        return revs
    }

    /// One compaction step in its own transaction, retried on a conflict as the executor would.
    func compact(_ st: EtcdStore, retain: Int, maxAge: Double? = nil, limit: Int = 1000) throws -> (deleted: Int, more: Bool, empty: Bool) {
        for _ in 0..<20 {
            try st.begin()
            do {
                let r = try st.compactEvents(retain: retain, maxAge: maxAge, limit: limit)
                try st.commit()
                return r
            } catch let e as BerthError where e.status == .aborted {
                st.rollback()
                abortLock.lock(); aborts += 1; abortLock.unlock()
            } catch {
                st.rollback()
                throw error
            }
        }
        throw BerthError(.aborted, "compaction conflicted 20 times in a row")
    }

    let abortLock = NSLock()
    nonisolated(unsafe) var aborts = 0

    func all(_ st: EtcdStore) throws -> [Int64] { try st.events(since: 0, limit: 100_000, type: nil, subject: nil).map(\.rev) }

    /// Longer than the grace between raising the mark and deleting what it covers.
    let grace: useconds_t = 2_100_000

    func testRetainKeepsTheNewestAndTheMarkIsShared() throws {
        let site = "ret-keep-\(getpid())"
        let a = try store(site), b = try store(site)
        defer { try? a.removeSite() }
        // Two writers, single events and groups of 7 in one Txn (a group may be cut: the newest 25 are kept exactly).
        var revs = try append(a, 20) + append(b, 21, perTxn: 7) + append(a, 14, perTxn: 7)
        revs.sort()
        XCTAssertEqual(try all(a), revs)
        let c = try store(site)
        XCTAssertEqual(c.compactedThrough, 0)
        // First the mark: every store refuses a cursor below it at once; the events stay for the grace.
        var r = try compact(a, retain: 25)
        XCTAssertEqual(r.deleted, 0)
        XCTAssertFalse(r.more)
        let through = revs[revs.count - 26]
        XCTAssertEqual(a.compactedThrough, through)
        XCTAssertEqual(try store(site).compactedThrough, through, "another store (another berthd) reads the shared mark")
        XCTAssertEqual(try all(b), revs, "nothing deleted before the grace")
        XCTAssertEqual(try compact(b, retain: 25).deleted, 0, "nothing deleted before the grace, by any store")
        usleep(grace)
        XCTAssertThrowsError(try c.checkRetained(since: revs[0]), "c read the mark before it was raised: it reads it again after a second") { e in
            XCTAssertEqual((e as? EventsCompacted)?.oldestRevision, through + 1, "\(e)")
        }
        XCTAssertNoThrow(try c.checkRetained(since: through), "a cursor at the mark misses nothing")
        XCTAssertNoThrow(try c.checkRetained(since: 0))
        // Then the events the mark covers go, the newest 25 stay.
        r = try compact(b, retain: 25)
        XCTAssertEqual(r.deleted, revs.count - 25)
        XCTAssertFalse(r.more)
        XCTAssertFalse(r.empty)
        XCTAssertEqual(try all(c), Array(revs.suffix(25)))
        XCTAssertEqual(try compact(b, retain: 25).deleted, 0, "nothing more is due")
        // Compacting everything: the mark at the newest revision, then an empty log.
        XCTAssertEqual(try compact(b, retain: 0).deleted, 0)
        XCTAssertEqual(b.compactedThrough, revs.last!)
        usleep(grace)
        XCTAssertThrowsError(try c.checkRetained(since: revs.last! - 1))
        r = try compact(a, retain: 0)
        XCTAssertEqual(r.deleted, 25)
        XCTAssertTrue(r.empty)
        XCTAssertEqual(try all(a), [])
        XCTAssertEqual(try compact(a, retain: 0).empty, true)
    }

    func testStepLimitAndMaxAge() throws {
        let site = "ret-age-\(getpid())"
        let st = try store(site)
        defer { try? st.removeSite() }
        let old = try append(st, 30)
        // The step limit, 12: each step raises the mark over at most 12 more events and deletes at most 12.
        XCTAssertEqual(try compact(st, retain: 0, limit: 12).deleted, 0)
        XCTAssertEqual(st.compactedThrough, old[11])
        XCTAssertEqual(try compact(st, retain: 0, limit: 12).deleted, 0)
        XCTAssertEqual(st.compactedThrough, old[23], "the mark runs ahead of the deletion")
        usleep(grace)
        var r = try compact(st, retain: 0, limit: 12)
        XCTAssertEqual(r.deleted, 12)
        XCTAssertTrue(r.more)
        XCTAssertEqual(st.compactedThrough, old[29])
        r = try compact(st, retain: 0, limit: 12)
        XCTAssertEqual(r.deleted, 12)
        XCTAssertEqual(try all(st), Array(old.suffix(6)))
        r = try compact(st, retain: 0, limit: 12)
        XCTAssertEqual(r.deleted, 0, "the last raise is still in its grace")
        XCTAssertFalse(r.more)
        usleep(grace)
        r = try compact(st, retain: 0, limit: 12)
        XCTAssertEqual(r.deleted, 6)
        XCTAssertTrue(r.empty)

        // By age: 10 events 1.2 s old and 5 fresh ones; retain 1000 keeps them all by count.
        let aged = try append(st, 10)
        usleep(1_200_000)
        let fresh = try append(st, 5)
        XCTAssertEqual(try compact(st, retain: 1000, maxAge: 1).deleted, 0)
        XCTAssertEqual(st.compactedThrough, aged.last!, "the mark covers the events older than maxAge only")
        usleep(grace)
        XCTAssertEqual(try compact(st, retain: 1000, maxAge: 1).deleted, 10)
        XCTAssertEqual(try all(st), fresh)
        XCTAssertThrowsError(try st.compactEvents(retain: 1, maxAge: nil, limit: 10), "outside a transaction") {
            XCTAssertEqual(($0 as? BerthError)?.status, .failedPrecondition)
        }
    }

    /// Many writers (stores that each appended once, as berthds restarted many times): a step deletes one key range
    /// per writer and stays within --max-txn-ops, leaving the rest for the next step.
    func testManyWritersStayWithinTheTxnLimit() throws {
        let site = "ret-writers-\(getpid())"
        var stores: [EtcdStore] = []
        for _ in 0..<140 { stores.append(try store(site)) }
        defer { try? stores[0].removeSite() }
        for s in stores { try append(s, 1) }
        XCTAssertEqual(try compact(stores[0], retain: 0).deleted, 0)
        usleep(grace)
        let r = try compact(stores[0], retain: 0)
        XCTAssertEqual(r.deleted, 126, "128 operations: 126 writers' ranges, the mark and its raises")
        XCTAssertTrue(r.more)
        XCTAssertEqual(try compact(stores[1], retain: 0).deleted, 14)
        XCTAssertEqual(try all(stores[2]).count, 0)
    }

    /// Two stores compacting the same log at once: both finish (a conflict is run again), the newest events are kept,
    /// and the mark ends at the highest revision compacted.
    func testConcurrentCompactionsConverge() throws {
        let site = "ret-race-\(getpid())"
        let a = try store(site), b = try store(site)
        defer { try? a.removeSite() }
        var revs = try append(a, 300, perTxn: 50) + append(b, 300, perTxn: 60)
        revs.sort()
        let lock = NSLock()
        nonisolated(unsafe) var errors: [String] = [], steps = 0
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let st = i == 0 ? a : b
            let deadline = Date().addingTimeInterval(20)
            do {
                while Date() < deadline {
                    let r = try compact(st, retain: 100, limit: 50)
                    lock.lock(); steps += 1; lock.unlock()
                    if try all(st).count == 100 { break }
                    if !r.more { usleep(200_000) }
                }
            } catch {
                lock.lock(); errors.append("\(error)"); lock.unlock()
            }
        }
        XCTAssertEqual(errors, [])
        XCTAssertEqual(try all(a), Array(revs.suffix(100)), "after \(steps) steps")
        print("EtcdRetention: two stores compacting at once: \(steps) steps, \(aborts) conflicts (ABORTED, run again)")
        XCTAssertEqual(try store(site).compactedThrough, revs[revs.count - 101])
    }

    func testCompactHistory() throws {
        let site = "ret-history-\(getpid())"
        let st = try store(site)
        defer { try? st.removeSite() }
        try append(st, 3)
        let before = try st.etcdRevision()
        try st.compactHistory(keepRevisions: 2)
        // A read at a revision below the compaction point is refused by etcd; the current state is intact.
        XCTAssertThrowsError(try st.client.range(st.root, [], revision: before - 3)) {
            XCTAssertTrue("\($0)".contains("compacted"), "\($0)")
        }
        XCTAssertEqual(try all(st).count, 3)
        try st.compactHistory(keepRevisions: 5)  // below the point compacted already: nothing to do, no error
        try st.compactHistory(keepRevisions: 1 << 40)
        XCTAssertThrowsError(try st.compactHistory(keepRevisions: -1)) { XCTAssertEqual(($0 as? BerthError)?.status, .invalidArgument) }
    }
}
