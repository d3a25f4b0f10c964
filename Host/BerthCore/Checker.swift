// `berth plugin check`: loads a plugin exactly as berthd does (same loader, same store, same executor, in a
// temporary state directory), then runs the conformance cases of each kind it declares.
import BerthPluginABI
import BerthWire
import Foundation

public struct CheckCase: Sendable {
    public let name: String
    public let passed: Bool
    public let detail: String
}

public struct CheckReport {
    public var plugin: LoadedPlugin?
    public var cases: [CheckCase] = []
    public var passed: Int { cases.filter { $0.passed }.count }
    public var failed: Int { cases.filter { !$0.passed }.count }
    public var json: JSON {
        ["plugin": plugin?.info ?? .null, "passed": .number(Double(passed)), "failed": .number(Double(failed)),
         "cases": .array(cases.map { ["name": .string($0.name), "result": .string($0.passed ? "pass" : "fail"), "detail": .string($0.detail)] })]
    }
}

public enum PluginChecker {
    public static func check(path: String, name: String? = nil, config: JSON = .object([]), kind: String? = nil) -> CheckReport {
        var report = CheckReport()
        func add(_ n: String, _ ok: Bool, _ d: String) { report.cases.append(CheckCase(name: n, passed: ok, detail: d)) }
        let dir = NSTemporaryDirectory() + "berth-check-\(getpid())-\(monotonicNanos())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = URL(fileURLWithPath: path).lastPathComponent
        let guess = base.hasPrefix("libberth-") && base.hasSuffix(".so") ? String(base.dropFirst(9).dropLast(3)) : "plugin"
        var spec = PluginSpec(name: name ?? guess, path: path, config: config)
        spec.enabled = true
        let store: Store
        do {
            try makeDirectories(dir, mode: 0o700)
            store = try Store(path: "\(dir)/state.db", synchronous: "normal")
        } catch {
            add("state", false, "cannot create a temporary state store: \(error)")
            return report
        }
        let executor = Executor(store: store)
        executor.start()
        defer { executor.stop() }
        let loader = Loader(copyDir: "\(dir)/plugins")
        let loaded: LoadedPlugin
        do {
            loaded = try loader.load(spec)
            report.plugin = loaded
            if name == nil { spec.name = loaded.name }
            add("load", true, "dlopen(RTLD_NOW|RTLD_LOCAL) of the content-addressed copy, entry berth_plugin_entry_v1")
            add("descriptor", true, "ABI 1.\(loaded.abiMinor), kinds \(loaded.kinds), \(loaded.concurrent ? "concurrent" : "serial")")
        } catch let e as LoadError {
            add("load", false, e.reason)
            return report
        } catch {
            add("load", false, "\(error)")
            return report
        }
        let instance: PluginInstance
        do {
            instance = try loader.instantiate(loaded, spec: spec, executor: executor, log: { _, _ in })
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
            switch k {
            case "network" where loaded.kinds.contains(.network):
                for c in NetworkConformance.run(instance, executor: executor) { report.cases.append(c) }
            case "scheduler" where loaded.kinds.contains(.scheduler):
                for c in SchedulerConformance.run(instance) { report.cases.append(c) }
            case "storage" where loaded.kinds.contains(.storage): report.cases += StorageConformance.run(instance, executor: executor, scratch: dir)
            case "discovery" where loaded.kinds.contains(.discovery): report.cases += DiscoveryConformance.run(instance, executor: executor, config: spec.config)
            case "network", "storage", "scheduler", "discovery":
                if loaded.kinds.names.contains(k) {
                    add("\(k) suite", true, "no conformance cases for this kind in this version of berth")
                } else {
                    add("\(k) suite", false, "the plugin does not declare the \(k) kind")
                }
            default:
                add("kind", false, "unknown kind \"\(k)\" (network, storage, scheduler, discovery)")
            }
        }
        instance.destroy()
        add("destroy", true, "instance destroyed")
        return report
    }
}

/// Network conformance: CNI semantics the host relies on.
enum NetworkConformance {
    static func run(_ inst: PluginInstance, executor ex: Executor) -> [CheckCase] {
        var out: [CheckCase] = []
        let ops = inst.network!.pointee
        func call(_ op: String, _ fn: berth_json_op?, _ req: JSON) -> Result<JSON, PluginCallError> {
            do { return .success(try ex.runSync { try inst.callObject(op, fn, req) }) } catch let e as PluginCallError { return .failure(e) } catch {
                return .failure(PluginCallError(plugin: inst.name, operation: op, status: 13, message: "\(error)"))
            }
        }
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "network: \(n)", passed: ok, detail: d)) }
        let a1: JSON = ["network": "check", "containerID": "conformance-1", "ifname": "eth0", "node": "check-node"]
        let first = call("add", ops.add, a1)
        guard case .success(let r1) = first else {
            if case .failure(let e) = first { add("add", false, "\(e.statusName): \(e.message) (configure the plugin with an allocatable pool: --config)") }
            return out
        }
        let ips = (r1["ips"]?.array ?? []).compactMap { $0["address"]?.string }
        add("add", !ips.isEmpty, ips.isEmpty ? "result has no ips[].address" : "allocated \(ips.joined(separator: ", "))")
        if case .success(let r2) = call("add", ops.add, a1) {
            add("add is idempotent", r2 == r1, r2 == r1 ? "same key returned the same result" : "second ADD returned \(r2.serialized), first \(r1.serialized)")
        } else { add("add is idempotent", false, "second ADD of the same key failed") }
        let a2 = a1.setting("containerID", "conformance-2")
        if case .success(let r3) = call("add", ops.add, a2) {
            let ips3 = (r3["ips"]?.array ?? []).compactMap { $0["address"]?.string }
            add("no duplicate addresses", Set(ips3).isDisjoint(with: ips), "second container got \(ips3.joined(separator: ", "))")
        } else { add("no duplicate addresses", false, "ADD for a second container failed") }
        switch call("check", ops.check, a1) {
        case .success: add("check", true, "reservation confirmed")
        case .failure(let e): add("check", false, e.description)
        }
        if case .failure(let e) = call("check", ops.check, a1.setting("containerID", "conformance-unknown")) {
            add("check of unknown attachment", e.status == 5, "returned \(e.statusName)")
        } else { add("check of unknown attachment", false, "returned OK; want NOT_FOUND") }
        for (label, req) in [("del", a1), ("del twice", a1), ("del of unknown attachment", a1.setting("containerID", "never-added"))] {
            switch call("del", ops.del, req) {
            case .success: add(label, true, "OK")
            case .failure(let e): add(label, false, e.description)
            }
        }
        switch call("gc", ops.gc, ["network": "check", "valid": .array([])]) {
        case .success:
            if case .failure(let e) = call("check", ops.check, a2) { add("gc releases unlisted", e.status == 5, "after gc, check returned \(e.statusName)") } else {
                add("gc releases unlisted", false, "attachment still checks OK after gc with an empty valid list")
            }
        case .failure(let e): add("gc", false, e.description)
        }
        switch call("status", ops.status, ["network": "check"]) {
        case .success: add("status", true, "OK")
        case .failure(let e): add("status", e.status == 8, e.description)
        }
        for (label, raw) in [("malformed JSON is refused", Array("{\"containerID\":".utf8)), ("missing fields are refused", Array("{}".utf8))] {
            do {
                _ = try ex.runSync { try inst.callJSON("add", ops.add, raw) }
                add(label, false, "ADD accepted invalid input")
            } catch let e as PluginCallError {
                add(label, e.status == 3, "returned \(e.statusName): \(e.message)")
            } catch { add(label, false, "\(error)") }
        }
        return out
    }
}

/// Scheduler conformance: filter honoured, scores in range, deterministic.
enum SchedulerConformance {
    static func run(_ inst: PluginInstance) -> [CheckCase] {
        var out: [CheckCase] = []
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "scheduler: \(n)", passed: ok, detail: d)) }
        let n = 64
        let batch = NodeBatch(count: n) { i in (name: "node-\(i)", zone: UInt32(i % 3 + 1), cpu: Int64(i % 5 == 0 ? -1 : i * 500), mem: 1 << 30) }
        var codes = [UInt8](repeating: 255, count: n)
        var scores = [Int64](repeating: -1, count: n)
        var scores2 = [Int64](repeating: -1, count: n)
        do {
            try batch.with(kind: inst.plugin.schedulerKind ?? "", app: "check", ordinal: 0) { i, b in
                try codes.withUnsafeMutableBufferPointer { try inst.filter(i, b, codes: $0.baseAddress!) }
                try scores.withUnsafeMutableBufferPointer { try inst.score(i, b, scores: $0.baseAddress!) }
                try scores2.withUnsafeMutableBufferPointer { try inst.score(i, b, scores: $0.baseAddress!) }
            }
            add("filter writes a code per node", codes.allSatisfy { $0 <= 5 }, "codes \(Set(codes).sorted())")
            add("scores in 0..100", scores.allSatisfy { (0...100).contains($0) }, "min \(scores.min()!), max \(scores.max()!)")
            add("deterministic", scores == scores2, scores == scores2 ? "same scores for the same input" : "two runs differ")
        } catch {
            add("filter/score", false, "\(error)")
        }
        return out
    }
}
