// Process isolation ("isolation": "process"): plugins that segfault, hang, allocate without bound, return invalid
// JSON or too much output (Tests/Fixtures/faults/*.c, compiled here with cc) cost the calls in flight an error and
// nothing else: berthd keeps serving, every client gets a 5xx with a clear message, nothing of a failed call is
// committed, crashed runners restart, repeatedly crashing plugins are failed. Plus: the network conformance
// through a runner, kill -9 durability with allocations going through runners, no orphaned runners after the
// daemon is killed, typed batches and the generic call across the socket, load errors reported as in process.
@testable import BerthCheck
@testable import BerthKinds
@testable import BerthPlugins
@testable import BerthScheduler
@testable import BerthStore
@testable import BerthCore
import BerthPluginABI
import BerthWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class IsolationTests: XCTestCase {
    static let faultsDir = FixtureBuilder.packageRoot + "/Tests/Fixtures/faults"
    var runner: String { Paths.bin + "/berth-plugin-runner" }

    func fault(_ name: String) throws -> String { try FixtureBuilder.plugin(name, in: Self.faultsDir) }

    func isolated(_ name: String, _ path: String, config: JSON = .object([]), limits: JSON? = nil) -> JSON {
        var p: JSON = ["name": .string(name), "path": .string(path), "isolation": "process", "config": config]
        if let limits { p = p.setting("limits", limits) }
        return p
    }

    @discardableResult
    func add(_ d: Daemon, _ net: String, _ cid: String, file: StaticString = #filePath, line: UInt = #line) throws -> (Int, JSON) {
        try d.request("POST", "/v1/networks/\(net)/attachments", ["containerID": .string(cid), "ifname": "eth0", "node": "n1"])
    }

    func address(_ r: JSON) -> String? { r["ips"]?[0]?["address"]?.string }

    func attachments(_ d: Daemon, _ net: String) throws -> [String] {
        (try d.request("GET", "/v1/networks/\(net)/attachments").1["attachments"]?.array ?? []).compactMap { $0["containerID"]?.string }
    }

    /// Events that mention a container ID: the host's network.* events and the fixtures' own fixture.allocated.
    func events(about cid: String, _ d: Daemon) throws -> [String] {
        let evs = try d.request("GET", "/v1/events?since=0&limit=10000").1["events"]?.array ?? []
        return evs.filter { $0["subject"]?.string?.contains("/\(cid)/") == true || $0["data"]?["containerID"]?.string == cid }
            .compactMap { $0["type"]?.string }
    }

    func plugin(_ d: Daemon, _ name: String) throws -> JSON { try d.request("GET", "/v1/plugins/\(name)").1 }

    /// The daemon answers quickly and the good plugin still allocates.
    func assertServing(_ d: Daemon, _ cid: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let t0 = Date()
        let (hs, _) = try d.request("GET", "/healthz")
        XCTAssertEqual(hs, 200, file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "healthz answered slowly", file: file, line: line)
        let (st, r) = try add(d, "good", cid)
        XCTAssertEqual(st, 200, "the good plugin serves: \(r.serialized)", file: file, line: line)
        XCTAssertNotNil(address(r), file: file, line: line)
    }

    // MARK: faults

    func testFaultsCostTheCallNotTheDaemon() throws {
        let d = try Daemon(plugins: [
            isolated("good", try fault("good")),
            isolated("segv", try fault("segv_nth"), config: ["nth": 3]),
            isolated("hang", try fault("hang")),
            isolated("alloc", try fault("alloc"), limits: ["memoryBytes": 268_435_456, "openFiles": 64]),
            isolated("bad-json", try fault("bad_json")),
            isolated("big-output", try fault("big_output")),
        ], tag: "faults", extra: [("callTimeoutMs", 2000)])
        let plugins = try d.request("GET", "/v1/plugins").1["plugins"]!.array!
        XCTAssertEqual(plugins.map { $0["state"]?.string ?? "" }, Array(repeating: "loaded", count: 6), "\(plugins)")
        try assertServing(d, "g0")

        // Segfault on the third add of the runner's life: that call fails, names the plugin and the signal.
        XCTAssertEqual(address(try add(d, "segv", "s1").1), "10.77.0.2/16")
        XCTAssertEqual(address(try add(d, "segv", "s2").1), "10.77.0.3/16")
        let pid1 = try plugin(d, "segv")["runnerPid"]?.int
        var (st, r) = try add(d, "segv", "s3")
        XCTAssertEqual(st, 503, r.serialized)
        XCTAssertTrue(r["error"]!.string!.contains("plugin \"segv\" crashed (SIGSEGV) during add; restarting"), r.serialized)
        try assertServing(d, "g1")
        // Restarted on the next call; the crashed call's writes were rolled back: the next container gets the
        // address the crashed one had taken inside its transaction.
        (st, r) = try add(d, "segv", "s4")
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertEqual(address(r), "10.77.0.4/16", "the crashed call's key-value writes were not committed")
        let p = try plugin(d, "segv")
        XCTAssertEqual(p["crashes"], 1)
        XCTAssertEqual(p["state"], "loaded")
        XCTAssertNotEqual(p["runnerPid"]?.int, pid1, "a new runner")
        XCTAssertFalse(try attachments(d, "segv").contains("s3"))
        XCTAssertEqual(try events(about: "s3", d), [], "no event of the crashed call")

        // Hang: the client gets a 503 at the deadline, not a hang; the daemon answers meanwhile.
        final class Outcome: @unchecked Sendable { var response: (Int, JSON)?; var seconds = 0.0 }
        let hung = DispatchSemaphore(value: 0)
        let outcome = Outcome()
        Thread.detachNewThread {
            let t0 = Date()
            outcome.response = try? self.add(d, "hang", "bad-h1")
            outcome.seconds = Date().timeIntervalSince(t0)
            hung.signal()
        }
        usleep(300_000)
        let t0 = Date()
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200)
        XCTAssertEqual(try d.request("GET", "/v1/plugins").0, 200)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "the API answers while a plugin hangs")
        XCTAssertEqual(hung.wait(timeout: .now() + 15), .success, "the client of a hung plugin got an answer")
        let hangResult = outcome.response
        XCTAssertEqual(hangResult?.0, 503, hangResult?.1.serialized ?? "no response")
        XCTAssertTrue(hangResult?.1["error"]?.string?.contains("plugin \"hang\" timed out after 2000 ms during add") == true, hangResult?.1.serialized ?? "")
        XCTAssertGreaterThan(outcome.seconds, 1.9)
        XCTAssertLessThan(outcome.seconds, 6)
        try assertServing(d, "g2")
        (st, r) = try add(d, "hang", "ok-h2")
        XCTAssertEqual(st, 200, "restarted after the kill: \(r.serialized)")
        XCTAssertEqual(address(r), "10.77.0.2/16")
        XCTAssertEqual(try events(about: "bad-h1", d), [])

        // Unbounded allocation under a 256 MiB limit: the runner dies, the call fails, the next one is served.
        (st, r) = try add(d, "alloc", "bad-a1")
        XCTAssertEqual(st, 503, r.serialized)
        XCTAssertTrue(r["error"]!.string!.contains("plugin \"alloc\" crashed (SIG"), r.serialized)
        try assertServing(d, "g3")
        (st, r) = try add(d, "alloc", "ok-a2")
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertEqual(address(r), "10.77.0.2/16")
        XCTAssertEqual(try events(about: "bad-a1", d), [])

        // Invalid JSON: refused before anything is stored; the runner lives on.
        (st, r) = try add(d, "bad-json", "bad-j1")
        XCTAssertEqual(st, 500, r.serialized)
        XCTAssertTrue(r["error"]!.string!.contains("returned invalid JSON"), r.serialized)
        XCTAssertEqual(try plugin(d, "bad-json")["crashes"], 0)
        (st, r) = try add(d, "bad-json", "ok-j2")
        XCTAssertEqual(address(r), "10.77.0.2/16", "the refused call's allocation was rolled back")
        XCTAssertEqual(try events(about: "bad-j1", d), [])

        // Output over the 16 MiB limit: refused (in the runner, which never ships it).
        (st, r) = try add(d, "big-output", "bad-b1")
        XCTAssertEqual(st, 500, r.serialized)
        XCTAssertTrue(r["error"]!.string!.contains("output exceeds the limit of 16777216 bytes"), r.serialized)
        (st, r) = try add(d, "big-output", "ok-b2")
        XCTAssertEqual(address(r), "10.77.0.2/16")
        XCTAssertEqual(try events(about: "bad-b1", d), [])

        for (net, cid) in [("segv", "s3"), ("hang", "bad-h1"), ("alloc", "bad-a1"), ("bad-json", "bad-j1"), ("big-output", "bad-b1")] {
            XCTAssertFalse(try attachments(d, net).contains(cid), "\(net): no attachment row for the failed call")
        }
        let m = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
        XCTAssertTrue(m.contains("berth_plugin_crashes_total{plugin=\"segv\"} 1"), m)
        XCTAssertTrue(m.contains("berth_plugin_crashes_total{plugin=\"hang\"} 1"), m)
        XCTAssertTrue(m.contains("berth_plugin_crashes_total{plugin=\"alloc\"} 1"), m)
        XCTAssertTrue(m.contains("berth_plugin_crashes_total{plugin=\"bad-json\"} 0"), m)
        XCTAssertTrue(m.contains("berth_plugin_up{plugin=\"segv\",state=\"loaded\"} 1"), m)
        XCTAssertEqual(d.process?.isRunning, true, "berthd is alive")
    }

    /// An in-process plugin call that never returns cannot be abandoned; the daemon says so instead of going quiet:
    /// past callTimeoutMs the watchdog logs an error naming the plugin call, and /metrics (served off the executor)
    /// shows how long state changes have been blocked.
    func testStalledExecutorIsReported() throws {
        let d = try Daemon(plugins: [["name": "hang", "path": .string(try fault("hang"))]], tag: "stall", extra: [("callTimeoutMs", 400)])
        defer { d.kill9() }
        XCTAssertEqual(try add(d, "hang", "ok-1").0, 200, "the plugin works for other containers")
        XCTAssertFalse(d.log().contains("state changes are blocked"), "no stall reported while nothing is stuck")
        Thread.detachNewThread { _ = try? UnixHTTPConnection(path: d.socket, timeoutSeconds: 30).request(
            "POST", "/v1/networks/hang/attachments", body: (["containerID": "bad-1"] as JSON).bytes) }
        XCTAssertTrue(eventually(10) { d.log().contains("state changes are blocked") }, d.log())
        let log = d.log()
        XCTAssertTrue(log.contains("inside plugin call hang.add for"), log)
        XCTAssertTrue(log.contains("isolation \"process\""), log)
        XCTAssertEqual(log.components(separatedBy: "state changes are blocked").count - 1, 1, "reported once per stall")
        let (st, _) = try d.request("GET", "/healthz")
        XCTAssertEqual(st, 200, "reads that need no state change still answer")
        let metrics = try XCTUnwrap(try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text)
        let busy = metrics.split(separator: "\n").first { $0.hasPrefix("berth_executor_busy_seconds ") }
        let seconds = Double(busy?.split(separator: " ").last ?? "") ?? 0
        XCTAssertGreaterThan(seconds, 0.4, String(busy ?? "no berth_executor_busy_seconds"))
    }

    func testRepeatedCrashesFailThePlugin() throws {
        let d = try Daemon(plugins: [isolated("good", try fault("good")), isolated("always", try fault("segv_nth"), config: ["nth": 1])],
                           tag: "failed")
        var last = ""
        var attempts = 0
        while attempts < 40 {
            attempts += 1
            let (st, r) = try add(d, "always", "c\(attempts)")
            XCTAssertEqual(st, 503, r.serialized)
            last = r["error"]?.string ?? ""
            XCTAssertTrue(last.contains("crashed (SIGSEGV) during add") || last.contains("is restarting after it crashed (SIGSEGV)"), last)
            if last.contains("failed: crashed") { break }
            usleep(150_000)
        }
        XCTAssertTrue(last.contains("plugin \"always\" failed: crashed 5 times in 60s"), last)
        // Failed: calls fail fast with the reason, and it shows everywhere.
        let t0 = Date()
        let (st, r) = try add(d, "always", "after")
        XCTAssertEqual(st, 503)
        XCTAssertTrue(r["error"]!.string!.contains("plugin \"always\" failed: crashed 5 times in 60s"), r.serialized)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "fails fast")
        let p = try plugin(d, "always")
        XCTAssertEqual(p["state"], "failed")
        XCTAssertEqual(p["crashes"], 5)
        XCTAssertTrue(p["reason"]!.string!.contains("crashed 5 times in 60s"), p.serialized)
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugins", "list", "--socket", d.socket])
        XCTAssertEqual(rc, 0)
        let line = out.split(separator: "\n").first { $0.hasPrefix("always") }.map(String.init) ?? ""
        XCTAssertTrue(line.contains("failed") && line.contains("crashed 5 times in 60s"), out)
        let m = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
        XCTAssertTrue(m.contains("berth_plugin_up{plugin=\"always\",state=\"failed\"} 0"), m)
        XCTAssertTrue(m.contains("berth_plugin_crashes_total{plugin=\"always\"} 5"), m)
        XCTAssertTrue(m.contains("berth_plugin_up{plugin=\"good\",state=\"loaded\"} 1"), m)
        try assertServing(d, "g1")
        XCTAssertEqual(try d.request("GET", "/healthz").1["plugins"]?["failed"], 1)
        XCTAssertEqual(try attachments(d, "always"), [])
        // A reload starts the plugin afresh, with a new runner and a clean record.
        let (rc2, out2, err2) = try runTool(Paths.bin + "/berth", ["plugins", "reload", "always", "--socket", d.socket])
        XCTAssertEqual(rc2, 0, out2 + err2)
        let fresh = try plugin(d, "always")
        XCTAssertEqual(fresh["state"], "loaded", fresh.serialized)
        XCTAssertEqual(fresh["crashes"], 0)
        XCTAssertNotNil(fresh["runnerPid"]?.int)
    }

    // MARK: processes

    /// Runner processes whose parent is `pid`, from /proc.
    func runners(of pid: pid_t) -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.filter { p in
            guard let (state, ppid, comm) = procStat(p) else { return false }
            return ppid == pid && state != "Z" && comm.hasPrefix("berth-plugin-ru")
        }
    }

    /// (state, ppid, comm) of a process, nil when it is gone.
    func procStat(_ pid: pid_t) -> (String, pid_t, String)? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let open = s.firstIndex(of: "("), let close = s.lastIndex(of: ")") else { return nil }
        let comm = String(s[s.index(after: open)..<close])
        let rest = s[s.index(close, offsetBy: 2)...].split(separator: " ")
        guard rest.count > 2 else { return nil }
        return (String(rest[0]), pid_t(rest[1]) ?? 0, comm)
    }

    func alive(_ pid: pid_t) -> Bool { procStat(pid).map { $0.0 != "Z" } ?? false }

    func testNoOrphanedRunnersAfterTheDaemonIsKilled() throws {
        let d = try Daemon(plugins: [isolated("good", try fault("good")), isolated("hang", try fault("hang")),
                                     isolated("hello", Paths.plugin("hello"))], tag: "orphans", extra: [("callTimeoutMs", 60_000)])
        let daemon = d.process!.processIdentifier
        let kids = runners(of: daemon)
        XCTAssertEqual(kids.count, 3, "one runner per isolated plugin")
        // One runner is stuck inside a plugin call (it will never read its socket again): only PR_SET_PDEATHSIG
        // can end it.
        Thread.detachNewThread { _ = try? self.add(d, "hang", "bad-forever") }
        usleep(300_000)
        d.kill9()
        let deadline = Date().addingTimeInterval(1)
        while Date() < deadline && kids.contains(where: alive) { usleep(10_000) }
        XCTAssertEqual(kids.filter(alive), [], "runners outlived berthd")
        // And a graceful stop ends them too.
        try d.start()
        let kids2 = runners(of: d.process!.processIdentifier)
        XCTAssertEqual(kids2.count, 3)
        d.stop()
        let deadline2 = Date().addingTimeInterval(2)
        while Date() < deadline2 && kids2.contains(where: alive) { usleep(10_000) }
        XCTAssertEqual(kids2.filter(alive), [])
    }

    /// `berth site apply` stages an isolated plugin in a runner too: one that crashes while loading is refused
    /// with the runner's reason, berthd keeps serving, and staging leaves no runner behind.
    func testSiteApplyStagesIsolatedPluginsInARunner() throws {
        let d = try Daemon(plugins: [isolated("good", try fault("good"))], tag: "applystage")
        var site = try JSON.parse(Array(FileManager.default.contents(atPath: d.siteFile)!))
        let before = try d.request("GET", "/v1/site").1
        site = site.setting("plugins", [isolated("good", try fault("good")), isolated("crashes-at-load", try fault("entry_crash"))])
        var (st, body) = try d.request("PUT", "/v1/site?baseDir=\(d.dir)", site)
        XCTAssertEqual(st, 400, body.serialized)
        XCTAssertTrue(body.serialized.contains("crashes-at-load") && body.serialized.contains("crashed (SIGSEGV) while loading the plugin"), body.serialized)
        XCTAssertEqual(try d.request("GET", "/v1/site").1, before, "the running configuration is untouched")
        try assertServing(d, "s1")
        // An unchanged apply and a reload stage through runners that go away again.
        site = site.setting("plugins", [isolated("good", try fault("good"))])
        (st, body) = try d.request("PUT", "/v1/site?baseDir=\(d.dir)", site)
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(body["changes"]?[0]?["action"], "unchanged")
        (st, body) = try d.request("POST", "/v1/plugins/good/reload")
        XCTAssertEqual(st, 200, body.serialized)
        try assertServing(d, "s2")
        let deadline = Date().addingTimeInterval(2)
        while Date() < deadline && runners(of: d.process!.processIdentifier).count != 1 { usleep(20_000) }
        XCTAssertEqual(runners(of: d.process!.processIdentifier).count, 1, "one runner for the one isolated instance")
    }

    func testLoadFailuresAreReportedAsInProcess() throws {
        let d = try Daemon(plugins: [
            isolated("good", try fault("good")),
            isolated("missing", "/nonexistent/libberth-missing.so"),
            isolated("crashes-at-load", try fault("entry_crash")),
            ["name": "hello", "path": .string(Paths.plugin("hello")), "isolation": "process", "config": ["greeting": 42]],
        ], tag: "loadfail")
        let ps = try d.request("GET", "/v1/plugins").1["plugins"]!.array!
        func p(_ n: String) -> JSON { ps.first { $0["name"]?.string == n }! }
        XCTAssertEqual(p("good")["state"], "loaded")
        XCTAssertEqual(p("missing")["state"], "failed")
        XCTAssertEqual(p("missing")["reason"], "file not found")
        XCTAssertEqual(p("crashes-at-load")["state"], "failed")
        XCTAssertTrue(p("crashes-at-load")["reason"]!.string!.contains("crashed (SIGSEGV) while loading the plugin"), p("crashes-at-load").serialized)
        XCTAssertEqual(p("hello")["state"], "failed")
        XCTAssertTrue(p("hello")["reason"]!.string!.contains("greeting: expected string, got integer"), p("hello").serialized)
        XCTAssertEqual(runners(of: d.process!.processIdentifier).count, 1, "failed loads leave no runner behind")
        try assertServing(d, "g1")
    }

    func testSiteLimitsNeedProcessIsolation() throws {
        let dir = tempDir("limits")
        let f = dir + "/site.json"
        try #"{"site":"a","plugins":[{"name":"x","path":"/x.so","limits":{"memoryBytes":1073741824}}]}"#.write(toFile: f, atomically: true, encoding: .utf8)
        var (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", f, "--check"])
        XCTAssertEqual(rc, 2)
        XCTAssertTrue(err.contains("plugins[0].limits: applies only to plugins with \"isolation\": \"process\""), err)
        try #"{"site":"a","plugins":[{"name":"x","path":"/x.so","isolation":"process","limits":{"memoryBytes":10}}]}"#.write(toFile: f, atomically: true, encoding: .utf8)
        (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", f, "--check"])
        XCTAssertEqual(rc, 2)
        XCTAssertTrue(err.contains("plugins[0].limits.memoryBytes"), err)
        // --check loads and creates the plugin (in its runner, with these limits): a real one.
        try #"{"site":"a","plugins":[{"name":"x","path":"HELLO","isolation":"process","limits":{"memoryBytes":1073741824,"openFiles":256}}]}"#
            .replacingOccurrences(of: "HELLO", with: Paths.plugin("hello")).write(toFile: f, atomically: true, encoding: .utf8)
        let (rc3, out, _) = try runTool(Paths.bin + "/berthd", ["--site", f, "--check"])
        XCTAssertEqual(rc3, 0)
        XCTAssertEqual(try JSON.parse(out)["plugins"]?[0]?["limits"], ["memoryBytes": 1073741824, "openFiles": 256])
    }

    // MARK: the same behaviour through a runner

    /// A remote instance on a private store and executor, as `berth plugin check` sets one up.
    func withRemote(_ path: String, name: String, config: JSON = .object([]), timeoutMs: Int = 10_000,
                    _ body: (PluginInstance, Executor) throws -> Void) throws {
        let dir = try FixtureBuilder.makeTempDir("berth-iso")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir + "/state.db", synchronous: "normal")
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        var spec = PluginSpec(name: name, path: path, config: config)
        spec.isolation = "process"
        let inst = try RemotePlugin.instantiate(spec, loader: Loader(copyDir: dir + "/plugins"), executor: ex, callTimeoutMs: timeoutMs,
                                                runnerPath: runner, log: { _, _ in })
        defer { inst.destroy() }
        XCTAssertTrue(inst.isolated)
        try body(inst, ex)
    }

    /// The checker's network conformance, in process and through a runner: the same cases, all passing.
    func conformance(_ path: String, name: String, config: JSON) throws {
        let inProcess = PluginChecker.check(path: path, name: name, config: config, kind: "network")
        XCTAssertEqual(inProcess.failed, 0, "\(inProcess.json.pretty)")
        try withRemote(path, name: name, config: config) { inst, ex in
            let cases = NetworkConformance.run(inst, executor: ex)
            XCTAssertEqual(cases.filter { !$0.passed }.map { "\($0.name): \($0.detail)" }, [])
            XCTAssertEqual(cases.map { $0.name }, inProcess.cases.filter { $0.name.hasPrefix("network: ") }.map { $0.name })
            XCTAssertGreaterThanOrEqual(cases.count, 10)

            // Kill the runner between calls: the next call fails naming the signal, the one after is served by a
            // new runner from the same namespace (state lives in the store, nothing is lost).
            let req: JSON = ["network": .string(name), "containerID": "after-kill", "ifname": "eth0", "node": "n1"]
            let first = try ex.runSync { try inst.callObject("add", inst.network!.pointee.add, req) }
            let pid = try XCTUnwrap(inst.runnerPid)
            kill(pid, SIGKILL)
            XCTAssertThrowsError(try ex.runSync { try inst.callObject("add", inst.network!.pointee.add, req) }) { e in
                let pe = e as? BerthError
                XCTAssertEqual(pe?.status, .unavailable)
                XCTAssertTrue(pe?.message.contains("plugin \"\(name)\" crashed (SIGKILL) during add") == true, "\(e)")
            }
            let again = try ex.runSync { try inst.callObject("add", inst.network!.pointee.add, req) }
            XCTAssertEqual(again, first, "the restarted runner answers from the same state")
            XCTAssertNotEqual(inst.runnerPid, pid)
            XCTAssertEqual(inst.crashCount, 1)
        }
    }

    func testNetworkConformanceThroughRunner() throws {
        try conformance(try fault("good"), name: "good", config: .object([]))
    }

    /// The reference network plugin, when this tree has it built.
    func ipamPool() throws -> String {
        let path = Paths.plugin("ipam-pool")
        let dir = try FixtureBuilder.makeTempDir("berth-iso-probe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let p = try? Loader(copyDir: dir).load(PluginSpec(name: "probe", path: path)), p.kinds.contains(.network) else {
            throw XCTSkip("libberth-ipam-pool.so is not a network plugin in this build yet")
        }
        return path
    }

    func testIpamPoolConformanceThroughRunner() throws {
        try conformance(try ipamPool(), name: "net1", config: ["pools": [["name": "p1", "ranges": [["subnet": "10.99.0.0/24"]]]]])
    }

    func testTypedBatchAndGenericCallThroughRunner() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-iso-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loader = Loader(copyDir: dir + "/plugins")
        let spec = PluginSpec(name: "hello", path: Paths.plugin("hello"))
        let local = try loader.instantiate(try loader.load(spec), spec: spec, executor: nil, log: { _, _ in })
        defer { local.destroy() }
        try withRemote(Paths.plugin("hello"), name: "hello") { remote, _ in
            XCTAssertEqual(remote.plugin.schedulerKind, "HelloApp")
            XCTAssertEqual(remote.plugin.kindSchema, local.plugin.kindSchema)
            XCTAssertEqual(remote.plugin.sha256, local.plugin.sha256)
            let n = 3000
            let batch = NodeBatch(count: n) { i in (name: "node-\(i)", zone: UInt32(i % 3), cpu: Int64((i * 7919) % 64_000) - 1000, mem: 1 << 34) }
            var c1 = [UInt8](repeating: 9, count: n), c2 = c1
            var s1 = [Int64](repeating: -1, count: n), s2 = s1
            try batch.with(kind: "HelloApp", app: "a", ordinal: 2) { i, b in
                try c1.withUnsafeMutableBufferPointer { try local.filter(i, b, codes: $0.baseAddress!) }
                try c2.withUnsafeMutableBufferPointer { try remote.filter(i, b, codes: $0.baseAddress!) }
                try s1.withUnsafeMutableBufferPointer { try local.score(i, b, scores: $0.baseAddress!) }
                try s2.withUnsafeMutableBufferPointer { try remote.score(i, b, scores: $0.baseAddress!) }
            }
            XCTAssertEqual(c1, c2)
            XCTAssertEqual(s1, s2)
            XCTAssertTrue(c2.contains(0) && c2.contains(2))
            // The generic call, small and larger than any socket buffer.
            for size in [16, 3 << 20] {
                let req = Array("{\"pad\":\"\(String(repeating: "x", count: size))\"}".utf8)
                XCTAssertEqual(try remote.call(method: "echo", req), req)
            }
            XCTAssertThrowsError(try remote.call(method: "nope", [])) { e in
                XCTAssertEqual((e as? BerthError)?.status, .unimplemented)
                XCTAssertTrue("\(e)".contains("unknown method \"nope\""), "\(e)")
            }
            let info = try JSON.parse(try remote.call(method: "info", Array("{}".utf8)))
            XCTAssertEqual(info["greeting"], "hello")
        }
    }

    // MARK: durability

    /// kill -9 of berthd while allocations go through a runner: after a restart every acknowledged allocation is
    /// there, no address is held twice, and the plugin's state agrees with the host's records.
    func durability(_ plugin: JSON, checkCapacity: Bool) throws {
        let d = try Daemon(plugins: [plugin], tag: "iso-kill9")
        let clients = 6, perClient = 150
        final class Tally: @unchecked Sendable { let lock = NSLock(); var acked: [String: String] = [:]; var errors = 0 }
        let tally = Tally()
        let lock = tally.lock
        let group = DispatchGroup()
        for c in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: d.socket, timeoutSeconds: 10)
                for i in 0..<perClient {
                    let cid = "k\(c)-\(i)"
                    let body: JSON = ["containerID": .string(cid), "ifname": "eth0", "node": .string("node-\(c % 3)")]
                    if let r = try? conn.request("POST", "/v1/networks/net1/attachments", body: body.bytes), r.status == 200,
                       let a = try? r.json()["ips"]?[0]?["address"]?.string {
                        lock.lock(); tally.acked[cid] = a; lock.unlock()
                    } else {
                        lock.lock(); tally.errors += 1; lock.unlock()
                        conn.close()
                    }
                }
                group.leave()
            }
        }
        while true {
            lock.lock(); let n = tally.acked.count; lock.unlock()
            if n >= 300 { break }
            usleep(2000)
        }
        let old = runners(of: d.process!.processIdentifier)
        XCTAssertEqual(old.count, 1)
        d.kill9()
        group.wait()
        let (acked, errors) = (tally.acked, tally.errors)
        XCTAssertGreaterThan(errors, 0, "the kill happened mid-run")
        try d.start()
        XCTAssertEqual(old.filter(alive), [], "the old runner died with the old daemon")
        let list = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]!.array!
        var byCID: [String: String] = [:]
        var addrs = Set<String>()
        for a in list {
            let addr = a["result"]!["ips"]![0]!["address"]!.string!
            byCID[a["containerID"]!.string!] = addr
            XCTAssertTrue(addrs.insert(addr).inserted, "address \(addr) is held twice")
        }
        for (cid, addr) in acked { XCTAssertEqual(byCID[cid], addr, "acknowledged allocation \(cid) -> \(addr) lost after kill -9") }
        if checkCapacity {
            XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["active"]?.int, list.count)
        }
        // The plugin's own state agrees: every committed attachment checks, and a new allocation takes a free address.
        for (cid, _) in byCID.prefix(40) { XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments/\(cid)/eth0").0, 200) }
        let (st, r) = try add(d, "net1", "after-restart")
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertFalse(addrs.contains(address(r) ?? ""), "a fresh address after the restart")
        print("isolation kill -9: \(acked.count) acknowledged, \(list.count) committed, \(errors) client errors")
    }

    func testKill9DurabilityThroughRunner() throws {
        try durability(isolated("net1", try fault("good")), checkCapacity: false)
    }

    func testIpamPoolKill9DurabilityThroughRunner() throws {
        try durability(isolated("net1", try ipamPool(), config: ["pools": [["name": "big", "ranges": [["subnet": "10.96.0.0/20"]]]]]),
                       checkCapacity: true)
    }
}
