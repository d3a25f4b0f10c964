// The operator's first hour: one berthd per state directory, `berthd --check` refuses what start-up would,
// `berth status` names a failed plugin, dry run and apply agree, pool and pending series in /metrics.
import BerthWire
import Foundation
import XCTest

/// Runs a command, killing it after `timeout` seconds (a berthd that should have refused to start would serve forever).
func runBounded(_ exe: String, _ args: [String], timeout: Double = 30) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

final class OperatorTests: XCTestCase {
    /// A second berthd on the same state directory (or the same socket) exits non-zero naming the first one's pid,
    /// and the first keeps serving on its socket.
    func testSecondBerthdIsRefusedAndTheFirstKeepsServing() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "twice")
        let pid = d.process!.processIdentifier
        var (rc, out, err) = try runBounded(Paths.bin + "/berthd", ["--site", d.siteFile], timeout: 20)
        XCTAssertNotEqual(rc, 0, "the second berthd must not start: \(out) \(err)")
        XCTAssertTrue(err.contains("in use by another berthd (pid \(pid)"), err)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "the first berthd still answers on its socket")
        XCTAssertEqual(try String(contentsOfFile: d.dir + "/state/berthd.lock", encoding: .utf8), "\(pid)\n")

        // Another state directory, the same socket: refused too, and the socket is left alone.
        (rc, out, err) = try runBounded(Paths.bin + "/berthd", ["--site", d.siteFile, "--state-dir", d.dir + "/other-state"], timeout: 20)
        XCTAssertNotEqual(rc, 0, "\(out) \(err)")
        XCTAssertTrue(err.contains("is served by another process (pid \(pid))"), err)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "the first berthd's socket was not replaced")

        // Once the first is gone, the state directory is free again (the kernel drops the lock with the process).
        d.stop()
        try d.start()
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200)
    }

    func check(_ site: JSON, _ dir: String) throws -> (Int32, String, String) {
        let f = dir + "/site-\(UInt32.random(in: 0..<UInt32.max)).json"
        try site.pretty.write(toFile: f, atomically: true, encoding: .utf8)
        return try runBounded(Paths.bin + "/berthd", ["--site", f, "--check"])
    }

    /// `berthd --check` refuses what start-up would: a plugin configuration its schema refuses, a directory a plugin
    /// needs that does not exist, a placeholder token; it warns about a TCP listener that is not on loopback.
    func testCheckRefusesWhatStartUpWould() throws {
        let dir = tempDir("check")
        func site(_ plugins: JSON, api: JSON? = nil) -> JSON {
            var s: JSON = ["site": "chk", "stateDir": .string(dir + "/state"), "plugins": plugins]
            if let api { s = s.setting("api", api) }
            return s
        }
        let net: JSON = ["name": "net1", "path": .string(Paths.plugin("ipam-pool")), "config": ["pools": [["name": "p", "ranges": [["subnet": "10.9.0.0/24"]]]]]]
        var (rc, out, err) = try check(site([net]), dir)
        XCTAssertEqual(rc, 0, out + err)
        XCTAssertEqual(try JSON.parse(out)["plugins"]?[0]?["name"], "net1")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/state/state.db"), "--check starts nothing and writes no state")

        (rc, _, err) = try check(site([["name": "net1", "path": .string(Paths.plugin("ipam-pool")), "config": ["pools": "all of them"]]]), dir)
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("plugins.net1") && err.contains("pools"), err)

        (rc, _, err) = try check(site([["name": "dns", "path": .string(Paths.plugin("discovery-dns")),
                                        "config": ["hostsFile": .string(dir + "/no-such-dir/hosts")]]]), dir)
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("plugins.dns") && err.contains("no-such-dir") && err.contains("does not exist"), err)

        for placeholder in ["CHANGE-ME-CHANGE-ME-CHANGE-ME", "replace-with-a-long-random-token", "token-token-token-token", "aaaaaaaaaaaaaaaaaaaa"] {
            (rc, _, err) = try check(site([net], api: ["listen": "127.0.0.1:7420", "token": .string(placeholder)]), dir)
            XCTAssertEqual(rc, 2, "\(placeholder): \(err)")
            XCTAssertTrue(err.contains("api.token: looks like a placeholder"), err)
        }
        (rc, out, err) = try check(site([net], api: ["listen": "127.0.0.1:7420", "token": "k3Jq9vTz2LwX8mRb5NcY"]), dir)
        XCTAssertEqual(rc, 0, err)
        XCTAssertFalse(err.contains("warning"), err)

        // Not loopback and no TLS: refused (the bearer token would cross the network in clear text; issue 15).
        (rc, out, err) = try check(site([net], api: ["listen": "0.0.0.0:7420", "token": "k3Jq9vTz2LwX8mRb5NcY"]), dir)
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("0.0.0.0:7420 is not a loopback address"), err)

        (rc, _, err) = try check(site([net], api: ["socket": .string(dir + "/missing/berthd.sock")]), dir)
        XCTAssertEqual(rc, 2, err)
        XCTAssertTrue(err.contains("api.socket") && err.contains("does not exist"), err)
    }

    /// `berth status` with a failed plugin exits 1 and names the plugin and why.
    func testStatusNamesAFailedPlugin() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))],
                                     ["name": "gone", "path": "/nonexistent/libberth-gone.so"]], tag: "status")
        var (rc, out, err) = try runTool(Paths.bin + "/berth", ["status", "--socket", d.socket])
        XCTAssertEqual(rc, 1, out + err)
        XCTAssertTrue(out.contains("degraded") && out.contains("plugin gone failed: file not found"), out)
        (rc, out, _) = try runTool(Paths.bin + "/berth", ["status", "--socket", d.socket, "-o", "json"])
        XCTAssertEqual(rc, 1)
        XCTAssertEqual(try JSON.parse(out)["failedPlugins"]?[0]?["name"], "gone")

        let ok = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "status-ok")
        (rc, out, err) = try runTool(Paths.bin + "/berth", ["status", "--socket", ok.socket])
        XCTAssertEqual(rc, 0, out + err)
        XCTAssertTrue(out.hasPrefix("berthd ok"), out)
    }

    /// storage-local is reconfigured by a new instance: the dry run says so, the apply does it, and the unrelated
    /// change in the same site file lands with it.
    func testDryRunAndApplyAgreeOnAReconfigurationByANewInstance() throws {
        let dir = tempDir("dryrun")
        func plugins(_ capacity: Int, _ greeting: String) -> JSON {
            [["name": "local", "path": .string(Paths.plugin("storage-local")),
              "config": ["root": .string(dir + "/vols"), "capacityBytes": .number(Double(capacity)), "nodes": ["n1"], "enforceSize": false]],
             ["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": .string(greeting)]]]
        }
        let d = try Daemon(plugins: plugins(1 << 30, "hi"), tag: "dryrun")
        var (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "keep", "capacityBytes": .number(Double(1 << 20))])
        XCTAssertEqual(st, 201, v.serialized)
        var site = try d.request("GET", "/v1/site").1
        site = site.setting("plugins", plugins(2 << 30, "hey"))
        let (ds, dry) = try d.request("PUT", "/v1/site?dryRun=true&baseDir=\(d.dir)", site)
        XCTAssertEqual(ds, 200, dry.serialized)
        let (as_, applied) = try d.request("PUT", "/v1/site?baseDir=\(d.dir)", site)
        XCTAssertEqual(as_, 200, applied.serialized)
        XCTAssertEqual(dry["changes"], applied["changes"], "the dry run reports what the apply does")
        let local = applied["changes"]?.array?.first { $0["plugin"] == "local" }
        XCTAssertEqual(local?["action"], "reconfigure")
        XCTAssertEqual(local?["detail"], "new instance")
        XCTAssertEqual(applied["changes"]?.array?.first { $0["plugin"] == "hello" }?["action"], "reconfigure")
        XCTAssertEqual(try d.request("GET", "/v1/plugins/local").1["config"]?["capacityBytes"]?.int, 2 << 30)
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello").1["config"]?["greeting"], "hey")
        (st, v) = try d.request("GET", "/v1/storage/local/volumes")
        XCTAssertEqual(v["volumes"]?.array?.compactMap { $0["name"]?.string }, ["keep"], "the new instance has the volumes: \(v.serialized)")
        XCTAssertEqual(try d.request("GET", "/v1/storage/local/capacity").1["availableCapacity"]?.int, (2 << 30) - (1 << 20))
    }

    /// /metrics: pool utilisation per network and pool, pending instances per app with their reason.
    func testMetricsShowPoolsAndPendingInstances() throws {
        let d = try Daemon(plugins: [["name": "vlan", "path": .string(Paths.plugin("ipam-pool")),
                                      "config": ["pools": [["name": "a", "ranges": [["subnet": "10.44.0.0/28"]], "reserved": ["10.44.0.5"]]]]]],
                           tag: "metrics")
        for c in ["c1", "c2"] { XCTAssertEqual(try d.request("POST", "/v1/networks/vlan/attachments", ["containerID": .string(c)]).0, 200) }
        XCTAssertEqual(try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 3, "resources": ["cpu": "100m"]]]).0, 201)
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        repeat {
            text = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
            if text.contains("berth_instances_pending{kind=\"App\",app=\"web\",reason=\"no nodes are registered") { break }
            usleep(100_000)
        } while Date() < deadline
        XCTAssertTrue(text.contains("berth_pool_addresses{network=\"vlan\",pool=\"a\",state=\"active\"} 2\n"), text)
        XCTAssertTrue(text.contains("berth_pool_addresses{network=\"vlan\",pool=\"a\",state=\"reserved\"} 1\n"), text)
        // A /28: 14 hosts, less the gateway (the first, by default), 1 reserved and 2 active.
        XCTAssertTrue(text.contains("berth_pool_addresses{network=\"vlan\",pool=\"a\",state=\"free\"} 10\n"), text)
        let pending = text.split(separator: "\n").filter { $0.hasPrefix("berth_instances_pending{kind=\"App\",app=\"web\"") }
        XCTAssertEqual(pending.count, 1, text)
        XCTAssertTrue(pending.first?.hasSuffix("} 3") ?? false, "\(pending)")
    }
}
