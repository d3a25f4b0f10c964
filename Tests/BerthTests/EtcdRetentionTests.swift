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
            } catch {
                st.rollback()
                throw error
            }
        }
        throw BerthError(.aborted, "compaction conflicted 20 times in a row")
    }

    func all(_ st: EtcdStore) throws -> [Int64] { try st.events(since: 0, limit: 100_000, type: nil, subject: nil).map(\.rev) }

    func testRetainKeepsTheNewestAndTheMarkIsShared() throws {
        let site = "ret-keep-\(getpid())"
        let a = try store(site), b = try store(site)
        defer { try? a.removeSite() }
        // Two writers, single events and groups of 7 in one Txn (a group may be cut: the newest 25 are kept exactly).
        var revs = try append(a, 20) + append(b, 21, perTxn: 7) + append(a, 14, perTxn: 7)
        revs.sort()
        XCTAssertEqual(try all(a), revs)
        let r = try compact(a, retain: 25)
        XCTAssertEqual(r.deleted, revs.count - 25)
        XCTAssertFalse(r.more)
        XCTAssertFalse(r.empty)
        XCTAssertEqual(try all(b), Array(revs.suffix(25)), "the newest 25 are kept, the oldest gone")
        let through = revs[revs.count - 26]
        XCTAssertEqual(a.compactedThrough, through)
        // Another store (another berthd) knows the mark from etcd and refuses a cursor below it.
        let c = try store(site)
        XCTAssertEqual(c.compactedThrough, through)
        XCTAssertThrowsError(try c.checkRetained(since: revs[0])) { e in
            let ec = e as? EventsCompacted
            XCTAssertEqual(ec?.oldestRevision, through + 1, "\(e)")
        }
        XCTAssertNoThrow(try c.checkRetained(since: through), "a cursor at the mark misses nothing")
        XCTAssertNoThrow(try c.checkRetained(since: 0))
        // Nothing more is due.
        XCTAssertEqual(try compact(b, retain: 25).deleted, 0)
        // Compacting everything: the log is empty, the mark is the newest revision.
        let r2 = try compact(b, retain: 0)
        XCTAssertEqual(r2.deleted, 25)
        XCTAssertTrue(r2.empty)
        XCTAssertEqual(try all(a), [])
        XCTAssertEqual(try compact(a, retain: 0).empty, true)
        usleep(1_100_000)
        XCTAssertThrowsError(try c.checkRetained(since: revs.last! - 1), "the mark is re-read once its TTL has passed") { _ in }
    }

    func testStepLimitAndMaxAge() throws {
        let site = "ret-age-\(getpid())"
        let st = try store(site)
        defer { try? st.removeSite() }
        let old = try append(st, 30)
        // The step limit: 30 due, 12 per step.
        var r = try compact(st, retain: 0, maxAge: nil, limit: 12)
        XCTAssertEqual(r.deleted, 12)
        XCTAssertTrue(r.more)
        XCTAssertEqual(try all(st), Array(old.dropFirst(12)))
        // By age: the remaining 18 are 1.2 s old, then 5 fresh ones; retain 1000 keeps them all by count.
        usleep(1_200_000)
        let fresh = try append(st, 5)
        r = try compact(st, retain: 1000, maxAge: 1, limit: 10)
        XCTAssertEqual(r.deleted, 10)
        XCTAssertTrue(r.more, "the whole step was too old: more may be")
        r = try compact(st, retain: 1000, maxAge: 1, limit: 10)
        XCTAssertEqual(r.deleted, 8)
        XCTAssertFalse(r.empty)
        XCTAssertEqual(try all(st), fresh, "only the events younger than maxAge are left")
        r = try compact(st, retain: 1000, maxAge: 1, limit: 10)
        XCTAssertEqual(r.deleted, 0)
        XCTAssertFalse(r.more)
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
        let r = try compact(stores[0], retain: 0)
        XCTAssertEqual(r.deleted, 127, "128 operations: 127 writers' ranges and the mark")
        XCTAssertTrue(r.more)
        XCTAssertEqual(try compact(stores[1], retain: 0).deleted, 13)
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
        nonisolated(unsafe) var errors: [String] = []
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let st = i == 0 ? a : b
            do {
                while try compact(st, retain: 100, limit: 50).more {}
            } catch {
                lock.lock(); errors.append("\(error)"); lock.unlock()
            }
        }
        XCTAssertEqual(errors, [])
        XCTAssertEqual(try all(a), Array(revs.suffix(100)))
        let c = try store(site)
        XCTAssertEqual(c.compactedThrough, revs[revs.count - 101])
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
