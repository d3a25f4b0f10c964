// The host services a plugin sees in its runner: each one a request frame to the daemon, answered with a REPLY
// (log, and events from threads outside a call, are fire-and-forget). One helper, `request`, does every round trip.
import BerthPluginABI
import BerthPlugins

#if canImport(Glibc)
import Glibc
#endif

extension PluginRunner {
    /// One host-service round trip: refused outside a call on the calling thread (the daemon serves requests only
    /// while it waits for that call's RESULT); `fill` writes the request after its type, and on BERTH_OK `answer`
    /// reads the rest of the REPLY (after its status) and gives the final status. A malformed reply is INTERNAL.
    static func request(_ type: FrameType, capacity: Int, _ fill: (inout WireWriter) -> Void,
                        answer: (inout WireReader) -> berth_status = { _ in BERTH_OK }) -> berth_status {
        let s = PluginRunner.state!
        guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
        var w = WireWriter(type, capacity: capacity)
        fill(&w)
        s.ch.send(w.finish())
        return s.awaitReply().withUnsafeBytes { b in
            var rd = WireReader(b)
            guard let raw = try? rd.u32() else { return BERTH_INTERNAL }
            let status = berth_status(rawValue: raw)
            guard status == BERTH_OK else { return status }
            return answer(&rd)
        }
    }

    static func installServices(_ st: State) {
        st.services.struct_size = UInt32(MemoryLayout<berth_host_services>.size)
        st.services.host_abi_major = UInt16(BERTH_ABI_MAJOR)
        st.services.host_abi_minor = UInt16(BERTH_ABI_MINOR)
        st.services.host_ctx = nil
        st.services.log = { _, level, msg, len in
            var w = WireWriter(.log, capacity: len + 1)
            w.u8(UInt8(truncatingIfNeeded: level.rawValue))
            w.raw(msg, len)
            PluginRunner.state.ch.send(w.finish())
        }
        st.services.kv_get = { _, key, klen, out in
            PluginRunner.request(.kvGet, capacity: klen, { $0.raw(key, klen) }) { rd in
                guard let out else { return BERTH_OK }
                return writeSink(out, rd.rest())
            }
        }
        st.services.kv_put = { _, key, klen, value, vlen in
            PluginRunner.request(.kvPut, capacity: klen + vlen + 4, { w in
                w.blob(key, klen)
                w.raw(value, vlen)
            })
        }
        st.services.kv_delete = { _, key, klen in
            PluginRunner.request(.kvDelete, capacity: klen, { $0.raw(key, klen) })
        }
        st.services.kv_next = { _, prefix, plen, after, alen, kout, vout in
            PluginRunner.request(.kvNext, capacity: plen + alen + 8, { w in
                w.u8((kout != nil ? 1 : 0) | (vout != nil ? 2 : 0))
                w.blob(prefix, plen)
                w.raw(after, alen)
            }) { rd in
                guard let k = try? rd.blob() else { return BERTH_INTERNAL }
                let v = rd.rest()
                if let kout {
                    let r = writeSink(kout, k)
                    if r != BERTH_OK { return r }
                }
                if let vout { return writeSink(vout, v) }
                return BERTH_OK
            }
        }
        st.services.emit_event = { _, type, json, len in
            let s = PluginRunner.state!
            guard let type else { return BERTH_INVALID_ARGUMENT }
            if s.mayUseKV {
                return PluginRunner.request(.event, capacity: len + 32, { w in
                    w.cstring(type)
                    w.raw(json, len)
                })
            }
            var w = WireWriter(.eventAsync, capacity: len + 32)
            w.cstring(type)
            w.raw(json, len)
            s.ch.send(w.finish())
            return BERTH_OK
        }
        installV12Services(st)
    }

    /// ABI 1.2: completion callbacks stay here under an id the daemon knows; the counters answer with a u64.
    static func installV12Services(_ st: State) {
        st.services.on_complete = { _, commit, rollback, arg in
            let s = PluginRunner.state!
            guard s.mayUseKV else { return BERTH_FAILED_PRECONDITION }
            let id = s.nextCompletion
            s.nextCompletion += 1
            let status = PluginRunner.request(.onComplete, capacity: 8, { $0.u64(id) })
            if status == BERTH_OK { s.completions[id] = (commit, rollback, arg) }
            return status
        }
        st.services.kv_len = { _, key, klen, out in PluginRunner.u64Request(.kvLen, key, klen, out) }
        st.services.kv_count_prefix = { _, prefix, plen, out in PluginRunner.u64Request(.kvCountPrefix, prefix, plen, out) }
        st.services.kv_delete_prefix = { _, prefix, plen, out in PluginRunner.u64Request(.kvDeletePrefix, prefix, plen, out) }
    }

    /// A request carrying the bytes at `p`, whose reply is a status and a u64 (stored in `out`).
    static func u64Request(_ type: FrameType, _ p: UnsafeRawPointer?, _ n: Int, _ out: UnsafeMutablePointer<UInt64>?) -> berth_status {
        request(type, capacity: n, { $0.raw(p, n) }) { rd in
            if let v = try? rd.u64() { out?.pointee = v }
            return BERTH_OK
        }
    }
}
