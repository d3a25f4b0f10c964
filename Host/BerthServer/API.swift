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
        registerSiteRoutes(router)
        registerEventRoutes(router)
        registerNetworkRoutes(router)
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
