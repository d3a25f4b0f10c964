// Process isolation for ABI 1.2, daemon side: completion callbacks (on_complete) and kv_len / kv_count_prefix /
// kv_delete_prefix over the runner protocol (the runner's side is in Host/berth-plugin-runner). A callback stays in
// the runner (its pointers mean nothing elsewhere): the runner registers it under an id, the daemon registers its
// own callback for that id with the instance's real host services, and when the operation commits or rolls back
// the daemon sends COMPLETE(id, committed) to the runner.
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
            throw FrameError(description: "unexpected frame \(type) from the runner")
        }
    }
}
