// A commit whose outcome the etcd engine cannot know (etcd stopped after the Txn was sent, so no answer came back)
// is reported as UNAVAILABLE with the outcome unknown, never as INTERNAL "nothing was saved" (etcd may have applied it).
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
            XCTAssertTrue("\($0)".contains("outcome is unknown") && !"\($0)".contains("nothing was saved"), "\($0)")
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
}
