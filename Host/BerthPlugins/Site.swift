// The site configuration: one JSON file (schema: site.schema.json, also `berthd --print-site-schema`).
// berthd with no arguments runs on the embedded default below.
import BerthStore
import BerthWire
import Foundation

public struct SiteConfig: Sendable {
    /// The embedded default: every field at its default value.
    public init() {}
    public var site: String = "local"
    public var stateDir: String = "./berth-state"
    public var socket: String? = nil
    /// A symlink to the socket at a well-known path (berth-cni's default), made when possible; "" for none.
    public var socketLink: String = SiteConfig.wellKnownSocket
    /// The name of the node this berthd serves (CNI calls through berth-cni allocate for it); nil: the host name.
    public var node: String? = nil
    public var listen: String? = nil
    public var token: String? = nil
    public var maxBodyBytes: Int = 1 << 20
    /// TLS of the TCP listener (PEM files); required unless `listen` is a loopback address.
    public var tls: TLSFiles? = nil
    /// Per connection: the request head must be complete this long after the connection opened; the body this long
    /// after the head; a kept-alive connection with no request is closed after `idleTimeoutMs`.
    public var headerTimeoutMs: Int = 10_000
    public var bodyTimeoutMs: Int = 30_000
    public var idleTimeoutMs: Int = 60_000
    /// Concurrent TCP connections; more wait in the kernel's backlog. Clamped to the daemon's file-descriptor budget.
    public var maxConnections: Int = 256
    public var sync: String = "full"
    /// `store.engine` and the etcd settings (SiteStore.swift).
    public var store = StoreSettings()
    public var callTimeoutMs: Int = 10_000
    /// Event retention (Retention.swift): the newest events kept, and the oldest age kept (nil: no age limit).
    public var eventsRetain: Int = 100_000
    public var eventsMaxAgeSeconds: Int? = nil
    public var plugins: [PluginSpec] = []
    /// The node agent's settings (site key `agent`, AgentSite.swift).
    public var agent = AgentSite()
    /// Directory the site file was read from (relative plugin paths resolve against it).
    public var baseDir: String = "."

    public var socketPath: String { socket ?? "\(stateDir)/berthd.sock" }
    /// Where berth-cni looks for berthd when its configuration names no socket.
    public static let wellKnownSocket = "/run/berth/berthd.sock"
    /// This berthd's node name: the site's `node`, else the host name.
    public var nodeName: String { node ?? ProcessInfo.processInfo.hostName }

    public static let schemaText: String = #"""
    {
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "$id": "https://berth.dev/schemas/site.schema.json",
      "title": "Berth site configuration",
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "site": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9][a-z0-9-]*$",
                 "description": "The site's name; appears in events, metrics and DNS names."},
        "node": {"type": "string", "minLength": 1, "maxLength": 253,
                 "description": "The name of the node this berthd serves: CNI calls through berth-cni allocate for it (pools bound to nodes check it). Default: the host name."},
        "stateDir": {"type": "string", "minLength": 1,
                     "description": "Directory for the state store, plugin copies and the default socket. Relative paths resolve against the site file's directory."},
        "api": {
          "type": "object", "additionalProperties": false,
          "properties": {
            "socket": {"type": "string", "minLength": 1, "description": "Unix socket of the API (mode 0660). Default: <stateDir>/berthd.sock"},
            "link": {"type": "string", "description": "A symlink to the socket that berthd makes at start (and removes at exit) so that berth-cni and berth find it without configuration; left alone while another live berthd owns it. Empty: none. Default: /run/berth/berthd.sock"},
            "listen": {"type": "string", "pattern": "^[^:]+:[0-9]+$", "description": "Optional TCP address host:port; requires token."},
            "token": {"type": "string", "minLength": 16, "description": "Bearer token required on the TCP listener."},
            "maxBodyBytes": {"type": "integer", "minimum": 1024, "maximum": 67108864, "description": "Largest request body accepted (default 1048576)."},
            "tls": {
              "type": "object", "additionalProperties": false, "required": ["certificate", "key"],
              "description": "TLS of the TCP listener; required unless api.listen is a loopback address.",
              "properties": {
                "certificate": {"type": "string", "minLength": 1, "description": "PEM file: the server certificate, then any intermediates."},
                "key": {"type": "string", "minLength": 1, "description": "PEM file: the certificate's private key."},
                "clientCA": {"type": "string", "minLength": 1, "description": "Optional PEM file of CA certificates: clients must present a certificate signed by one of them (mutual TLS), besides the bearer token."}
              }
            },
            "headerTimeoutMs": {"type": "integer", "minimum": 100, "maximum": 600000, "description": "A connection whose request head is not complete this long after it opened is closed (default 10000)."},
            "bodyTimeoutMs": {"type": "integer", "minimum": 100, "maximum": 3600000, "description": "A request whose body is not complete this long after its head is closed (default 30000)."},
            "idleTimeoutMs": {"type": "integer", "minimum": 100, "maximum": 3600000, "description": "A kept-alive connection that sends no new request head within this long after a response is closed (default 60000)."},
            "maxConnections": {"type": "integer", "minimum": 1, "maximum": 65536, "description": "Concurrent TCP connections (default 256); further ones wait in the backlog. Lowered to fit the file-descriptor limit, with a warning."}
          }
        },
        "store": {
          "type": "object", "additionalProperties": false,
          "properties": {
            "sync": {"enum": ["full", "normal"], "description": "full: every commit reaches the disk (default); normal: survives a daemon crash, may lose the last commits on power loss."},
            \#(StoreSettings.schemaProperties)
          }
        },
        "events": {
          "type": "object", "additionalProperties": false,
          "properties": {
            "retain": {"type": "integer", "minimum": 100, "maximum": 100000000, "description": "Events the event log keeps (default 100000): older ones are deleted in the background. A reader asking for events after a revision no longer kept gets 410 with the oldest revision kept."},
            "maxAgeSeconds": {"type": "integer", "minimum": 1, "description": "Also delete events older than this many seconds (default: no age limit)."}
          }
        },
        "callTimeoutMs": {"type": "integer", "minimum": 1, "maximum": 86400000, "description": "Deadline of one plugin call (default 10000; at most 86400000, a day). Enforced for plugins with isolation \"process\": a call past it kills the runner, fails with a 503 and the runner restarts on the next call."},
        \#(AgentSite.schemaProperty)
        "plugins": {
          "type": "array",
          "items": {
            "type": "object", "additionalProperties": false, "required": ["name", "path"],
            "properties": {
              "name": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9][a-z0-9-]*$",
                       "description": "Instance name: the key-value namespace, the network name for network plugins."},
              "path": {"type": "string", "minLength": 1, "description": "The .so file. A bare file name is looked up in the plugin directory (next to berthd, or $BERTH_PLUGIN_DIR)."},
              "enabled": {"type": "boolean", "description": "Default true."},
              "isolation": {"enum": ["in-process", "process"], "description": "in-process (default): loaded into berthd. process: loaded by a berth-plugin-runner child process; a crash or hang there fails the calls in flight, never the daemon."},
              "limits": {
                "type": "object", "additionalProperties": false,
                "description": "Limits of the plugin's runner process (isolation \"process\" only).",
                "properties": {
                  "memoryBytes": {"type": "integer", "minimum": 134217728, "description": "Address-space limit of the runner (RLIMIT_AS), in bytes; the runner itself takes about 80 MiB of address space before the plugin allocates anything."},
                  "openFiles": {"type": "integer", "minimum": 16, "maximum": 1048576, "description": "Open-file limit of the runner (RLIMIT_NOFILE)."}
                }
              },
              "sha256": {"type": "string", "pattern": "^[0-9a-f]+$", "minLength": 64, "maxLength": 64, "description": "Pin: refuse the file unless its SHA-256 matches."},
              "allowInsecurePermissions": {"type": "boolean", "description": "Load even if the file is group/world-writable or owned by another user (logs a warning)."},
              "config": {"type": "object", "description": "The plugin's configuration, validated against the plugin's own schema."}
            }
          }
        }
      }
    }
    """#

    public static var schema: JSON { try! JSON.parse(schemaText) }

    /// Parses and validates a site file. Every problem is reported with the key it concerns.
    public static func parse(_ bytes: [UInt8], baseDir: String) throws -> SiteConfig {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch { throw SiteError(problems: ["\(error)"]) }
        let errs = Schema.validate(json, against: schema)
        if !errs.isEmpty { throw SiteError(problems: errs.map { $0.description }) }
        var c = SiteConfig()
        c.baseDir = baseDir
        if let s = json["site"]?.string { c.site = s }
        if let n = json["node"]?.string { c.node = n }
        if let s = json["stateDir"]?.string { c.stateDir = resolve(s, baseDir) }
        if let api = json["api"] {
            c.socket = api["socket"]?.string.map { resolve($0, baseDir) }
            if let l = api["link"]?.string { c.socketLink = l.isEmpty ? "" : resolve(l, baseDir) }
            c.listen = api["listen"]?.string
            c.token = api["token"]?.string
            if let m = api["maxBodyBytes"]?.int { c.maxBodyBytes = m }
            if let t = api["tls"] {
                c.tls = TLSFiles(certificate: resolve(t["certificate"]!.string!, baseDir), key: resolve(t["key"]!.string!, baseDir),
                                 clientCA: t["clientCA"]?.string.map { resolve($0, baseDir) })
            }
            if let v = api["headerTimeoutMs"]?.int { c.headerTimeoutMs = v }
            if let v = api["bodyTimeoutMs"]?.int { c.bodyTimeoutMs = v }
            if let v = api["idleTimeoutMs"]?.int { c.idleTimeoutMs = v }
            if let v = api["maxConnections"]?.int { c.maxConnections = v }
        }
        if c.listen != nil && c.token == nil { throw SiteError(problems: ["api.token: is required when api.listen is set"]) }
        if let t = c.token, let why = placeholderTokenProblem(t) {
            throw SiteError(problems: ["api.token: looks like a placeholder, not a secret (\(why)); generate one, e.g. with `openssl rand -hex 32`"])
        }
        let tlsProblems = c.listenerProblems()
        if !tlsProblems.isEmpty { throw SiteError(problems: tlsProblems) }
        if let s = json["store"]?["sync"]?.string { c.sync = s }
        var storeProblems: [String] = []
        c.store = StoreSettings.parse(json["store"], baseDir: baseDir, problems: &storeProblems)
        if !storeProblems.isEmpty { throw SiteError(problems: storeProblems) }
        if let t = json["callTimeoutMs"]?.int { c.callTimeoutMs = t }
        if let r = json["events"]?["retain"]?.int { c.eventsRetain = r }
        if let a = json["events"]?["maxAgeSeconds"]?.int { c.eventsMaxAgeSeconds = a }
        c.agent = AgentSite.parse(json["agent"], baseDir: baseDir)
        var seen = Set<String>()
        for (i, p) in (json["plugins"]?.array ?? []).enumerated() {
            var spec = PluginSpec(name: p["name"]!.string!, path: p["path"]!.string!)
            if !seen.insert(spec.name).inserted { throw SiteError(problems: ["plugins[\(i)].name: duplicate plugin name \"\(spec.name)\""]) }
            spec.path = resolvePluginPath(spec.path, baseDir)
            spec.enabled = p["enabled"]?.bool ?? true
            spec.isolation = p["isolation"]?.string ?? "in-process"
            spec.sha256 = p["sha256"]?.string
            spec.allowInsecurePermissions = p["allowInsecurePermissions"]?.bool ?? false
            if let l = p["limits"] {
                if spec.isolation != "process" { throw SiteError(problems: ["plugins[\(i)].limits: applies only to plugins with \"isolation\": \"process\""]) }
                spec.memoryLimitBytes = l["memoryBytes"]?.int
                spec.openFilesLimit = l["openFiles"]?.int
            }
            spec.config = p["config"] ?? .object([])
            c.plugins.append(spec)
        }
        return c
    }

    public static func load(path: String) throws -> SiteConfig {
        let bytes: [UInt8]
        do { bytes = try readFile(path) } catch { throw SiteError(problems: ["cannot read the site file: \(error)"]) }
        let dir = (path as NSString).deletingLastPathComponent
        do { return try parse(bytes, baseDir: dir.isEmpty ? "." : dir) } catch let e as SiteError {
            throw SiteError(problems: e.problems, file: path)
        }
    }

    /// The embedded default: state under ./berth-state, every reference plugin found in the plugin directory enabled.
    public static func embeddedDefault(pluginDir: String = SiteConfig.pluginDirectory) -> SiteConfig {
        var c = SiteConfig()
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: pluginDir)) ?? [])
            .filter { $0.hasPrefix("libberth-") && $0.hasSuffix(".so") }.sorted()
        for f in files {
            let name = String(f.dropFirst("libberth-".count).dropLast(3))
            var spec = PluginSpec(name: name, path: "\(pluginDir)/\(f)")
            if name == "ipam-pool" {
                // A ready-to-use private network so that `berth-cni` works out of the box.
                spec.name = "default"
                spec.config = ["defaultPool": "default", "pools": [["name": "default", "ranges": [["subnet": "10.88.0.0/16"]]]]]
            }
            c.plugins.append(spec)
        }
        return c
    }

    /// Where reference plugins live: $BERTH_PLUGIN_DIR, else the directory of the running executable.
    public static var pluginDirectory: String {
        if let d = ProcessInfo.processInfo.environment["BERTH_PLUGIN_DIR"], !d.isEmpty { return d }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    static func resolve(_ p: String, _ base: String) -> String { p.hasPrefix("/") ? p : (base == "." ? p : "\(base)/\(p)") }

    static func resolvePluginPath(_ p: String, _ base: String) -> String {
        if p.contains("/") { return resolve(p, base) }
        return "\(pluginDirectory)/\(p)"
    }

    public var json: JSON {
        var api: JSON = ["socket": .string(socketPath), "link": .string(socketLink), "maxBodyBytes": .number(Double(maxBodyBytes))]
        if let listen { api = api.setting("listen", .string(listen)).setting("token", "(set)") }
        if let tls {
            var t: JSON = ["certificate": .string(tls.certificate), "key": .string(tls.key)]
            if let ca = tls.clientCA { t = t.setting("clientCA", .string(ca)) }
            api = api.setting("tls", t)
        }
        api = api.setting("headerTimeoutMs", .number(Double(headerTimeoutMs))).setting("bodyTimeoutMs", .number(Double(bodyTimeoutMs)))
            .setting("idleTimeoutMs", .number(Double(idleTimeoutMs))).setting("maxConnections", .number(Double(maxConnections)))
        var events: JSON = ["retain": .number(Double(eventsRetain))]
        if let a = eventsMaxAgeSeconds { events = events.setting("maxAgeSeconds", .number(Double(a))) }
        return ["site": .string(site), "node": .string(nodeName), "stateDir": .string(stateDir), "api": api, "store": store.json.setting("sync", .string(sync)),
                "callTimeoutMs": .number(Double(callTimeoutMs)), "events": events, "agent": agent.json, "plugins": .array(plugins.map { $0.json })]
    }
}

/// The PEM files of the TCP listener's TLS.
public struct TLSFiles: Sendable, Equatable {
    public var certificate: String
    public var key: String
    public var clientCA: String?
    public init(certificate: String, key: String, clientCA: String? = nil) {
        self.certificate = certificate
        self.key = key
        self.clientCA = clientCA
    }
}

extension SiteConfig {
    /// Whether `host` (of api.listen) is a loopback address: localhost, 127.0.0.0/8.
    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// What is wrong with the TCP listener's settings: a bearer token in clear text off the machine, TLS without a
    /// listener, TLS files that cannot be read. Checked when the site is read (start, --check, apply).
    func listenerProblems() -> [String] {
        var problems: [String] = []
        if let listen, tls == nil {
            let host = String(listen.split(separator: ":").first ?? "")
            if !Self.isLoopback(host) {
                problems.append("api.listen: \(listen) is not a loopback address, and without TLS the bearer token would cross the network in clear text; set api.tls (certificate and key PEM files), or listen on 127.0.0.1")
            }
        }
        if let tls {
            if listen == nil { problems.append("api.tls: applies to the TCP listener only; set api.listen too, or remove api.tls") }
            for (key, path) in [("certificate", tls.certificate), ("key", tls.key), ("clientCA", tls.clientCA)] {
                guard let path else { continue }
                if access(path, R_OK) != 0 { problems.append("api.tls.\(key): cannot read \(path): \(String(cString: strerror(errno)))") }
            }
        }
        return problems
    }
}

public struct SiteError: Error, CustomStringConvertible, Sendable {
    public let problems: [String]
    public var file: String? = nil
    public var description: String {
        "invalid site configuration\(file.map { " \($0)" } ?? ""):\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}
