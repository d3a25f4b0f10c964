// The etcd engine's client: Range and Txn over etcd's gRPC (GRPC.swift, EtcdProto.swift) unless store.transport says
// "gateway", and everything else through etcd v3's JSON gateway (HTTP/1.1 POST of JSON on the client port, keys and
// values base64, int64 as strings) over BerthWire's small keep-alive HTTP client.
import BerthWire
import NIOSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where the etcd cluster is and what it allows: the limits must match the members' `--max-txn-ops` and
/// `--max-request-bytes` (etcd's defaults below), so that a transaction over them fails here with a clear error.
public struct EtcdSettings: Sendable {
    /// Client URLs, "http://HOST:PORT" with a numeric address; tried in order, the next one when one is unreachable.
    public var endpoints: [String]
    /// The site's name: every key of this site lives under `/berth/<site>/` (unless `prefix` says otherwise).
    public var site: String
    /// The key prefix of the site ("/" at both ends); nil: /berth/<site>/.
    public var prefix: String?
    public var maxTxnOps: Int
    public var maxRequestBytes: Int
    public var timeoutSeconds: Int
    /// etcd authentication (an etcd user and its password): the client asks /v3/auth/authenticate for a token and sends
    /// it with every request, again when etcd says it expired. nil: no authentication.
    public var username: String?
    public var password: String?
    /// The PEM files for https:// endpoints (nil: the system's trust roots, no client certificate).
    public var tls: EtcdTLSFiles?
    /// Transactions read the site's key-value state from a local copy kept current by a watch (EtcdMirror), every
    /// read checked at commit as a read from etcd is; false: every read is a request to etcd.
    public var mirror: Bool
    /// Range, Txn and Watch go over etcd's gRPC (GRPC.swift); the rest (leases, authentication, members,
    /// compaction) through its JSON gateway. false: everything through the gateway (`store.transport: "gateway"`).
    /// A gRPC watch that is not established asks the gateway anyway, which says why.
    public var grpc: Bool

    public init(endpoints: [String], site: String, prefix: String? = nil, maxTxnOps: Int = 128, maxRequestBytes: Int = 1_572_864,
                timeoutSeconds: Int = 10, username: String? = nil, password: String? = nil, tls: EtcdTLSFiles? = nil, mirror: Bool = true, grpc: Bool = true) {
        self.grpc = grpc
        self.tls = tls
        self.mirror = mirror
        self.username = username
        self.password = password
        self.endpoints = endpoints
        self.site = site
        self.prefix = prefix
        self.maxTxnOps = maxTxnOps
        self.maxRequestBytes = maxRequestBytes
        self.timeoutSeconds = timeoutSeconds
    }
}

extension EtcdSettings {
    /// Throws the engine's clear error when an endpoint is not one it can connect to.
    public func validated() throws -> EtcdSettings {
        for e in endpoints { _ = try EtcdClient.parse(e) }
        return self
    }
}

/// One key-value pair of a range answer.
struct EtcdKV {
    var key: [UInt8]
    var value: [UInt8]
    var modRevision: Int64
    var createRevision: Int64 = 0
}

/// A range answer: the pairs, the total count in the range, the store revision it was read at, and whether more
/// pairs than returned are in the range.
struct EtcdRange {
    var kvs: [EtcdKV]
    var count: Int64
    var revision: Int64
    var more: Bool
}

final class EtcdClient {
    let settings: EtcdSettings
    private let endpoints: [HTTPEndpoint]
    private var current = 0
    private var conn: UnixHTTPConnection
    /// The gRPC connection to the same endpoint (made on the first Range or Txn).
    private var rpc: GRPCConnection?
    /// Which endpoints are https://, and the TLS context they share.
    private let secure: [Bool]
    private let tlsContext: NIOSSLContext?
    /// The same for gRPC (ALPN "h2"), made on the first gRPC connection over TLS.
    private var h2Context: NIOSSLContext?

    /// A connection to endpoint `i`: a socket, or a TLS stream for an https:// endpoint (the watch makes its own).
    func connection(_ i: Int) -> UnixHTTPConnection {
        guard secure[i], let ctx = tlsContext, case .tcp(let host, let port) = endpoints[i] else {
            return UnixHTTPConnection(endpoint: endpoints[i], timeoutSeconds: settings.timeoutSeconds)
        }
        let timeout = settings.timeoutSeconds
        return UnixHTTPConnection(endpoint: endpoints[i], timeoutSeconds: timeout) {
            try TLSByteStream(host: host, port: port, context: ctx, timeoutSeconds: timeout)
        }
    }

    /// A connection to endpoint `i` for gRPC (HTTP/2): TLS offers ALPN "h2" only, as etcd's gRPC over TLS needs.
    /// Whether it is TLS is the second value.
    func grpcConnection(_ i: Int) throws -> (UnixHTTPConnection, Bool) {
        guard secure[i], case .tcp(let host, let port) = endpoints[i] else {
            return (UnixHTTPConnection(endpoint: endpoints[i], timeoutSeconds: settings.timeoutSeconds), false)
        }
        if h2Context == nil {
            var configuration = try (settings.tls ?? EtcdTLSFiles()).configuration()
            configuration.applicationProtocols = ["h2"]
            h2Context = try NIOSSLContext(configuration: configuration)
        }
        let ctx = h2Context!
        let timeout = settings.timeoutSeconds
        return (UnixHTTPConnection(endpoint: endpoints[i], timeoutSeconds: timeout) {
            try TLSByteStream(host: host, port: port, context: ctx, timeoutSeconds: timeout)
        }, true)
    }

    init(_ settings: EtcdSettings) throws {
        guard !settings.endpoints.isEmpty else {
            throw BerthError(.invalidArgument, "store.endpoints is empty: list at least one etcd client URL, e.g. http://127.0.0.1:2379")
        }
        self.settings = settings
        endpoints = try settings.endpoints.map(EtcdClient.parse)
        secure = settings.endpoints.map { $0.hasPrefix("https://") }
        tlsContext = secure.contains(true) ? try NIOSSLContext(configuration: (settings.tls ?? EtcdTLSFiles()).configuration()) : nil
        conn = UnixHTTPConnection(endpoint: endpoints[0])
        conn = connection(0)
        if settings.username != nil { try authenticate() }
    }

    /// Requests sent (each attempt counts), by kind: range reads, Txns, and the rest (leases, auth, compaction).
    let ranges = Atomic<Int>(0), txns = Atomic<Int>(0), others = Atomic<Int>(0)

    /// The token of etcd authentication (nil without it).
    private var token: String?

    /// The headers that authenticate a request made on a connection of `connection(_:)` (a new token first when
    /// `renew`: the last one was refused).
    func authHeaders(renew: Bool = false) throws -> [(String, String)] {
        if renew { try authenticate() }
        return token.map { [("Authorization", $0)] } ?? []
    }

    /// Asks etcd for a token for the site's user. Wrong credentials are an error that says so (not retried).
    private func authenticate() throws {
        guard let user = settings.username else { return }
        token = nil
        let j: JSON
        do {
            j = try callOnce("/v3/auth/authenticate", idempotent: true, method: "POST",
                             json: { .object([("name", .string(user)), ("password", .string(self.settings.password ?? ""))]) }, protobuf: nil)
        } catch let e as BerthError where e.message.contains("authentication failed") {
            throw BerthError(.failedPrecondition, "etcd refused user \"\(user)\": authentication failed, invalid user name or password (store.username, store.password or store.passwordFile)")
        }
        guard let t = j["token"]?.string, !t.isEmpty else {
            throw BerthError(.failedPrecondition, "etcd gave no token to user \"\(user)\" (is authentication enabled on the cluster? `etcdctl auth enable`): \(j.serialized)")
        }
        token = t
    }

    /// True when etcd's answer says the token is missing or no longer valid (it expires; a member restarted).
    static func tokenRefused(_ message: String) -> Bool {
        message.contains("invalid auth token") || message.contains("user name is empty") || message.contains("auth: revision in header is old")
    }

    /// "http://HOST:PORT" (HOST numeric, IPv6 in brackets) as an endpoint.
    static func parse(_ url: String) throws -> HTTPEndpoint {
        let bad = BerthError(.invalidArgument, "etcd endpoint \"\(url)\" is not http://HOST:PORT with a numeric address, or https://HOST:PORT (TLS, store.tls) with an address or a name")
        let tls = url.hasPrefix("https://")
        guard tls || url.hasPrefix("http://") else { throw bad }
        var rest = Substring(url.dropFirst(tls ? 8 : 7))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), port > 0, port < 65536 else { throw bad }
        var host = rest[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        var v4 = in_addr(), v6 = in6_addr()
        let numeric = inet_pton(AF_INET, String(host), &v4) == 1 || inet_pton(AF_INET6, String(host), &v6) == 1
        // Plain HTTP connects with BerthWire's socket client, which resolves no names; TLS goes through SwiftNIO, which does.
        guard numeric || (tls && Self.isHostName(host)) else { throw bad }
        return .tcp(host: String(host), port: port)
    }

    /// A DNS name: labels of letters, digits and '-', separated by dots.
    static func isHostName(_ h: Substring) -> Bool {
        !h.isEmpty && h.utf8.count <= 253 && h.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { l in
            !l.isEmpty && l.count <= 63 && l.first != "-" && l.last != "-" && l.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// POSTs `body` to `path` and returns the parsed answer. A member that refuses the connection is skipped for the
    /// next endpoint; so is one that fails mid-request when `idempotent` (a read); a write whose connection failed
    /// after it was sent is reported as unavailable with its outcome unknown.
    ///
    /// While the cluster elects a leader (a member killed, a partition healed) members answer "no leader" or "leader
    /// changed" for a second or two. Those answers are waited out, with backoff, for up to the request timeout: a read
    /// is asked again on any of them; a write only on "no leader", which a member gives before proposing anything (the
    /// others may come after the write was applied, and are returned as unavailable).
    func call(_ path: String, _ body: JSON, idempotent: Bool, method: String = "POST") throws -> JSON {
        try call(path, idempotent: idempotent, method: method, json: { body }, protobuf: nil)
    }

    /// The request's message made straight for gRPC, and how to read its answer (nil: every field the method's table
    /// knows).
    struct GRPCBody {
        var message: () -> [UInt8]
        var answer: ((ArraySlice<UInt8>) throws -> JSON)?
    }

    /// As `call(_:_:idempotent:method:)`, the request made by `json` (the gateway's form) or, over gRPC, by
    /// `protobuf` when given (else `json`'s is transcoded).
    func call(_ path: String, idempotent: Bool, method: String = "POST", json: () -> JSON, protobuf: GRPCBody?) throws -> JSON {
        var pause: UInt32 = 25_000
        var reauthenticated = false
        // The budget is the time since the first attempt, not the pauses alone: with the quorum lost each attempt
        // itself waits for etcd's own timeout, and a change must fail within about the request timeout, not minutes.
        let deadline = monotonicNanos() + UInt64(settings.timeoutSeconds) * 1_000_000_000
        while true {
            do {
                return try callOnce(path, idempotent: idempotent, method: method, json: json, protobuf: protobuf)
            } catch let e as BerthError where token != nil && !reauthenticated && Self.tokenRefused(e.message) {
                // Refused before it was applied: a new token, and the request once more.
                reauthenticated = true
                try authenticate()
            } catch let e as BerthError where e.status == .unavailable && Self.electing(e.message, idempotent: idempotent)
                        && monotonicNanos() + UInt64(pause) * 1000 <= deadline {
                usleep(pause)
                pause = min(pause * 2, 400_000)
            }
        }
    }

    /// True when etcd's answer says the cluster has no leader for now (see `call`).
    static func electing(_ message: String, idempotent: Bool) -> Bool {
        if message.contains("etcdserver: no leader") { return true }
        return idempotent && (message.contains("etcdserver: leader changed") || message.contains("etcdserver: request timed out"))
    }

    /// One request on the current endpoint: etcd's Range and Txn over gRPC (unless `settings.grpc` is off), the rest
    /// through the gateway. The answer is in the gateway's JSON either way.
    private func exchange(_ path: String, idempotent: Bool, method: String, json: () -> JSON, protobuf: GRPCBody?) throws -> JSON {
        guard settings.grpc, let m = EtcdProto.method(path) else {
            let r = try conn.request(method, path, body: method == "GET" ? nil : json().bytes, headers: token.map { [("Authorization", $0)] } ?? [])
            let j = try r.json()
            if r.status != 200 { throw EtcdClient.serverError(path, r.status, j) }
            return j
        }
        let message = try protobuf?.message() ?? m.request.encode(json())
        let g: GRPCConnection
        if let rpc, rpc.isUsable || !rpc.started {
            g = rpc
        } else {
            rpc?.close()
            let (c, secure) = try grpcConnection(current)
            g = GRPCConnection(c, authority: endpoints[current].description, secure: secure)
            rpc = g
        }
        let metadata = token.map { [("token", $0)] } ?? []
        /// The stream's end (not etcd's status) as the gateway's client reports its failures: one etcd certainly did
        /// not act on as "unreachable" (a write may go to the next endpoint), any other as I/O (a write's outcome is
        /// unknown).
        func failure(_ e: GRPCConnection.Ended) -> WireError { WireError(e.unprocessed ? .unreachable : .io, e.description) }
        /// The call on a new connection.
        func again() throws -> [UInt8] {
            g.close()
            do { return try g.unary(m.grpc, metadata: metadata, message: message) } catch let e as GRPCConnection.Ended { throw failure(e) }
        }
        do {
            // Sent again, once: a read whose kept connection failed (as the gateway's client does), or a write etcd
            // certainly did not act on. Any other write's outcome is unknown.
            let reused = g.isUsable
            let answer: [UInt8]
            do { answer = try g.unary(m.grpc, metadata: metadata, message: message) } catch let e as GRPCConnection.Ended where (idempotent && reused) || e.unprocessed {
                answer = try again()
            } catch let e as GRPCConnection.Ended {
                throw failure(e)
            } catch let e as WireError where idempotent && reused && e.kind == .io {
                answer = try again()
            }
            return try protobuf?.answer?(answer[...]) ?? m.response.decode(answer[...])
        } catch let s as GRPCStatus {
            throw EtcdClient.serverError(path, 200, .object([("message", .string(s.message)), ("code", .int(Int64(s.code)))]))
        } catch let e as Protobuf.Malformed {
            throw BerthError(.internal, "etcd answered \(path): \(e)")
        } catch let e as HPACKDecoder.Malformed {
            throw WireError(.protocolError, "\(e)")
        }
    }

    private func callOnce(_ path: String, idempotent: Bool, method: String, json: () -> JSON, protobuf: GRPCBody?) throws -> JSON {
        var lastError = ""
        for attempt in 0..<endpoints.count {
            switch path {
            case "/v3/kv/range": ranges.add(1, ordering: .relaxed)
            case "/v3/kv/txn": txns.add(1, ordering: .relaxed)
            default: others.add(1, ordering: .relaxed)
            }
            do {
                return try exchange(path, idempotent: idempotent, method: method, json: json, protobuf: protobuf)
            } catch let e as WireError {
                lastError = "\(endpoints[current].description): \(e.message)"
                conn.close()
                rpc?.close()
                rpc = nil
                current = (current + 1) % endpoints.count
                conn = connection(current)
                // A write is sent again elsewhere only when it never left (the connection was refused).
                if (!idempotent && e.kind != .unreachable) || attempt == endpoints.count - 1 {
                    let what = idempotent ? "" : " (the outcome of this write is unknown)"
                    throw BerthError(.unavailable, "etcd is unreachable\(what): \(lastError)")
                }
            } catch let e as JSON.ParseError {
                throw BerthError(.internal, "etcd answered \(path) with something that is not JSON: \(e)")
            }
        }
        throw BerthError(.unavailable, "etcd is unreachable: \(lastError)")
    }

    /// etcd's error answer as a BerthError: its limits as RESOURCE_EXHAUSTED naming the limit, the rest UNAVAILABLE.
    static func serverError(_ path: String, _ status: Int, _ j: JSON) -> BerthError {
        let msg = j["message"]?.string ?? j["error"]?.string ?? "HTTP \(status)"
        if msg.contains("too many operations in txn request") {
            return BerthError(.resourceExhausted, "etcd refused the transaction: \(msg) (the member's --max-txn-ops); split the work into smaller transactions")
        }
        if msg.contains("request is too large") || msg.contains("larger than max") {
            return BerthError(.resourceExhausted, "etcd refused the transaction: \(msg) (the member's --max-request-bytes); split the work into smaller transactions")
        }
        if msg.contains("user name is empty") || msg.contains("permission denied") {
            return BerthError(.failedPrecondition, "etcd refused \(path): \(msg) (the cluster has authentication on: set store.username and store.password or store.passwordFile to a user with read and write access to the site's prefix)")
        }
        if msg.contains("mvcc: required revision has been compacted") {
            return BerthError(.aborted, "etcd: \(msg); the transaction's snapshot is gone, run it again")
        }
        return BerthError(.unavailable, "etcd \(path) failed: \(msg)")
    }

    // MARK: requests

    /// Keys in [key, end) (end empty: just `key`), read at `revision` (0: the newest).
    func range(_ key: [UInt8], _ end: [UInt8], revision: Int64, limit: Int = 0, countOnly: Bool = false, keysOnly: Bool = false) throws -> EtcdRange {
        var fields: [(String, JSON)] = [("key", .string(Base64.encode(key)))]
        if !end.isEmpty { fields.append(("range_end", .string(Base64.encode(end)))) }
        if revision > 0 { fields.append(("revision", .string(String(revision)))) }
        if limit > 0 { fields.append(("limit", .string(String(limit)))) }
        if countOnly { fields.append(("count_only", .bool(true))) }
        if keysOnly { fields.append(("keys_only", .bool(true))) }
        let j = try call("/v3/kv/range", .object(fields), idempotent: true)
        var kvs: [EtcdKV] = []
        for kv in j["kvs"]?.array ?? [] {
            kvs.append(EtcdKV(key: try Self.bytes(kv["key"]), value: try Self.bytes(kv["value"]), modRevision: Self.int(kv["mod_revision"])))
        }
        return EtcdRange(kvs: kvs, count: Self.int(j["count"]), revision: Self.int(j["header"]?["revision"]), more: j["more"]?.bool ?? false)
    }

    /// Keys in [key, end) created at revision `minCreate` or later, ordered by creation (newest first when
    /// `descending`), at most `limit` (0: all). etcd sorts the whole range before it applies the limit.
    func rangeByCreation(_ key: [UInt8], _ end: [UInt8], revision: Int64, minCreate: Int64, limit: Int, descending: Bool = false) throws -> EtcdRange {
        var fields: [(String, JSON)] = [("key", .string(Base64.encode(key))), ("range_end", .string(Base64.encode(end))),
                                        ("sort_order", .string(descending ? "DESCEND" : "ASCEND")), ("sort_target", "CREATE")]
        if revision > 0 { fields.append(("revision", .string(String(revision)))) }
        if limit > 0 { fields.append(("limit", .string(String(limit)))) }
        if minCreate > 0 { fields.append(("min_create_revision", .string(String(minCreate)))) }
        let j = try call("/v3/kv/range", .object(fields), idempotent: true)
        var kvs: [EtcdKV] = []
        for kv in j["kvs"]?.array ?? [] {
            kvs.append(EtcdKV(key: try Self.bytes(kv["key"]), value: try Self.bytes(kv["value"]), modRevision: Self.int(kv["mod_revision"]),
                              createRevision: Self.int(kv["create_revision"])))
        }
        return EtcdRange(kvs: kvs, count: Self.int(j["count"]), revision: Self.int(j["header"]?["revision"]), more: j["more"]?.bool ?? false)
    }

    /// One Txn: succeeded (every compare held and the operations were applied) and the revision after it.
    func txn(compares: [EtcdTxnPart], operations: [EtcdTxnPart]) throws -> (succeeded: Bool, revision: Int64) {
        let r = try txn(compares: compares, operations: operations, failure: [])
        return (r.succeeded, r.revision)
    }

    /// One Txn with operations for when a compare fails: succeeded, the revision after it, and the responses of the
    /// branch that ran (etcd's ResponseOp objects, in the gateway's JSON). Over gRPC the responses are read only when
    /// the failure branch ran (else always empty).
    func txn(compares: [EtcdTxnPart], operations: [EtcdTxnPart], failure: [EtcdTxnPart]) throws -> (succeeded: Bool, revision: Int64, responses: [JSON]) {
        let j = try call("/v3/kv/txn", idempotent: false, json: {
            var f: [(String, JSON)] = [("compare", .array(compares.map(\.json))), ("success", .array(operations.map(\.json)))]
            if !failure.isEmpty { f.append(("failure", .array(failure.map(\.json)))) }
            return .object(f)
        }, protobuf: GRPCBody(message: {
            // TxnRequest: compare 1, success 2, failure 3 (each part an embedded message).
            var out: [UInt8] = []
            for c in compares { Protobuf.bytes(1, c.protobuf, into: &out) }
            for o in operations { Protobuf.bytes(2, o.protobuf, into: &out) }
            for o in failure { Protobuf.bytes(3, o.protobuf, into: &out) }
            return out
        }, answer: { bytes in
            // The outcome alone unless the failure branch ran: a group commit's puts each have a response nobody reads.
            let outcome = try EtcdProto.txnOutcome.decode(bytes)
            return failure.isEmpty || outcome["succeeded"]?.bool == true ? outcome : try EtcdProto.txnResponse.decode(bytes)
        }))
        return (j["succeeded"]?.bool ?? false, Self.int(j["header"]?["revision"]), j["responses"]?.array ?? [])
    }

    // MARK: leases (EtcdLease's, and the exclusive key's)

    /// Grants a lease of `ttlSeconds`; its id and the TTL etcd gave (it raises one below its minimum).
    func grantLease(ttlSeconds: Int) throws -> (id: Int64, ttl: Int) {
        let j = try call("/v3/lease/grant", .object([("TTL", .string(String(ttlSeconds)))]), idempotent: false)
        let id = Self.int(j["ID"])
        guard id != 0 else { throw BerthError(.unavailable, "etcd granted no lease: \(j.serialized)") }
        return (id, Int(Self.int(j["TTL"])))
    }

    /// Renews lease `id`; the TTL it has again. NOT_FOUND when it already expired (its keys are gone).
    func keepLeaseAlive(_ id: Int64) throws -> Int {
        let j = try call("/v3/lease/keepalive", .object([("ID", .string(String(id)))]), idempotent: true)
        let ttl = Self.int(j["result"]?["TTL"] ?? j["TTL"])
        guard ttl > 0 else { throw BerthError(.notFound, "lease \(id) has expired: the keys bound to it are gone") }
        return Int(ttl)
    }

    /// Ends lease `id` now: every key bound to it is deleted. An expired lease is fine.
    func revokeLease(_ id: Int64) throws {
        do { _ = try call("/v3/lease/revoke", .object([("ID", .string(String(id)))]), idempotent: true) } catch let e as BerthError where e.message.contains("lease not found") {}
    }

    static func put(_ key: [UInt8], _ value: [UInt8], lease: Int64 = 0) -> EtcdTxnPart { .put(key: key, value: value, lease: lease) }
    static func get(_ key: [UInt8]) -> EtcdTxnPart { .range(key: key) }
    /// Compare: `key` does not exist (its version is 0).
    static func compareAbsent(_ key: [UInt8]) -> EtcdTxnPart { .compare(.version, .equal, key: key, end: [], 0) }
    /// Compare: `key` exists and was created at revision `rev` (it is the same key instance); 0: it does not exist.
    static func compareCreated(_ key: [UInt8], _ rev: Int64) -> EtcdTxnPart { .compare(.create, .equal, key: key, end: [], rev) }
    static func delete(_ key: [UInt8], _ end: [UInt8]) -> EtcdTxnPart { .delete(key: key, end: end) }
    /// Compare: the mod revision of `key` (every key in [key, end) when end is set) `result` `rev`.
    static func compareMod(_ key: [UInt8], _ end: [UInt8], _ result: EtcdTxnPart.Result, _ rev: Int64) -> EtcdTxnPart {
        .compare(.mod, result, key: key, end: end, rev)
    }

    static func bytes(_ j: JSON?) throws -> [UInt8] {
        guard let s = j?.string else { return [] }  // the gateway leaves out empty fields
        guard let b = Base64.decode(s) else { throw BerthError(.internal, "etcd answered with bad base64: \(s.prefix(40))") }
        return b
    }
    static func int(_ j: JSON?) -> Int64 {
        if let s = j?.string { return Int64(s) ?? 0 }
        return Int64(j?.int ?? 0)
    }
}

/// Standard base64 (RFC 4648, with padding), as the gateway's JSON carries bytes.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    static func encode(_ b: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((b.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < b.count {
            let n = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = b.count - i
        if rest > 0 {
            let n = UInt32(b[i]) << 16 | (rest == 2 ? UInt32(b[i + 1]) << 8 : 0)
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], rest == 2 ? alphabet[Int(n >> 6 & 63)] : 0x3D, 0x3D]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ s: String) -> [UInt8]? {
        let c = Array(s.utf8)
        guard c.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(c.count / 4 * 3)
        var i = 0
        while i < c.count {
            let pad = (c[i + 3] == 0x3D ? 1 : 0) + (c[i + 2] == 0x3D ? 1 : 0)
            guard pad == 0 || i + 4 == c.count else { return nil }
            var n: UInt32 = 0
            for j in 0..<4 {
                let v = j >= 4 - pad ? 0 : table[Int(c[i + j])]
                if v == 0xFF { return nil }
                n = n << 6 | UInt32(v)
            }
            out.append(UInt8(n >> 16))
            if pad < 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if pad < 1 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}

/// etcd's own single-key Txn through the engine's transport and nothing else of the engine: the baseline of
/// `berth-bench --only cluster-api` (its allocations against etcd's raw rate, both over the same transport).
public final class EtcdRawClient {
    private let client: EtcdClient

    public init(endpoint: String, grpc: Bool) throws {
        client = try EtcdClient(EtcdSettings(endpoints: [endpoint], site: "raw", grpc: grpc))
    }

    /// One Txn putting `value` at `key`, no compare.
    public func put(_ key: [UInt8], _ value: [UInt8]) throws {
        _ = try client.txn(compares: [], operations: [EtcdClient.put(key, value)])
    }
}
