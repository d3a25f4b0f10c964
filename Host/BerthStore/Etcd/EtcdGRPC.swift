// etcd's Watch over gRPC: the one long-lived call of the engine, where the JSON gateway costs most. Through the gateway
// etcd turns every event into JSON (keys and values in base64) for every watcher, once per event per berthd; measured
// here (25-key Txns, 3 watchers on their prefix), the gateway's watchers added 0.036 ms of etcd CPU per key written,
// gRPC's 0.006 ms. Unary calls stay on the gateway (EtcdClient.swift): there gRPC saves about a fifth.
//
// Nothing generated: a gRPC call is an HTTP/2 stream (RFC 9113) whose DATA carries length-prefixed protobuf
// messages, and the watch needs four message types. `GRPCStream` is the smallest HTTP/2 client that carries one
// such stream over BerthWire's connection (a socket, or the TLS stream with ALPN "h2"); `Protobuf` writes and reads
// the few fields used. The response's headers and trailers are not decoded (HPACK): a call that ends before its
// first message is reported as such, and the watch then asks the JSON gateway, which says why (EtcdWatch.swift).
import BerthWire

/// Protocol buffers' wire format, as far as etcd's watch messages need it.
enum Protobuf {
    static func varint(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    /// Field `field` as a varint (int64, bool, enum); zero is the default and is not written.
    static func int(_ field: Int, _ v: Int64, into out: inout [UInt8]) {
        guard v != 0 else { return }
        varint(UInt64(field << 3), into: &out)
        varint(UInt64(bitPattern: v), into: &out)
    }

    /// Field `field` as length-delimited bytes (bytes, string, an embedded message).
    static func bytes(_ field: Int, _ b: [UInt8], into out: inout [UInt8]) {
        varint(UInt64(field << 3 | 2), into: &out)
        varint(UInt64(b.count), into: &out)
        out += b
    }

    /// A field as read: its number and either its varint or its bytes (fixed-width fields are read as varints of
    /// their bits; etcd's watch messages have none that are used).
    struct Field {
        var number: Int
        var varint: UInt64 = 0
        var bytes: ArraySlice<UInt8> = []
        var int: Int64 { Int64(bitPattern: varint) }
    }

    struct Malformed: Error, CustomStringConvertible {
        var description: String { "a gRPC message that is not valid protobuf" }
    }

    /// The fields of one message, in order; throws on a truncated or malformed one.
    static func fields(_ m: ArraySlice<UInt8>) throws -> [Field] {
        var out: [Field] = []
        var i = m.startIndex
        func readVarint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard i < m.endIndex, shift < 64 else { throw Malformed() }
                let b = m[i]
                i += 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
            }
        }
        while i < m.endIndex {
            let tag = try readVarint()
            var f = Field(number: Int(tag >> 3))
            switch tag & 7 {
            case 0: f.varint = try readVarint()
            case 1, 5:
                let n = tag & 7 == 1 ? 8 : 4
                guard m.endIndex - i >= n else { throw Malformed() }
                for k in 0..<n { f.varint |= UInt64(m[i + k]) << (8 * UInt64(k)) }
                i += n
            case 2:
                let n = try readVarint()
                guard n <= UInt64(m.endIndex - i) else { throw Malformed() }
                f.bytes = m[i..<(i + Int(n))]
                i += Int(n)
            default: throw Malformed()
            }
            out.append(f)
        }
        return out
    }
}

/// One gRPC call on its own HTTP/2 connection (stream 1), read and written by one thread. The caller opens the
/// connection (`UnixHTTPConnection.open()`, so that another thread may `interrupt()` a blocked read) and closes it.
final class GRPCStream {
    /// How the call ended, when it did.
    struct Ended: Error, CustomStringConvertible {
        var description: String
    }

    private let conn: UnixHTTPConnection
    private var inbox: [UInt8] = []
    private var start = 0
    /// The gRPC bytes of DATA frames not yet returned as messages.
    private var messages: [UInt8] = []
    /// Bytes received since the receive windows were last opened again.
    private var unacknowledged = 0
    private var ended: String?

    /// The windows this client opens: etcd may send this much before it waits for a WINDOW_UPDATE.
    static let window = 1 << 30

    init(_ conn: UnixHTTPConnection) { self.conn = conn }

    /// Starts the call `path` (e.g. "/etcdserverpb.Watch/Watch") with `metadata` (lowercase names) and sends its
    /// first message; the stream stays open for more.
    func start(path: String, authority: String, secure: Bool, metadata: [(String, String)], first message: [UInt8]) throws {
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        // SETTINGS: no server push, a stream window of `window`; then the connection's window as large.
        var settings: [UInt8] = []
        for (id, value) in [(0x2, 0), (0x4, Self.window)] {
            settings += [UInt8(id >> 8), UInt8(id & 0xFF)] + Self.be32(value)
        }
        out += Self.frame(type: 0x4, flags: 0, stream: 0, settings)
        out += Self.frame(type: 0x8, flags: 0, stream: 0, Self.be32(Self.window - 65_535))
        var block: [UInt8] = []
        let headers = [(":method", "POST"), (":scheme", secure ? "https" : "http"), (":path", path), (":authority", authority),
                       ("content-type", "application/grpc"), ("te", "trailers")] + metadata
        for (name, value) in headers { Self.literal(name, value, into: &block) }
        out += Self.frame(type: 0x1, flags: 0x4, stream: 1, block)  // HEADERS, END_HEADERS
        out += Self.frame(type: 0x0, flags: 0, stream: 1, Self.grpcMessage(message))
        try conn.writeRaw(out)
    }

    /// The next message of the call; throws `Ended` when the call ends (its trailers, a reset, the connection's end),
    /// and the connection's error (a read timeout: "timed out") when nothing arrives in time.
    func next() throws -> [UInt8] {
        while true {
            if messages.count >= 5 {
                let n = Int(messages[1]) << 24 | Int(messages[2]) << 16 | Int(messages[3]) << 8 | Int(messages[4])
                if messages[0] != 0 { throw Ended(description: "etcd sent a compressed gRPC message, which was not asked for") }
                if messages.count >= 5 + n {
                    let m = Array(messages[5..<(5 + n)])
                    messages.removeSubrange(0..<(5 + n))
                    return m
                }
            }
            if let ended { throw Ended(description: ended) }
            try readFrame()
        }
    }

    /// Reads one frame and acts on it: DATA to `messages`, SETTINGS and PING acknowledged, the ends noted.
    private func readFrame() throws {
        while inbox.count - start < 9 { try fill() }
        let length = Int(inbox[start]) << 16 | Int(inbox[start + 1]) << 8 | Int(inbox[start + 2])
        let type = inbox[start + 3], flags = inbox[start + 4]
        let stream = (Int(inbox[start + 5]) & 0x7F) << 24 | Int(inbox[start + 6]) << 16 | Int(inbox[start + 7]) << 8 | Int(inbox[start + 8])
        // Larger than the 16 KiB frames this client allows: not HTTP/2 (an HTTP/1.1 answer to the preface, say).
        if length > 16_384 { throw Ended(description: "\(conn.endpoint.description) does not speak HTTP/2 there") }
        while inbox.count - start < 9 + length { try fill() }
        let payload = inbox[(start + 9)..<(start + 9 + length)]
        start += 9 + length
        if start == inbox.count { inbox.removeAll(keepingCapacity: true); start = 0 }
        switch type {
        case 0x0 where stream == 1:  // DATA (padding, when flagged, is the first byte's count at the end)
            var data = payload
            if flags & 0x8 != 0, let pad = data.first { data = data.dropFirst().dropLast(Int(pad)) }
            messages += data
            unacknowledged += length
            if unacknowledged >= Self.window / 2 {
                try conn.writeRaw(Self.frame(type: 0x8, flags: 0, stream: 0, Self.be32(unacknowledged))
                                  + Self.frame(type: 0x8, flags: 0, stream: 1, Self.be32(unacknowledged)))
                unacknowledged = 0
            }
            if flags & 0x1 != 0 { ended = "etcd ended the gRPC call" }
        case 0x1 where stream == 1:  // HEADERS: the response's, or its trailers when they end the stream
            if flags & 0x1 != 0 { ended = "etcd ended the gRPC call (its status is in trailers this client does not decode)" }
        case 0x3 where stream == 1:  // RST_STREAM
            ended = "etcd reset the gRPC stream (HTTP/2 error \(Self.u32(payload)))"
        case 0x4 where flags & 0x1 == 0:  // SETTINGS, not an ACK: acknowledged
            try conn.writeRaw(Self.frame(type: 0x4, flags: 0x1, stream: 0, []))
        case 0x6 where flags & 0x1 == 0:  // PING: answered
            try conn.writeRaw(Self.frame(type: 0x6, flags: 0x1, stream: 0, Array(payload)))
        case 0x7:  // GOAWAY: last stream id, error code
            ended = "etcd closed the HTTP/2 connection (GOAWAY, error \(Self.u32(payload.dropFirst(4))))"
        default: break  // WINDOW_UPDATE, CONTINUATION of ignored headers, PRIORITY, other streams
        }
    }

    private func fill() throws {
        if start > 0 { inbox.removeSubrange(0..<start); start = 0 }
        do { inbox += try conn.readRaw() } catch let e as WireError where e.message.contains("closed the connection") {
            throw Ended(description: ended ?? "etcd closed the connection")
        }
    }

    static func frame(type: UInt8, flags: UInt8, stream: Int, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags] + be32(stream) + payload
    }

    /// A gRPC message: not compressed, its length, its bytes.
    static func grpcMessage(_ m: [UInt8]) -> [UInt8] { [0] + be32(m.count) + m }

    static func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    static func u32(_ b: ArraySlice<UInt8>) -> Int {
        b.prefix(4).reduce(0) { $0 << 8 | Int($1) }
    }

    /// HPACK's "literal header field without indexing, new name", strings not Huffman-coded (RFC 7541 6.2.2).
    static func literal(_ name: String, _ value: String, into out: inout [UInt8]) {
        out.append(0)
        for s in [Array(name.utf8), Array(value.utf8)] {
            var n = s.count
            if n < 127 { out.append(UInt8(n)) } else {
                out.append(127)
                n -= 127
                while n >= 128 { out.append(UInt8(n & 0x7F) | 0x80); n >>= 7 }
                out.append(UInt8(n))
            }
            out += s
        }
    }
}
