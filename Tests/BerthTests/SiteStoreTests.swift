// The site's store keys (store.engine, endpoints, tls, credentials, prefix): parsed and checked with clear errors;
// `berthd --check` reports a real etcd's version and members and fails on an unreachable one; berthd runs on etcd.
import BerthPlugins
import BerthWire
import Foundation
import XCTest

final class SiteStoreTests: XCTestCase {
    func parse(_ store: String) throws -> SiteConfig {
        try SiteConfig.parse(Array(#"{"store": \#(store)}"#.utf8), baseDir: "/tmp")
    }
    func expectProblem(_ store: String, _ words: [String], line: UInt = #line) {
        XCTAssertThrowsError(try parse(store), store, line: line) { e in
            for w in words { XCTAssertTrue("\(e)".contains(w), "\(store): \(e) should say \(w)", line: line) }
        }
    }

    func testStoreKeysParseAndRefuseWhatIsInconsistent() throws {
        XCTAssertEqual(try parse("{}").store.engine, "sqlite", "sqlite is the default")
        let dir = tempDir("site-store")
        FileManager.default.createFile(atPath: dir + "/ca.pem", contents: Data("x".utf8))
        FileManager.default.createFile(atPath: dir + "/pw", contents: Data("secret\n".utf8))
        let ok = try SiteConfig.parse(Array(#"""
            {"store": {"engine": "etcd", "endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379/"], "tls": {"ca": "ca.pem"},
                       "username": "berth", "passwordFile": "pw", "prefix": "/berth/prod/"}}
            """#.utf8), baseDir: dir)
        XCTAssertEqual(ok.store.engine, "etcd")
        XCTAssertEqual(ok.store.endpoints, ["https://10.0.0.1:2379", "https://10.0.0.2:2379/"])
        XCTAssertEqual(ok.store.tlsCA, dir + "/ca.pem", "relative to the site file")
        XCTAssertEqual(ok.store.passwordFile, dir + "/pw")
        XCTAssertEqual(ok.store.prefix, "/berth/prod/")
        XCTAssertEqual(ok.json["store"]?["engine"], "etcd")
        XCTAssertEqual(ok.json["store"]?["sync"], "full")
        XCTAssertEqual(ok.store.unsupported, [], "https endpoints, TLS files and authentication are supported")
        XCTAssertEqual(ok.store.etcdSettings(site: "prod").password, "secret", "the password file's first line")
        XCTAssertEqual(ok.store.etcdSettings(site: "prod").tls?.ca, dir + "/ca.pem")
        XCTAssertTrue(ok.store.etcdSettings(site: "prod").mirror, "the local copy is on by default")
        let off = try SiteConfig.parse(Array(#"{"store": {"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "mirror": false}}"#.utf8), baseDir: dir)
        XCTAssertFalse(off.store.etcdSettings(site: "prod").mirror)
        XCTAssertEqual(off.json["store"]?["mirror"], .bool(false))
        expectProblem(#"{"mirror": false}"#, ["store.mirror: applies only to store.engine \"etcd\""])
        XCTAssertEqual(ok.store.historySeconds, 300, "the leader compacts etcd's history, keeping 5 minutes, by default")
        let keep = try SiteConfig.parse(Array(#"{"store": {"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "historySeconds": 0}}"#.utf8), baseDir: dir)
        XCTAssertEqual(keep.store.historySeconds, 0)
        XCTAssertEqual(keep.json["store"]?["historySeconds"], .int(0))
        expectProblem(#"{"historySeconds": 60}"#, ["store.historySeconds: applies only to store.engine \"etcd\""])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "mirror": "yes"}"#, ["store.mirror"])
        XCTAssertTrue(ok.store.etcdSettings(site: "prod").grpc, "gRPC by default")
        XCTAssertEqual(ok.json["store"]?["transport"], "grpc")
        let gw = try SiteConfig.parse(Array(#"{"store": {"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "transport": "gateway"}}"#.utf8), baseDir: dir)
        XCTAssertFalse(gw.store.etcdSettings(site: "prod").grpc)
        XCTAssertEqual(gw.json["store"]?["transport"], "gateway")
        expectProblem(#"{"transport": "gateway"}"#, ["store.transport: applies only to store.engine \"etcd\""])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "transport": "http2"}"#, ["store.transport"])
        let named = try SiteConfig.parse(Array(#"{"store": {"engine": "etcd", "endpoints": ["http://etcd-1.example:2379"]}}"#.utf8), baseDir: dir)
        XCTAssertEqual(named.store.unsupported.count, 1, "plain HTTP needs a numeric address: \(named.store.unsupported)")

        expectProblem(#"{"engine": "cassandra"}"#, ["store.engine"])
        expectProblem(#"{"engine": "etcd"}"#, ["store.endpoints", "at least one etcd client URL"])
        expectProblem(#"{"engine": "etcd", "endpoints": []}"#, ["store.endpoints"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["127.0.0.1:2379"]}"#, ["store.endpoints[0]"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1"]}"#, ["store.endpoints[0]"])
        expectProblem(#"{"endpoints": ["http://127.0.0.1:2379"]}"#, ["store.endpoints: applies only to store.engine \"etcd\""])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379", "https://127.0.0.2:2379"]}"#, ["mixes http and https"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "tls": {"ca": "/etc/hostname"}}"#, ["store.tls", "https://"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["https://127.0.0.1:2379"], "tls": {"ca": "/nonexistent/ca.pem"}}"#, ["store.tls.ca", "/nonexistent/ca.pem"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["https://127.0.0.1:2379"], "tls": {"certificate": "/etc/hostname"}}"#, ["certificate and key go together"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "username": "u"}"#, ["store.username", "password"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "password": "p"}"#, ["store.password", "username"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "username": "u", "password": "p", "passwordFile": "/etc/hostname"}"#, ["set one, not both"])
        expectProblem(#"{"engine": "etcd", "endpoints": ["http://127.0.0.1:2379"], "prefix": "berth/"}"#, ["store.prefix"])
    }

    func site(_ dir: String, _ store: String) throws -> String {
        let f = dir + "/site.json"
        try #"{"stateDir": "\#(dir)/state", "api": {"link": ""}, "store": \#(store)}"#.write(toFile: f, atomically: true, encoding: .utf8)
        return f
    }

    /// berthd on store.engine "etcd" with no etcd answering does not start: it exits 1 naming the endpoint.
    func testBerthdOnUnreachableEtcdExitsNamingIt() throws {
        let dir = tempDir("site-etcd-start")
        let dead = "127.0.0.1:\(freeLoopbackPort())"
        let f = try site(dir, #"{"engine": "etcd", "endpoints": ["http://\#(dead)"]}"#)
        let (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", f])
        XCTAssertEqual(rc, 1, err)
        XCTAssertTrue(err.contains("cannot start") && err.contains("etcd is unreachable") && err.contains(dead), err)
    }

    /// berthd starts on a real etcd: /healthz names the engine, this node as the scheduling leader (it is alone) and
    /// itself as the one live member; the store's keys are under /berth/<site>/.
    func testBerthdRunsOnEtcdAndLeadsAlone() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let d = try Daemon(plugins: [], tag: "site-etcd-run",
                           extra: [("site", "solo"), ("node", "solo-1"),
                                   ("store", ["engine": "etcd", "endpoints": [.string(etcd.endpoint)], "leaseSeconds": 2])])
        var cluster: JSON = .null
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let (code, h) = try d.request("GET", "/healthz")
            XCTAssertEqual(code, 200)
            XCTAssertEqual(h["store"]?["engine"]?.string, "etcd", h.serialized)
            XCTAssertEqual(h["store"]?["prefix"]?.string, "/berth/solo/", h.serialized)
            cluster = h["store"]?["cluster"] ?? .null
            if cluster["leader"]?.string == "solo-1" { break }
            usleep(100_000)
        }
        XCTAssertEqual(cluster["leader"]?.string, "solo-1", cluster.serialized)
        XCTAssertEqual(cluster["leading"]?.bool, true, cluster.serialized)
        XCTAssertEqual(cluster["members"]?.array?.count, 1, cluster.serialized)
        XCTAssertEqual(cluster["members"]?[0]?["live"]?.bool, true, cluster.serialized)
        // `berth status` prints the same as lines.
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["status", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("store etcd \(etcd.endpoint)"), out)
        XCTAssertTrue(out.contains("node solo-1, scheduling leader solo-1"), out)
        XCTAssertTrue(out.contains("members solo-1\n"), out)
        XCTAssertTrue(out.contains("etcd 3."), out)
        let (_, nodes) = try d.request("GET", "/v1/nodes")
        XCTAssertEqual(nodes["nodes"]?.array?.map { $0["name"]?.string ?? "" }, ["solo-1"], "the berthd joined its node: \(nodes.serialized)")
    }

    /// `berthd --check` on a real etcd: reports the version and the members of every endpoint; an unreachable
    /// endpoint is a problem naming it (exit 2); with every endpoint answering the check passes (exit 0).
    func testCheckConnectsToEveryEndpoint() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let dir = tempDir("site-etcd-check")
        var (rc, out, err) = try runTool(Paths.bin + "/berthd", ["--site", try site(dir, #"{"engine": "etcd", "endpoints": ["\#(etcd.endpoint)"]}"#), "--check"])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(err.contains("store: etcd \(etcd.endpoint) answers, version 3."), err)
        XCTAssertTrue(err.contains("1 member(s): t \(etcd.endpoint)"), err)
        XCTAssertFalse(err.contains("unreachable"), err)
        XCTAssertEqual((try JSON.parse(Array(out.utf8)))["store"]?["engine"]?.string, "etcd", out)
        let dead = "http://127.0.0.1:\(freeLoopbackPort())"
        (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", try site(dir, #"{"engine": "etcd", "endpoints": ["\#(etcd.endpoint)", "\#(dead)"]}"#), "--check"])
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("store.endpoints: ") && err.contains("etcd is unreachable") && err.contains(dead.dropFirst(7)), err)
        (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", try site(dir, #"{"engine": "etcd", "endpoints": ["http://etcd-1.example:2379"]}"#), "--check"])
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("with a numeric address"), err)
    }
}
