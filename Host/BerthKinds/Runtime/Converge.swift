// The node agent's steps for one instance: ensure (start, reattach, restart per policy with backoff) and retire
// (stop with the grace period, remove, CNI DEL, delete the namespace), each emitting an event per transition; and
// the small per-instance records that keep restart counts and teardown facts across berthd restarts.
import BerthPlugins
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension NodeAgent {
    /// A run longer than this resets the restart backoff.
    static let stableSeconds = 10.0

    func ensure(_ r: PlacedRun, _ a: RuntimeState?, _ rt: RuntimePlugin) {
        var s = load(r.containerID)
        s.graceSeconds = r.graceSeconds
        s.subject = r.subject
        s.network = r.network
        if let p = a?.logPath { s.logPath = p }
        let now = Self.now()
        switch a?.phase {
        case nil:
            if now < s.notBefore { wake(at: s.notBefore); save(r.containerID, s, persist: false); return }
            startInstance(r, &s, rt, restart: false)
        case .running?, .created?:
            let a = a!
            if !s.attached || s.phase != "running" || s.pid != a.pid {
                if !s.attached {
                    event("runtime.reattached", r.subject, ["containerID": .string(r.containerID), "pid": .number(Double(a.pid)),
                                                            "restarts": .number(Double(s.restarts))])
                }
                s.attached = true
                s.phase = "running"
                s.pid = a.pid
                s.startedAt = a.startedAt
                s.reason = nil
                if s.runningSince == 0 { s.runningSince = now }
                save(r.containerID, s, persist: true)
            } else if s.streak > 0 && s.runningSince > 0 && now - s.runningSince > Self.stableSeconds {
                s.streak = 0
                save(r.containerID, s, persist: true)
            }
            if r.state == "placed" {
                do { try reportRunning(r) } catch { host.logger.warning("node agent: reporting \(r.subject) running: \(error)") }
            }
            if let h = r.health, a.isRunning { probeHealth(r, h, &s, rt, now: now) }
        case .exited?, .unknown?:
            exited(r, a!, &s, rt, now: now)
        }
    }

    /// An instance whose process ended: counted once, then restarted per policy after its backoff.
    private func exited(_ r: PlacedRun, _ a: RuntimeState, _ s: inout RunStatus, _ rt: RuntimePlugin, now: Double) {
        let mark = "\(a.finishedAt ?? "")/\(a.startedAt ?? "")/\(a.exitCode ?? -1)"
        let code = a.phase == .unknown ? nil : a.exitCode
        let restart = r.restartPolicy == "always" || (r.restartPolicy == "on-failure" && code != 0)
        if s.countedExit != mark {
            s.countedExit = mark
            s.lastExitCode = code
            s.pid = 0
            count { $0.exits += 1 }
            var d: JSON = ["containerID": .string(r.containerID), "exitCode": code.map { .number(Double($0)) } ?? .null,
                           "restartPolicy": .string(r.restartPolicy)]
            if let sig = a.signal { d = d.setting("signal", .number(Double(sig))) }
            if let why = a.reason { d = d.setting("reason", .string(why)) }
            event("runtime.exited", r.subject, d)
            if restart {
                s.phase = "restarting"
                s.notBefore = now + backoff(s.streak)
                s.reason = "exited with \(code.map { "code \($0)" } ?? "an unknown status"); restarting (policy \(r.restartPolicy))"
            } else {
                s.phase = "exited"
                s.reason = "exited with \(code.map { "code \($0)" } ?? "an unknown status"); not restarted (policy \(r.restartPolicy))"
            }
            save(r.containerID, s, persist: true)
        }
        guard restart else { return }
        if now < s.notBefore {
            wake(at: s.notBefore)
            save(r.containerID, s, persist: false)
            return
        }
        do { try rt.remove(r.containerID, force: true) } catch {
            host.logger.warning("node agent: removing exited \(r.containerID) before its restart: \(error)")
            return
        }
        startInstance(r, &s, rt, restart: true)
    }

    /// Namespace and CNI chain, then the runtime's start with the instance's identity in its environment.
    func startInstance(_ r: PlacedRun, _ s: inout RunStatus, _ rt: RuntimePlugin, restart: Bool) {
        let now = Self.now()
        do {
            records.write(r.containerID, s)  // before the namespace: its teardown needs the record
            try net.setUp(r)
            var spec = RuntimeStartSpec(id: r.containerID, rootfs: r.rootfs, command: r.command)
            spec.args = r.args
            spec.env = r.env.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                + [("BERTH_APP", r.app), ("BERTH_ORDINAL", String(r.ordinal)), ("BERTH_IP", r.ip ?? ""), ("BERTH_NODE", host.site.nodeName)]
            spec.workingDir = r.workingDir
            spec.hostname = "\(r.app)-\(r.ordinal)"
            spec.cpuMillis = r.cpuMillis
            spec.memoryBytes = r.memoryBytes
            spec.netns = NodeNet.netnsPath(r.containerID)
            spec.mounts = r.mounts
            let st = try rt.start(spec)
            s.phase = st.isRunning ? "running" : st.phase.rawValue
            s.pid = st.pid
            s.startedAt = st.startedAt
            s.logPath = st.logPath ?? s.logPath
            s.reason = nil
            s.notBefore = 0
            s.runningSince = now
            s.attached = true
            count { $0.starts += 1 }
            if restart {
                s.restarts += 1
                s.streak += 1
                count { $0.restarts += 1 }
            }
            // The event first: once the status shows the start, its event is committed.
            event(restart ? "runtime.restarted" : "runtime.started", r.subject,
                  ["containerID": .string(r.containerID), "pid": .number(Double(st.pid)), "ip": r.ip.map { .string($0) } ?? .null,
                   "restarts": .number(Double(s.restarts))])
            save(r.containerID, s, persist: true)
        } catch {
            let why = (error as? BerthError)?.message ?? "\(error)"
            let changed = s.reason != why
            s.phase = "failed"
            s.reason = why
            s.streak += 1
            s.notBefore = now + backoff(s.streak)
            wake(at: s.notBefore)
            count { $0.failures += 1 }
            save(r.containerID, s, persist: true)
            if changed { event("runtime.failed", r.subject, ["containerID": .string(r.containerID), "reason": .string(why)]) }
            host.logger.warning("node agent: starting \(r.subject) (\(r.containerID)): \(why)")
        }
    }

    /// Stops (grace period), removes, then CNI DEL and the namespace: the reverse of the start. `a` is nil for a
    /// namespace the runtime no longer has.
    func retire(_ id: String, _ a: RuntimeState?, _ rt: RuntimePlugin) {
        let s = load(id)
        let subject = s.subject.isEmpty ? id : s.subject
        do {
            var code: Int? = a?.exitCode
            if let a, a.isRunning {
                lock.withLock { statuses[id]?.phase = "stopping" }
                code = try rt.stop(id, graceSeconds: s.graceSeconds).exitCode
            }
            if a != nil { try rt.remove(id, force: true) }
            try net.tearDown(containerID: id, network: s.network)
            records.remove(id)
            lock.withLock { statuses[id] = nil }
            count { $0.stops += 1 }
            event("runtime.stopped", subject, ["containerID": .string(id), "exitCode": code.map { .number(Double($0)) } ?? .null])
        } catch {
            host.logger.warning("node agent: tearing down \(id): \(error)")
            wake(at: Self.now() + 1)
        }
    }
}

/// Per-instance records under the agent's directory: restart counts and what teardown needs (network, grace),
/// so that a restarted berthd keeps counting and can tear down what it no longer finds in the store.
struct RunRecords {
    let dir: String

    func read(_ id: String) -> RunStatus? {
        guard let d = FileManager.default.contents(atPath: "\(dir)/\(id).json"), let j = try? JSON.parse(Array(d)) else { return nil }
        var s = RunStatus()
        s.phase = j["phase"]?.string ?? "starting"
        s.restarts = j["restarts"]?.int ?? 0
        s.streak = j["streak"]?.int ?? 0
        s.lastExitCode = j["lastExitCode"]?.int
        s.countedExit = j["countedExit"]?.string
        s.graceSeconds = j["graceSeconds"]?.int ?? 10
        s.subject = j["subject"]?.string ?? ""
        s.network = j["network"]?.string
        s.pid = j["pid"]?.int ?? 0
        s.startedAt = j["startedAt"]?.string
        return s
    }

    func write(_ id: String, _ s: RunStatus) {
        var j: JSON = ["phase": .string(s.phase), "restarts": .number(Double(s.restarts)), "streak": .number(Double(s.streak)),
                       "graceSeconds": .number(Double(s.graceSeconds)), "subject": .string(s.subject), "pid": .number(Double(s.pid))]
        if let c = s.lastExitCode { j = j.setting("lastExitCode", .number(Double(c))) }
        if let c = s.countedExit { j = j.setting("countedExit", .string(c)) }
        if let n = s.network { j = j.setting("network", .string(n)) }
        if let t = s.startedAt { j = j.setting("startedAt", .string(t)) }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tmp = "\(dir)/.\(id).json.tmp"
        if FileManager.default.createFile(atPath: tmp, contents: Data(j.serialized.utf8)) { rename(tmp, "\(dir)/\(id).json") }
    }

    func remove(_ id: String) { unlink("\(dir)/\(id).json") }

    func has(_ id: String) -> Bool { FileManager.default.fileExists(atPath: "\(dir)/\(id).json") }
}
