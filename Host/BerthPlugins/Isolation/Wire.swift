// The frames of the process-isolation protocol and their compact binary codec, shared by berthd (Remote*.swift,
// Trampolines.swift) and berth-plugin-runner (Host/berth-plugin-runner).
//
// Wire format: frames of [u32 payload length, little endian][u8 type][payload], payloads in the compact binary
// encoding of WireWriter/WireReader below (JSON requests travel as the bytes they already are).
import BerthPluginABI

#if canImport(Glibc)
import Glibc
#endif

package enum FrameType: UInt8 {
    // daemon -> runner
    case describe = 1, create = 2, call = 3, destroy = 4, reply = 5
    case complete = 6  // ABI 1.2: run completion callback [u64 id][u8 committed]; answered with a RESULT
    // runner -> daemon
    case described = 16, result = 17, log = 18, kvGet = 19, kvPut = 20, kvDelete = 21, kvNext = 22, event = 23, eventAsync = 24
    // ABI 1.2
    case onComplete = 25, kvLen = 26, kvCountPrefix = 27, kvDeletePrefix = 28
}

/// Largest frame either side accepts: a sanity bound above any request (api.maxBodyBytes <= 64 MiB), output or
/// key-value value (<= 16 MiB) plus headroom.
package let maxFrameBytes = 256 << 20

/// Result flags.
package let resultOutputOverflowed: UInt8 = 1

package struct FrameError: Error, CustomStringConvertible {
    package let description: String
    package init(description: String) { self.description = description }
}

package struct WireWriter {
    package var bytes: [UInt8]
    package init(_ type: FrameType, capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity + 5)
        bytes.append(contentsOf: [0, 0, 0, 0, type.rawValue])
    }
    package mutating func u8(_ v: UInt8) { bytes.append(v) }
    package mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    package mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    package mutating func raw(_ p: UnsafeRawPointer?, _ n: Int) {
        if n > 0, let p { bytes.append(contentsOf: UnsafeRawBufferPointer(start: p, count: n)) }
    }
    package mutating func raw(_ b: UnsafeRawBufferPointer) { if b.count > 0 { bytes.append(contentsOf: b) } }
    package mutating func blob(_ p: UnsafeRawPointer?, _ n: Int) { u32(UInt32(n)); raw(p, n) }
    package mutating func blob(_ b: UnsafeRawBufferPointer) { u32(UInt32(b.count)); raw(b) }
    /// A string that may be absent (NULL): length UInt32.max.
    package mutating func string(_ s: String?) {
        guard let s else { u32(.max); return }
        u32(UInt32(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
    package mutating func cstring(_ p: UnsafePointer<CChar>?) {
        guard let p else { u32(.max); return }
        blob(p, strlen(p))
    }
    /// A C string with its NUL, so the reader can use it in place.
    package mutating func cstringZ(_ p: UnsafePointer<CChar>?) {
        guard let p else { u32(.max); return }
        let n = strlen(p)
        u32(UInt32(n))
        raw(p, n + 1)
    }
    /// The frame, with its length filled in.
    package mutating func finish() -> [UInt8] {
        let n = UInt32(bytes.count - 5).littleEndian
        withUnsafeBytes(of: n) { for i in 0..<4 { bytes[i] = $0[i] } }
        return bytes
    }
}

package struct WireReader {
    package let b: UnsafeRawBufferPointer
    package var pos = 0
    package init(_ b: UnsafeRawBufferPointer) { self.b = b }
    package mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= b.count - pos else { throw FrameError(description: "truncated frame (wanted \(n) bytes at \(pos) of \(b.count))") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: b[pos..<pos + n])
    }
    package mutating func u8() throws -> UInt8 { try take(1)[0] }
    package mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    package mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    package mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    package mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    package mutating func blob() throws -> UnsafeRawBufferPointer { try take(Int(try u32())) }
    package mutating func string() throws -> String? {
        let n = try u32()
        if n == .max { return nil }
        return String(decoding: try take(Int(n)), as: UTF8.self)
    }
    package mutating func rest() -> UnsafeRawBufferPointer {
        defer { pos = b.count }
        return UnsafeRawBufferPointer(rebasing: b[pos...])
    }
}

/// Writes `msg` into a caller-provided error buffer (NUL-terminated, truncated on a UTF-8 boundary).
package func writeError(_ err: UnsafeMutablePointer<CChar>?, _ cap: Int, _ msg: String) {
    guard let err, cap > 0 else { return }
    var n = 0
    var utf8 = Array(msg.utf8)
    if utf8.count > cap - 1 {
        var cut = cap - 1
        while cut > 0 && (utf8[cut] & 0xC0) == 0x80 { cut -= 1 }
        utf8 = Array(utf8[0..<cut])
    }
    for b in utf8 { err[n] = CChar(bitPattern: b); n += 1 }
    err[n] = 0
}

/// Writes `bytes` to a plugin's or the host's output sink (nothing when there is no sink or nothing to write).
package func writeSink(_ out: UnsafePointer<berth_sink>?, _ bytes: UnsafeRawBufferPointer) -> berth_status {
    guard bytes.count > 0, let out else { return BERTH_OK }
    return out.pointee.write(out.pointee.ctx, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
}
