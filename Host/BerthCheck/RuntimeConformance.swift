// Runtime conformance (`berth plugin check` of a runtime plugin): the idempotency and error rules of
// sdk-docs/kinds/runtime.md that the node agent relies on, exercised with real instances started from `--rootfs`.
import BerthPlugins
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

enum RuntimeConformance {
    static func run(_ inst: PluginInstance, rootfs: String?) -> [CheckCase] {
        var out: [CheckCase] = []
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "runtime: \(n)", passed: ok, detail: d)) }
        guard let rt = RuntimePlugin(inst) else {
            add("table", false, "the plugin declares the runtime kind but the host found no runtime table")
            return out
        }
        add("table", true, "start, stop, state, list, remove present; exec \(rt.executes ? "present" : "absent (optional)")")
        let tag = "\(getpid())"
        let unknown = "berth-check-unknown-\(tag)"
        // Teardown never fails for lack of something to tear down.
        do {
            let s = try rt.stop(unknown, graceSeconds: 0)
            add("stop of an unknown id succeeds", s.id == unknown && !s.isRunning, "answered \(s.raw.serialized)")
        } catch { add("stop of an unknown id succeeds", false, "\(error)") }
        do {
            try rt.remove(unknown)
            add("remove of an unknown id succeeds", true, "OK")
        } catch { add("remove of an unknown id succeeds", false, "\(error)") }
        expectStatus(rt, "state of an unknown id is NOT_FOUND", .notFound, &out) { _ = try rt.state(unknown) }
        expectStatus(rt, "a malformed id is INVALID_ARGUMENT", .invalidArgument, &out) { _ = try rt.state("../escape") }
        guard let rootfs else {
            out.append(.skip("runtime: instance lifecycle", "give --rootfs DIR (a root filesystem with /bin/sleep) to start test instances"))
            return out
        }
        lifecycle(rt, rootfs: rootfs, id: "berth-check-\(tag)", &out)
        badSpecs(rt, rootfs: rootfs, tag: tag, &out)
        return out
    }

    /// start → start again → state → list → stop → stop again → remove → remove again, on one instance.
    static func lifecycle(_ rt: RuntimePlugin, rootfs: String, id: String, _ out: inout [CheckCase]) {
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "runtime: \(n)", passed: ok, detail: d)) }
        defer { try? rt.remove(id, force: true) }
        var spec = RuntimeStartSpec(id: id, rootfs: rootfs, command: "/bin/sleep")
        spec.args = ["600"]
        let first: RuntimeState
        do {
            first = try rt.start(spec)
            add("start", first.phase == .running && first.pid > 0, "answered \(first.raw.serialized)")
        } catch {
            add("start", false, "\(error) (the rootfs needs /bin/sleep)")
            return
        }
        do {
            let again = try rt.start(spec)
            add("start is idempotent", again.phase == .running && again.pid == first.pid,
                "second start answered pid \(again.pid) \(again.phase.rawValue); first pid \(first.pid)")
        } catch { add("start is idempotent", false, "\(error)") }
        var other = spec
        other.args = ["601"]
        expectStatus(rt, "start with a different spec is ALREADY_EXISTS", .alreadyExists, &out) { _ = try rt.start(other) }
        do {
            let s = try rt.state(id)
            add("state", s.phase == .running && s.pid == first.pid, "answered \(s.raw.serialized)")
        } catch { add("state", false, "\(error)") }
        do {
            let all = try rt.list()
            let found = all.first { $0.id == id }
            add("list finds a started instance", found?.phase == .running, "list has \(all.map { "\($0.id)=\($0.phase.rawValue)" }.joined(separator: ", "))")
        } catch { add("list finds a started instance", false, "\(error)") }
        expectStatus(rt, "remove of a running instance without force is FAILED_PRECONDITION", .failedPrecondition, &out) { try rt.remove(id) }
        do {
            let s = try rt.stop(id, graceSeconds: 1)
            add("stop", s.phase == .exited && s.exitCode != nil, "answered \(s.raw.serialized)")
            let again = try rt.stop(id, graceSeconds: 1)
            add("stop is idempotent", again.phase == .exited && again.exitCode == s.exitCode, "second stop answered \(again.raw.serialized)")
        } catch { add("stop", false, "\(error)") }
        do {
            try rt.remove(id)
            try rt.remove(id)
            let gone = try rt.list().allSatisfy { $0.id != id }
            add("remove is idempotent", gone, gone ? "removed twice; list no longer has it" : "list still has \(id) after remove")
        } catch { add("remove is idempotent", false, "\(error)") }
        expectStatus(rt, "state after remove is NOT_FOUND", .notFound, &out) { _ = try rt.state(id) }
    }

    /// Bad specs are INVALID_ARGUMENT and leave nothing behind (the id is not listed afterwards).
    static func badSpecs(_ rt: RuntimePlugin, rootfs: String, tag: String, _ out: inout [CheckCase]) {
        let id = "berth-check-bad-\(tag)"
        let good = RuntimeStartSpec(id: id, rootfs: rootfs, command: "/bin/sleep").json
        let cases: [(String, JSON)] = [
            ("missing rootfs", good.removing("rootfs")),
            ("a rootfs that does not exist", good.setting("rootfs", .string(rootfs + "/no-such-dir-\(tag)"))),
            ("a command not in the rootfs", good.setting("command", "/no/such/command")),
            ("a negative memory limit", good.setting("resources", ["memoryBytes": .int(-1)])),
        ]
        for (what, req) in cases {
            let name = "a bad spec (\(what)) is INVALID_ARGUMENT and leaves nothing"
            defer { try? rt.remove(id, force: true) }
            do {
                let s = try rt.start(raw: req)
                out.append(CheckCase(name: "runtime: \(name)", passed: false, detail: "start succeeded: \(s.raw.serialized)"))
            } catch let e as BerthError {
                let listed = (try? rt.list().contains { $0.id == id }) ?? true
                let ok = e.status == .invalidArgument && !listed
                out.append(CheckCase(name: "runtime: \(name)", passed: ok,
                                     detail: "\(e.statusName): \(e.message)\(listed ? " (but the id is still listed)" : "")"))
            } catch {
                out.append(CheckCase(name: "runtime: \(name)", passed: false, detail: "\(error)"))
            }
        }
    }

    static func expectStatus(_ rt: RuntimePlugin, _ name: String, _ want: BerthStatus, _ out: inout [CheckCase], _ body: () throws -> Void) {
        do {
            try body()
            out.append(CheckCase(name: "runtime: \(name)", passed: false, detail: "succeeded; want \(want.name)"))
        } catch let e as BerthError {
            out.append(CheckCase(name: "runtime: \(name)", passed: e.status == want, detail: "\(e.statusName): \(e.message)"))
        } catch {
            out.append(CheckCase(name: "runtime: \(name)", passed: false, detail: "\(error)"))
        }
    }
}
