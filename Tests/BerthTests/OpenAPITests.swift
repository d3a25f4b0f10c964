// The API contract: every route berthd registers is in Host/BerthServer/openapi.json and every path and method
// there is served; berthd (even a copy moved elsewhere) serves the document at GET /openapi.json.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthServer
import BerthWire
import Foundation
import XCTest

final class OpenAPITests: XCTestCase {
    static var document: JSON { try! JSON.parse(APIServer.openAPIDocument) }

    /// (method, path) of every operation in the document, methods upper-case.
    static func documented() -> [(String, String)] {
        var out: [(String, String)] = []
        for (path, item) in document["paths"]!.object! {
            for (method, _) in item.object! where ["get", "put", "post", "delete", "patch", "head", "options"].contains(method) {
                out.append((method.uppercased(), path))
            }
        }
        return out
    }

    static func segments(_ path: String) -> [Substring] { path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0 } }
    static func isParam(_ s: Substring) -> Bool { s.hasPrefix("{") && s.hasSuffix("}") || s.hasPrefix(":") }

    /// The registered route that serves a documented path, as the router's trie picks it: equal length, every
    /// literal equal, a parameter of the route matching anything; literals win over parameters, left to right.
    static func servingRoute(_ doc: [Substring], among routes: [[Substring]]) -> [Substring]? {
        let fits = routes.filter { r in
            r.count == doc.count && zip(r, doc).allSatisfy { rs, ds in isParam(rs) ? true : (!isParam(ds) && rs == ds) }
        }
        return fits.max { a, b in
            // Prefer the route whose first differing segment is a literal.
            for (x, y) in zip(a, b) where isParam(x) != isParam(y) { return isParam(x) }
            return false
        }
    }

    func makeRuntime() throws -> BerthRuntime {
        let dir = tempDir("openapi")
        let site: JSON = ["site": "unit", "stateDir": .string(dir + "/state"), "store": ["sync": "normal"], "plugins": []]
        let rt = try BerthRuntime(site: try SiteConfig.parse(site.bytes, baseDir: dir))
        rt.loadPlugins()
        return rt
    }

    func testEveryRouteIsDocumentedAndEveryDocumentedOperationIsServed() throws {
        let rt = try makeRuntime()
        defer { rt.shutdown() }
        let router = APIServer(runtime: rt).makeRouter()
        var registered: [String: [[Substring]]] = [:]
        for r in router.routes { registered[r.method.rawValue, default: []].append(Self.segments(r.path.description)) }
        XCTAssertGreaterThan(router.routes.count, 40, "the router's route list looks wrong: \(router.routes)")

        // Every documented operation is served by a registered route of the same method.
        var used: [String: Set<String>] = [:]
        for (method, path) in Self.documented() {
            guard let r = Self.servingRoute(Self.segments(path), among: registered[method] ?? []) else {
                XCTFail("\(method) \(path) is in openapi.json but berthd registers no route for it")
                continue
            }
            used[method, default: []].insert(r.joined(separator: "/"))
        }
        // Every registered route serves at least one documented operation.
        for r in router.routes {
            let key = Self.segments(r.path.description).joined(separator: "/")
            XCTAssertTrue(used[r.method.rawValue]?.contains(key) ?? false,
                          "\(r.method.rawValue) \(r.path) is served by berthd but missing from Host/BerthServer/openapi.json")
        }
    }

    /// The matcher itself: a documented path with a literal where the route has a parameter is served by it,
    /// and a documented path no route has is found missing.
    func testRouteMatcher() {
        let routes = [Self.segments("/v1/storage/{plugin}/volumes/{id}/{action}"), Self.segments("/v1/storage/{plugin}/volumes/{id}"),
                      Self.segments("/v1/networks/{net}/attachments/batch"), Self.segments("/v1/networks/{net}/attachments/{cid}")]
        XCTAssertEqual(Self.servingRoute(Self.segments("/v1/storage/{plugin}/volumes/{id}/publish"), among: routes), routes[0])
        XCTAssertEqual(Self.servingRoute(Self.segments("/v1/networks/{net}/attachments/batch"), among: routes), routes[2])
        XCTAssertEqual(Self.servingRoute(Self.segments("/v1/networks/{net}/attachments/{x}"), among: routes), routes[3])
        XCTAssertNil(Self.servingRoute(Self.segments("/v1/storage/{plugin}"), among: routes))
        XCTAssertNil(Self.servingRoute(Self.segments("/v1/storage/{plugin}/volumes/{id}/publish/now"), among: routes))
    }

    /// Where a route takes its action as a parameter, the documented actions are exactly those the handler knows
    /// (its 404 for an unknown action lists them).
    func testDocumentedActionsAreTheHandlersActions() throws {
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "openapi-actions")
        let docs = Self.documented()
        for (route, prefix) in [("/v1/plugins/hello/bogus", "/v1/plugins/{name}/"), ("/v1/storage/x/volumes/v/bogus", "/v1/storage/{plugin}/volumes/{id}/")] {
            let (st, body) = try d.request("POST", route, .object([]))
            XCTAssertEqual(st, 404, body.serialized)
            let msg = body["error"]?.string ?? ""
            guard let open = msg.lastIndex(of: "("), let close = msg.lastIndex(of: ")") else { XCTFail("no action list in \(msg)"); continue }
            let known = Set(msg[msg.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let documented = Set(docs.filter { $0.0 == "POST" && $0.1.hasPrefix(prefix) && !$0.1.dropFirst(prefix.count).contains("/") }
                .map { String($0.1.dropFirst(prefix.count)) })
            XCTAssertEqual(known, documented, "actions of \(prefix){action}")
        }
    }

    /// The site schema inside the document is the one berthd validates site files with.
    func testSiteSchemaMatchesTheDaemons() {
        let inDoc = Self.document["components"]?["schemas"]?["SiteConfig"]
        let daemon = SiteConfig.schema.removing("$schema").removing("$id")
        XCTAssertEqual(inDoc, daemon, "components.schemas.SiteConfig of openapi.json differs from SiteConfig.schemaText: run scripts/openapi-sync (it copies site.schema.json, kept equal to berthd --print-site-schema, into the document)")
    }

    /// Every $ref of the document resolves inside it.
    func testReferencesResolve() {
        let doc = Self.document
        func walk(_ j: JSON, _ at: String) {
            switch j {
            case .object(let kv):
                for (k, v) in kv {
                    if k == "$ref", let r = v.string {
                        XCTAssertTrue(r.hasPrefix("#/"), "\(at): external reference \(r)")
                        var cur: JSON? = doc
                        for part in r.dropFirst(2).split(separator: "/") { cur = cur?[String(part)] }
                        XCTAssertNotNil(cur, "\(at): \(r) does not resolve")
                    } else {
                        walk(v, at + "/" + k)
                    }
                }
            case .array(let a): for (i, v) in a.enumerated() { walk(v, "\(at)/\(i)") }
            default: break
            }
        }
        walk(doc, "#")
        XCTAssertEqual(doc["openapi"], "3.1.0")
    }

    /// A copy of berthd in another directory serves the document byte for byte (it is compiled in).
    func testMovedBerthdServesTheDocument() throws {
        let dir = tempDir("openapi-moved")
        let exe = dir + "/berthd"
        try FileManager.default.copyItem(atPath: Paths.bin + "/berthd", toPath: exe)
        let sock = dir + "/api.sock"
        let site: JSON = ["site": "moved", "stateDir": .string(dir + "/state"), "api": ["socket": .string(sock)], "store": ["sync": "normal"], "plugins": []]
        try site.serialized.write(toFile: dir + "/site.json", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["--site", dir + "/site.json", "--log-level", "warning"]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        try p.run()
        defer { p.terminate(); p.waitUntilExit() }
        var got: HTTPResponse? = nil
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, p.isRunning {
            if let r = try? UnixHTTPConnection(path: sock, timeoutSeconds: 2).request("GET", "/openapi.json") { got = r; break }
            usleep(50_000)
        }
        let r = try XCTUnwrap(got, "the moved berthd did not answer")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, APIServer.openAPIDocument)
        XCTAssertEqual(try r.json()["info"]?["title"], "Berth API")
    }
}
