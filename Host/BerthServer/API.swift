// The REST API: JSON over the unix socket (mode 0660) and, when configured, over TCP with a bearer token.
// Handlers are thin: they parse and check input, call the runtime, and render JSON. Every error is a JSON
// object {"error": message, ...} with a 4xx/5xx status; a rejected request changes nothing.
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

public typealias Ctx = BasicRequestContext

struct Reply {
    var status: Int = 200
    var body: JSON
    init(_ body: JSON, status: Int = 200) { self.body = body; self.status = status }
}

func render(_ status: Int, _ body: JSON) -> Response {
    var buf = ByteBuffer(string: body.serialized)
    buf.writeString("\n")
    return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: buf))
}

/// Reads the request body as one JSON object, enforcing the size limit, and refuses unknown fields.
func readObject(_ req: Request, limit: Int, allowed: Set<String>? = nil) async throws -> JSON {
    let buf: ByteBuffer
    do { buf = try await req.body.collect(upTo: limit) } catch is NIOTooManyBytesError {
        throw HTTPRefusal(413, "request body larger than the limit of \(limit) bytes (api.maxBodyBytes)")
    } catch let e as HTTPParserError {
        // The client's fault: most often a body that ended (the connection closed) before its Content-Length.
        let declared = req.headers[.contentLength].map { " (Content-Length: \($0))" } ?? ""
        throw BerthError(.invalidArgument, e == .invalidEOFState
            ? "the request body ended before its Content-Length\(declared): send exactly as many bytes as Content-Length says"
            : "malformed HTTP request body: \(e)")
    }
    let bytes = Array(buf.readableBytesView)
    if bytes.isEmpty { throw BerthError(.invalidArgument, "request body is empty; expected a JSON object") }
    let v: JSON
    do { v = try JSON.parse(bytes) } catch { throw BerthError(.invalidArgument, "malformed JSON: \(error)") }
    guard case .object(let kv) = v else { throw BerthError(.invalidArgument, "expected a JSON object, got \(v.typeName)") }
    if let allowed {
        let unknown = kv.map { $0.0 }.filter { !allowed.contains($0) }
        if !unknown.isEmpty {
            throw BerthError(.invalidArgument, "unknown field\(unknown.count > 1 ? "s" : "") \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")) (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }
    return v
}

/// Who asked: the X-Berth-Actor header (the CLI sends user@host), else the transport.
func actor(_ req: Request) -> String {
    if let name = HTTPField.Name("X-Berth-Actor"), let a = req.headers[name], !a.isEmpty { return "api:\(a)" }
    return "api"
}

/// A path parameter, percent-decoded once and checked as a name or id (Names: no NUL, no control character, UTF-8).
func param(_ ctx: Ctx, _ name: String) throws -> String {
    guard let v = ctx.parameters.get(name) else { throw BerthError(.invalidArgument, "missing path parameter \(name)") }
    do { return try Names.percentDecoded(Substring(v), "path parameter \(name)") } catch let e as Names.Invalid { throw BerthError(.invalidArgument, e.message) }
}

/// A query parameter (the first of that name), percent-decoded once from the raw query and checked like `param`.
func query(_ req: Request, _ name: String) throws -> String? {
    guard let q = req.uri.query else { return nil }
    for pair in q.split(separator: "&", omittingEmptySubsequences: true) {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard kv[0] == name else { continue }
        do { return try Names.percentDecoded(kv.count > 1 ? kv[1] : "", "query parameter \(name)") } catch let e as Names.Invalid { throw BerthError(.invalidArgument, e.message) }
    }
    return nil
}

/// An integer query parameter: `dflt` when absent, else decimal digits within `range`, or a 400 that names it.
func intQuery(_ req: Request, _ name: String, default dflt: Int64, range: ClosedRange<Int64>) throws -> Int64 {
    guard let v = try query(req, name) else { return dflt }
    guard let n = Int64(v), range.contains(n) else {
        let want = range.upperBound == Int64.max ? "an integer >= \(range.lowerBound)" : "an integer in \(range.lowerBound)...\(range.upperBound)"
        throw BerthError(.invalidArgument, "query parameter \(name)=\"\(v.prefix(40))\" is not valid: \(name) must be \(want)")
    }
    return n
}

/// A number of seconds in a query parameter: `dflt` when absent, else a finite decimal number within `range` (nan,
/// inf, negative, huge and non-numeric values are a 400 that names the parameter).
func secondsQuery(_ req: Request, _ name: String, default dflt: Double, range: ClosedRange<Double>) throws -> Double {
    guard let v = try query(req, name) else { return dflt }
    guard let d = Double(v), d.isFinite, range.contains(d) else {
        throw BerthError(.invalidArgument, "query parameter \(name)=\"\(v.prefix(40))\" is not valid: \(name) must be a number of seconds in \(range.lowerBound)...\(range.upperBound)")
    }
    return d
}

/// The fields of an attachment ADD request (POST /v1/networks/{net}/attachments and each item of a batch).
let addFields: Set<String> = ["containerID", "ifname", "node", "pool", "ips", "identity", "mac", "useReserved"]

public struct APIServer {
    public let runtime: BerthRuntime
    let network: NetworkService
    /// Every route's pattern and method, for 404 and 405 answers (Routes.swift).
    let routes = RouteTable()

    public init(runtime: BerthRuntime) {
        self.runtime = runtime
        network = runtime.network
    }

    /// Registers a handler that returns JSON; errors become JSON error responses.
    func route(_ router: Router<Ctx>, _ method: HTTPRequest.Method, _ path: RouterPath,
               _ body: @escaping @Sendable (Request, Ctx) async throws -> Reply) {
        routes.add(method, path)
        router.on(path, method: method) { req, ctx -> Response in
            do {
                let r = try await body(req, ctx)
                return render(r.status, r.body)
            } catch {
                return errorResponse(error)
            }
        }
    }

    public func makeRouter(requireToken: String? = nil) -> Router<Ctx> {
        let router = Router(context: Ctx.self)
        registerConsoleRoutes(router)  // static files, no token: before the middleware, which applies to routes added after it
        if let token = requireToken { router.add(middleware: BearerTokenMiddleware(token: token)) }
        router.add(middleware: NotFoundMiddleware(table: routes))
        let rt = runtime
        let net = network
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/healthz") { _, _ in
            let ps = rt.plugins
            var body: JSON = ["status": "ok", "site": .string(rt.site.site), "node": .string(rt.site.nodeName),
                              "plugins": ["loaded": .number(Double(ps.filter { $0.stateName == "loaded" }.count)),
                                          "failed": .number(Double(ps.filter { $0.stateName == "failed" }.count))]]
            // A store that takes no more changes (a failed fsync of its log) needs a restart: say so with 503, so
            // that a supervisor's health check restarts berthd.
            if let why = rt.executor.stoppedReason {
                body = body.setting("status", "store stopped").setting("error", .string("the state store takes no more changes: \(why); restart berthd"))
                return Reply(body, status: 503)
            }
            return Reply(body)
        }
        route(router, .get, "/v1/site") { _, _ in Reply(rt.site.json) }
        route(router, .put, "/v1/site") { req, _ in
            let body = try await readObject(req, limit: limit)
            let site = try SiteConfig.parse(body.bytes, baseDir: try query(req, "baseDir") ?? rt.site.baseDir)
            let changes = try rt.apply(site, actor: actor(req), force: try query(req, "force") == "true", dryRun: try query(req, "dryRun") == "true")
            return Reply(["changes": .array(changes.map { $0.json })])
        }
        route(router, .post, "/v1/plugins/{name}/{action}") { req, ctx in
            let name = try param(ctx, "name")
            let changes: [PlannedChange]
            switch try param(ctx, "action") {
            case "enable": changes = try rt.setEnabled(name, true, actor: actor(req), force: false)
            case "disable": changes = try rt.setEnabled(name, false, actor: actor(req), force: try query(req, "force") == "true")
            case "reload": changes = try rt.reload(name, actor: actor(req))
            case let a: throw BerthError(.notFound, "unknown plugin action \"\(a)\" (enable, disable, reload)")
            }
            return Reply(["changes": .array(changes.map { $0.json })])
        }
        route(router, .get, "/v1/plugins") { _, _ in Reply(["plugins": .array(rt.plugins.map { $0.json })]) }
        route(router, .get, "/v1/plugins/{name}") { _, ctx in
            let name = try param(ctx, "name")
            guard let e = rt.entry(name) else { throw BerthError(.notFound, "no plugin named \"\(name)\"") }
            var j = e.json
            if let s = e.instance?.plugin.configSchema { j = j.setting("configSchema", s) }
            return Reply(j.setting("config", e.spec.config))
        }
        routes.add(.get, "/metrics")
        router.get("/metrics") { _, _ -> Response in
            let text = rt.metricsText() + (await rt.utilisationMetrics())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        routes.add(.get, "/v1/events")
        router.get("/v1/events") { req, _ -> Response in
            do {
                // A revision (>= 0); at most 10,000 events per answer (a limit outside 1...10000 is refused, not
                // clamped, so that a client learns its request was not what it got); wait at most 60 s.
                let since = try intQuery(req, "since", default: 0, range: 0...Int64.max)
                let limit = Int(try intQuery(req, "limit", default: 1000, range: 1...10000))
                let type = try query(req, "type").flatMap { $0.isEmpty ? nil : $0 }, subject = try query(req, "subject").flatMap { $0.isEmpty ? nil : $0 }
                let watch = try query(req, "watch")
                if watch == "true" || watch == "1" {
                    try rt.store.checkRetained(since: since)  // a cursor older than the log: 410 before the stream starts
                    return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
                        var cursor = since
                        while true {
                            // A keep-alive at least every 5 s: a closed client (and berthd's graceful shutdown,
                            // which waits for this handler) is noticed at the next write.
                            let evs: [Event]
                            do { evs = try await rt.events(since: cursor, limit: limit, wait: 5, type: type, subject: subject) } catch let e as EventsCompacted {
                                // Compaction overtook a slow reader: say so in the stream and end it.
                                try await writer.write(ByteBuffer(string: (["error": .string(e.description), "oldestRevision": .number(Double(e.oldestRevision))] as JSON).serialized + "\n"))
                                try await writer.finish(nil)
                                return
                            }
                            if evs.isEmpty {
                                try await writer.write(ByteBuffer(string: "\n"))  // keep-alive; readers skip blank lines
                                continue
                            }
                            var s = ""
                            for e in evs { s += e.json.serialized + "\n" }
                            cursor = evs.last!.rev
                            try await writer.write(ByteBuffer(string: s))
                        }
                    })
                }
                let wait = try secondsQuery(req, "wait", default: 0, range: 0...60)
                let evs = try await rt.events(since: since, limit: limit, wait: wait, type: type, subject: subject)
                return render(200, ["events": .array(evs.map { $0.json }), "rev": .number(Double(evs.last?.rev ?? since))])
            } catch { return errorResponse(error) }
        }

        // Networks
        route(router, .get, "/v1/networks") { _, _ in
            Reply(["networks": .array(rt.plugins.filter { $0.instance?.plugin.kinds.contains(.network) ?? false }.map { $0.json })])
        }
        route(router, .post, "/v1/networks/{net}/attachments") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: addFields)
            return Reply(try await net.add(network: try param(ctx, "net"), request: body), status: 200)
        }
        // Batch ADD: {"attachments": [ADD request, ...]} (at most NetworkService.maxBatch). One round trip and one commit;
        // each item succeeds or fails alone. A malformed batch (not an array, an item with an unknown field) is refused
        // whole, before anything runs.
        route(router, .post, "/v1/networks/{net}/attachments/batch") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["attachments"])
            guard let items = body["attachments"]?.array else { throw BerthError(.invalidArgument, "\"attachments\" must be an array of ADD requests") }
            guard items.count <= NetworkService.maxBatch else {
                throw HTTPRefusal(413, "a batch holds at most \(NetworkService.maxBatch) attachments, got \(items.count)")
            }
            for (i, item) in items.enumerated() {
                guard case .object(let kv) = item else { throw BerthError(.invalidArgument, "attachments[\(i)] must be an object, got \(item.typeName)") }
                if let bad = kv.first(where: { !addFields.contains($0.0) }) {
                    throw BerthError(.invalidArgument, "attachments[\(i)]: unknown field \"\(bad.0)\" (allowed: \(addFields.sorted().joined(separator: ", ")))")
                }
            }
            let results = try await net.addBatch(network: try param(ctx, "net"), requests: items)
            var ok = 0
            let out: [JSON] = results.map {
                switch $0 {
                case .success(let r): ok += 1; return ["result": r]
                case .failure(let e):
                    var j: JSON = ["error": .string(e.plugin != nil ? e.description : e.message), "status": .number(Double(httpStatus(e)))]
                    if let d = e.details { j = j.setting("details", d) }
                    return j
                }
            }
            return Reply(["results": .array(out), "succeeded": .number(Double(ok)), "failed": .number(Double(results.count - ok))])
        }
        route(router, .get, "/v1/networks/{net}/attachments") { _, ctx in Reply(try await net.list(network: try param(ctx, "net"))) }
        route(router, .get, "/v1/networks/{net}/attachments/{cid}/{ifname}") { _, ctx in
            Reply(try await net.check(network: try param(ctx, "net"), containerID: try param(ctx, "cid"), ifname: try param(ctx, "ifname")))
        }
        route(router, .delete, "/v1/networks/{net}/attachments/{cid}/{ifname}") { req, ctx in
            try await net.del(network: try param(ctx, "net"), containerID: try param(ctx, "cid"), ifname: try param(ctx, "ifname"),
                              final: try query(req, "final") == "true")
            return Reply(["deleted": true])
        }
        route(router, .post, "/v1/networks/{net}/gc") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["valid"])
            guard let list = body["valid"] else { throw BerthError(.invalidArgument, "\"valid\" is required: an array of {containerID, ifname} to keep") }
            let valid = try NetworkService.validList(list, field: "valid", ifnameRequired: false)
            return Reply(try await net.gc(network: try param(ctx, "net"), valid: valid))
        }
        route(router, .get, "/v1/networks/{net}/status") { _, ctx in Reply(try await net.status(network: try param(ctx, "net"))) }
        route(router, .get, "/v1/networks/{net}/capacity") { req, ctx in
            Reply(try await net.capacity(network: try param(ctx, "net"), node: try query(req, "node")))
        }
        route(router, .post, "/v1/networks/{net}/pools") { req, ctx in
            let body = try await readObject(req, limit: limit)
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.import", request: body), status: 201)
        }
        route(router, .get, "/v1/networks/{net}/pools") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.list", request: .object([])))
        }
        route(router, .get, "/v1/networks/{net}/pools/{pool}") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.show", request: ["name": .string(try param(ctx, "pool"))]))
        }
        route(router, .delete, "/v1/networks/{net}/pools/{pool}") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.delete", request: ["name": .string(try param(ctx, "pool"))]))
        }
        route(router, .post, "/v1/networks/{net}/addresses/move") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["pool", "addresses", "to"])
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "address.move", request: body))
        }
        route(router, .post, "/v1/networks/{net}/nodes/{node}/release") { _, ctx in
            Reply(try await net.releaseNode(network: try param(ctx, "net"), node: try param(ctx, "node")))
        }
        route(router, .post, "/v1/networks/{net}/identities/release") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["app", "ordinal", "force"])
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "identity.release", request: body))
        }
        route(router, .post, "/v1/cni") { req, _ in
            let body = try await readObject(req, limit: limit, allowed: ["command", "containerID", "netns", "ifname", "args", "path", "config", "main", "release"])
            let (code, out) = await CNI.handle(body, network: net)
            return Reply(["exitCode": .number(Double(code)), "stdout": out ?? .null])
        }
        registerOpenAPIRoute(router)
        registerStorageRoutes(router)
        registerWorkloadRoutes(router)
        registerBackupRoutes(router)
        return router
    }
    // run(logger:), the listeners: Listeners.swift
}

struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = Ctx
    let token: String
    func handle(_ request: Request, context: Ctx, next: (Request, Ctx) async throws -> Response) async throws -> Response {
        // RFC 9110: the scheme is case-insensitive, one or more spaces before the credentials.
        let auth = (request.headers[.authorization] ?? "").drop { $0 == " " }
        let scheme = auth.prefix { $0 != " " }
        let given = auth.dropFirst(scheme.count).drop { $0 == " " }
        guard scheme.lowercased() == "bearer", Self.sameBytes(Array(given.utf8), Array(token.utf8)) else {
            return render(401, ["error": "missing or wrong bearer token (Authorization: Bearer <api.token>)"])
        }
        return try await next(request, context)
    }

    /// Compares in time that does not depend on where the first difference is.
    static func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in 0..<a.count { d |= a[i] ^ b[i] }
        return d == 0
    }
}
