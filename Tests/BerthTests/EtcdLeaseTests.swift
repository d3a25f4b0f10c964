// Liveness and leadership on a real etcd started here on loopback: a node registered under a lease is listed while
// the lease is kept alive and gone once it lapses; one leader per election, another takes over when the leader's
// lease lapses; and a store fenced on a term cannot commit once that term has ended (nothing applied).
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdLeaseTests: EtcdTestCase {

    func settings(_ site: String) -> EtcdSettings { EtcdSettings(endpoints: [Self.etcd!.endpoint], site: site) }

    /// Waits up to `seconds` for `cond`, keeping `alive` leases alive meanwhile.
    func waitFor(_ seconds: Double, keeping alive: [EtcdLease] = [], _ cond: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try cond() { return true }
            for l in alive { try l.keepAlive() }
            usleep(200_000)
        }
        return try cond()
    }

    func testANodeIsListedWhileItsLeaseLivesAndGoneWhenItLapses() throws {
        let site = "lease-nodes-\(getpid())"
        let a = try EtcdLease(settings(site), ttlSeconds: 2), b = try EtcdLease(settings(site), ttlSeconds: 2)
        defer { try? a.revoke(); try? b.revoke() }
        try a.register(node: "n1", info: ["api": "127.0.0.1:1"])
        try b.register(node: "n2", info: ["api": "127.0.0.1:2"])
        XCTAssertEqual(try a.liveNodes().map(\.node), ["n1", "n2"])
        XCTAssertEqual(try a.liveNodes().first?.info["api"], "127.0.0.1:1")
        XCTAssertThrowsError(try a.register(node: "n\u{0}1", info: [:]), "a node name is checked like any name (no NUL)")
        // n2 is kept alive; n1 is not: within its TTL (plus etcd's expiry tick) it is gone, n2 stays.
        let gone = try waitFor(8, keeping: [b]) { try b.liveNodes().map(\.node) == ["n2"] }
        XCTAssertTrue(gone, "n1 still listed: \((try? b.liveNodes().map(\.node)) ?? [])")
        XCTAssertThrowsError(try a.keepAlive()) { XCTAssertEqual(($0 as? BerthError)?.status, .notFound) }
    }

    func testOneLeaderAndATakeoverWhenTheLeaderLapses() throws {
        let site = "lease-election-\(getpid())"
        let a = try EtcdLease(settings(site), ttlSeconds: 2), b = try EtcdLease(settings(site), ttlSeconds: 2)
        defer { try? a.revoke(); try? b.revoke() }
        let termA = try XCTUnwrap(try a.campaign("scheduler", value: "berthd-a"), "the first campaign wins")
        XCTAssertNil(try b.campaign("scheduler", value: "berthd-b"), "a second candidate does not win while the leader lives")
        XCTAssertEqual(try b.leader("scheduler")?.value, "berthd-a")
        XCTAssertEqual(try a.campaign("scheduler", value: "berthd-a"), termA, "campaigning again keeps the same term")
        // a stops renewing: b keeps campaigning and wins within the TTL plus the expiry tick.
        var termB: Leadership?
        let won = try waitFor(8, keeping: [b]) { termB = try b.campaign("scheduler", value: "berthd-b"); return termB != nil }
        XCTAssertTrue(won, "b never took over; leader: \(String(describing: try? b.leader("scheduler")))")
        XCTAssertGreaterThan(termB?.createRevision ?? 0, termA.createRevision, "a new term has a newer key")
        // Resigning ends the term at once.
        try b.resign(termB!)
        XCTAssertNil(try b.leader("scheduler"))
    }

    /// A store fenced on a term commits while the term lasts; after it ended (another leader's term), its commit is
    /// refused with FAILED_PRECONDITION (not retried as a conflict) and nothing of it is applied.
    func testAFencedCommitFailsOnceTheTermEnded() throws {
        let site = "lease-fence-\(getpid())"
        let a = try EtcdLease(settings(site), ttlSeconds: 2), b = try EtcdLease(settings(site), ttlSeconds: 2)
        defer { try? a.revoke(); try? b.revoke() }
        let storeA = try EtcdStore(settings(site)), storeB = try EtcdStore(settings(site))
        defer { try? storeA.removeSite() }
        storeA.fence = try XCTUnwrap(try a.campaign("scheduler", value: "a"))
        func write(_ st: EtcdStore, _ k: String, _ v: String, fenced: Bool = true) throws {
            try st.begin()
            if fenced { st.fenceTransaction() }
            do { try StoreContract.put(st, "sched", Array(k.utf8), Array(v.utf8)); try st.commit() } catch { st.rollback(); throw error }
        }
        try write(storeA, "placement/app-0", "n1")
        XCTAssertEqual(try StoreContract.get(storeB, "sched", Array("placement/app-0".utf8)).map { String(decoding: $0, as: UTF8.self) }, "n1")

        try a.revoke()  // a's term ends (as when its lease lapses); b wins the next term
        storeB.fence = try XCTUnwrap(try b.campaign("scheduler", value: "b"))
        XCTAssertThrowsError(try write(storeA, "placement/app-1", "n2")) {
            XCTAssertEqual(($0 as? BerthError)?.status, .failedPrecondition, "\($0)")
            XCTAssertTrue("\($0)".contains("no longer the leader"), "\($0)")
        }
        XCTAssertNil(try StoreContract.get(storeB, "sched", Array("placement/app-1".utf8)), "the fenced commit applied nothing")
        // What is not the scheduler's (an address allocation) still commits on a berthd that lost leadership.
        try write(storeA, "other/alloc", "x", fenced: false)
        // A fenced transaction on a store that holds no term is refused too.
        storeA.fence = nil
        XCTAssertThrowsError(try write(storeA, "placement/app-2", "n4")) {
            XCTAssertEqual(($0 as? BerthError)?.status, .failedPrecondition, "\($0)")
            XCTAssertTrue("\($0)".contains("not the scheduling leader"), "\($0)")
        }
        try write(storeB, "placement/app-1", "n3")
        XCTAssertEqual(try StoreContract.get(storeA, "sched", Array("placement/app-1".utf8)).map { String(decoding: $0, as: UTF8.self) }, "n3")
    }
}
