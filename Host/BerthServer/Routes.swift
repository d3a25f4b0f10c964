// The table of the API's routes (path pattern and method), kept as they are registered, so that a request no route
// takes gets a JSON answer: 405 with an `Allow` header when the path is known and the method is not, else 404.
import Foundation
import HTTPTypes
import Hummingbird

final class RouteTable: @unchecked Sendable {
    private let lock = NSLock()
    private var routes: [(segments: [Substring], method: String)] = []

    func add(_ method: HTTPRequest.Method, _ path: RouterPath) {
        let segs = path.description.split(separator: "/")
        lock.withLock { routes.append((segs, method.rawValue)) }
    }

    /// The methods of every route whose pattern matches `path` ({name} matches any one segment), sorted.
    func methods(for path: String) -> [String] {
        let segs = path.split(separator: "/")
        let all = lock.withLock { routes }
        let ms = all.filter { r in
            r.segments.count == segs.count && zip(r.segments, segs).allSatisfy { p, s in (p.hasPrefix("{") && p.hasSuffix("}")) || p == s }
        }.map { $0.method }
        return Set(ms).sorted()
    }
}

/// Turns the router's empty 404 into a JSON 404, or a 405 with `Allow` when another method of the path has a route.
struct NotFoundMiddleware: RouterMiddleware {
    typealias Context = Ctx
    let table: RouteTable
    func handle(_ request: Request, context: Ctx, next: (Request, Ctx) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            let path = request.uri.path
            let allowed = table.methods(for: path)
            let method = request.method.rawValue
            if allowed.isEmpty || allowed.contains(method) {
                return render(404, ["error": .string("no route \(method) \(path.prefix(200)): Berth has no such path")])
            }
            var r = render(405, ["error": .string("method \(method) is not allowed on \(path.prefix(200)) (allowed: \(allowed.joined(separator: ", ")))")])
            r.headers[.allow] = allowed.joined(separator: ", ")
            return r
        }
    }
}
