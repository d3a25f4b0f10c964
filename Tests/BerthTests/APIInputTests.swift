// The API's input checks through a real berthd: numeric query parameters, short bodies, unknown routes and wrong
// methods, NUL bytes and invalid UTF-8 in names and ids (paths, queries, bodies, the site, plugin output),
// interface names and requested address prefixes. Every refusal is a 4xx with a JSON error and changes nothing.
import BerthWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP exchange written byte for byte over a unix socket, the write side then closed (so a body shorter than
/// its Content-Length ends early). Returns the status line's code and the raw answer.
func rawHTTP(_ socket: String, _ bytes: [UInt8]) throws -> (Int, String) {
    let s = socket.withCString { path -> Int32 in
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            let n = strlen(path)
            for i in 0..<n { p[i] = UInt8(bitPattern: path[i]) }
            p[n] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0 ? fd : -1
    }
    guard s >= 0 else { throw NSError(domain: "rawHTTP", code: 1, userInfo: [NSLocalizedDescriptionKey: "cannot connect to \(socket)"]) }
    defer { close(s) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = bytes.withUnsafeBytes { write(s, $0.baseAddress, $0.count) }
    shutdown(s, Int32(SHUT_WR))
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(s, $0.baseAddress, 4096) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    let text = String(decoding: out, as: UTF8.self)
    let code = text.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    return (code, text)
}

final class APIInputTests: XCTestCase {
    /// Asserts a 4xx answer with a JSON error that mentions `mentions`.
    func assertRefused(_ d: Daemon, _ method: String, _ path: String, _ body: JSON? = nil, status: Int = 400, mentions: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try UnixHTTPConnection(path: d.socket).request(method, path, body: body?.bytes)
        XCTAssertEqual(r.status, status, "\(method) \(path): \(r.text)", file: file, line: line)
        let err = (try? r.json())?["error"]?.string ?? ""
        XCTAssertTrue(err.contains(mentions), "\(method) \(path): the error should mention \"\(mentions)\": \(r.text)", file: file, line: line)
    }

    func testNumericQueryParametersAreChecked() throws {
        let d = try Daemon(plugins: [], tag: "numq")
        let bad: [(String, String)] = [
            ("/v1/events?since=999999999&wait=nan", "wait"), ("/v1/events?wait=inf", "wait"), ("/v1/events?wait=-1", "wait"),
            ("/v1/events?wait=1e400", "wait"), ("/v1/events?wait=abc", "wait"), ("/v1/events?wait=61", "wait"),
            ("/v1/events?since=abc", "since"), ("/v1/events?since=-1", "since"), ("/v1/events?since=99999999999999999999", "since"),
            ("/v1/events?since=1.5", "since"), ("/v1/events?since=", "since"), ("/v1/events?limit=nan", "limit"),
            ("/v1/events?limit=abc", "limit"), ("/v1/events?limit=1e3", "limit"),
            ("/v1/events?watch=true&since=nan", "since"), ("/v1/events?watch=true&limit=-5", "limit"),
            ("/v1/storage/none/volumes?limit=-1", "limit"), ("/v1/storage/none/volumes?limit=abc", "limit"),
            ("/v1/storage/none/snapshots?limit=nan", "limit"), ("/v1/storage/none/snapshots?limit=99999999999999999999", "limit"),
        ]
        for (path, name) in bad { try assertRefused(d, "GET", path, mentions: name) }
        let (st, body) = try d.request("GET", "/v1/events?since=0&wait=0.1")
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "berthd is still up")
    }

    func testEventsLimitMustBeWithinOneToTenThousand() throws {
        let d = try Daemon(plugins: [], tag: "limit")
        for l in ["-1", "0", "10001", "99999999"] {
            try assertRefused(d, "GET", "/v1/events?since=0&limit=\(l)", mentions: "1...10000")
        }
        for _ in 0..<3 { XCTAssertEqual(try d.request("PUT", "/v1/nodes/n\(UUID().uuidString.prefix(4).lowercased())", [:]).0, 201) }
        let (st, body) = try d.request("GET", "/v1/events?since=0&limit=1")
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertEqual(body["events"]?.array?.count, 1)
        XCTAssertEqual(try d.request("GET", "/v1/events?since=0&limit=10000").0, 200)
    }

    func testBodyShorterThanItsContentLengthIsAClientError() throws {
        let d = try Daemon(plugins: [], tag: "shortbody")
        let head = "PUT /v1/nodes/n1 HTTP/1.1\r\nHost: berthd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        let (code, text) = try rawHTTP(d.socket, Array((head + "{\"capacity\":").utf8))
        XCTAssertEqual(code, 400, text)
        XCTAssertTrue(text.contains("Content-Length"), text)
        XCTAssertEqual(try d.request("GET", "/v1/nodes/n1").0, 404, "nothing was created")
    }

    func testUnknownRoutesAnswerJSONAndWrongMethods405() throws {
        let d = try Daemon(plugins: [], tag: "routes")
        try assertRefused(d, "GET", "/nope", status: 404, mentions: "/nope")
        try assertRefused(d, "GET", "/v1/networks/net1/nothing/at/all", status: 404, mentions: "no route")
        for (method, path, allow) in [("DELETE", "/healthz", "GET"), ("POST", "/v1/events", "GET"), ("PATCH", "/v1/nodes/n1", "DELETE, GET, PUT"),
                                      ("PUT", "/v1/networks/x/attachments", "GET, POST"), ("DELETE", "/metrics", "GET")] {
            let r = try UnixHTTPConnection(path: d.socket).request(method, path, body: method == "GET" ? nil : Array("{}".utf8))
            XCTAssertEqual(r.status, 405, "\(method) \(path): \(r.text)")
            XCTAssertEqual(r.headers.first { $0.0.lowercased() == "allow" }?.1, allow, "\(method) \(path)")
            XCTAssertTrue((try? r.json())?["error"]?.string?.contains(method) ?? false, r.text)
        }
    }

    /// Routes registered outside route() (the backup, the document, the console) also answer 405 for another method;
    /// they answered 404 "no such path" (the contract suite's view of a served path).
    func testWrongMethodsOnEveryRouteAre405() throws {
        let d = try Daemon(plugins: [], tag: "routes405")
        for (method, path) in [("DELETE", "/v1/backup"), ("POST", "/openapi.json"), ("PUT", "/ui"), ("POST", "/ui/app.js")] {
            let r = try UnixHTTPConnection(path: d.socket).request(method, path, body: Array("{}".utf8))
            XCTAssertEqual(r.status, 405, "\(method) \(path): \(r.text)")
            XCTAssertEqual(r.headers.first { $0.0.lowercased() == "allow" }?.1, "GET", "\(method) \(path)")
        }
    }

    func testNULAndInvalidUTF8NeverBecomeAnotherId() throws {
        let d = try netDaemon("nul")
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "ctr", "node": "n1"]).0, 200)
        // In a body: NUL, a lone surrogate escape, a byte that is not UTF-8; in the id, the node and the interface.
        for body in [#"{"containerID":"ctr\u0000A"}"#, #"{"containerID":"ctr\u0000B"}"#, #"{"containerID":"x","node":"n\u0000"}"#,
                     #"{"containerID":"x","ifname":"e\u0000"}"#, #"{"containerID":"ctr\ud800"}"#, #"{"containerID":"ctr\udc00\ud800"}"#] {
            let (st, r) = try d.rawRequest("POST", "/v1/networks/net1/attachments", Array(body.utf8))
            XCTAssertEqual(st, 400, "\(body): \(r.serialized)")
        }
        let (st, r) = try d.rawRequest("POST", "/v1/networks/net1/attachments", Array(#"{"containerID":"ctr"#.utf8) + [0xFF] + Array(#""}"#.utf8))
        XCTAssertEqual(st, 400, r.serialized)
        XCTAssertTrue(r["error"]?.string?.contains("UTF-8") ?? false, r.serialized)
        // In a path: %00, %FF (not UTF-8), a control character; in a query.
        try assertRefused(d, "DELETE", "/v1/networks/net1/attachments/ctr%00A/eth0", mentions: "NUL")
        try assertRefused(d, "DELETE", "/v1/networks/net1/attachments/ctr%FF/eth0", mentions: "UTF-8")
        try assertRefused(d, "GET", "/v1/networks/net1/attachments/ctr%0A/eth0", mentions: "control character")
        try assertRefused(d, "PUT", "/v1/nodes/n%00x", [:], mentions: "NUL")
        try assertRefused(d, "GET", "/v1/kinds/App/a%00b", mentions: "NUL")
        try assertRefused(d, "GET", "/v1/storage/x%00/volumes", mentions: "NUL")
        try assertRefused(d, "GET", "/v1/networks/net1/capacity?node=n%00", mentions: "NUL")
        try assertRefused(d, "GET", "/v1/instances?app=a%00", mentions: "NUL")
        // Decoded once: %2500 is the text "%00", not a NUL (it used to be decoded twice).
        XCTAssertEqual(try d.request("GET", "/v1/instances?app=a%2500").0, 200)
        let list = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array ?? []
        XCTAssertEqual(list.map { $0["containerID"]?.string ?? "" }, ["ctr"], "only ctr is attached")
        // The site: a NUL in a plugin path is refused (it would be cut short at the NUL when opened).
        let site: JSON = ["site": "test", "plugins": [["name": "p", "path": "/tmp/x\u{0}.so"]]]
        try assertRefused(d, "PUT", "/v1/site?dryRun=true", site, mentions: "NUL")
        let file = d.dir + "/nul-site.json"
        try site.serialized.write(toFile: file, atomically: true, encoding: .utf8)
        let (rc, out, err) = try runTool(Paths.bin + "/berthd", ["--site", file, "--check"])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue((out + err).contains("NUL"), out + err)
    }

    /// Plugin output is outside input too: a NUL or a byte that is not UTF-8 in what a plugin returns fails the call.
    func testPluginOutputWithNULOrInvalidUTF8IsRefused() throws {
        let so = try FixtureBuilder.plugin("bad_text", in: IsolationTests.faultsDir)
        let d = try Daemon(plugins: [["name": "bt", "path": .string(so)]], tag: "badtext")
        for cid in ["nul1", "utf1"] {
            let (st, r) = try d.request("POST", "/v1/networks/bt/attachments", ["containerID": .string(cid)])
            XCTAssertEqual(st, 500, r.serialized)
            XCTAssertTrue(r["error"]?.string?.contains(cid == "nul1" ? "NUL" : "UTF-8") ?? false, r.serialized)
        }
        XCTAssertEqual(try d.request("GET", "/v1/networks/bt/attachments").1["attachments"]?.array?.count, 0)
        XCTAssertEqual(try d.request("POST", "/v1/networks/bt/attachments", ["containerID": "fine"]).0, 200)
    }

    func testInterfaceNamesAreCheckedAsLinuxDoes() throws {
        let d = try netDaemon("ifname")
        for bad: JSON in [["eth0"], 7, true, "", ".", "..", "a:b", "a b", "a/b", "a\tb", "0123456789abcdef"] {
            let (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ifname": bad])
            XCTAssertEqual(st, 400, "ifname \(bad.serialized): \(r.serialized)")
            XCTAssertTrue(r["error"]?.string?.contains("ifname") ?? false, r.serialized)
        }
        for bad: JSON in [["c1"], 5] {
            XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": bad]).0, 400, bad.serialized)
        }
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "node": 3]).0, 400)
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 0, "nothing was attached")
        for good in ["eth0", "0123456789abcde", "net1.100", "veth-x_y"] {
            let (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ifname": .string(good)])
            XCTAssertEqual(st, 200, "ifname \(good): \(r.serialized)")
        }
    }

    func testRequestedAddressPrefixIsChecked() throws {
        let d = try netDaemon("prefix")  // pool p1: 10.99.0.0/24
        for (ip, mentions) in [("10.99.0.5/99", "prefix"), ("10.99.0.5/33", "prefix"), ("10.99.0.5/", "prefix"), ("10.99.0.5/8", "/24"),
                               ("fd00::5/129", "prefix")] {
            let (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ips": [.string(ip)]])
            XCTAssertEqual(st, 400, "\(ip): \(r.serialized)")
            XCTAssertTrue(r["error"]?.string?.contains(mentions) ?? false, "\(ip): \(r.serialized)")
        }
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 0, "nothing was attached")
        let (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ips": ["10.99.0.5/24"]])
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.99.0.5/24")
    }
}
