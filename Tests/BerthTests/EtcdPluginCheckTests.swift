// Cluster mode on a real etcd started here on loopback: every reference plugin passes `berth plugin check --store
// etcd://…` with its state in etcd (and the run's keys are gone afterwards); a bad --store changes nothing in etcd;
// the executor splits a group commit at etcd's limits and names the limit when one operation alone exceeds them.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdPluginCheckTests: EtcdTestCase {

    var endpoint: String { Self.etcd!.endpoint }
    var storeURL: String { "etcd://127.0.0.1:\(Self.etcd!.clientPort)" }
    var client: EtcdClient { try! EtcdClient(EtcdSettings(endpoints: [endpoint], site: "probe")) }
    /// etcd's store revision: every write anywhere in the cluster increases it.
    func revision() throws -> Int64 { try client.range(Array("/".utf8), [], revision: 0, countOnly: true).revision }
    /// Keys under /berth/ (every site of every check run).
    func berthKeys() throws -> Int64 {
        let p = Array("/berth/".utf8)
        return try client.range(p, Keys.prefixEnd(p), revision: 0, countOnly: true).count
    }

    func check(_ plugin: String, config: String?, _ extra: [String] = []) throws -> (Int32, JSON, String) {
        var args = ["plugin", "check", Paths.plugin(plugin), "-o", "json", "--store", storeURL] + extra
        if let config {
            let dir = tempDir("etcd-check")
            try config.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
            args += ["--config", dir + "/c.json"]
        }
        let (rc, out, err) = try runTool(Paths.bin + "/berth", args)
        return (rc, (try? JSON.parse(out)) ?? .null, out + err)
    }

    /// Every reference plugin passes its kinds' conformance cases with its key-value state and events in etcd: the
    /// "store" case says where, etcd's revision shows the writes went there, and no key of the run is left.
    func testReferencePluginsPassWithTheirStateInEtcd() throws {
        var plugins: [(name: String, config: String?, writes: Bool)] = [
            ("ipam-pool", #"{"pools":[{"name":"p","ranges":[{"subnet":"10.9.0.0/29"}]}]}"#, true),
            ("sched-stateful", nil, true),
            ("discovery-dns", nil, true),
            ("hello", nil, false),
            ("hello-swift", nil, false),
            // Its runtime cases do not touch the store; without --rootfs the lifecycle cases are skipped.
            ("runtime-oci", #"{"stateDir": "\#(tempDir("etcd-rt"))", "monitor": "\#(Paths.bin)/berth-runtime-monitor"}"#, false),
        ]
        if getuid() == 0 {  // storage-local makes real bind mounts (CI runs as root)
            let root = tempDir("etcd-storage")
            plugins.append(("storage-local", #"{"root": "\#(root)/root", "capacityBytes": 1073741824, "nodes": ["node-a", "node-b"]}"#, true))
        }
        for p in plugins {
            let before = try revision()
            let t0 = Date()
            let (rc, report, text) = try check(p.name, config: p.config)
            let failed = (report["cases"]?.array ?? []).filter { $0["result"] == "fail" }.map { "\($0["name"]!.string!): \($0["detail"]!.string!)" }
            XCTAssertEqual(rc, 0, "\(p.name): \(failed.joined(separator: "\n"))\n\(text.suffix(2000))")
            XCTAssertEqual(report["failed"], 0, p.name)
            XCTAssertGreaterThan(report["passed"]?.int ?? 0, 4, p.name)
            let store = (report["cases"]?.array ?? []).first { $0["name"] == "store" }
            XCTAssertEqual(store?["result"], "pass", "\(p.name): \(text.prefix(1500))")
            XCTAssertTrue(store?["detail"]?.string?.contains("127.0.0.1:\(Self.etcd!.clientPort)") ?? false, "\(p.name): \(store?.serialized ?? "")")
            let writes = try revision() - before
            if p.writes { XCTAssertGreaterThan(writes, 3, "\(p.name): its state went to etcd") }
            XCTAssertEqual(try berthKeys(), 0, "\(p.name): the run's prefix is removed at the end")
            print("berth plugin check --store etcd:// \(p.name): \(report["passed"]?.int ?? 0) passed, \(report["skipped"]?.int ?? 0) skipped, \(writes) etcd revisions, \(String(format: "%.1f", Date().timeIntervalSince(t0))) s")
        }
    }

    /// A malformed --store is refused before anything runs (exit 64, naming the input and the form); an unreachable
    /// one fails the check (exit 1) naming the endpoint. Neither writes to etcd.
    func testBadStoreURLsChangeNothing() throws {
        let before = try revision()
        for bad in ["etcd://", "http://127.0.0.1:2379", "etcd://127.0.0.1", "etcd://127.0.0.1:99999", "etcd://127.0.0.1:2379,,127.0.0.1:2380", "etcd://etcd.local:2379"] {
            let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("hello"), "--store", bad])
            XCTAssertNotEqual(rc, 0, bad)
            XCTAssertTrue(err.contains("--store") && err.contains("etcd://HOST:PORT"), "\(bad): \(out)\(err)")
        }
        let dead = "etcd://127.0.0.1:\(freeLoopbackPort())"
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("ipam-pool"), "--store", dead, "-o", "json"])
        XCTAssertEqual(rc, 1, out)
        let j = try JSON.parse(out)
        XCTAssertEqual(j["cases"]?.array?.first?["name"], "store", out)
        XCTAssertTrue(j["cases"]?.array?.first?["detail"]?.string?.contains("etcd is unreachable") ?? false, out)
        XCTAssertEqual(j["passed"], 0, "nothing ran")
        XCTAssertEqual(try revision(), before, "nothing was written to etcd")
        XCTAssertEqual(try berthKeys(), 0)
    }

    // MARK: the executor at etcd's limits

    /// Runs `jobs` through an executor on the etcd engine, queued before it starts so that they form one group.
    func runGrouped(_ st: EtcdStore, _ jobs: [() throws -> Void]) -> (errors: [Error?], commits: UInt64) {
        let ex = Executor(store: st)
        let results = Shared([Error?](repeating: nil, count: jobs.count))
        let done = DispatchSemaphore(value: 0)
        for (i, job) in jobs.enumerated() {
            ex.submit(job, complete: { e in results.with { $0[i] = e }; done.signal() })
        }
        ex.start()
        for _ in jobs { done.wait() }
        ex.stop()
        return (results.get, ex.commits)
    }

    func put(_ st: EtcdStore, _ k: String, _ v: [UInt8]) throws {
        try Array(k.utf8).withUnsafeBytes { kb in try v.withUnsafeBytes { try st.kvPut("ns", kb, $0) } }
    }
    func count(_ st: EtcdStore, _ prefix: String) throws -> Int64 {
        try Array(prefix.utf8).withUnsafeBytes { try st.kvCountPrefix("ns", $0) }
    }

    /// 300 one-key operations queued together: the executor commits them in several Txns under etcd's 128 operations
    /// (each also appends an event: two writes, so at least 5 commits), and every one lands.
    func testGroupCommitSplitsAtEtcdLimits() throws {
        let st = try EtcdStore(EtcdSettings(endpoints: [endpoint], site: "split-\(UUID().uuidString)"))
        defer { try? st.removeSite() }
        let jobs: [() throws -> Void] = (0..<300).map { i in {
            try self.put(st, "k/\(i)", [UInt8(i & 0xFF)])
            _ = try st.appendEvent(type: "test.put", subject: "k/\(i)", actor: "test", data: .object([]))
        } }
        let (errors, commits) = runGrouped(st, jobs)
        XCTAssertEqual(errors.compactMap { $0 }.map { "\($0)" }, [], "every operation committed")
        XCTAssertGreaterThanOrEqual(commits, 3, "split into several Txns")
        XCTAssertLessThan(commits, 300, "still grouped")
        XCTAssertEqual(try count(st, "k/"), 300)
        let evs = try st.events(since: 0, limit: 1000, type: "test.put", subject: nil)
        XCTAssertEqual(evs.count, 300, "every operation's event")
        XCTAssertEqual(try st.lastRevision(), evs.last?.rev)
        print("300 grouped operations: \(commits) etcd Txns")
    }

    /// 300 operations that each read two keys and write one, queued together: etcd's 128 compares are reached first.
    /// The operation the commit is cut at runs again in the next one, and what it read is not compared in this one
    /// (it took the Txn to 130 compares: RESOURCE_EXHAUSTED for the whole batch).
    func testGroupCommitSplitsAtTheComparesLimit() throws {
        let st = try EtcdStore(EtcdSettings(endpoints: [endpoint], site: "split-reads-\(UUID().uuidString)"))
        defer { try? st.removeSite() }
        func get(_ k: String) throws -> [UInt8]? { try Array(k.utf8).withUnsafeBytes { kb in try st.kvRead("ns", kb) { $0.map { Array($0) } } } }
        let jobs: [() throws -> Void] = (0..<300).map { i in {
            let a = try get("a/\(i)"), b = try get("b/\(i)")
            try self.put(st, "k/\(i)", [UInt8((a?.count ?? 0) + (b?.count ?? 0))])
        } }
        let (errors, commits) = runGrouped(st, jobs)
        XCTAssertEqual(errors.compactMap { $0 }.map { "\($0)" }.prefix(1), [], "every operation committed")
        XCTAssertGreaterThanOrEqual(commits, 3, "split into several Txns")
        XCTAssertEqual(try count(st, "k/"), 300)
    }

    /// One operation that alone exceeds a limit fails with RESOURCE_EXHAUSTED naming it, and nothing of it is written;
    /// the operations grouped with it commit.
    func testAnOperationOverTheLimitsFailsAloneNamingTheLimit() throws {
        let st = try EtcdStore(EtcdSettings(endpoints: [endpoint], site: "limit-\(UUID().uuidString)"))
        defer { try? st.removeSite() }
        let mib = [UInt8](repeating: 7, count: 1 << 20)
        let jobs: [() throws -> Void] = [
            { try self.put(st, "small/a", [1]) },
            { for i in 0..<129 { try self.put(st, "many/\(i)", [1]) } },
            { try self.put(st, "small/b", [1]) },
            { try self.put(st, "big/1", mib); try self.put(st, "big/2", mib) },
            { try self.put(st, "small/c", [1]) },
        ]
        let (errors, _) = runGrouped(st, jobs)
        for i in [0, 2, 4] { XCTAssertNil(errors[i], "job \(i): \(errors[i].map { "\($0)" } ?? "")") }
        for (i, flag) in [(1, "--max-txn-ops"), (3, "--max-request-bytes")] {
            let e = errors[i] as? BerthError
            XCTAssertEqual(e?.status, .resourceExhausted, "job \(i): \(String(describing: errors[i]))")
            XCTAssertTrue(e?.message.contains(flag) ?? false, "job \(i) names \(flag): \(String(describing: errors[i]))")
        }
        XCTAssertEqual(try count(st, "small/"), 3)
        XCTAssertEqual(try count(st, "many/"), 0, "nothing of the operation over --max-txn-ops")
        XCTAssertEqual(try count(st, "big/"), 0, "nothing of the operation over --max-request-bytes")
    }
}

/// The same on a 3-member etcd cluster: the check passes with every member listed, and again after the first listed
/// member is killed (the engine goes on to the next endpoint; the cluster keeps its quorum); `berthd --check` lists
/// the three members.
final class EtcdClusterCheckTests: XCTestCase {
    func testPluginCheckOnAThreeMemberClusterSurvivesAMemberKilled() throws {
        let cluster = try EtcdCluster(members: 3)
        defer { cluster.stop() }
        let dir = tempDir("etcd-cluster-check")
        try #"{"pools":[{"name":"p","ranges":[{"subnet":"10.9.0.0/29"}]}]}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        func check() throws -> (Int32, JSON, String) {
            let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("ipam-pool"), "--config", dir + "/c.json",
                                                                     "--store", cluster.storeURL, "-o", "json"])
            return (rc, (try? JSON.parse(out)) ?? .null, out + err)
        }
        var (rc, report, text) = try check()
        XCTAssertEqual(rc, 0, text)
        XCTAssertEqual(report["failed"], 0, text)

        try #"{"stateDir": "\#(dir)/state", "api": {"link": ""}, "store": {"engine": "etcd", "endpoints": ["\#(cluster.endpoints.joined(separator: "\", \""))"]}}"#
            .write(toFile: dir + "/site.json", atomically: true, encoding: .utf8)
        let (_, _, err) = try runTool(Paths.bin + "/berthd", ["--site", dir + "/site.json", "--check"])
        for e in cluster.endpoints { XCTAssertTrue(err.contains("store: etcd \(e) answers") && err.contains("3 member(s)"), err) }
        for m in ["m0", "m1", "m2"] { XCTAssertTrue(err.contains("\(m) http://127.0.0.1:"), err) }

        cluster.kill(0)
        (rc, report, text) = try check()
        XCTAssertEqual(rc, 0, "with m0 down: \(text)")
        XCTAssertEqual(report["failed"], 0, text)
        XCTAssertGreaterThan(report["passed"]?.int ?? 0, 20, text)
        let probe = try EtcdStore(EtcdSettings(endpoints: Array(cluster.endpoints.dropFirst()), site: "probe"))
        XCTAssertEqual(try probe.etcdRevision() > 0, true)
        let p = Array("/berth/".utf8)
        XCTAssertEqual(try probe.client.range(p, Keys.prefixEnd(p), revision: 0, countOnly: true).count, 0, "no key of either run is left")
    }
}
