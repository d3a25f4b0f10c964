// One process-isolated instance, daemon side: the call path over the runner's socket (serving the runner's
// host-service requests while a call is in flight) and the supervision of its runner (deaths, backoff, restarts).
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// One instance living in a runner: the socket, the supervision state, and the trampolines' implementation.
final class RemoteConnection: @unchecked Sendable {
    let plugin: RemotePlugin
    var name: String { plugin.spec.name }
    var runner: RunnerProcess?
    /// The host services of the instance (valid until destroy), and its configuration for re-creation.
    var host: UnsafePointer<berth_host_services>?
    var config: [UInt8]
    private var callLock = pthread_mutex_t()
    private let state = PthreadLock()
    private var deaths: [UInt64] = []
    private var crashes: UInt64 = 0
    private var failed: String?
    private var lastDeath = ""
    private var restartAt: UInt64 = 0
    private var destroyed = false

    static let window: UInt64 = 60_000_000_000
    static let maxDeaths = 5

    init(plugin: RemotePlugin, host: UnsafePointer<berth_host_services>?, config: [UInt8]) {
        self.plugin = plugin
        self.host = host
        self.config = config
        pthread_mutex_init(&callLock, nil)
    }

    var failedReason: String? { state.with { failed } }
    var crashCount: UInt64 { state.with { crashes } }
    var runnerPid: pid_t? { state.with { runner?.pid } }

    func log(_ level: berth_log_level, _ msg: String) {
        guard let h = host?.pointee, let f = h.log else { return }
        msg.withCString { f(h.host_ctx, level, $0, strlen($0)) }
    }

    // MARK: the call path

    enum Outcome {
        case result(berth_status, String, UInt8, [UInt8])  // status, error message, flags, output
        case failed(berth_status, String)
    }

    /// Sends one request frame and serves the runner's host-service requests until its RESULT arrives, the
    /// runner dies, or the deadline passes.
    private func exchange(_ frame: [UInt8], op: String) -> Outcome {
        guard let r = runner else { return .failed(BERTH_UNAVAILABLE, "plugin \"\(name)\" has no runner") }
        let deadline = monotonicNanos() + UInt64(plugin.callTimeoutMs) * 1_000_000
        if !r.channel.send(frame) { return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false)) }
        while true {
            switch r.channel.receive(deadline: deadline) {
            case .timeout:
                return .failed(BERTH_UNAVAILABLE, died(op, timedOut: true))
            case .closed(let why):
                return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: why))
            case .frame(.result, let payload):
                do {
                    return try payload.withUnsafeBytes { b in
                        var rd = WireReader(b)
                        let st = berth_status(rawValue: try rd.u32())
                        let msg = try rd.string() ?? ""
                        let flags = try rd.u8()
                        return .result(st, msg, flags, Array(rd.rest()))
                    }
                } catch {
                    return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: "\(error)"))
                }
            case .frame(let type, let payload):
                do { try serve(type, payload, r) } catch {
                    return .failed(BERTH_UNAVAILABLE, died(op, timedOut: false, protocolError: "\(error)"))
                }
            }
        }
    }

    /// A host-service request from the runner, answered with the real services table of the instance.
    private func serve(_ type: FrameType, _ payload: [UInt8], _ r: RunnerProcess) throws {
        guard let h = host?.pointee else { throw FrameError(description: "host service request before create") }
        try payload.withUnsafeBytes { b in
            var rd = WireReader(b)
            func reply(_ st: berth_status, _ extra: (inout WireWriter) -> Void = { _ in }) {
                var w = WireWriter(.reply)
                w.u32(st.rawValue)
                extra(&w)
                r.channel.send(w.finish())
            }
            func ptr(_ x: UnsafeRawBufferPointer) -> UnsafePointer<CChar>? { x.baseAddress?.assumingMemoryBound(to: CChar.self) }
            switch type {
            case .log:
                let level = berth_log_level(rawValue: UInt32(try rd.u8()))
                let msg = rd.rest()
                h.log?(h.host_ctx, level, ptr(msg), msg.count)
            case .kvGet:
                let key = rd.rest()
                let sink = OutputSink(limit: Int.max)
                let st = sink.with { out in h.kv_get?(h.host_ctx, ptr(key), key.count, out) ?? BERTH_INTERNAL }
                reply(st) { w in if st == BERTH_OK { sink.bytes.withUnsafeBytes { w.raw($0) } } }
            case .kvPut:
                let key = try rd.blob()
                let value = rd.rest()
                reply(h.kv_put?(h.host_ctx, ptr(key), key.count, ptr(value), value.count) ?? BERTH_INTERNAL)
            case .kvDelete:
                let key = rd.rest()
                reply(h.kv_delete?(h.host_ctx, ptr(key), key.count) ?? BERTH_INTERNAL)
            case .kvNext:
                let want = try rd.u8()
                let prefix = try rd.blob()
                let after = rd.rest()
                let ks = OutputSink(limit: Int.max), vs = OutputSink(limit: Int.max)
                let st = ks.with { kp in
                    vs.with { vp in
                        h.kv_next?(h.host_ctx, ptr(prefix), prefix.count, ptr(after), after.count,
                                   want & 1 != 0 ? kp : nil, want & 2 != 0 ? vp : nil) ?? BERTH_INTERNAL
                    }
                }
                reply(st) { w in
                    if st == BERTH_OK {
                        ks.bytes.withUnsafeBytes { w.blob($0) }
                        vs.bytes.withUnsafeBytes { w.raw($0) }
                    }
                }
            case .event:
                let t = try rd.string() ?? ""
                let json = rd.rest()
                let st = t.withCString { h.emit_event?(h.host_ctx, $0, ptr(json), json.count) ?? BERTH_INTERNAL }
                reply(st)
            case .onComplete, .kvLen, .kvCountPrefix, .kvDeletePrefix:
                try serveV12(type, &rd, h, r, reply)
            case .eventAsync:
                // From a plugin thread outside any call: appended in its own transaction, like in process.
                let t = try rd.string() ?? ""
                let json = Array(rd.rest())
                let hostPtr = host
                Detached.run {
                    guard let h = hostPtr?.pointee else { return }
                    _ = t.withCString { tp in json.withUnsafeBufferPointer { j in
                        h.emit_event?(h.host_ctx, tp, UnsafeRawPointer(j.baseAddress)?.assumingMemoryBound(to: CChar.self), j.count)
                    } }
                }
            default:
                throw FrameError(description: "unexpected frame \(type) from the runner")
            }
        }
    }

    /// Runs the runner's completion callback `id` (registered by runner `pid`): dropped when that runner is gone
    /// (its callbacks died with it; the re-created instance recovers from its namespace).
    func fireCompletion(pid: pid_t, id: UInt64, committed: Bool) {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        guard !destroyed, let r = runner, r.pid == pid else { return }
        var w = WireWriter(.complete, capacity: 9)
        w.u64(id)
        w.u8(committed ? 1 : 0)
        if case .failed(_, let msg) = exchange(w.finish(), op: committed ? "after_commit" : "after_rollback") { log(BERTH_LOG_ERROR, msg) }
    }

    /// The runner is gone (EOF, timeout or protocol error): reap it, account for the death, and say what happened.
    private func died(_ op: String, timedOut: Bool, protocolError: String? = nil) -> String {
        guard let r = runner else { return "plugin \"\(name)\" has no runner" }
        if timedOut || protocolError != nil { r.kill9() }
        let st = r.reap()
        let sig = st & 0x7f
        let cause: String
        if timedOut {
            cause = "timed out after \(plugin.callTimeoutMs) ms during \(op)"
        } else if let p = protocolError, !(sig != 0 && sig != 0x7f && sig != SIGKILL) {
            cause = "runner broke the protocol during \(op) (\(p)) and was killed"
        } else if sig != 0 && sig != 0x7f {
            cause = "crashed (\(signalName(sig))) during \(op)"
        } else {
            cause = "runner exited with status \((st >> 8) & 0xff) during \(op)"
        }
        let now = monotonicNanos()
        var msg = "plugin \"\(name)\" \(cause)"
        state.with {
            runner = nil
            crashes += 1
            deaths = deaths.filter { now - $0 < Self.window } + [now]
            lastDeath = cause
            if deaths.count >= Self.maxDeaths {
                failed = "plugin \"\(name)\" failed: crashed \(deaths.count) times in \(Self.window / 1_000_000_000)s (last: \(cause)); `berth plugins reload \(name)` retries it"
                msg += "; \(failed!)"
            } else {
                // Backoff: the first restart is immediate, then 100 ms, 200 ms, 400 ms ... (at most 5 s).
                let k = deaths.count
                restartAt = k <= 1 ? 0 : now + min(100_000_000 << UInt64(k - 2), 5_000_000_000)
                msg += timedOut ? "; the runner was killed and restarts on the next call" : "; restarting"
            }
        }
        log(BERTH_LOG_ERROR, msg)
        return msg
    }

    /// Starts a new runner and re-creates the instance with its configuration (inside the caller's call, so the
    /// plugin's create() sees the caller's transaction). Nil on success, else the status and message to fail with.
    private func restart(before op: String) -> (berth_status, String)? {
        let now = monotonicNanos()
        let wait: UInt64 = state.with { restartAt > now ? restartAt - now : 0 }
        if wait > 0 {
            return (BERTH_UNAVAILABLE, "plugin \"\(name)\" is restarting after it \(state.with { lastDeath }); retry in \((wait + 999_999) / 1_000_000) ms")
        }
        let r: RunnerProcess
        do {
            (r, _) = try plugin.startRunner(pinned: true, log: { [weak self] l, m in self?.log(l, m) })
        } catch {
            let msg = "plugin \"\(name)\" cannot restart its runner: \(error)"
            state.with {
                deaths = deaths.filter { now - $0 < Self.window } + [now]
                restartAt = now + 1_000_000_000
                lastDeath = "could not be restarted"
                if deaths.count >= Self.maxDeaths { failed = "plugin \"\(name)\" failed: \(msg)" }
            }
            log(BERTH_LOG_ERROR, msg)
            return (BERTH_UNAVAILABLE, msg)
        }
        state.with { runner = r }
        switch exchange(createFrame(), op: "create (restart before \(op))") {
        case .failed(let st, let msg):
            return (st, msg)
        case .result(let st, let msg, _, _):
            if st != BERTH_OK {
                r.kill9()
                _ = r.reap()
                state.with { runner = nil }
                return (st, "plugin \"\(name)\" could not be re-created after a restart: \(msg)")
            }
        }
        log(BERTH_LOG_INFO, "runner restarted (pid \(r.pid))")
        return nil
    }

    func createFrame() -> [UInt8] {
        var w = WireWriter(.create, capacity: config.count)
        config.withUnsafeBytes { w.raw($0) }
        return w.finish()
    }

    /// One call: fail fast when failed, restart when needed, exchange, and map the result.
    func perform(_ op: String, _ frame: [UInt8], _ err: UnsafeMutablePointer<CChar>?, _ cap: Int,
                 _ done: (UnsafeRawBufferPointer) -> berth_status = { _ in BERTH_OK }) -> berth_status {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        if let f = failedReason { writeError(err, cap, f); return BERTH_UNAVAILABLE }
        if destroyed { writeError(err, cap, "plugin \"\(name)\" instance was destroyed"); return BERTH_FAILED_PRECONDITION }
        if runner == nil, let (st, msg) = restart(before: op) { writeError(err, cap, msg); return st }
        switch exchange(frame, op: op) {
        case .failed(let st, let msg):
            writeError(err, cap, msg)
            return st
        case .result(let st, let msg, let flags, let out):
            if flags & resultOutputOverflowed != 0 {
                writeError(err, cap, "output exceeds the limit of \(plugin.outputLimit) bytes")
                return BERTH_INTERNAL
            }
            if st != BERTH_OK {
                writeError(err, cap, msg)
                return st
            }
            return out.withUnsafeBytes { done($0) }
        }
    }

    /// Destroys the instance in its runner and lets the runner exit.
    func shutdown() {
        pthread_mutex_lock(&callLock)
        defer { pthread_mutex_unlock(&callLock) }
        guard !destroyed else { return }
        destroyed = true
        guard let r = runner else { return }
        var w = WireWriter(.destroy)
        if r.channel.send(w.finish()) {
            let deadline = monotonicNanos() + UInt64(plugin.callTimeoutMs) * 1_000_000
            loop: while true {
                switch r.channel.receive(deadline: deadline) {
                case .frame(.result, _), .timeout, .closed: break loop
                case .frame(let t, let p):
                    if t == .log || t == .eventAsync { try? serve(t, p, r) } else { break loop }
                }
            }
        }
        _ = r.reap(grace: 2_000_000_000)
        state.with { runner = nil }
    }
}
