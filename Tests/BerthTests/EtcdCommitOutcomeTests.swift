// What an operation's caller hears when a commit on etcd does not simply go through: a commit whose outcome the engine
// cannot know (etcd stopped after the Txn was sent) is UNAVAILABLE with the outcome unknown, never INTERNAL "nothing was
// saved" (etcd may have applied it); and an ordinary operation never fails because the scheduling leader's fenced
// operation, queued with it, was refused after the leader's term ended.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdCommitOutcomeTests: XCTestCase {
    func testACommitWithoutAnAnswerIsUnavailableWithItsOutcomeUnknown() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let settings = EtcdSettings(endpoints: [etcd.endpoint], site: "outcome", timeoutSeconds: 1)
        let store = try EtcdStore(settings)
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        let key = Array("k".utf8)
        try ex.runSync { try StoreContract.put(store, "t", key, Array("before".utf8)) }

        // etcd stopped: the Txn is sent (the kernel takes it) but no answer comes within the client's 1 s timeout.
        kill(etcd.process.processIdentifier, SIGSTOP)
        var stopped = true
        defer { if stopped { kill(etcd.process.processIdentifier, SIGCONT) } }
        XCTAssertThrowsError(try ex.runSync { try StoreContract.put(store, "t", key, Array("after".utf8)) }) {
            let e = $0 as? BerthError
            XCTAssertEqual(e?.status, .unavailable, "\($0)")
            XCTAssertTrue("\($0)".contains("unknown") && !"\($0)".contains("nothing was saved"), "\($0)")
        }
        kill(etcd.process.processIdentifier, SIGCONT)
        stopped = false

        // Whichever way it went, the key holds one of the two values, and the executor goes on committing.
        let probe = try EtcdStore(EtcdSettings(endpoints: [etcd.endpoint], site: "outcome"))
        let seen = try StoreContract.get(probe, "t", key).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertTrue(seen == "before" || seen == "after", "\(String(describing: seen))")
        try ex.runSync { try StoreContract.put(store, "t", key, Array("again".utf8)) }
        XCTAssertEqual(try StoreContract.get(probe, "t", key).map { String(decoding: $0, as: UTF8.self) }, "again")
    }

    /// An ordinary write queued together with a fenced one (the leader's, after its term ended), in either order:
    /// the fenced one fails FAILED_PRECONDITION, the ordinary one commits (the executor commits a fenced operation
    /// alone). Before, both shared one Txn and the ordinary one failed "no longer the leader" too.
    func testAnOrdinaryOperationDoesNotShareTheFateOfAFencedOne() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let settings = EtcdSettings(endpoints: [etcd.endpoint], site: "fence-group")
        let store = try EtcdStore(settings)
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        let lease = try EtcdLease(settings, ttlSeconds: 5)
        store.fence = try XCTUnwrap(try lease.campaign("scheduler", value: "a"))
        try lease.revoke()  // the term has ended; this store still holds it as its fence
        for fencedFirst in [false, true] {
            let results = Shared<[String: Error?]>([:])
            let group = DispatchGroup()
            func submit(_ name: String, fenced: Bool) {
                group.enter()
                Thread.detachNewThread {
                    let r: Error?
                    do {
                        try ex.runSync {
                            if fenced { store.fenceTransaction() }
                            try StoreContract.put(store, "t", Array("\(name)-\(fencedFirst)".utf8), Array("v".utf8))
                        }
                        r = nil
                    } catch { r = error }
                    results.with { $0[name] = r }
                    group.leave()
                }
            }
            // A job that holds the executor while both are queued behind it: they are taken as one group.
            group.enter()
            Thread.detachNewThread { _ = try? ex.runSync { usleep(300_000) }; group.leave() }
            usleep(50_000)
            for (name, fenced) in fencedFirst ? [("leader", true), ("plain", false)] : [("plain", false), ("leader", true)] {
                submit(name, fenced: fenced)
                usleep(30_000)
            }
            group.wait()
            let r = results.get
            XCTAssertNil(r["plain"] ?? nil, "fenced first: \(fencedFirst): the ordinary write failed: \(String(describing: r["plain"] ?? nil))")
            XCTAssertEqual(((r["leader"] ?? nil) as? BerthError)?.status, .failedPrecondition, "fenced first: \(fencedFirst): \(String(describing: r["leader"] ?? nil))")
            let probe = try EtcdStore(settings)
            XCTAssertNotNil(try StoreContract.get(probe, "t", Array("plain-\(fencedFirst)".utf8)))
            XCTAssertNil(try StoreContract.get(probe, "t", Array("leader-\(fencedFirst)".utf8)))
        }
    }
}
