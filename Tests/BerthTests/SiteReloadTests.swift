// Features per site at run time: upgrade and reconfigure under load, refusals that change nothing, disable
// with live state, SIGHUP, and the example site files.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation
import XCTest

final class SiteReloadTests: XCTestCase {
    func site(_ d: Daemon, plugins: JSON) -> JSON {
        ["site": "test", "stateDir": .string(d.dir + "/state"), "api": ["socket": .string(d.socket)], "store": ["sync": "normal"], "plugins": plugins]
    }

    func put(_ d: Daemon, _ site: JSON, query: String = "") throws -> (Int, JSON) {
        try d.request("PUT", "/v1/site?baseDir=\(d.dir)\(query)", site)
    }

    /// Upgrading the network plugin to a new build and reconfiguring it under a steady load of allocations
    /// loses no request and no state.
    func testUpgradeAndReconfigureUnderLoadLoseNothing() throws {
        let dir = tempDir("upgrade")
        let v1 = dir + "/ipam-v1.so", v2 = dir + "/ipam-v2.so"
        try FileManager.default.copyItem(atPath: Paths.plugin("ipam-pool"), toPath: v1)
        // "A new build": the same code with different bytes (a trailer the dynamic loader ignores), so a new sha256.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: v1))
        bytes.append(Data("berth-test-build-2".utf8))
        try bytes.write(to: URL(fileURLWithPath: v2))
        chmod(v1, 0o755); chmod(v2, 0o755)
        let pool: JSON = ["name": "p", "ranges": [["subnet": "10.77.0.0/20"]]]
        let net = { (path: String, cfg: JSON) -> JSON in ["name": "net1", "path": .string(path), "config": cfg] }
        let d = try Daemon(plugins: [net(v1, ["pools": [pool]])], tag: "upgrade")

        let running = Shared(true)
        let ok = Shared(0), failed = Shared<[String]>([])
        let group = DispatchGroup()
        for c in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: d.socket)
                var i = 0
                while running.get {
                    let body: JSON = ["containerID": .string("u\(c)-\(i)"), "node": "n"]
                    i += 1
                    do {
                        let r = try conn.request("POST", "/v1/networks/net1/attachments", body: body.bytes)
                        if r.status == 200 { ok.with { $0 += 1 } } else { failed.with { $0.append("\(r.status) \(r.text)") } }
                    } catch { failed.with { $0.append("\(error)") } }
                }
                group.leave()
            }
        }
        usleep(300_000)
        var (st, body) = try put(d, site(d, plugins: [net(v2, ["pools": [pool]])]))
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(body["changes"]?[0]?["action"], "upgrade", body.serialized)
        usleep(300_000)
        (st, body) = try put(d, site(d, plugins: [net(v2, ["pools": [pool], "defaultPool": "p"])]))
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(body["changes"]?[0]?["action"], "reconfigure", body.serialized)
        usleep(300_000)
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugins", "reload", "net1", "--socket", d.socket])
        XCTAssertEqual(rc, 0, out + err)
        usleep(300_000)
        running.with { $0 = false }
        group.wait()
        XCTAssertEqual(failed.get, [], "every request during upgrade/reconfigure/reload succeeded")
        XCTAssertGreaterThan(ok.get, 50)
        let list = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]!.array!
        XCTAssertEqual(list.count, ok.get, "every acknowledged allocation is recorded")
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["active"]?.int, ok.get, "the plugin's state survived the swaps")
        let p = try d.request("GET", "/v1/plugins/net1").1
        XCTAssertTrue(p["sha256"]!.string! != "" && p["path"]!.string!.hasSuffix("ipam-v2.so"), p.serialized)
        let evs = try d.request("GET", "/v1/events?since=0&limit=10000").1["events"]!.array!.filter { $0["type"]!.string!.hasPrefix("plugin.") }
        let types = evs.map { $0["type"]!.string! }
        XCTAssertTrue(types.contains("plugin.upgraded") && types.contains("plugin.reconfigured") && types.contains("plugin.reloaded"), "\(types)")
        XCTAssertTrue(evs.contains { $0["type"] == "plugin.reloaded" && $0["actor"]!.string!.hasPrefix("api:") }, "events say who asked")
        print("upgrade under load: \(ok.get) allocations, 0 lost")
    }

    /// A site with an unknown key, a wrong type, or a plugin config its schema rejects is refused with a message
    /// naming the key, and the running configuration is untouched.
    func testInvalidSitesChangeNothing() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": "hi"]]], tag: "refuse")
        let before = try d.request("GET", "/v1/site").1
        let good = site(d, plugins: [["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": "hi"]]])
        let cases: [(JSON, String)] = [
            (good.setting("colour", "blue"), "colour: unknown key"),
            (good.setting("site", 7), "site: expected string, got integer"),
            (site(d, plugins: [["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": 5]]]), "plugins.hello.config.greeting: expected string"),
            (site(d, plugins: [["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": "hi", "extra": 1]]]), "plugins.hello.config.extra: unknown key"),
            (site(d, plugins: [["name": "hello", "path": "/nonexistent/x.so"]]), "plugins.hello: file not found"),
        ]
        for (s, expect) in cases {
            let (st, body) = try put(d, s)
            XCTAssertEqual(st, 400, body.serialized)
            XCTAssertTrue(body.serialized.contains(expect), "\(expect) not in \(body.serialized)")
            XCTAssertEqual(try d.request("GET", "/v1/site").1, before, "the running configuration is untouched")
        }
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello").1["state"], "loaded")
        // The CLI says the same.
        let f = d.dir + "/bad.json"
        try good.setting("colour", "blue").pretty.write(toFile: f, atomically: true, encoding: .utf8)
        let (rc, _, err) = try runTool(Paths.bin + "/berth", ["site", "apply", "-f", f, "--socket", d.socket])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(err.contains("colour: unknown key"), err)
    }

    /// One apply, several changes: when a later plugin fails to create (its configuration passes the schema but the
    /// plugin refuses it), the earlier changes are undone and nothing of the apply remains.
    func testApplyIsAllOrNothingWhenACreateFails() throws {
        let hello: JSON = ["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": "hi"]]
        let d = try Daemon(plugins: [hello], tag: "atomic")
        let before = try d.request("GET", "/v1/site").1
        let rev = try d.request("GET", "/v1/events?since=0").1["rev"]?.int ?? 0
        let s = site(d, plugins: [
            hello.setting("config", ["greeting": "changed"]),                                         // reconfigure in place
            ["name": "hello2", "path": .string(Paths.plugin("hello")), "config": ["greeting": "new"]],  // enable
            ["name": "net9", "path": .string(Paths.plugin("ipam-pool")),                                 // enable: create fails
             "config": ["pools": [["name": "p", "ranges": [["subnet": "10.9.0.1/24"]]]]]],
        ])
        let (st, body) = try put(d, s)
        XCTAssertEqual(st, 400, body.serialized)
        XCTAssertTrue(body.serialized.contains("plugins.net9: enable failed, nothing was changed"), body.serialized)
        XCTAssertTrue(body.serialized.contains("has host bits set"), body.serialized)
        XCTAssertEqual(try d.request("GET", "/v1/site").1, before, "the running configuration is untouched")
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello").1["config"], ["greeting": "hi"])
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello").1["state"], "loaded")
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello2").0, 404, "the plugin enabled before the failure is gone")
        XCTAssertEqual(try d.request("GET", "/v1/plugins/net9").0, 404)
        let evs = try d.request("GET", "/v1/events?since=\(rev)").1["events"]?.array ?? []
        XCTAssertEqual(evs.filter { ($0["type"]?.string ?? "").hasPrefix("plugin.") }, [], "no plugin event for an apply that did not happen")
        // The same site without the bad plugin applies both changes.
        let ok = site(d, plugins: [hello.setting("config", ["greeting": "changed"]),
                                   ["name": "hello2", "path": .string(Paths.plugin("hello")), "config": ["greeting": "new"]]])
        let (st2, body2) = try put(d, ok)
        XCTAssertEqual(st2, 200, body2.serialized)
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello").1["config"], ["greeting": "changed"])
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello2").1["state"], "loaded")
    }

    func testDisableWithLiveStateIsRefusedUnlessForced() throws {
        let d = try netDaemon("disable")
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1"]).0, 200)
        var (st, body) = try d.request("POST", "/v1/plugins/net1/disable")
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body.serialized.contains("still holds 1 network attachments"), body.serialized)
        XCTAssertEqual(try d.request("GET", "/v1/plugins/net1").1["state"], "loaded")
        (st, body) = try d.request("POST", "/v1/plugins/net1/disable?force=true")
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(try d.request("GET", "/v1/plugins/net1").1["state"], "disabled")
        (st, _) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c2"])
        XCTAssertEqual(st, 503, "a disabled network serves nothing")
        (st, body) = try d.request("POST", "/v1/plugins/net1/enable")
        XCTAssertEqual(st, 200, body.serialized)
        // State survived disable/enable: c1 still holds its address.
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments/c1/eth0").0, 200)
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["active"], 1)
    }

    func testSIGHUPAppliesTheSiteFile() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "hup")
        var s = try JSON.parse(Array(FileManager.default.contents(atPath: d.siteFile)!))
        s = s.setting("plugins", [["name": "hello", "path": .string(Paths.plugin("hello"))], ["name": "hello2", "path": .string(Paths.plugin("hello-swift"))]])
        try s.pretty.write(toFile: d.siteFile, atomically: true, encoding: .utf8)
        kill(d.process!.processIdentifier, SIGHUP)
        var state: JSON? = nil
        for _ in 0..<100 {
            state = try d.request("GET", "/v1/plugins/hello2").1["state"]
            if state == "loaded" { break }
            usleep(50_000)
        }
        XCTAssertEqual(state, "loaded")
        // A broken file on SIGHUP changes nothing.
        try "{\"site\": ".write(toFile: d.siteFile, atomically: true, encoding: .utf8)
        kill(d.process!.processIdentifier, SIGHUP)
        usleep(300_000)
        XCTAssertEqual(try d.request("GET", "/v1/plugins/hello2").1["state"], "loaded")
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200)
    }

    /// The example site files validate against the site schema.
    func testExampleSitesValidate() throws {
        let dir = Paths.root + "/examples"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("site-") && $0.hasSuffix(".json") }
        XCTAssertGreaterThanOrEqual(files.count, 2)
        for f in files {
            let j = try JSON.parse(Array(FileManager.default.contents(atPath: "\(dir)/\(f)")!))
            XCTAssertEqual(Schema.validate(j, against: SiteConfig.schema).map { $0.description }, [], f)
            // `--check` also checks this host: what it may report for an example is only what an operator fills in
            // (the placeholder token) or makes on their host (directories); nothing about the file itself.
            let (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", "\(dir)/\(f)", "--check"])
            let problems = err.split(separator: "\n").filter { $0.hasPrefix("  - ") }
            XCTAssertTrue(rc == 0 || (!problems.isEmpty && problems.allSatisfy { $0.contains("placeholder") || $0.contains("does not exist") }), "\(f): \(err)")
        }
    }
}
