// How the CLI reaches berthd: the options every daemon command takes (--socket, --server, --token, -o), the
// transports (unix socket, plain TCP, https through URLSession), API paths built with every part percent-encoded,
// and the defaults that follow the site (the only network or storage plugin loaded).
import ArgumentParser
import BerthWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

struct Connection: ParsableArguments {
    @Option(name: .long, help: "berthd's API unix socket (default: $BERTH_SOCKET, else ./berth-state/berthd.sock).")
    var socket: String?

    @Option(name: .long, help: ArgumentHelp("A remote berthd's TCP API: http://HOST:PORT or https://HOST:PORT (default: $BERTH_SERVER). Needs a token.",
                                            valueName: "url"))
    var server: String?

    @Option(name: .long, help: "Bearer token for --server (default: $BERTH_TOKEN). A token here shows in `ps`: prefer --token-file.")
    var token: String?

    @Option(name: .long, help: ArgumentHelp("File whose first line is the bearer token for --server (default: $BERTH_TOKEN_FILE).", valueName: "path"))
    var tokenFile: String?

    @Option(name: .long, help: ArgumentHelp("CA certificate (PEM) for an https:// server. Not supported by this build: see docs/cli.md.", valueName: "path"))
    var cacert: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: table, json or yaml.")
    var output: OutputFormat = .table

    static var env: [String: String] { ProcessInfo.processInfo.environment }

    var socketPath: String {
        socket ?? Connection.env["BERTH_SOCKET"] ?? "./berth-state/berthd.sock"
    }

    /// The options that name the same daemon, for a command that runs another command (`get nodes`).
    var arguments: [String] {
        var a = ["-o", output.rawValue]
        if let socket { a += ["--socket", socket] }
        if let server { a += ["--server", server] }
        if let token { a += ["--token", token] }
        if let tokenFile { a += ["--token-file", tokenFile] }
        if let cacert { a += ["--cacert", cacert] }
        return a
    }

    /// The server URL, when the CLI talks TCP: --server, else $BERTH_SERVER unless --socket was given.
    var serverURL: String? {
        if let server { return server }
        if socket != nil { return nil }
        return Connection.env["BERTH_SERVER"].flatMap { $0.isEmpty ? nil : $0 }
    }

    func validate() throws {
        if socket != nil && server != nil { throw ValidationError("give --socket or --server, not both") }
    }

    /// The bearer token: --token, --token-file, $BERTH_TOKEN, $BERTH_TOKEN_FILE, in that order.
    func bearerToken() throws -> String? {
        if let token { return token }
        if let f = tokenFile ?? (Connection.env["BERTH_TOKEN"] == nil ? Connection.env["BERTH_TOKEN_FILE"] : nil) {
            guard let d = FileManager.default.contents(atPath: f) else { throw CLIError("cannot read the token file \(f)") }
            let t = String(decoding: d, as: UTF8.self).split(whereSeparator: \.isNewline).first.map { String($0).trimmingSpaces } ?? ""
            guard !t.isEmpty else { throw CLIError("the token file \(f) is empty; its first line must be berthd's api.token") }
            return t
        }
        return Connection.env["BERTH_TOKEN"]
    }

    /// The transport for this invocation, and the headers every request carries (token, actor). `timeoutSeconds`:
    /// how long to wait for berthd's answer (a backup, made whole before its first byte, needs longer than 30 s).
    func transport(timeoutSeconds: Int = 30) throws -> (Transport, [(String, String)]) {
        let who = "\(Connection.env["USER"] ?? "uid\(getuid())")@\(ProcessInfo.processInfo.hostName)"
        var headers = [("X-Berth-Actor", who)]
        guard let url = serverURL else { return (UnixHTTPConnection(path: socketPath, timeoutSeconds: timeoutSeconds), headers) }
        let server = try ServerURL.parse(url)
        guard let token = try bearerToken() else {
            throw CLIError("--server \(url) needs berthd's api.token: give --token-file PATH, --token, $BERTH_TOKEN or $BERTH_TOKEN_FILE")
        }
        guard !token.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F }) else {
            throw CLIError("the bearer token has spaces or control characters; it must be berthd's api.token exactly")
        }
        headers.append(("Authorization", "Bearer \(token)"))
        if server.tls {
            if let cacert { throw CLIError(HTTPSTransport.cacertUnsupported(cacert)) }
            return (HTTPSTransport(base: server.base, timeoutSeconds: timeoutSeconds), headers)
        }
        return (TCPTransport(addresses: try server.addresses(), port: server.port, timeoutSeconds: timeoutSeconds), headers)
    }

    var target: String { serverURL ?? socketPath }
    var hint: String { serverURL == nil ? "is berthd running? set --socket or BERTH_SOCKET" : "is berthd listening there? check --server or BERTH_SERVER" }

    /// Sends a request and returns the JSON body, or throws berthd's error with every problem it listed.
    func call(_ method: String, _ path: String, body: JSON? = nil) throws -> JSON {
        let (resp, json) = try fetch(method, path, body: body)
        guard resp.status < 300 else { throw CLIError(errorText(json, resp)) }
        return json
    }

    /// Sends a request and returns the answer whatever its status (a transport failure still throws).
    func fetch(_ method: String, _ path: String, body: JSON? = nil) throws -> (HTTPResponse, JSON) {
        let (t, headers) = try transport()
        let resp: HTTPResponse
        do { resp = try t.request(method, path, body: body?.bytes, headers: headers) } catch let e as WireError {
            throw CLIError("\(e.message)\n(\(hint))")
        }
        return (resp, (try? resp.json()) ?? .string(resp.text))
    }

    /// Follows the event log (events --watch) until interrupted.
    func followEvents(since: Int, query: [(String, String?)], _ line: (String) -> Void) throws {
        let (t, headers) = try transport()
        do { try t.followEvents(since: since, query: query, headers: headers, line) } catch let e as WireError {
            throw CLIError("\(e.message)\n(\(hint))")
        }
    }

    /// berthd's error message, followed by every problem it listed (site files, specs) one a line.
    func errorText(_ json: JSON, _ resp: HTTPResponse) -> String {
        let message = json["error"]?.string ?? resp.text
        let problems = (json["problems"] ?? json["details"]?["problems"])?.array?.compactMap { $0.string } ?? []
        var text = "berthd: \(message) (HTTP \(resp.status))"
        let listed = problems.filter { !message.contains($0) }
        if !listed.isEmpty { text += "\n" + listed.map { "  - \($0)" }.joined(separator: "\n") }
        return text
    }

}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case table, json, yaml }

/// --server's URL, taken apart.
struct ServerURL {
    var tls: Bool
    var host: String
    var port: Int
    var base: String

    static func parse(_ s: String) throws -> ServerURL {
        guard let u = URLComponents(string: s), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = u.host, !host.isEmpty else {
            throw CLIError("--server \"\(s)\" is not an http:// or https:// URL (e.g. http://10.0.0.5:7420)")
        }
        guard u.path.isEmpty || u.path == "/", u.query == nil, u.user == nil else {
            throw CLIError("--server \"\(s)\": give only the scheme, host and port (e.g. https://berth.example:7420)")
        }
        let tls = scheme == "https"
        let port = u.port ?? (tls ? 443 : 80)
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        return ServerURL(tls: tls, host: bare, port: port, base: "\(scheme)://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)")
    }

    /// The host's numeric addresses (a name resolved here, so that the lean wire client needs no resolver).
    func addresses() throws -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &res)
        guard rc == 0, let first = res else { throw CLIError("--server: cannot resolve \(host): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(a.pointee.ai_addr, a.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                let s = String(cString: buf)
                if !out.contains(s) { out.append(s) }
            }
            ai = a.pointee.ai_next
        }
        guard !out.isEmpty else { throw CLIError("--server: cannot resolve \(host)") }
        return out
    }
}

/// http:// to each of the host's addresses in turn until one accepts the connection ("localhost" may be ::1 first
/// while berthd listens on 127.0.0.1). Only a failed connect moves on: nothing was sent yet.
struct TCPTransport: Transport {
    let addresses: [String]
    let port: Int
    var timeoutSeconds = 30

    func each<T>(_ body: (UnixHTTPConnection) throws -> T) throws -> T {
        var last: WireError?
        for a in addresses {
            do { return try body(UnixHTTPConnection(endpoint: .tcp(host: a, port: port), timeoutSeconds: timeoutSeconds)) } catch let e as WireError where e.kind == .unreachable {
                last = e
            }
        }
        throw last ?? WireError(.unreachable, "no address to connect to")
    }

    func request(_ method: String, _ target: String, body: [UInt8]?, headers: [(String, String)]) throws -> HTTPResponse {
        try each { try $0.request(method, target, body: body, headers: headers) }
    }

    func followEvents(since: Int, query: [(String, String?)], headers: [(String, String)], _ line: (String) -> Void) throws {
        try each { try $0.followEvents(since: since, query: query, headers: headers, line) }
    }
}

/// One request, or the event log followed, over some transport.
protocol Transport {
    func request(_ method: String, _ target: String, body: [UInt8]?, headers: [(String, String)]) throws -> HTTPResponse
    /// Follows GET /v1/events after `since` with the filters in `query`, calling `line` with each event's JSON text.
    func followEvents(since: Int, query: [(String, String?)], headers: [(String, String)], _ line: (String) -> Void) throws
}

extension UnixHTTPConnection: Transport {
    /// berthd's watch stream: one chunk per batch of events, a keep-alive line every 5 s (so a closed client is
    /// noticed and does not hold up berthd's shutdown).
    func followEvents(since: Int, query: [(String, String?)], headers: [(String, String)], _ line: (String) -> Void) throws {
        timeoutSeconds = 0
        try stream(api("v1", "events", query: query + [("since", String(since)), ("watch", "true")]), headers: headers) { chunk in
            for l in String(decoding: chunk, as: UTF8.self).split(separator: "\n") where !l.isEmpty { line(String(l)) }
            return true
        }
    }
}

/// https:// through FoundationNetworking's URLSession (libcurl), which trusts the system's CA store.
final class HTTPSTransport: Transport {
    let base: String
    let session = URLSession(configuration: .ephemeral)
    var timeoutSeconds = 60
    init(base: String, timeoutSeconds: Int = 60) { self.base = base; self.timeoutSeconds = timeoutSeconds }

    static func cacertUnsupported(_ path: String) -> String {
        "--cacert \(path): this build reaches https:// servers through FoundationNetworking's URLSession, which on Linux "
            + "trusts only the system's CA store and cannot be given a CA file. Add the CA to the system store "
            + "(cp ca.pem /usr/local/share/ca-certificates/berth.crt && update-ca-certificates) and drop --cacert."
    }

    /// URLSession on Linux reads no partial answers here: follow by short long-polls instead.
    func followEvents(since: Int, query: [(String, String?)], headers: [(String, String)], _ line: (String) -> Void) throws {
        var cursor = since
        while true {
            let r = try request("GET", api("v1", "events", query: query + [("since", String(cursor)), ("wait", "5")]), body: nil, headers: headers)
            guard r.status == 200, let j = try? r.json() else { throw WireError(.protocolError, "berthd answered HTTP \(r.status): \(r.text)") }
            for e in j["events"]?.array ?? [] { line(e.serialized) }
            cursor = j["rev"]?.int ?? cursor
        }
    }

    func request(_ method: String, _ target: String, body: [UInt8]?, headers: [(String, String)]) throws -> HTTPResponse {
        guard let url = URL(string: base + target) else { throw WireError(.protocolError, "bad request path \(target)") }
        var req = URLRequest(url: url, timeoutInterval: TimeInterval(timeoutSeconds))
        req.httpMethod = method
        for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
        if let body {
            req.httpBody = Data(body)
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        final class Box: @unchecked Sendable { var data: Data?; var response: URLResponse?; var error: Error? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        session.dataTask(with: req) { d, r, e in
            box.data = d; box.response = r; box.error = e
            done.signal()
        }.resume()
        done.wait()
        if let e = box.error {
            let ns = e as NSError
            let tlsCodes = [NSURLErrorSecureConnectionFailed, NSURLErrorServerCertificateUntrusted, NSURLErrorServerCertificateHasUnknownRoot,
                            NSURLErrorServerCertificateHasBadDate, NSURLErrorServerCertificateNotYetValid, NSURLErrorClientCertificateRejected]
            let text = ns.localizedDescription.lowercased()
            if tlsCodes.contains(ns.code) || text.contains("ssl") || text.contains("certificate") || text.contains("tls") {
                throw WireError(.unreachable, "TLS with \(base) failed: \(ns.localizedDescription) (berth trusts the system's CA store; "
                                + "add berthd's CA there with update-ca-certificates)")
            }
            throw WireError(.unreachable, "cannot reach berthd at \(base): \(ns.localizedDescription)")
        }
        guard let http = box.response as? HTTPURLResponse else { throw WireError(.protocolError, "no HTTP answer from \(base)") }
        return HTTPResponse(status: http.statusCode, headers: [], body: Array(box.data ?? Data()))
    }
}

// MARK: paths

/// RFC 3986's unreserved characters: everything else in a path segment or a query value is percent-encoded.
private let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

func encoded(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s }

/// An API path from its segments and query items, each percent-encoded: the one place the CLI builds request
/// targets, so an id such as "a?b#c" or "x/y" reaches berthd as one segment. Query items with a nil value are left out.
func api(_ segments: String..., query: [(String, String?)] = []) -> String {
    let path = "/" + segments.map(encoded).joined(separator: "/")
    let q = query.compactMap { k, v in v.map { "\(encoded(k))=\(encoded($0))" } }
    return q.isEmpty ? path : path + "?" + q.joined(separator: "&")
}

// MARK: defaults that follow the site

extension Connection {
    /// The plugin to act on: the option, else the environment variable, else the only one of its kind loaded.
    func pick(_ kind: String, explicit: String?, option: String, variable: String, listPath: String, listKey: String) throws -> String {
        if let explicit { return explicit }
        if let v = Connection.env[variable], !v.isEmpty { return v }
        let list = try call("GET", listPath)
        let all = list[listKey]?.array ?? []
        let names = all.filter { ($0["state"]?.string ?? "loaded") == "loaded" }.compactMap { $0["name"]?.string }
        switch names.count {
        case 1: return names[0]
        case 0:
            let others = all.map { "\(str($0["name"])) (\(str($0["state"])))" }
            throw CLIError("berthd at \(target) has no \(kind) plugin loaded\(others.isEmpty ? "" : "; it has " + others.joined(separator: ", ")): "
                           + "enable one in the site file (`berth plugins list` shows every plugin and its state), or name one with "
                           + "\(option) NAME or \(variable)=NAME")
        default:
            throw CLIError("berthd at \(target) has \(names.count) \(kind) plugins loaded (\(names.joined(separator: ", "))): "
                           + "choose one with \(option) NAME or \(variable)=NAME")
        }
    }
}

struct NetworkOption: ParsableArguments {
    @Option(name: .long, help: "The network (a network plugin instance) to act on (default: $BERTH_NETWORK, else the only network plugin loaded).")
    var network: String?

    func name(_ conn: Connection) throws -> String {
        try conn.pick("network", explicit: network, option: "--network", variable: "BERTH_NETWORK", listPath: "/v1/networks", listKey: "networks")
    }
}

struct StorageOption: ParsableArguments {
    @Option(name: [.customLong("storage"), .customLong("plugin")],
            help: "The storage plugin instance to act on (--plugin is the old name; default: $BERTH_STORAGE, else the only storage plugin loaded).")
    var storage: String?

    func name(_ conn: Connection) throws -> String {
        try conn.pick("storage", explicit: storage, option: "--storage", variable: "BERTH_STORAGE", listPath: "/v1/storage", listKey: "plugins")
    }
}
