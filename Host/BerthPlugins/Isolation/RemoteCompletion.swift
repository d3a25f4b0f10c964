// Process isolation for ABI 1.2: completion callbacks (on_complete) and kv_len / kv_count_prefix / kv_delete_prefix
// over the runner protocol of Remote.swift. A callback stays in the runner (its pointers mean nothing elsewhere): the
// runner registers it under an id, the daemon registers its own callback for that id with the instance's real host
// services, and when the operation commits or rolls back the daemon sends COMPLETE(id, committed) to the runner.
import BerthStore
import BerthPluginABI
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// What the daemon's callback needs to reach the runner's: the connection, the runner that registered it, the id.
final class RemoteCompletion {
    let connection: RemoteConnection
    let pid: pid_t
    let id: UInt64
    init(_ connection: RemoteConnection, _ pid: pid_t, _ id: UInt64) {
        self.connection = connection
        self.pid = pid
        self.id = id
    }
    /// Exactly one of the two runs, once: each releases the box.
    static let commit: @convention(c) (UnsafeMutableRawPointer?) -> Void = { arg in
        let b = Unmanaged<RemoteCompletion>.fromOpaque(arg!).takeRetainedValue()
        b.connection.fireCompletion(pid: b.pid, id: b.id, committed: true)
    }
    static let rollback: @convention(c) (UnsafeMutableRawPointer?) -> Void = { arg in
        let b = Unmanaged<RemoteCompletion>.fromOpaque(arg!).takeRetainedValue()
        b.connection.fireCompletion(pid: b.pid, id: b.id, committed: false)
    }
}

extension RemoteConnection {
    /// The daemon side of the runner's ABI 1.2 host-service requests, answered with the instance's real services.
    func serveV12(_ type: FrameType, _ rd: inout WireReader, _ h: berth_host_services, _ r: RunnerProcess,
                  _ reply: (berth_status, (inout WireWriter) -> Void) -> Void) throws {
        func ptr(_ x: UnsafeRawBufferPointer) -> UnsafePointer<CChar>? { x.baseAddress?.assumingMemoryBound(to: CChar.self) }
        switch type {
        case .onComplete:
            let id = try rd.u64()
            guard let f = h.on_complete else { reply(BERTH_UNIMPLEMENTED, { _ in }); return }
            let box = Unmanaged.passRetained(RemoteCompletion(self, r.pid, id))
            let st = f(h.host_ctx, RemoteCompletion.commit, RemoteCompletion.rollback, box.toOpaque())
            if st != BERTH_OK { box.release() }
            reply(st, { _ in })
        case .kvLen:
            let key = rd.rest()
            var n: UInt64 = 0
            let st = h.kv_len?(h.host_ctx, ptr(key), key.count, &n) ?? BERTH_UNIMPLEMENTED
            reply(st, { w in w.u64(n) })
        case .kvCountPrefix, .kvDeletePrefix:
            let prefix = rd.rest()
            var n: UInt64 = 0
            let f = type == .kvCountPrefix ? h.kv_count_prefix : h.kv_delete_prefix
            let st = f?(h.host_ctx, ptr(prefix), prefix.count, &n) ?? BERTH_UNIMPLEMENTED
            reply(st, { w in w.u64(n) })
        default:
            throw WireError(description: "unexpected frame \(type) from the runner")
        }
    }
}

extension PluginRunner {
    /// COMPLETE from the daemon: run the callback (outside any call: kv_* refuse) and answer with a RESULT.
    static func runCompletion(_ st: State, _ payload: [UInt8], _ err: UnsafeMutablePointer<CChar>) {
        let parsed: (UInt64, Bool)? = payload.withUnsafeBytes { b in
            var rd = WireReader(b)
            guard let id = try? rd.u64(), let c = try? rd.u8() else { return nil }
            return (id, c != 0)
        }
        guard let parsed else { exit(70) }
        let (id, committed) = parsed
        if let e = st.completions.removeValue(forKey: id) {
            if committed { e.commit?(e.arg) } else { e.rollback?(e.arg) }
        }
        sendResult(st, BERTH_OK, err, 0, nil)
    }

    /// One request frame carrying `body`, whose reply is a status and a u64.
    static func u64Request(_ type: FrameType, _ p: UnsafeRawPointer?, _ n: Int, _ out: UnsafeMutablePointer<UInt64>?) -> berth_status {
        let s = PluginRunner.state!
        guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
        var w = WireWriter(type, capacity: n)
        w.raw(p, n)
        s.ch.send(w.finish())
        let reply = s.awaitReply()
        return reply.withUnsafeBytes { b in
            var rd = WireReader(b)
            guard let raw = try? rd.u32() else { return BERTH_INTERNAL }
            let status = berth_status(rawValue: raw)
            if status == BERTH_OK, let v = try? rd.u64() { out?.pointee = v }
            return status
        }
    }

    static func installV12Services(_ st: State) {
        st.services.on_complete = { _, commit, rollback, arg in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            let id = s.nextCompletion
            s.nextCompletion += 1
            var w = WireWriter(.onComplete, capacity: 8)
            w.u64(id)
            s.ch.send(w.finish())
            let status = PluginRunner.replyStatus(s.awaitReply())
            if status == BERTH_OK { s.completions[id] = (commit, rollback, arg) }
            return status
        }
        st.services.kv_len = { _, key, klen, out in PluginRunner.u64Request(.kvLen, key, klen, out) }
        st.services.kv_count_prefix = { _, prefix, plen, out in PluginRunner.u64Request(.kvCountPrefix, prefix, plen, out) }
        st.services.kv_delete_prefix = { _, prefix, plen, out in PluginRunner.u64Request(.kvDeletePrefix, prefix, plen, out) }
    }
}
