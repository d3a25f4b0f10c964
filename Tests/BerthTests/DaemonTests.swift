// berthd as a process: plugins loaded and failed side by side, the API's error paths, metrics and events.
import BerthWire
import Foundation
import XCTest

final class DaemonTests: XCTestCase {
    func testGoodAndBrokenPluginsSideBySide() throws {
        let notElf = tempDir("notelf") + "/libberth-broken.so"
        try "this is not a shared object".write(toFile: notElf, atomically: true, encoding: .utf8)
        let d = try Daemon(plugins: [
            ["name": "hello", "path": .string(Paths.plugin("hello")), "config": ["greeting": "hi"]],
            ["name": "broken", "path": .string(notElf)],
            ["name": "missing", "path": "/nonexistent/libberth-missing.so"],
            ["name": "off", "path": .string(Paths.plugin("hello")), "enabled": false],
        ])
        let (st, body) = try d.request("GET", "/v1/plugins")
        XCTAssertEqual(st, 200)
        let ps = body["plugins"]!.array!
        func p(_ n: String) -> JSON { ps.first { $0["name"]?.string == n }! }
        XCTAssertEqual(p("hello")["state"], "loaded")
        XCTAssertEqual(p("hello")["kinds"], ["scheduler"])
        XCTAssertEqual(p("broken")["state"], "failed")
        XCTAssertTrue(p("broken")["reason"]!.string!.hasPrefix("not a loadable shared object"), p("broken").serialized)
        XCTAssertEqual(p("missing")["reason"], "file not found")
        XCTAssertEqual(p("off")["state"], "disabled")

        // The CLI shows the same.
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugins", "list", "--socket", d.socket])
        XCTAssertEqual(rc, 0)
        XCTAssertTrue(out.contains("hello") && out.contains("loaded") && out.contains("failed") && out.contains("file not found"), out)
        let (rc2, out2, _) = try runTool(Paths.bin + "/berth", ["plugins", "show", "hello", "-o", "json", "--socket", d.socket])
        XCTAssertEqual(rc2, 0)
        XCTAssertEqual(try JSON.parse(out2)["config"]?["greeting"], "hi")

        let (hs, health) = try d.request("GET", "/healthz")
        XCTAssertEqual(hs, 200)
        XCTAssertEqual(health["plugins"]?["failed"], 2)
    }

    func testAPIRejectsBadInputAndLosesNothing() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]])
        var (st, body) = try d.rawRequest("POST", "/v1/networks/hello/gc", Array("{\"valid\":[".utf8))
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("malformed JSON"), body.serialized)
        (st, body) = try d.request("POST", "/v1/networks/hello/gc", ["valid": [], "bogus": 1])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("unknown field \"bogus\""), body.serialized)
        (st, body) = try d.rawRequest("POST", "/v1/networks/hello/gc", Array("[1,2]".utf8))
        XCTAssertEqual(st, 400)
        (st, body) = try d.rawRequest("POST", "/v1/networks/hello/gc", [UInt8](repeating: 0x20, count: 2 << 20))
        XCTAssertEqual(st, 413)
        XCTAssertTrue(body["error"]!.string!.contains("larger than the limit"), body.serialized)
        (st, body) = try d.request("POST", "/v1/networks/hello/gc", ["valid": []])
        XCTAssertEqual(st, 400, "hello is not a network plugin")
        XCTAssertTrue(body["error"]!.string!.contains("not a network plugin"), body.serialized)
        (st, body) = try d.request("GET", "/v1/networks/nope/status")
        XCTAssertEqual(st, 404)
        (st, body) = try d.request("GET", "/v1/plugins/nope")
        XCTAssertEqual(st, 404)
        (st, body) = try d.request("GET", "/v1/events?since=-4")
        XCTAssertEqual(st, 400)
        // The daemon is still healthy and nothing was recorded for the rejected requests.
        (st, body) = try d.request("GET", "/v1/events?since=0")
        XCTAssertEqual(st, 200)
        XCTAssertEqual(body["events"]!.array!.map { $0["type"]!.string! }, ["plugin.loaded"])
    }

    /// The optional TCP listener answers only with the bearer token; the unix socket needs none.
    func testTCPListenerRequiresTheBearerToken() throws {
        let port = 20000 + Int(getpid() % 20000)
        let token = "test-token-0123456789abcdef"
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "tcp",
                           extra: [("api", ["listen": .string("127.0.0.1:\(port)"), "token": .string(token)])])
        func tcpGet(_ path: String, auth: String?) throws -> String {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else { throw NSError(domain: "tcp", code: Int(errno)) }
            var req = "GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            if let auth { req += "Authorization: \(auth)\r\n" }
            req += "\r\n"
            _ = req.withCString { send(fd, $0, strlen($0), 0) }
            var out = [UInt8](), buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
                if n <= 0 { break }
                out += buf[0..<n]
            }
            return String(decoding: out, as: UTF8.self)
        }
        var r = try tcpGet("/v1/plugins", auth: nil)
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 401"), r)
        XCTAssertTrue(r.contains("bearer token"), r)
        r = try tcpGet("/v1/plugins", auth: "Bearer wrong-token-wrong-token")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 401"), r)
        r = try tcpGet("/v1/plugins", auth: "Bearer \(token)")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 200") && r.contains("\"hello\""), r)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "the unix socket needs no token")
    }

    func testMetricsAndEventsLongPoll() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]])
        let r = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics")
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.text.contains("berth_plugin_calls_total{plugin=\"hello\"} 1"), r.text)
        XCTAssertTrue(r.text.contains("berth_plugin_call_seconds_bucket{plugin=\"hello\",le=\"+Inf\"} 1"), r.text)
        XCTAssertTrue(r.text.contains("berth_plugin_up{plugin=\"hello\",state=\"loaded\"} 1"), r.text)
        // Long poll with nothing new returns after the wait with no events.
        let t0 = Date()
        let (st, body) = try d.request("GET", "/v1/events?since=1&wait=1")
        XCTAssertEqual(st, 200)
        XCTAssertEqual(body["events"]!.array!.count, 0)
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.9)
    }

    func testSiteFileErrorsNameTheKey() throws {
        let dir = tempDir("site")
        let cases: [(String, String)] = [
            (#"{"site":"a","plugins":[{"name":"x","path":"y","bogus":1}]}"#, "plugins[0].bogus: unknown key"),
            (#"{"site":"a","stateDir":5}"#, "stateDir: expected string, got integer"),
            (#"{"site":"a","plugins":[{"name":"x"}]}"#, "plugins[0].path: is required"),
            (#"{"site":"a","plugins":[{"name":"x","path":"y"},{"name":"x","path":"z"}]}"#, "duplicate plugin name \"x\""),
            (#"{"site":"a", "#, "invalid JSON"),
        ]
        for (text, expect) in cases {
            let f = dir + "/site.json"
            try text.write(toFile: f, atomically: true, encoding: .utf8)
            let (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", f, "--check"])
            XCTAssertEqual(rc, 2, text)
            XCTAssertTrue(err.contains(expect), "\(text) -> \(err)")
        }
        let (rc, out, _) = try runTool(Paths.bin + "/berthd", ["--print-site-schema"])
        XCTAssertEqual(rc, 0)
        let committed = try JSON.parse(Array(FileManager.default.contents(atPath: Paths.root + "/site.schema.json")!))
        XCTAssertTrue(try JSON.parse(out) == committed, "site.schema.json is out of date: run berthd --print-site-schema > site.schema.json")
    }

    func testPluginCheckCLI() throws {
        for p in ["hello", "hello-swift"] {
            let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin(p)])
            XCTAssertEqual(rc, 0, out)
            XCTAssertTrue(out.contains("0 failed"), out)
        }
        let dir = tempDir("check")
        try #"{"greeting": 42}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("hello"), "--config", dir + "/c.json", "-o", "json"])
        XCTAssertEqual(rc, 1)
        let j = try JSON.parse(out)
        XCTAssertEqual(j["failed"], 1)
        XCTAssertTrue(j["cases"]!.array!.contains { $0["name"] == "config" && $0["detail"]!.string!.contains("greeting: expected string, got integer") }, out)
        let (rc3, out3, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", dir + "/nothing.so"])
        XCTAssertEqual(rc3, 1)
        XCTAssertTrue(out3.contains("file not found"), out3)
    }
}
