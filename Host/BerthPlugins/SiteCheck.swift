// `berthd --check`: everything start-up validates, short of starting. Paths berthd needs, the API settings, and
// every enabled plugin loaded and created as start-up would (isolated ones in their runner) on a scratch state
// store that is removed afterwards, so a configuration the plugin's schema or its create() refuses fails here.
import BerthStore
import BerthWire
import Foundation
import Logging

public struct SiteCheckReport: Sendable {
    /// What would stop berthd from starting, or leave a plugin failed.
    public var problems: [String] = []
    /// What starts but deserves a look (a TCP listener on a non-loopback address).
    public var warnings: [String] = []
    /// With store.engine "etcd": what each endpoint answered (its etcd version and the cluster's members).
    public var etcd: [EtcdClusterInfo] = []
}

extension SiteConfig {
    /// Why `token` looks like a placeholder rather than a secret, or nil. Used by the site parser, so berthd
    /// refuses such a token at start-up as well as in `--check`.
    public static func placeholderTokenProblem(_ token: String) -> String? {
        let letters = token.lowercased().filter { $0.isLetter || $0.isNumber }
        let words = ["changeme", "changeit", "replaceme", "placeholder", "yourtoken", "mytoken", "secrettoken", "token",
                     "secret", "password", "passw0rd", "example", "default", "test", "admin", "todo", "fixme", "xxx"]
        if letters.isEmpty { return "it has no letters or digits" }
        if Set(token).count < 6 { return "it repeats a handful of characters (\(Set(token).count) different)" }
        for w in ["changeme", "changeit", "replaceme", "replacewith", "placeholder", "yourtoken", "insert", "fillin"] where letters.contains(w) {
            return "it contains \"\(w)\""
        }
        // Made only of placeholder words (and digits): "token-token-token", "secret123secret123", "CHANGE-ME-0000".
        var rest = Substring(letters)
        var progressed = true
        while !rest.isEmpty && progressed {
            progressed = false
            if let w = words.first(where: { rest.hasPrefix($0) }) { rest = rest.dropFirst(w.count); progressed = true }
            else if let c = rest.first, c.isNumber { rest = rest.dropFirst(); progressed = true }
        }
        if rest.isEmpty { return "it is made of placeholder words" }
        return nil
    }

    /// The host of `api.listen` is a loopback address (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(listen: String) -> Bool {
        var host = listen
        if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Checks what start-up would. `logger` receives the plugins' own log lines.
    public func check(logger: Logger) -> SiteCheckReport {
        var r = SiteCheckReport()
        if let listen, !SiteConfig.isLoopback(listen: listen) {
            r.warnings.append("api.listen \(listen) is not a loopback address: the API (and its bearer token) is reachable from other hosts; "
                + "terminate TLS in front of it (or listen on 127.0.0.1 behind a TLS proxy)")
        }
        if let problem = SiteConfig.directoryProblem(stateDir, creatable: true) { r.problems.append("stateDir: \(problem)") }
        let socketDir = (socketPath as NSString).deletingLastPathComponent
        if socket != nil, let problem = SiteConfig.directoryProblem(socketDir.isEmpty ? "." : socketDir, creatable: false) {
            r.problems.append("api.socket: \(problem) (berthd creates only the state directory)")
        }
        checkStore(&r)
        r.problems += checkPlugins(logger: logger)
        return r
    }

    /// store.engine "etcd": every endpoint must answer (its version and the members are reported).
    func checkStore(_ r: inout SiteCheckReport) {
        guard store.engine == "etcd" else { return }
        let unsupported = store.unsupported
        r.problems += unsupported
        if unsupported.isEmpty {
            do { r.etcd = try EtcdStore.clusterInfo(store.etcdSettings(site: site)) } catch {
                r.problems.append("store.endpoints: \(error)")
            }
        }
    }

    /// Loads and creates every enabled plugin on a scratch store, then destroys it all.
    func checkPlugins(logger: Logger) -> [String] {
        let enabled = plugins.filter { $0.enabled }
        guard !enabled.isEmpty else { return [] }
        let scratch = NSTemporaryDirectory() + "berthd-check-\(getpid())-\(monotonicNanos())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var copy = self
        copy.stateDir = scratch
        copy.sync = "normal"
        copy.store = StoreSettings()  // the scratch store is SQLite whatever the engine (checkStore checks etcd)
        let runtime: PluginHost
        do { runtime = try PluginHost(site: copy, logger: logger) } catch {
            return ["cannot make a scratch state store in \(scratch) for the check: \(error)"]
        }
        defer { runtime.shutdown() }
        var problems: [String] = []
        for spec in enabled {
            do {
                let loaded = try runtime.loadPlugin(spec)
                let inst = try runtime.makeInstance(loaded, spec)
                try runtime.executor.runSync { inst.destroy() }
            } catch let e as LoadError {
                problems.append("plugins.\(spec.name) (\(spec.path)): \(e.reason)")
            } catch {
                problems.append("plugins.\(spec.name) (\(spec.path)): \(error)")
            }
        }
        return problems
    }

    /// Why `dir` cannot serve as a directory berthd writes in, or nil. With `creatable`, a missing directory is fine
    /// when its nearest existing parent is writable (berthd creates it).
    static func directoryProblem(_ dir: String, creatable: Bool) -> String? {
        var st = stat()
        if stat(dir, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { return "\(dir) exists and is not a directory" }
            return access(dir, W_OK | X_OK) == 0 ? nil : "directory \(dir) is not writable by this user"
        }
        guard creatable else { return "directory \(dir) does not exist; create it first" }
        var parent = dir
        while true {
            parent = (parent as NSString).deletingLastPathComponent
            if parent.isEmpty { parent = "." }
            if stat(parent, &st) == 0 { break }
            if parent == "/" || parent == "." { return "no parent of \(dir) exists" }
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return "\(parent) (on the way to \(dir)) is not a directory" }
        return access(parent, W_OK | X_OK) == 0 ? nil : "\(dir) does not exist and \(parent) is not writable by this user, so berthd cannot create it"
    }
}
