// The etcd engine when the cluster has lost its quorum (a real 3-member etcd, 2 members killed): reads and writes
// fail with UNAVAILABLE within about the request timeout, not minutes, and say that etcd is the cause.
import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdQuorumTests: XCTestCase {
    func testWithoutQuorumReadsAndWritesFailWithinTheTimeout() throws {
        let cluster = try EtcdCluster(members: 3)
        defer { cluster.stop() }
        let timeout = 3
        let store = try EtcdStore(EtcdSettings(endpoints: cluster.endpoints, site: "quorum-\(getpid())", timeoutSeconds: timeout))
        try store.begin()
        try StoreContract.put(store, "ns", Array("before".utf8), Array("1".utf8))
        try store.commit()
        cluster.kill(1)
        cluster.kill(2)
        for (what, op) in [("a read", { () throws -> Void in _ = try StoreContract.get(store, "ns", Array("before".utf8)) }),
                           ("a write", { () throws -> Void in
                               try store.begin()
                               defer { store.rollback() }
                               try StoreContract.put(store, "ns", Array("after".utf8), Array("2".utf8))
                               try store.commit()
                           })] {
            let t0 = Date()
            XCTAssertThrowsError(try op(), "\(what) without quorum") {
                XCTAssertEqual(($0 as? BerthError)?.status, .unavailable, "\($0)")
                XCTAssertTrue("\($0)".contains("etcd"), "\($0)")
            }
            let took = Date().timeIntervalSince(t0)
            print("without quorum, \(what) failed after \(String(format: "%.1f", took)) s (request timeout \(timeout) s)")
            XCTAssertLessThan(took, Double(3 * timeout + 2), "\(what) fails within about the request timeout")
        }
    }
}
