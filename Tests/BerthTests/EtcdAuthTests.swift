// The etcd engine on a cluster with authentication on (a real etcd, users set up through its API): the right user
// works and its token is renewed when it expires; no credentials and a wrong password fail with errors that say so.
import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdAuthTests: XCTestCase {
    /// etcd with a 1-second token TTL, a root user with `password`, and authentication enabled.
    func authEtcd(password: String) throws -> EtcdProcess {
        let etcd = try EtcdProcess(extraArgs: ["--auth-token", "simple", "--auth-token-ttl", "1"])
        let c = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: etcd.clientPort), timeoutSeconds: 5)
        for (path, body) in [("/v3/auth/user/add", #"{"name": "root", "password": "\#(password)"}"#),
                             ("/v3/auth/role/add", #"{"name": "root"}"#),
                             ("/v3/auth/user/grant", #"{"user": "root", "role": "root"}"#),
                             ("/v3/auth/enable", "{}")] {
            let r = try c.request("POST", path, body: Array(body.utf8))
            XCTAssertEqual(r.status, 200, "\(path): \(r.text)")
        }
        return etcd
    }

    func settings(_ etcd: EtcdProcess, user: String? = nil, password: String? = nil) -> EtcdSettings {
        EtcdSettings(endpoints: [etcd.endpoint], site: "auth-\(getpid())", username: user, password: password)
    }

    func testTheRightUserWorksAndItsExpiredTokenIsRenewed() throws {
        let etcd = try authEtcd(password: "s3cret-pw")
        defer { etcd.stop() }
        let store = try EtcdStore(settings(etcd, user: "root", password: "s3cret-pw"))
        try store.begin()
        try StoreContract.put(store, "ns", Array("k".utf8), Array("v1".utf8))
        try store.commit()
        sleep(3)  // the token's TTL (1 s) has passed: the next request gets "invalid auth token", and a new one
        try store.begin()
        XCTAssertEqual(try StoreContract.get(store, "ns", Array("k".utf8)), Array("v1".utf8))
        try StoreContract.put(store, "ns", Array("k".utf8), Array("v2".utf8))
        try store.commit()
        XCTAssertEqual(try StoreContract.get(store, "ns", Array("k".utf8)), Array("v2".utf8))
        // The watch authenticates too (and renews its token when it reconnects).
        try assertAWatchWakes(settings(etcd, user: "root", password: "s3cret-pw"), onEventFrom: store)

        // A gRPC watch that reconnects with its expired token (idle past the token's TTL): etcd does not establish
        // it, the gateway says why ("invalid auth token"), the token is renewed, and the watch is over gRPC again.
        var short = settings(etcd, user: "root", password: "s3cret-pw")
        short.timeoutSeconds = 3
        let woke = Shared(0)
        let watch = EtcdWatch(short) { woke.with { $0 += 1 } }
        watch.start()
        defer { watch.stop() }
        var deadline = Date().addingTimeInterval(8)
        while !watch.isWatching && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(watch.transport, "grpc", watch.lastFailure ?? "not watching")
        sleep(4)  // an idle timeout after 3 s: the token of the first watch expired 1 to 2 s after it was used
        let before = woke.with { $0 }
        _ = try store.appendEvent(type: "test.watch", subject: "after-expiry")
        deadline = Date().addingTimeInterval(8)
        while woke.with({ $0 }) == before && Date() < deadline { usleep(20_000) }
        XCTAssertGreaterThan(woke.with { $0 }, before, "an event woke the watch after its token expired: \(watch.lastFailure ?? "")")
        XCTAssertGreaterThan(watch.reconnects, 0)
        XCTAssertTrue(watch.lastFailure?.contains("invalid auth token") == true, watch.lastFailure ?? "")
        while watch.transport != "grpc" && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(watch.transport, "grpc", watch.lastFailure ?? "")
        print("EtcdAuthTests: a watch idle past its token: \(watch.reconnects) reconnects, last: \(watch.lastFailure ?? "-")")
        try store.removeSite()
    }

    func testNoCredentialsOrAWrongPasswordAreRefusedClearly() throws {
        let etcd = try authEtcd(password: "s3cret-pw")
        defer { etcd.stop() }
        XCTAssertThrowsError(try EtcdStore(settings(etcd))) {
            XCTAssertEqual(($0 as? BerthError)?.status, .failedPrecondition, "\($0)")
            XCTAssertTrue("\($0)".contains("set store.username and store.password"), "\($0)")
        }
        XCTAssertThrowsError(try EtcdStore(settings(etcd, user: "root", password: "wrong"))) {
            XCTAssertEqual(($0 as? BerthError)?.status, .failedPrecondition, "\($0)")
            XCTAssertTrue("\($0)".contains("authentication failed") && "\($0)".contains("root"), "\($0)")
        }
    }

    /// `berthd --check` with store.username and store.passwordFile: passes with the right password, names the failure
    /// with a wrong one.
    func testBerthdCheckUsesThePasswordFile() throws {
        let etcd = try authEtcd(password: "s3cret-pw")
        defer { etcd.stop() }
        let dir = tempDir("etcd-auth-check")
        for (pw, expect) in [("s3cret-pw", Int32(0)), ("nope", Int32(2))] {
            try "\(pw)\n".write(toFile: dir + "/pw", atomically: true, encoding: .utf8)
            let site = dir + "/site.json"
            try #"{"stateDir": "\#(dir)/state", "api": {"link": ""}, "store": {"engine": "etcd", "endpoints": ["\#(etcd.endpoint)"], "username": "root", "passwordFile": "\#(dir)/pw"}}"#
                .write(toFile: site, atomically: true, encoding: .utf8)
            let (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", site, "--check"])
            XCTAssertEqual(rc, expect, err)
            if expect != 0 { XCTAssertTrue(err.contains("authentication failed"), err) }
        }
    }
}
