// The site's `store` keys beyond `sync`: which engine keeps the state (sqlite, the default; etcd, cluster mode) and how
// to reach etcd. Parsed and checked here; `berthd --check` connects (SiteCheck.swift); docs/cluster.md.
import BerthStore
import BerthWire
import Foundation

/// `store.engine` and the etcd connection settings of a site.
public struct StoreSettings: Sendable, Equatable {
    public var engine: String = "sqlite"
    /// etcd client URLs, http(s)://HOST:PORT.
    public var endpoints: [String] = []
    /// PEM files: the CA that signed the members' certificates, and a client certificate and key (both or neither).
    public var tlsCA: String? = nil
    public var tlsCertificate: String? = nil
    public var tlsKey: String? = nil
    public var username: String? = nil
    public var password: String? = nil
    public var passwordFile: String? = nil
    /// The key prefix of this site in etcd; nil: /berth/<site>/.
    public var prefix: String? = nil
    /// The TTL of this berthd's lease in etcd: a berthd silent this long is down, and the scheduling leader's term ends.
    public var leaseSeconds: Int = 10
    /// Transactions read the key-value state from a local copy kept current by an etcd watch (EtcdMirror).
    public var mirror: Bool = true
    /// "grpc": etcd's Range, Txn and Watch over gRPC, the rest through its JSON gateway; "gateway": all through the gateway.
    public var transport: String = "grpc"
    /// How long etcd keeps old versions of keys: the scheduling leader compacts etcd's history every this many seconds,
    /// to the revision it saw this many seconds before. 0: never (etcd's own --auto-compaction-* does it).
    public var historySeconds: Int = 300

    public init() {}

    static let schemaProperties = #"""
    "engine": {"enum": ["sqlite", "etcd"], "description": "Where the state lives: sqlite (default, one host, in stateDir) or etcd (cluster mode: every berthd of the site shares it, docs/cluster.md)."},
    "leaseSeconds": {"type": "integer", "minimum": 2, "maximum": 300, "description": "Cluster mode: the TTL of this berthd's lease in etcd (default 10). A berthd not heard from for this long is down (its node too), and a new scheduling leader takes over."},
    "historySeconds": {"type": "integer", "minimum": 0, "maximum": 604800, "description": "Cluster mode: how long etcd keeps the old versions of keys (default 300). The scheduling leader compacts etcd's history every this many seconds, to the revision it saw this many seconds before, so etcd's database stops growing (defragment it to give the space back). 0: berthd never compacts (set etcd's own --auto-compaction-mode and --auto-compaction-retention on every member instead)."},
    "transport": {"enum": ["grpc", "gateway"], "description": "Cluster mode: how berthd talks to etcd (default grpc). grpc: reads, transactions and watches are etcd's gRPC calls (HTTP/2 on the client port, ALPN h2 over TLS), the rest (leases, authentication, members) goes through etcd's JSON gateway; gateway: everything through the JSON gateway (HTTP/1.1), for a proxy in front of etcd that does not carry HTTP/2. The gateway costs etcd about twice the CPU per allocation (docs/cluster.md)."},
    "mirror": {"type": "boolean", "description": "Cluster mode: keep a local copy of the site's key-value state, loaded at start and kept current by an etcd watch, and read it in transactions (default true). Every read is still checked at commit, so a copy that is behind costs a retry, never a wrong answer. false: every read is a request to etcd (less memory, lower throughput)."},
    "endpoints": {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "string", "pattern": "^https?://[^/]+:[0-9]+/?$"},
                  "description": "etcd client URLs, http(s)://HOST:PORT; tried in order. Required with engine etcd."},
    "tls": {"type": "object", "additionalProperties": false,
            "description": "TLS to etcd (https endpoints): PEM files of the CA, and optionally a client certificate and key.",
            "properties": {"ca": {"type": "string", "minLength": 1}, "certificate": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}}},
    "username": {"type": "string", "minLength": 1, "maxLength": 256, "description": "etcd user (etcd authentication); needs password or passwordFile."},
    "password": {"type": "string", "minLength": 1, "description": "The etcd user's password (prefer passwordFile)."},
    "passwordFile": {"type": "string", "minLength": 1, "description": "A file holding the etcd user's password (one line)."},
    "prefix": {"type": "string", "minLength": 2, "maxLength": 256, "pattern": "^/.*/$", "description": "Key prefix of this site in etcd, starting and ending with \"/\". Default: /berth/<site>/."}
    """#

    /// Reads the keys of `store` (already checked against the schema); `problems` gets what is inconsistent.
    static func parse(_ j: JSON?, baseDir: String, problems: inout [String]) -> StoreSettings {
        var s = StoreSettings()
        guard let j else { return s }
        if let e = j["engine"]?.string { s.engine = e }
        s.endpoints = (j["endpoints"]?.array ?? []).compactMap(\.string)
        if let t = j["tls"] {
            s.tlsCA = t["ca"]?.string.map { SiteConfig.resolve($0, baseDir) }
            s.tlsCertificate = t["certificate"]?.string.map { SiteConfig.resolve($0, baseDir) }
            s.tlsKey = t["key"]?.string.map { SiteConfig.resolve($0, baseDir) }
        }
        s.username = j["username"]?.string
        s.password = j["password"]?.string
        s.passwordFile = j["passwordFile"]?.string.map { SiteConfig.resolve($0, baseDir) }
        s.prefix = j["prefix"]?.string
        if let l = j["leaseSeconds"]?.int { s.leaseSeconds = l }
        if let m = j["mirror"]?.bool { s.mirror = m }
        if let t = j["transport"]?.string { s.transport = t }
        if let h = j["historySeconds"]?.int { s.historySeconds = h }
        if let p = s.prefix, p.utf8.contains(0) { problems.append("store.prefix: contains a NUL character") }
        problems += s.problems(given: Set((j.object ?? []).map(\.0)))
        return s
    }

    /// What is inconsistent in the settings; `given` are the keys the site file set.
    func problems(given: Set<String>) -> [String] {
        var out: [String] = []
        if engine == "sqlite" {
            for k in ["endpoints", "tls", "username", "password", "passwordFile", "prefix", "leaseSeconds", "mirror", "historySeconds", "transport"] where given.contains(k) {
                out.append("store.\(k): applies only to store.engine \"etcd\" (the engine is \"sqlite\"); remove it or set store.engine to \"etcd\"")
            }
            return out
        }
        if endpoints.isEmpty { out.append("store.endpoints: store.engine \"etcd\" needs at least one etcd client URL, e.g. [\"http://127.0.0.1:2379\"]") }
        let https = endpoints.filter { $0.hasPrefix("https://") }
        if !https.isEmpty && https.count != endpoints.count {
            out.append("store.endpoints: mixes http and https URLs (\(endpoints.joined(separator: ", "))); use one scheme for every member")
        }
        if (tlsCA != nil || tlsCertificate != nil || tlsKey != nil) && https.isEmpty {
            out.append("store.tls: set, but store.endpoints are http URLs; use https://HOST:PORT endpoints with TLS, or remove store.tls")
        }
        if (tlsCertificate == nil) != (tlsKey == nil) { out.append("store.tls: certificate and key go together; set both or neither") }
        for (k, path) in [("tls.ca", tlsCA), ("tls.certificate", tlsCertificate), ("tls.key", tlsKey), ("passwordFile", passwordFile)] {
            guard let path else { continue }
            if access(path, R_OK) != 0 { out.append("store.\(k): cannot read \(path): \(String(cString: strerror(errno)))") }
        }
        if password != nil && passwordFile != nil { out.append("store.password and store.passwordFile: set one, not both") }
        if username == nil && (password != nil || passwordFile != nil) { out.append("store.password: set store.username too") }
        if username != nil && password == nil && passwordFile == nil { out.append("store.username: set store.password or store.passwordFile too") }
        return out
    }

    /// What this berthd cannot do with these settings (plain HTTP needs a numeric address): reported by `berthd --check` and `berth plugin check`, never silently ignored.
    public var unsupported: [String] {
        var out: [String] = []
        for e in endpoints where (try? EtcdSettings(endpoints: [e], site: "x").validated()) == nil {
            out.append("store.endpoints: \(e): this berthd's etcd engine connects to http://HOST:PORT with a numeric address, or https://HOST:PORT with an address or a name")
        }
        return out
    }

    /// The engine's settings for site `site`.
    public func etcdSettings(site: String) -> EtcdSettings {
        EtcdSettings(endpoints: endpoints, site: site, prefix: prefix, username: username, password: resolvedPassword,
                     tls: endpoints.contains { $0.hasPrefix("https://") } ? EtcdTLSFiles(ca: tlsCA, certificate: tlsCertificate, key: tlsKey) : nil,
                     mirror: mirror, grpc: transport == "grpc")
    }

    /// The password, from store.password or the first line of store.passwordFile (nil when unreadable: checked apart).
    var resolvedPassword: String? {
        if let password { return password }
        guard let passwordFile, let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else { return nil }
        return text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
    }

    var json: JSON {
        var j: JSON = ["engine": .string(engine)]
        guard engine == "etcd" else { return j }
        j = j.setting("endpoints", .array(endpoints.map { .string($0) }))
        var t: [(String, JSON)] = []
        if let tlsCA { t.append(("ca", .string(tlsCA))) }
        if let tlsCertificate { t.append(("certificate", .string(tlsCertificate))) }
        if let tlsKey { t.append(("key", .string(tlsKey))) }
        if !t.isEmpty { j = j.setting("tls", .object(t)) }
        if let username { j = j.setting("username", .string(username)) }
        if password != nil { j = j.setting("password", "(set)") }
        if let passwordFile { j = j.setting("passwordFile", .string(passwordFile)) }
        if let prefix { j = j.setting("prefix", .string(prefix)) }
        return j.setting("leaseSeconds", .int(Int64(leaseSeconds))).setting("mirror", .bool(mirror)).setting("transport", .string(transport))
            .setting("historySeconds", .int(Int64(historySeconds)))
    }
}
