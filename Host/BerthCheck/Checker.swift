// `berth plugin check`: loads a plugin exactly as berthd does (same loader, same store, same executor, in a
// temporary state directory), then runs the conformance cases of each kind it declares.
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

public struct CheckCase: Sendable {
    public let name: String
    /// False for a failure; a skipped case is not a failure, but never counts as passed either (see `skipped`).
    public let passed: Bool
    public let detail: String
    /// The case did not run (the plugin lacks an optional feature, or the check had no way to run it here).
    public let skipped: Bool

    public init(name: String, passed: Bool, detail: String, skipped: Bool = false) {
        self.name = name
        self.passed = passed || skipped
        self.detail = detail
        self.skipped = skipped
    }

    /// A case that did not run: shown as "skip", counted apart from passes and failures.
    public static func skip(_ name: String, _ detail: String) -> CheckCase { CheckCase(name: name, passed: true, detail: detail, skipped: true) }

    public var result: String { skipped ? "skip" : passed ? "pass" : "fail" }
}

public struct CheckReport {
    public var plugin: LoadedPlugin?
    public var cases: [CheckCase] = []
    public var passed: Int { cases.filter { $0.passed && !$0.skipped }.count }
    public var failed: Int { cases.filter { !$0.passed }.count }
    public var skipped: Int { cases.filter { $0.skipped }.count }
    /// "N passed, M failed, K skipped", the last line of `berth plugin check`.
    public var summary: String { "\(passed) passed, \(failed) failed, \(skipped) skipped" }
    public var json: JSON {
        ["plugin": plugin?.info ?? .null, "passed": JSON(passed), "failed": JSON(failed), "skipped": JSON(skipped),
         "cases": .array(cases.map { ["name": .string($0.name), "result": .string($0.result), "detail": .string($0.detail)] })]
    }
}

public enum PluginChecker {
    /// `inProcess`: load the plugin into this process (a crash takes the check down with it); otherwise it runs in a
    /// berth-plugin-runner (`runnerPath`) and a crash during a case fails that case, naming the signal, and the
    /// runner restarts for the next one. `extended`: also run the long cases (network: exhaustion, concurrency,
    /// release policies, huge input, state across instances; scheduler: huge input, large node batch; discovery:
    /// huge input), as `berth plugin check` does.
    /// `rootfs`: a root filesystem directory with `/bin/sleep` for the runtime suite (`--rootfs`); without it the
    /// runtime cases that start instances are skipped.
    public static func check(path: String, name: String? = nil, config: JSON = .object([]), kind: String? = nil,
                             inProcess requestedInProcess: Bool = false, runnerPath: String = pluginRunnerPath, extended: Bool = false,
                             rootfs: String? = nil, store storeURL: String? = nil) -> CheckReport {
        guard let storeURL else {
            return run(path: path, name: name, config: config, kind: kind, inProcess: requestedInProcess, runnerPath: runnerPath,
                       extended: extended, rootfs: rootfs, etcd: nil)
        }
        // `--store etcd://…`: the plugin's key-value state and the events in etcd, under a prefix of this run's own,
        // removed at the end. A bad URL or an unreachable etcd fails before anything is loaded or written.
        let etcd: EtcdStore
        do { etcd = try CheckStore.openEtcd(storeURL) } catch {
            return CheckReport(cases: [CheckCase(name: "store", passed: false, detail: "\(error)")])
        }
        var report = run(path: path, name: name, config: config, kind: kind, inProcess: requestedInProcess, runnerPath: runnerPath,
                         extended: extended, rootfs: rootfs, etcd: etcd)
        do { try etcd.removeSite() } catch {
            report.cases.append(CheckCase(name: "store", passed: false, detail: "could not remove \(etcd.prefix) from etcd: \(error)"))
        }
        return report
    }

    private static func run(path: String, name: String?, config: JSON, kind: String?, inProcess requestedInProcess: Bool,
                            runnerPath: String, extended: Bool, rootfs: String?, etcd: EtcdStore?) -> CheckReport {
        var inProcess = requestedInProcess
        var report = CheckReport()
        func add(_ n: String, _ ok: Bool, _ d: String) { report.cases.append(CheckCase(name: n, passed: ok, detail: d)) }
        let dir = NSTemporaryDirectory() + "berth-check-\(getpid())-\(monotonicNanos())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = URL(fileURLWithPath: path).lastPathComponent
        let guess = base.hasPrefix("libberth-") && base.hasSuffix(".so") ? String(base.dropFirst(9).dropLast(3)) : "plugin"
        var spec = PluginSpec(name: name ?? guess, path: path, config: config)
        spec.enabled = true
        let store: any StateStore
        do {
            try makeDirectories(dir, mode: 0o700)
            if let etcd {
                store = etcd
                add("store", true, "plugin state and events in etcd \(etcd.settings.endpoints.joined(separator: ",")) under \(etcd.prefix) (removed at the end)")
            } else {
                store = try Store(path: "\(dir)/state.db", synchronous: "normal")
            }
        } catch {
            add("state", false, "cannot create a temporary state store: \(error)")
            return report
        }
        let executor = Executor(store: store)
        executor.start()
        defer { executor.stop() }
        let loader = Loader(copyDir: "\(dir)/plugins")
        guard let loaded = load(spec, loader: loader, inProcess: &inProcess, runnerPath: runnerPath, add: add) else { return report }
        report.plugin = loaded
        if name == nil { spec.name = loaded.name }
        /// An instance of the plugin under check, the way the check runs it (in process or in a runner); `named` gives a
        /// second instance its own namespace (the discovery suite's reference instance).
        func instantiate(named: String? = nil) throws -> PluginInstance {
            var s = spec
            if let named { s.name = named }
            return inProcess ? try loader.instantiate(loaded, spec: s, executor: executor, log: { _, _ in })
                : try RemotePlugin.instantiate(loaded, spec: s, loader: loader, executor: executor, log: { _, _ in })
        }
        var instance: PluginInstance?
        do {
            instance = try instantiate()
            add("config", true, loaded.configSchema == nil ? "no schema (any object accepted)" : "accepted by the plugin's schema")
            add("create", true, "instance created")
        } catch let e as LoadError {
            if case .configRejected = e.cause { add("config", false, e.reason) } else { add("create", false, e.reason) }
            return report
        } catch {
            add("create", false, "\(error)")
            return report
        }
        let kinds = kind.map { [$0] } ?? loaded.kinds.names
        for k in kinds {
            guard let current = instance else { add("\(k) suite", false, "no instance left to run the suite on"); continue }
            // "state survives a new instance" (network): destroy the instance and create one with the same name on the same store.
            let renew: () throws -> PluginInstance = {
                instance?.destroy()
                instance = nil
                let fresh = try instantiate()
                instance = fresh
                return fresh
            }
            report.cases += suite(k, on: current, loaded: loaded, executor: executor, scratch: dir, config: config, extended: extended,
                                  rootfs: rootfs, renew: renew, makeInstance: { try instantiate(named: $0) })
        }
        if let instance {
            instance.destroy()
            add("destroy", true, "instance destroyed")
        }
        return report
    }

    /// Loads the plugin the way the check runs it: in a runner unless `inProcess`; a runtime plugin, which runs in
    /// process only, falls back to in process (and sets `inProcess`). Nil when it does not load (the case says why).
    private static func load(_ spec: PluginSpec, loader: Loader, inProcess: inout Bool, runnerPath: String,
                             add: (String, Bool, String) -> Void) -> LoadedPlugin? {
        let loaded: LoadedPlugin
        do {
            if inProcess {
                loaded = try loader.load(spec)
            } else {
                do {
                    var isolated = spec
                    isolated.isolation = "process"
                    loaded = try RemotePlugin.load(isolated, loader: loader, callTimeoutMs: 30_000, runnerPath: runnerPath)
                } catch let e as LoadError {
                    // A runtime plugin runs in process only (Loader.validate): check it the way berthd would run it.
                    guard case .isolationUnsupported = e.cause else { throw e }
                    inProcess = true
                    loaded = try loader.load(spec)
                    add("isolation", true, "runtime plugins run in process (process isolation is not supported for the runtime kind yet): checked in process")
                }
            }
            add("load", true, "dlopen(RTLD_NOW|RTLD_LOCAL) of the content-addressed copy, entry berth_plugin_entry_v1")
            add("descriptor", true, "ABI 1.\(loaded.abiMinor), kinds \(loaded.kinds), \(loaded.concurrent ? "concurrent" : "serial")")
            return loaded
        } catch let e as LoadError {
            add("load", false, e.reason)
            return nil
        } catch {
            add("load", false, "\(error)")
            return nil
        }
    }

    /// The conformance suite of kind `k` on `current`; a kind the plugin does not declare fails, a declared kind
    /// without a suite in this version is skipped.
    private static func suite(_ k: String, on current: PluginInstance, loaded: LoadedPlugin, executor: Executor, scratch dir: String,
                              config: JSON, extended: Bool, rootfs: String?, renew: @escaping () throws -> PluginInstance,
                              makeInstance: @escaping (String) throws -> PluginInstance) -> [CheckCase] {
        switch k {
        case "network" where loaded.kinds.contains(.network):
            return NetworkConformance.run(current, executor: executor, extended: extended, renew: renew, makeInstance: makeInstance)
        case "scheduler" where loaded.kinds.contains(.scheduler):
            return SchedulerConformance.run(current, executor: executor, extended: extended)
        case "storage" where loaded.kinds.contains(.storage): return StorageConformance.run(current, executor: executor, scratch: dir, config: config)
        case "discovery" where loaded.kinds.contains(.discovery):
            return DiscoveryConformance.run(current, executor: executor, extended: extended, makeInstance: makeInstance)
        case "runtime" where loaded.kinds.contains(.runtime):
            return RuntimeConformance.run(current, rootfs: rootfs)
        case "network", "storage", "scheduler", "discovery", "runtime":
            if loaded.kinds.names.contains(k) {
                return [.skip("\(k) suite", "no conformance cases for this kind in this version of berth")]
            }
            return [CheckCase(name: "\(k) suite", passed: false, detail: "the plugin does not declare the \(k) kind")]
        default:
            return [CheckCase(name: "kind", passed: false, detail: "unknown kind \"\(k)\" (network, storage, scheduler, discovery, runtime)")]
        }
    }
}

/// Network conformance: CNI semantics the host relies on.
enum NetworkConformance {
    /// The most ADDs the exhaustion case makes, and how long it may take, before it gives up on exhausting the pool.
    static let exhaustionBound = 70_000
    static let exhaustionSeconds: UInt64 = 120

    /// `renew`: destroys the instance and creates one with the same name (for "state survives a new instance").
    /// `makeInstance(name)`: another instance under its own name (its own namespace), made the way the check runs
    /// the plugin, for the add_batch cases; without it those cases that need fresh instances are skipped.
    static func run(_ first: PluginInstance, executor ex: Executor, extended: Bool = false,
                    renew: (() throws -> PluginInstance)? = nil, makeInstance: ((String) throws -> PluginInstance)? = nil) -> [CheckCase] {
        var out: [CheckCase] = []
        var inst = first
        var ops = inst.networkOps!
        func call(_ op: NetworkOps.Op, _ req: JSON) -> Result<JSON, BerthError> {
            let o = ops
            do { return .success(try ex.runSync { try o.call(op, req) }) } catch let e as BerthError { return .failure(e) } catch {
                return .failure(BerthError(plugin: o.instance.name, operation: op.rawValue, status: .internal, message: "\(error)"))
            }
        }
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "network: \(n)", passed: ok, detail: d)) }
        let a1: JSON = ["network": "check", "containerID": "conformance-1", "ifname": "eth0", "node": "check-node"]
        let first = call(.add, a1)
        guard case .success(let r1) = first else {
            if case .failure(let e) = first { add("add", false, "\(e.statusName): \(e.message) (configure the plugin with an allocatable pool: --config)") }
            return out
        }
        let ips = (r1["ips"]?.array ?? []).compactMap { $0["address"]?.string }
        add("add", !ips.isEmpty, ips.isEmpty ? "result has no ips[].address" : "allocated \(ips.joined(separator: ", "))")
        if case .success(let r2) = call(.add, a1) {
            add("add is idempotent", r2 == r1, r2 == r1 ? "same key returned the same result" : "second ADD returned \(r2.serialized), first \(r1.serialized)")
        } else { add("add is idempotent", false, "second ADD of the same key failed") }
        let a2 = a1.setting("containerID", "conformance-2")
        if case .success(let r3) = call(.add, a2) {
            let ips3 = (r3["ips"]?.array ?? []).compactMap { $0["address"]?.string }
            add("no duplicate addresses", Set(ips3).isDisjoint(with: ips), "second container got \(ips3.joined(separator: ", "))")
        } else { add("no duplicate addresses", false, "ADD for a second container failed") }
        switch call(.check, a1) {
        case .success: add("check", true, "reservation confirmed")
        case .failure(let e): add("check", false, e.description)
        }
        if case .failure(let e) = call(.check, a1.setting("containerID", "conformance-unknown")) {
            add("check of unknown attachment", e.status == .notFound, "returned \(e.statusName)")
        } else { add("check of unknown attachment", false, "returned OK; want NOT_FOUND") }
        for (label, req) in [("del", a1), ("del twice", a1), ("del of unknown attachment", a1.setting("containerID", "never-added"))] {
            switch call(.del, req) {
            case .success: add(label, true, "OK")
            case .failure(let e): add(label, false, e.description)
            }
        }
        switch call(.gc, ["network": "check", "valid": .array([])]) {
        case .success:
            if case .failure(let e) = call(.check, a2) { add("gc releases unlisted", e.status == .notFound, "after gc, check returned \(e.statusName)") } else {
                add("gc releases unlisted", false, "attachment still checks OK after gc with an empty valid list")
            }
        case .failure(let e): add("gc", false, e.description)
        }
        switch call(.status, ["network": "check"]) {
        case .success: add("status", true, "OK")
        case .failure(let e): add("status", e.status == .resourceExhausted, e.description)
        }
        for (label, raw) in [("malformed JSON is refused", Array("{\"containerID\":".utf8)), ("missing fields are refused", Array("{}".utf8))] {
            let o = ops
            do {
                _ = try ex.runSync { try o.callRaw(.add, raw) }
                add(label, false, "ADD accepted invalid input")
            } catch let e as BerthError {
                add(label, e.status == .invalidArgument, "returned \(e.statusName): \(e.message)")
            } catch { add(label, false, "\(error)") }
        }
        out += identityCase(inst, executor: ex)
        out += batchCases(inst, executor: ex, makeInstance: makeInstance)
        guard extended else { return out }
        func addrs(_ r: JSON) -> [String] { (r["ips"]?.array ?? []).compactMap { $0["address"]?.string } }
        func bare(_ a: String) -> String { String(a.split(separator: "/").first ?? Substring(a)) }
        func gcAll() { _ = call(.gc, ["network": "check", "valid": .array([])]) }
        let base: JSON = ["network": "check", "ifname": "eth0", "node": "check-node"]
        func req(_ cid: String) -> JSON { base.setting("containerID", .string(cid)) }
        gcAll()

        // No duplicates under concurrency: ADDs from 4 threads at once, group-committed by the executor.
        do {
            let lock = NSLock()
            var got: [(String, Result<JSON, BerthError>)] = []
            let o = ops
            DispatchQueue.concurrentPerform(iterations: 4) { t in
                for k in 0..<8 {
                    let cid = "concurrent-\(t)-\(k)"
                    let r: Result<JSON, BerthError>
                    do { r = .success(try ex.runSync { try o.add(req(cid)) }) } catch let e as BerthError { r = .failure(e) } catch {
                        r = .failure(BerthError(plugin: o.instance.name, operation: "add", status: .internal, message: "\(error)"))
                    }
                    lock.lock(); got.append((cid, r)); lock.unlock()
                }
            }
            var owner: [String: String] = [:]
            var problems: [String] = []
            var exhausted = 0
            for (cid, r) in got {
                switch r {
                case .success(let j):
                    let a = addrs(j)
                    if a.isEmpty { problems.append("\(cid): OK with no ips[].address") }
                    for x in a.map(bare) {
                        if let o = owner[x] { problems.append("\(x) handed to both \(o) and \(cid)") } else { owner[x] = cid }
                    }
                case .failure(let e) where e.status == .resourceExhausted: exhausted += 1
                case .failure(let e): problems.append("\(cid): \(e.statusName): \(e.message)")
                }
            }
            if owner.count < 2 && problems.isEmpty { problems.append("fewer than two concurrent ADDs succeeded (configure a pool of at least a few addresses)") }
            add("no duplicates under concurrency", problems.isEmpty,
                problems.isEmpty ? "32 ADDs from 4 threads: \(owner.count) distinct addresses, \(exhausted) RESOURCE_EXHAUSTED"
                    : problems.prefix(3).joined(separator: "; "))
            gcAll()
        }

        // Release policies: an immutable identity keeps its address across a non-final DEL.
        do {
            let identity: JSON = ["app": "check-app", "ordinal": 0, "releasePolicy": "immutable"]
            switch call(.add, req("identity-1").setting("identity", identity)) {
            case .failure(let e) where e.status == .unimplemented || e.status == .invalidArgument:
                out.append(.skip("network: release policies", "the plugin refuses the immutable release policy (\(e.statusName): \(e.message)); stateful apps with releasePolicy immutable or never cannot use this network"))
            case .failure(let e):
                add("release policies", false, "ADD with identity {app, ordinal, releasePolicy: immutable}: \(e.statusName): \(e.message)")
            case .success(let r):
                let a = Set(addrs(r).map(bare))
                var problems: [String] = []
                var ignored = false
                if case .failure(let e) = call(.del, req("identity-1").setting("final", false)) { problems.append("non-final DEL: \(e.statusName)") }
                var other = Set<String>()
                if case .success(let o) = call(.add, req("identity-other")) { other = Set(addrs(o).map(bare)) }
                switch call(.add, req("identity-2").setting("identity", identity)) {
                case .success(let r2):
                    let b = Set(addrs(r2).map(bare))
                    if b == a {
                        if !other.isDisjoint(with: a) { problems.append("a container without the identity got its reserved address \(other.intersection(a).sorted().joined(separator: ", "))") }
                    } else if !other.isDisjoint(with: a) {
                        // The plugin behaves exactly as if no identity had been sent: identities are optional.
                        ignored = true
                    } else {
                        problems.append("re-ADD of the identity got \(b.sorted().joined(separator: ", ")), first \(a.sorted().joined(separator: ", "))")
                    }
                case .failure(let e): problems.append("re-ADD of the identity: \(e.statusName): \(e.message)")
                }
                if case .failure(let e) = call(.del, req("identity-2").setting("final", true)) { problems.append("final DEL: \(e.statusName)") }
                _ = call(.del, req("identity-other"))
                if problems.isEmpty && ignored {
                    out.append(.skip("network: release policies", "the plugin ignores the release policy (the released address went to another container): refuse ADDs whose identity.releasePolicy is immutable or never with INVALID_ARGUMENT to make that explicit; keep accepting onDelete"))
                } else {
                    add("release policies", problems.isEmpty, !problems.isEmpty ? problems.joined(separator: "; ")
                        : "immutable identity kept \(a.sorted().joined(separator: ", ")) across a non-final DEL; final DEL OK")
                }
            }
            gcAll()
        }

        // No address is ever held by two live attachments: neither an identity re-added while its old attachment is
        // still there (it may move only after that one is released) nor a request naming an address in use.
        do {
            let identity: JSON = ["app": "check-dup", "ordinal": 0, "releasePolicy": "immutable"]
            let name = "no address shared by two live attachments"
            switch call(.add, req("dup-old").setting("identity", identity)) {
            case .failure(let e):
                add(name, e.status == .unimplemented || e.status == .invalidArgument, "ADD with an identity: \(e.statusName): \(e.message)")
            case .success(let r):
                let held = Set(addrs(r).map(bare))
                var problems: [String] = []
                var notes: [String] = []
                switch call(.add, req("dup-new").setting("identity", identity)) {
                case .success(let r2):
                    let shared = held.intersection(addrs(r2).map(bare))
                    if !shared.isEmpty {
                        problems.append("a second ADD of the identity got \(shared.sorted().joined(separator: ", ")) while dup-old (not deleted) holds it; refuse it until the old attachment is released")
                    } else { notes.append("second ADD of the identity got other addresses") }
                case .failure(let e): notes.append("second ADD of the identity refused (\(e.statusName))")
                }
                if case .failure(let e) = call(.check, req("dup-old")) {
                    problems.append("dup-old no longer checks after the second ADD (\(e.statusName)): its address moved while it was live")
                }
                if let a = held.sorted().first {
                    switch call(.add, req("dup-named").setting("ips", [.string(a)])) {
                    case .success(let r3) where !held.isDisjoint(with: addrs(r3).map(bare)):
                        problems.append("an ADD naming \(a) got it while dup-old holds it")
                    case .success: notes.append("an ADD naming \(a) got another address")
                    case .failure(let e): notes.append("an ADD naming \(a) refused (\(e.statusName))")
                    }
                }
                add(name, problems.isEmpty, problems.isEmpty ? notes.joined(separator: "; ") : problems.joined(separator: "; "))
            }
            for c in ["dup-old", "dup-new", "dup-named"] { _ = call(.del, req(c).setting("final", true)) }
            gcAll()
        }

        // Huge input: a 4 MiB request is answered with a status (OK or an error), without a crash.
        do {
            let huge = req("huge-input").setting("annotations", .string(String(repeating: "x", count: 4 << 20)))
            switch call(.add, huge) {
            case .success: add("huge input", true, "4 MiB ADD answered OK")
            case .failure(let e) where e.message.contains("crashed") || e.message.contains("exited") || e.message.contains("timed out"):
                add("huge input", false, "4 MiB ADD: \(e.statusName): \(e.message)")
            case .failure(let e): add("huge input", true, "4 MiB ADD refused: \(e.statusName)")
            }
            _ = call(.del, req("huge-input"))
            gcAll()
        }

        // Exhaustion: distinct containers until RESOURCE_EXHAUSTED, never a duplicate.
        do {
            var note: String?
            if ops.has(.capacity), case .success(let c) = call(.capacity, ["network": "check", "node": .null]),
               let free = c["free"]?.double, free > Double(exhaustionBound) {
                note = "capacity reports \(Int(free)) free"
            }
            if let note {
                out.append(.skip("network: exhaustion", "pool larger than the bound (\(note)); configure a small pool to test exhaustion"))
            } else {
                var owner: [String: String] = [:]
                var verdict: (Bool, String)?
                let deadline = monotonicNanos() + exhaustionSeconds * 1_000_000_000
                var n = 0
                while verdict == nil && n < exhaustionBound && monotonicNanos() < deadline {
                    n += 1
                    let cid = "exhaust-\(n)"
                    switch call(.add, req(cid)) {
                    case .success(let r):
                        let a = addrs(r).map(bare)
                        if a.isEmpty { verdict = (false, "ADD #\(n) returned OK with no ips[].address; a full pool must return RESOURCE_EXHAUSTED") }
                        for x in a {
                            if let o = owner[x] { verdict = (false, "ADD #\(n) handed out \(x) again (already held by \(o))") } else { owner[x] = cid }
                        }
                    case .failure(let e) where e.status == .resourceExhausted:
                        verdict = e.message.isEmpty ? (false, "RESOURCE_EXHAUSTED after \(n - 1) ADDs but with no message")
                            : (true, "RESOURCE_EXHAUSTED after \(n - 1) ADDs (\(owner.count) distinct addresses): \(e.message)")
                    case .failure(let e): verdict = (false, "ADD #\(n): \(e.statusName): \(e.message); want RESOURCE_EXHAUSTED when the pool is full")
                    }
                }
                let v = verdict ?? (true, "pool larger than the bound (\(n) ADDs, \(owner.count) distinct addresses); configure a small pool to test exhaustion")
                add("exhaustion", v.0, v.1)
            }
            gcAll()
        }

        // State survives a new instance: destroy the instance, create one with the same name on the same store.
        do {
            let s = req("survivor")
            switch call(.add, s) {
            case .failure(let e): add("state survives a new instance", false, "ADD before the restart: \(e.statusName): \(e.message)")
            case .success(let before):
                guard let renew else { out.append(.skip("network: state survives a new instance", "no way to create a new instance here")); break }
                do {
                    inst = try renew()
                    ops = inst.networkOps!
                    switch call(.check, s) {
                    case .failure(let e): add("state survives a new instance", false, "CHECK in a new instance: \(e.statusName): \(e.message)")
                    case .success:
                        if case .success(let again) = call(.add, s), Set(addrs(again).map(bare)) != Set(addrs(before).map(bare)) {
                            add("state survives a new instance", false, "repeated ADD in a new instance got \(addrs(again)), before \(addrs(before))")
                        } else {
                            add("state survives a new instance", true, "the new instance confirms the attachment made before")
                        }
                    }
                } catch {
                    add("state survives a new instance", false, "creating a new instance: \(error)")
                    return out
                }
            }
            gcAll()
        }
        return out
    }
}
