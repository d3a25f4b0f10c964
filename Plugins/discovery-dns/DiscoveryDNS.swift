// discovery-dns — a discovery sidecar in Swift (BerthPluginKit): keeps the platform's running instances as names
// for dnsmasq and as Prometheus file_sd targets.
//
//   hosts file (dnsmasq --addn-hosts):  <ip> <app>-<ordinal>.<app>.<site>.<domain>
//                                       <ip> <app>.<site>.<domain>            (one line per running instance address)
//   file_sd JSON:  [{"targets":["ip:port",...],"labels":{"app":..,"kind":..,"site":..}}, ...]  (one group per app)
//
// The desired state lives in the plugin's key-value namespace, one record per instance with the revision of the
// event that set it:
//   i/<kind>/<app>/<ordinal>  {"rev","kind","app","ordinal","state","node","ips"}   ("gone" records are tombstones)
//   m/floor                   revision of the last resync; events at or below it are already reflected
//   m/site                    the site name from the last resync
// An event applies only when its revision is newer than the record's, so repeated and out-of-order batches
// converge; a resync replaces everything at or below its revision, so a plugin that missed events converges too.
// Files are written by a thread of the plugin (Writer.swift), debounced, atomically, only when they change, and
// dnsmasq is sent SIGHUP after the hosts file changed.
import BerthPluginKit

#if canImport(Glibc)
import Glibc
#endif

struct Instance: Equatable {
    var rev: Int64
    var kind: String
    var app: String
    var ordinal: Int64?
    var state: String
    var node: String?
    var ips: [String]

    var key: String { "\(kind)/\(app)/\(ordinal.map { String($0) } ?? "-")" }
    var running: Bool { state == "running" }

    var json: J {
        .object([("rev", .int(rev)), ("kind", .string(kind)), ("app", .string(app)), ("ordinal", ordinal.map { .int($0) } ?? .null),
                 ("state", .string(state)), ("node", node.map { .string($0) } ?? .null), ("ips", .array(ips.map { .string($0) }))])
    }

    /// From an event's (or a snapshot's) data. `subject` (<kind>/<app>/<ordinal>) fills what the data lacks.
    init?(data: J, subject: String?, state: String, rev: Int64) throws {
        let parts = subject?.split(separator: "/", omittingEmptySubsequences: false).map(String.init) ?? []
        guard let app = data["app"]?.string ?? (parts.count == 3 ? parts[1] : nil), !app.isEmpty else { return nil }
        self.rev = rev
        self.app = app
        kind = data["kind"]?.string ?? (parts.count == 3 ? parts[0] : "")
        if let o = data["ordinal"], o != .null {
            guard let v = o.int64 else { throw PluginError(.invalidArgument, "ordinal: expected an integer, got \(o.typeName)") }
            ordinal = v
        } else {
            ordinal = parts.count == 3 ? Int64(parts[2]) : nil
        }
        self.state = data["state"]?.string ?? state
        node = data["node"]?.string
        var ips: [String] = []
        for ip in data["ips"]?.array ?? [] {
            // Accept "10.1.0.10" and "10.1.0.10/24" (and {"address": ...} objects).
            guard let s = ip.string ?? ip["address"]?.string else { continue }
            ips.append(String(s.split(separator: "/").first ?? Substring(s)))
        }
        self.ips = ips
    }

    init?(stored: [UInt8]) {
        guard let j = try? J.parse(stored), let rev = j["rev"]?.int64, let app = j["app"]?.string else { return nil }
        self.rev = rev
        self.app = app
        kind = j["kind"]?.string ?? ""
        ordinal = j["ordinal"]?.int64
        state = j["state"]?.string ?? "running"
        node = j["node"]?.string
        ips = (j["ips"]?.array ?? []).compactMap { $0.string }
    }
}

struct Config {
    var hostsFile: String?
    var fileSdFile: String?
    var domain = "berth"
    var pidFile: String?
    var debounceMs = 200
    var metricsPort: Int64 = 9100
    var ports: [String: Int64] = [:]

    init(_ bytes: [UInt8]) throws {
        let j: J
        do { j = bytes.isEmpty ? .object([]) : try J.parse(bytes) } catch { throw PluginError(.invalidArgument, "config: \(error)") }
        hostsFile = j["hostsFile"]?.string
        fileSdFile = j["fileSdFile"]?.string
        pidFile = j["pidFile"]?.string
        if let d = j["domain"]?.string {
            let labels = d.split(separator: ".", omittingEmptySubsequences: false)
            guard !labels.isEmpty, labels.allSatisfy({ !$0.isEmpty && $0.count <= 63 }) else {
                throw PluginError(.invalidArgument, "config.domain: \"\(d)\" is not a DNS name (dot-separated labels of 1..63 characters)")
            }
            domain = d.lowercased()
        }
        if let v = j["debounceMs"]?.int64 { debounceMs = Int(v) }
        if let v = j["metricsPort"]?.int64 { metricsPort = v }
        for (k, v) in j["ports"]?.object ?? [] { if let p = v.int64 { ports[k] = p } }
        // The files are written next to themselves (temporary file, then rename): their directories must exist now,
        // or every write would fail later, far from the configuration that caused it.
        for (key, path) in [("hostsFile", hostsFile), ("fileSdFile", fileSdFile)] {
            guard let path else { continue }
            if let why = Config.directoryProblem(path) { throw PluginError(.invalidArgument, "config.\(key): \(why)") }
        }
    }

    /// Why the directory of `path` cannot take the file, or nil when it can.
    static func directoryProblem(_ path: String) -> String? {
        guard !path.hasSuffix("/") else { return "\"\(path)\" names a directory; give a file path" }
        var dir = "."
        if let slash = path.lastIndex(of: "/") { dir = slash == path.startIndex ? "/" : String(path[..<slash]) }
        var st = stat()
        guard stat(dir, &st) == 0 else { return "directory \(dir) of \(path) does not exist (\(String(cString: strerror(errno)))); create it first" }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return "\(dir) (for \(path)) is not a directory" }
        guard access(dir, W_OK) == 0 else { return "directory \(dir) of \(path) is not writable by berthd" }
        return nil
    }
}

/// One DNS label from an app name: lower case, [a-z0-9-], at most 63 characters.
func dnsLabel(_ s: String) -> String {
    var out = ""
    for u in s.lowercased().unicodeScalars {
        if (u >= "a" && u <= "z") || (u >= "0" && u <= "9") || u == "-" { out.unicodeScalars.append(u) } else { out += "-" }
    }
    return String(out.prefix(63))
}

/// The in-memory mirror of the namespace, shared by the plugin (which updates it after each successful operation)
/// and the writer thread (which renders it). Rebuilt from the namespace at create().
final class Mirror: @unchecked Sendable {
    let config: Config
    private var lock = pthread_mutex_t()
    private var entries: [String: Instance] = [:]
    private var site: String?

    init(config: Config) {
        self.config = config
        pthread_mutex_init(&lock, nil)
    }

    func update(_ body: (inout [String: Instance], inout String?) -> Void) {
        pthread_mutex_lock(&lock)
        body(&entries, &site)
        pthread_mutex_unlock(&lock)
    }

    func read() -> (entries: [String: Instance], site: String?) {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return (entries, site)
    }

    /// The files for the current state; nil until a site is known (before the first resync).
    func render() -> Rendered? {
        let (all, site) = read()
        guard let site else { return nil }
        let running = all.values.filter { $0.running && !$0.ips.isEmpty }
        let sorted = running.sorted { ($0.app, $0.kind, $0.ordinal ?? -1, $0.key) < ($1.app, $1.kind, $1.ordinal ?? -1, $1.key) }
        let zone = "\(dnsLabel(site)).\(config.domain)"
        var hosts = "# discovery-dns (berth): running instances of site \(site). Generated; do not edit.\n"
        for inst in sorted {
            let app = dnsLabel(inst.app)
            for ip in inst.ips {
                if let o = inst.ordinal, o >= 0 { hosts += "\(ip) \(app)-\(o).\(app).\(zone)\n" }
                hosts += "\(ip) \(app).\(zone)\n"
            }
        }
        var groups: [J] = []
        var i = 0
        while i < sorted.count {
            let app = sorted[i].app, kind = sorted[i].kind
            var targets: [J] = []
            let port = config.ports[app] ?? config.metricsPort
            while i < sorted.count, sorted[i].app == app, sorted[i].kind == kind {
                for ip in sorted[i].ips { targets.append(.string(ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)")) }
                i += 1
            }
            groups.append(.object([("targets", .array(targets)),
                                   ("labels", .object([("app", .string(app)), ("kind", .string(kind)), ("site", .string(site))]))]))
        }
        return Rendered(hosts: Array(hosts.utf8), fileSd: Array((J.array(groups).serialized + "\n").utf8))
    }
}

final class DiscoveryDNS: DiscoveryPlugin {
    let host: HostServices
    let config: Config
    let mirror: Mirror
    let writer: OutputWriter

    init(host: HostServices, config raw: [UInt8]) throws {
        self.host = host
        config = try Config(raw)
        let cfg = config
        let mirror = Mirror(config: cfg)
        self.mirror = mirror
        writer = OutputWriter(hostsFile: cfg.hostsFile, fileSdFile: cfg.fileSdFile, pidFile: cfg.pidFile, debounceMs: cfg.debounceMs,
                              render: { mirror.render() }, log: { msg, warn in host.log(warn ? .warn : .info, msg) })
        // create() runs inside a transaction: rebuild the mirror from the namespace.
        let loaded = try loadAll()
        let site = try host.getString("m/site")
        mirror.update { e, s in e = loaded; s = site }
        writer.start()
        if site != nil { writer.markDirty() }
        host.log(.info, "discovery-dns: \(loaded.values.filter { $0.running }.count) running instance(s) in the namespace; hosts \(cfg.hostsFile ?? "-"), file_sd \(cfg.fileSdFile ?? "-"), domain \(cfg.domain)")
    }

    deinit {
        writer.stop()  // flushes what is pending, then joins the thread (destroy must stop the plugin's threads)
    }

    // MARK: operations

    func events(_ request: [UInt8]) throws -> [UInt8] {
        let req = try parseObject(request, "events")
        guard let evs = req["events"]?.array else {
            throw PluginError(.invalidArgument, "events: required, an array of {rev, type, subject, data}")
        }
        let floor = try readFloor()
        var changed: [String: Instance] = [:]
        var applied = 0, stale = 0
        for (i, ev) in evs.enumerated() {
            guard ev.isObject else { throw PluginError(.invalidArgument, "events[\(i)]: expected an object, got \(ev.typeName)") }
            guard let rev = ev["rev"]?.int64 else { throw PluginError(.invalidArgument, "events[\(i)].rev: required integer") }
            guard let type = ev["type"]?.string else { throw PluginError(.invalidArgument, "events[\(i)].type: required string") }
            guard type.hasPrefix("instance.") else { continue }
            guard rev > floor else { stale += 1; continue }
            let data = ev["data"] ?? .object([])
            guard data.isObject else { throw PluginError(.invalidArgument, "events[\(i)].data: expected an object, got \(data.typeName)") }
            let inst: Instance?
            do {
                inst = try Instance(data: data, subject: ev["subject"]?.string, state: String(type.dropFirst("instance.".count)), rev: rev)
            } catch let e as PluginError { throw PluginError(.invalidArgument, "events[\(i)].data.\(e.message)") }
            guard let inst else {
                host.log(.warn, "discovery-dns: event rev \(rev) (\(type)) names no app; ignored")
                continue
            }
            let current = try changed[inst.key] ?? load(inst.key)
            if let current, current.rev >= rev { stale += 1; continue }  // a newer state is already applied
            try host.put("i/" + inst.key, inst.json.bytes)
            changed[inst.key] = inst
            applied += 1
        }
        if !changed.isEmpty {
            mirror.update { e, _ in for (k, v) in changed { e[k] = v } }
            writer.markDirty()
        }
        return J.object([("applied", .int(Int64(applied))), ("stale", .int(Int64(stale)))]).bytes
    }

    func resync(_ request: [UInt8]) throws -> [UInt8] {
        let req = try parseObject(request, "resync")
        guard let rev = req["rev"]?.int64 else { throw PluginError(.invalidArgument, "rev: required integer") }
        guard let list = req["instances"]?.array else { throw PluginError(.invalidArgument, "instances: required array") }
        let floor = try readFloor()
        if rev < floor {
            host.log(.info, "discovery-dns: resync at rev \(rev) is older than the last one (\(floor)); ignored")
            return J.object([("ignored", .string("older than the last resync at rev \(floor)"))]).bytes
        }
        var desired: [String: Instance] = [:]
        for (i, raw) in list.enumerated() {
            guard raw.isObject else { throw PluginError(.invalidArgument, "instances[\(i)]: expected an object, got \(raw.typeName)") }
            let inst: Instance?
            do { inst = try Instance(data: raw, subject: nil, state: "running", rev: rev) } catch let e as PluginError {
                throw PluginError(.invalidArgument, "instances[\(i)].\(e.message)")
            }
            guard let inst else { throw PluginError(.invalidArgument, "instances[\(i)].app: required string") }
            if inst.state != "gone" { desired[inst.key] = inst }
        }
        var removed = 0, kept = 0
        for (key, current) in try loadAll() {
            if current.rev > rev { kept += 1; desired.removeValue(forKey: key); continue }  // newer than the snapshot
            if desired[key] == nil { try host.delete("i/" + key); removed += 1 }
        }
        for (key, inst) in desired { try host.put("i/" + key, inst.json.bytes) }
        try host.put("m/floor", String(rev))
        let newSite = try req["site"]?.string ?? host.getString("m/site") ?? "local"
        try host.put("m/site", newSite)
        let all = try loadAll()
        mirror.update { e, s in e = all; s = newSite }
        writer.markDirty()
        return J.object([("instances", .int(Int64(all.values.filter { $0.running }.count))), ("removed", .int(Int64(removed))),
                         ("keptNewer", .int(Int64(kept)))]).bytes
    }

    func call(method: String, request: [UInt8]) throws -> [UInt8] {
        switch method {
        case "state":
            let (all, s) = mirror.read()
            let es = all.values.filter { $0.running }.sorted { ($0.app, $0.kind, $0.ordinal ?? -1) < ($1.app, $1.kind, $1.ordinal ?? -1) }
            return J.object([("site", s.map { .string($0) } ?? .null), ("floor", .int(try readFloor())),
                             ("running", .array(es.map { $0.json })), ("writer", writer.stats)]).bytes
        case "render":
            let r = mirror.render() ?? Rendered(hosts: [], fileSd: [])
            return J.object([("hosts", .string(String(decoding: r.hosts, as: UTF8.self))),
                             ("fileSd", .string(String(decoding: r.fileSd, as: UTF8.self)))]).bytes
        case "flush":
            writer.flush()
            return writer.stats.bytes
        default:
            throw PluginError(.unimplemented, "unknown method \"\(method)\" (discovery-dns knows state, render and flush)")
        }
    }

    // MARK: namespace

    private func parseObject(_ bytes: [UInt8], _ op: String) throws -> J {
        let j: J
        do { j = try J.parse(bytes) } catch { throw PluginError(.invalidArgument, "\(op): malformed JSON: \(error)") }
        guard j.isObject else { throw PluginError(.invalidArgument, "\(op): expected a JSON object, got \(j.typeName)") }
        return j
    }

    private func readFloor() throws -> Int64 { Int64(try host.getString("m/floor") ?? "0") ?? 0 }

    private func load(_ key: String) throws -> Instance? {
        try host.get("i/" + key).flatMap { Instance(stored: $0) }
    }

    private func loadAll() throws -> [String: Instance] {
        var out: [String: Instance] = [:]
        for (k, v) in try host.scan(prefix: "i/") {
            if let inst = Instance(stored: v) { out[String(k.dropFirst(2))] = inst }
        }
        return out
    }
}

@_cdecl("berth_plugin_entry_v1")
public func berthPluginEntry(_ hostMajor: UInt16, _ hostMinor: UInt16) -> UnsafeRawPointer? {
    BerthPluginExport.entry(DiscoveryDNS.self, info: PluginInfo(
        name: "discovery-dns", version: "1.0.0",
        description: "Service discovery: running instances as dnsmasq host names and Prometheus file_sd targets",
        configSchema: #"""
        {"type":"object","additionalProperties":false,"properties":{
          "hostsFile":{"type":"string","minLength":1,"description":"dnsmasq hosts file to keep (--addn-hosts); its directory must exist. Unset: no hosts file."},
          "fileSdFile":{"type":"string","minLength":1,"description":"Prometheus file_sd JSON file to keep; its directory must exist. Unset: no file_sd file."},
          "domain":{"type":"string","minLength":1,"maxLength":200,"pattern":"^[a-zA-Z0-9][a-zA-Z0-9.-]*$","description":"DNS domain under which <app>.<site>.<domain> names live (default berth)."},
          "pidFile":{"type":"string","minLength":1,"description":"dnsmasq's pid file: SIGHUP after the hosts file changed."},
          "debounceMs":{"type":"integer","minimum":0,"maximum":60000,"description":"Quiet time before a write (default 200); a write happens at the latest after 5x this (at least 1 s)."},
          "metricsPort":{"type":"integer","minimum":1,"maximum":65535,"description":"Port of the file_sd targets (default 9100)."},
          "ports":{"type":"object","additionalProperties":{"type":"integer","minimum":1,"maximum":65535},"description":"Per-app file_sd port, overriding metricsPort."}
        }}
        """#),
        hostMajor: hostMajor)
}
