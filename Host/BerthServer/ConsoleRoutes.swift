// The operator console: static HTML, CSS and JavaScript (Host/BerthServer/Console/, compiled into the binary with
// SwiftPM's embedInCode) served at /ui/ without a token, since they hold no data; every API call the page makes needs it.
//
//   GET /ui, /ui/            index.html (the page refers to its files as /ui/<file>, so either works)
//   GET /ui/{file}           one of the console's files; anything else is 404
//
// Every response carries a strict Content-Security-Policy (only this origin's scripts and styles, no inline code,
// no framing) and X-Content-Type-Options: nosniff.
import HTTPTypes
import Hummingbird
import NIOCore

extension APIServer {
    /// The console's files by name, with their content types.
    static let consoleFiles: [String: (type: String, bytes: [UInt8])] = [
        "index.html": ("text/html; charset=utf-8", PackageResources.index_html),
        "console.css": ("text/css; charset=utf-8", PackageResources.console_css),
        "favicon.svg": ("image/svg+xml", PackageResources.favicon_svg),
        "app.js": ("text/javascript; charset=utf-8", PackageResources.app_js),
        "dom.js": ("text/javascript; charset=utf-8", PackageResources.dom_js),
        "site.js": ("text/javascript; charset=utf-8", PackageResources.site_js),
        "networks.js": ("text/javascript; charset=utf-8", PackageResources.networks_js),
        "workloads.js": ("text/javascript; charset=utf-8", PackageResources.workloads_js),
        "storage.js": ("text/javascript; charset=utf-8", PackageResources.storage_js),
        "events.js": ("text/javascript; charset=utf-8", PackageResources.events_js),
    ]

    static let consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func consoleResponse(_ name: String) -> Response {
        var headers: HTTPFields = [.contentSecurityPolicy: consoleCSP, .xContentTypeOptions: "nosniff", .cacheControl: "no-cache"]
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        guard let file = consoleFiles[name] else {
            headers[.contentType] = "text/plain; charset=utf-8"
            return Response(status: .notFound, headers: headers,
                            body: .init(byteBuffer: ByteBuffer(string: "no console file \"\(name)\" (the console is at /ui/)\n")))
        }
        headers[.contentType] = file.type
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }

    /// Registered before the bearer-token middleware, so that a browser can load the page and then ask for the token.
    func registerConsoleRoutes(_ router: Router<Ctx>) {
        routes.add(.get, "/ui")  // for the 405 of another method (Routes.swift)
        routes.add(.get, "/ui/{file}")
        router.get("/ui") { _, _ in Self.consoleResponse("index.html") }  // also /ui/: the router ignores a trailing slash
        router.get("/ui/{file}") { _, ctx in Self.consoleResponse(ctx.parameters.get("file") ?? "") }
    }
}
