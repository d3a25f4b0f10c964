// gRPC for the etcd engine, without generated code or a dependency: a gRPC call is an HTTP/2 stream (RFC 9113)
// whose DATA carries length-prefixed protobuf messages and whose trailers carry grpc-status and grpc-message.
// `GRPCConnection` is the smallest HTTP/2 client that does that over BerthWire's connection (a socket, or the TLS
// stream with ALPN "h2"), for one thread: unary calls one after another (etcd's Range and Txn, EtcdClient.swift), or
// one long-lived stream (etcd's Watch, EtcdWatch.swift). Messages are encoded by EtcdProto.swift.
//
// Why: through the JSON gateway etcd turns every request and every watched event into JSON (keys and values in
// base64), and that was most of its CPU under the cluster benchmark; docs/cluster.md has the figures.
import BerthWire

/// How a gRPC call failed at etcd: its gRPC status code and message (etcd's error, e.g. "etcdserver: too many
/// operations in txn request").
struct GRPCStatus: Error, CustomStringConvertible {
    var code: Int
    var message: String
    var description: String { "gRPC status \(code): \(message)" }
}

/// An HTTP/2 connection carrying gRPC calls to one endpoint. Not thread-safe: one thread calls, as with
/// UnixHTTPConnection. A failure of the connection itself is a WireError (the caller closes it and may connect again).
final class GRPCConnection {
    /// How a stream ended without a gRPC status (a reset, the connection's end, GOAWAY).
    struct Ended: Error, CustomStringConvertible {
        var description: String
        /// etcd certainly did not act on the request: it was not sent whole, or etcd said so (GOAWAY past it,
        /// REFUSED_STREAM). Only such a write may be sent again.
        var unprocessed = false
    }

    let conn: UnixHTTPConnection
    private let authority: String
    private let secure: Bool
    private(set) var started = false
    private var inbox: [UInt8] = []
    private var start = 0
    private var nextStream = 1
    /// What this client may still send: the connection's window, each open stream's, the peer's frame size.
    private var sendWindow = 65_535
    private var peerInitialWindow = 65_535
    private var peerMaxFrame = 16_384
    /// Bytes received since the connection's receive window was last opened again.
    private var unacknowledged = 0
    /// The streams of this client that are open (a stream not here is not ours, or already forgotten).
    private var streams: [Int: Stream] = [:]
    private var hpack = HPACKDecoder()
    /// The connection was ended by the peer (GOAWAY); no new stream may start on it.
    private var goingAway: String?

    /// One open stream.
    private struct Stream {
        /// What this client may still send on it.
        var sendWindow: Int
        /// Bytes received since its receive window was last opened again.
        var unacknowledged = 0
        /// The gRPC bytes of its DATA not yet taken, its trailers once they came, how it ended otherwise.
        var data: [UInt8] = []
        var trailers: [(String, String)]?
        var ended: String?
        /// etcd said it did not process it (see `Ended.unprocessed`).
        var unprocessed = false
    }

    /// The windows this client opens: etcd may send this much before it waits for a WINDOW_UPDATE.
    static let window = 1 << 30
    /// The largest message taken (the engine reads in pages of 1,000 keys; etcd's own request limit is 1.5 MiB).
    static let maxMessage = 256 << 20
    /// The largest header block taken (etcd's are a few hundred bytes).
    static let maxHeaderBlock = 64 << 10

    init(_ conn: UnixHTTPConnection, authority: String, secure: Bool) {
        self.conn = conn
        self.authority = authority
        self.secure = secure
    }

    var isUsable: Bool { started && goingAway == nil }

    func close() {
        conn.close()
        started = false
        inbox = []
        start = 0
    }

    /// The preface and this client's settings: no server push, no dynamic header table (so every header block
    /// decodes on its own), large receive windows.
    private func handshake() throws {
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        var settings: [UInt8] = []
        for (id, value) in [(0x1, 0), (0x2, 0), (0x4, Self.window)] {
            settings += [UInt8(id >> 8), UInt8(id & 0xFF)] + Self.be32(value)
        }
        out += Self.frame(type: 0x4, flags: 0, stream: 0, settings)
        out += Self.frame(type: 0x8, flags: 0, stream: 0, Self.be32(Self.window - 65_535))
        try conn.writeRaw(out)
        nextStream = 1
        sendWindow = 65_535
        peerInitialWindow = 65_535
        peerMaxFrame = 16_384
        streams = [:]
        unacknowledged = 0
        hpack = HPACKDecoder()
        goingAway = nil
        started = true
    }

    /// Starts call `path` with `metadata` (lowercase names) and sends `message`; `last`: the request ends with it
    /// (a unary call), else the stream stays open for more. Returns the stream's id.
    func open(_ path: String, metadata: [(String, String)], message: [UInt8], last: Bool) throws -> Int {
        // Stream ids are 31 bits: a connection that used them all (a billion calls) is replaced.
        if started && nextStream > 0x7FFF_FFFF { close() }
        if !started { try handshake() }
        if let goingAway { throw WireError(.io, goingAway) }
        let id = nextStream
        nextStream += 2
        streams[id] = Stream(sendWindow: peerInitialWindow)
        var block: [UInt8] = []
        let headers = [(":method", "POST"), (":scheme", secure ? "https" : "http"), (":path", path), (":authority", authority),
                       ("content-type", "application/grpc"), ("te", "trailers")] + metadata
        for (name, value) in headers { HPACKDecoder.literal(name, value, into: &block) }
        // HEADERS, and CONTINUATION frames when the block is over the peer's frame size (the last with
        // END_HEADERS), then the first DATA, in one write.
        var frames: [UInt8] = []
        var off = 0
        repeat {
            let n = min(peerMaxFrame, block.count - off), end = off + n == block.count
            frames += Self.frame(type: off == 0 ? 0x1 : 0x9, flags: end ? 0x4 : 0, stream: id, Array(block[off..<(off + n)]))
            off += n
        } while off < block.count
        try send(id, Self.grpcMessage(message), last: last, after: frames)
        return id
    }

    /// One unary call: the response message, or the call's gRPC status when it is not OK (GRPCStatus).
    func unary(_ path: String, metadata: [(String, String)], message: [UInt8]) throws -> [UInt8] {
        let id: Int
        do { id = try open(path, metadata: metadata, message: message, last: true) } catch let e as WireError where e.kind != .unreachable {
            throw Ended(description: e.message, unprocessed: true)  // not sent whole: etcd cannot have acted on it
        } catch var e as Ended {
            e.unprocessed = true
            throw e
        }
        defer { forget(id) }
        var response: [UInt8]?
        while true {
            if response == nil, let m = try take(id) { response = m; continue }
            if let t = streams[id]?.trailers {
                let status = Self.status(t)
                if status.code == 0, let response { return response }
                throw status
            }
            try throwIfEnded(id)
            try readFrame()
        }
    }

    /// How stream `id` ended without its status, if it did.
    private func throwIfEnded(_ id: Int) throws {
        if let s = streams[id], let why = s.ended { throw Ended(description: why, unprocessed: s.unprocessed) }
    }

    /// The call's status from its trailers (-1: none), with words when etcd gave none (a proxy's answer, grpc-go's
    /// own codes).
    private static func status(_ t: [(String, String)]) -> GRPCStatus {
        let code = Int(t.first { $0.0 == "grpc-status" }?.1 ?? "") ?? -1
        let message = percentDecoded(t.first { $0.0 == "grpc-message" }?.1 ?? "")
        if code == 0 { return GRPCStatus(code: 0, message: "etcd answered without a message") }
        if !message.isEmpty { return GRPCStatus(code: code, message: message) }
        if code < 0 { return GRPCStatus(code: code, message: "the call ended without a gRPC status (HTTP \(t.first { $0.0 == ":status" }?.1 ?? "?"))") }
        return GRPCStatus(code: code, message: "gRPC status \(code)")
    }

    /// The next message of stream `id`; throws `Ended` (or the call's GRPCStatus) when the stream ends, and the
    /// connection's error (a read timeout: "timed out") when nothing arrives in time.
    func next(_ id: Int) throws -> [UInt8] {
        while true {
            if let m = try take(id) { return m }
            if let t = streams[id]?.trailers { throw Self.status(t) }
            try throwIfEnded(id)
            try readFrame()
        }
    }

    private func forget(_ id: Int) {
        streams[id] = nil
    }

    /// One whole gRPC message of stream `id`, when its bytes are in.
    private func take(_ id: Int) throws -> [UInt8]? {
        guard let d = streams[id]?.data, d.count >= 5 else { return nil }
        if d[0] != 0 { throw Ended(description: "etcd sent a compressed gRPC message, which was not asked for") }
        let n = Int(d[1]) << 24 | Int(d[2]) << 16 | Int(d[3]) << 8 | Int(d[4])
        if n > Self.maxMessage { throw Ended(description: "etcd announced a gRPC message of \(n) bytes, over this client's \(Self.maxMessage)") }
        guard d.count >= 5 + n else { return nil }
        streams[id]?.data = Array(d[(5 + n)...])
        return Array(d[5..<(5 + n)])
    }

    /// Sends `bytes` as DATA on stream `id`, in frames the peer allows, waiting for its windows to open; `frames`
    /// (already made) go first, in the same write.
    private func send(_ id: Int, _ bytes: [UInt8], last: Bool, after frames: [UInt8] = []) throws {
        var off = 0
        var pending = frames
        var waitingSince: UInt64?
        repeat {
            let room = min(sendWindow, streams[id]?.sendWindow ?? 0, peerMaxFrame)
            if room <= 0 && off < bytes.count {
                if !pending.isEmpty { try conn.writeRaw(pending); pending = [] }
                // A peer that keeps the window shut while it sends other frames (PINGs) is given the read timeout.
                let now = monotonicNanos()
                if now - (waitingSince ?? now) > UInt64(max(conn.timeoutSeconds, 1)) * 1_000_000_000 {
                    throw WireError(.io, "timed out waiting for \(conn.endpoint.description) to take more of the request (HTTP/2 flow control)")
                }
                waitingSince = waitingSince ?? now
                try readFrame()  // a WINDOW_UPDATE, in time
                // The call ended while it was being sent (etcd refused a message over its limit): the caller reads
                // its status.
                if streams[id]?.trailers != nil || streams[id]?.ended != nil { return }
                continue
            }
            let n = min(room, bytes.count - off)
            let end = off + n == bytes.count
            try conn.writeRaw(pending + Self.frame(type: 0x0, flags: end && last ? 0x1 : 0, stream: id, Array(bytes[off..<(off + n)])))
            pending = []
            sendWindow -= n
            streams[id]?.sendWindow -= n
            off += n
        } while off < bytes.count
    }

    /// Reads one frame and acts on it.
    private func readFrame() throws {
        while inbox.count - start < 9 { try fill() }
        let length = Int(inbox[start]) << 16 | Int(inbox[start + 1]) << 8 | Int(inbox[start + 2])
        let type = inbox[start + 3], flags = inbox[start + 4]
        let stream = (Int(inbox[start + 5]) & 0x7F) << 24 | Int(inbox[start + 6]) << 16 | Int(inbox[start + 7]) << 8 | Int(inbox[start + 8])
        // Larger than the 16 KiB frames this client allows: not HTTP/2 (an HTTP/1.1 answer to the preface, say).
        if length > 16_384 { throw Ended(description: "\(conn.endpoint.description) does not speak HTTP/2 there") }
        while inbox.count - start < 9 + length { try fill() }
        var payload = inbox[(start + 9)..<(start + 9 + length)]
        start += 9 + length
        if start == inbox.count { inbox.removeAll(keepingCapacity: true); start = 0 }
        switch type {
        case 0x0:  // DATA (padding, when flagged, is the first byte's count at the end)
            if flags & 0x8 != 0, let pad = payload.first { payload = payload.dropFirst().dropLast(Int(pad)) }
            streams[stream]?.data += payload
            try acknowledge(stream, length)
            if flags & 0x1 != 0, streams[stream]?.ended == nil { streams[stream]?.ended = "etcd ended the gRPC call without its status" }
        case 0x1:  // HEADERS: the response's, or its trailers when they end the stream
            var block = payload
            if flags & 0x8 != 0, let pad = block.first { block = block.dropFirst().dropLast(Int(pad)) }
            if flags & 0x20 != 0 { block = block.dropFirst(5) }  // PRIORITY
            while flags & 0x4 == 0 {  // CONTINUATION frames of the same stream follow until END_HEADERS
                let (more, endHeaders) = try continuation(stream)
                block += more
                if block.count > Self.maxHeaderBlock { throw Ended(description: "etcd sent a header block over \(Self.maxHeaderBlock) bytes") }
                if endHeaders { break }
            }
            let fields = try hpack.decode(block)  // decoded even for a stream not ours: HPACK's state is the connection's
            guard streams[stream] != nil else { break }
            if flags & 0x1 != 0 {
                streams[stream]?.trailers = fields
            } else if let status = fields.first(where: { $0.0 == ":status" })?.1, status != "200" {
                streams[stream]?.ended = "etcd answered HTTP \(status) to a gRPC call"
            }
        case 0x3 where streams[stream] != nil:  // RST_STREAM; REFUSED_STREAM (7): etcd did not act on it
            let code = Self.u32(payload)
            streams[stream]?.ended = "etcd reset the gRPC stream (HTTP/2 error \(code))"
            if code == 7 { streams[stream]?.unprocessed = true }
        case 0x4 where flags & 0x1 == 0:  // SETTINGS, not an ACK: applied and acknowledged
            var p = payload
            while p.count >= 6 {
                let id = Int(p[p.startIndex]) << 8 | Int(p[p.startIndex + 1]), value = Self.u32(p.dropFirst(2))
                if id == 0x4 {
                    guard value <= 0x7FFF_FFFF else { throw Ended(description: "etcd set an initial window of \(value), over HTTP/2's 2^31-1") }
                    for s in streams.keys { streams[s]?.sendWindow += value - peerInitialWindow }
                    peerInitialWindow = value
                } else if id == 0x5 {
                    guard (16_384...16_777_215).contains(value) else { throw Ended(description: "etcd set a frame size of \(value), outside HTTP/2's 16384 to 2^24-1") }
                    peerMaxFrame = value
                }
                p = p.dropFirst(6)
            }
            try conn.writeRaw(Self.frame(type: 0x4, flags: 0x1, stream: 0, []))
        case 0x6 where flags & 0x1 == 0:  // PING: answered
            try conn.writeRaw(Self.frame(type: 0x6, flags: 0x1, stream: 0, Array(payload)))
        case 0x7:  // GOAWAY: streams after its last stream id were not processed
            let last = Self.u32(payload) & 0x7FFF_FFFF
            let why = "etcd closed the HTTP/2 connection (GOAWAY, error \(Self.u32(payload.dropFirst(4))))"
            goingAway = why
            for s in streams.keys where s > last {
                streams[s]?.ended = why
                streams[s]?.unprocessed = true
            }
        case 0x8:  // WINDOW_UPDATE
            let n = Self.u32(payload) & 0x7FFF_FFFF
            if stream == 0 { sendWindow += n } else { streams[stream]?.sendWindow += n }
        default: break  // PRIORITY, unknown types
        }
    }

    private func continuation(_ stream: Int) throws -> (ArraySlice<UInt8>, Bool) {
        while inbox.count - start < 9 { try fill() }
        let length = Int(inbox[start]) << 16 | Int(inbox[start + 1]) << 8 | Int(inbox[start + 2])
        let id = (Int(inbox[start + 5]) & 0x7F) << 24 | Int(inbox[start + 6]) << 16 | Int(inbox[start + 7]) << 8 | Int(inbox[start + 8])
        guard inbox[start + 3] == 0x9, id == stream, length <= 16_384 else {
            throw Ended(description: "etcd broke HTTP/2 (a header block without its CONTINUATION)")
        }
        let endHeaders = inbox[start + 4] & 0x4 != 0
        while inbox.count - start < 9 + length { try fill() }
        let payload = inbox[(start + 9)..<(start + 9 + length)]
        start += 9 + length
        return (payload, endHeaders)
    }

    /// Opens the windows again for what was received, once half of them is used.
    private func acknowledge(_ stream: Int, _ n: Int) throws {
        unacknowledged += n
        var out: [UInt8] = []
        if unacknowledged >= Self.window / 2 {
            out += Self.frame(type: 0x8, flags: 0, stream: 0, Self.be32(unacknowledged))
            unacknowledged = 0
        }
        if var st = streams[stream] {
            st.unacknowledged += n
            if st.unacknowledged >= Self.window / 2 {
                out += Self.frame(type: 0x8, flags: 0, stream: stream, Self.be32(st.unacknowledged))
                st.unacknowledged = 0
            }
            streams[stream] = st
        }
        if !out.isEmpty { try conn.writeRaw(out) }
    }

    private func fill() throws {
        if start > 0 { inbox.removeSubrange(0..<start); start = 0 }
        inbox += try conn.readRaw()
    }

    static func frame(type: UInt8, flags: UInt8, stream: Int, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags] + be32(stream) + payload
    }

    /// A gRPC message: not compressed, its length, its bytes.
    static func grpcMessage(_ m: [UInt8]) -> [UInt8] { [0] + be32(m.count) + m }

    static func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    static func u32(_ b: ArraySlice<UInt8>) -> Int { b.prefix(4).reduce(0) { $0 << 8 | Int($1) } }

    /// grpc-message is percent-encoded (gRPC's HTTP/2 mapping).
    static func percentDecoded(_ s: String) -> String {
        guard s.contains("%") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == 0x25, i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// HPACK (RFC 7541), as a client that announced a header table of size 0 needs it: every representation decoded,
/// Huffman-coded strings included; a dynamic table is kept anyway (entries the peer indexed before it applied the
/// size), so that a peer that indexes is still read right.
struct HPACKDecoder {
    private var table: [(String, String)] = []  // newest first
    private var size = 0
    private var maxSize = 4096

    struct Malformed: Error, CustomStringConvertible {
        var description: String { "etcd sent a header block this client cannot decode (HPACK)" }
    }

    mutating func decode(_ block: ArraySlice<UInt8>) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var i = block.startIndex
        while i < block.endIndex {
            let b = block[i]
            if b & 0x80 != 0 {  // indexed field
                out.append(try entry(Int(try Self.integer(block, &i, prefix: 7))))
            } else if b & 0xC0 == 0x40 {  // literal, incremental indexing
                let f = try literal(block, &i, prefix: 6)
                add(f)
                out.append(f)
            } else if b & 0xE0 == 0x20 {  // dynamic table size update: at most the 4096 a decoder starts with
                maxSize = Int(try Self.integer(block, &i, prefix: 5))
                guard maxSize <= 4096 else { throw Malformed() }
                evict()
            } else {  // literal without indexing / never indexed
                out.append(try literal(block, &i, prefix: 4))
            }
        }
        return out
    }

    private func entry(_ index: Int) throws -> (String, String) {
        if index >= 1 && index <= Self.staticTable.count { return Self.staticTable[index - 1] }
        let d = index - Self.staticTable.count - 1
        guard d >= 0 && d < table.count else { throw Malformed() }
        return table[d]
    }

    private mutating func literal(_ b: ArraySlice<UInt8>, _ i: inout Int, prefix: Int) throws -> (String, String) {
        let index = Int(try Self.integer(b, &i, prefix: prefix))
        let name = index == 0 ? try Self.string(b, &i) : try entry(index).0
        return (name, try Self.string(b, &i))
    }

    private mutating func add(_ f: (String, String)) {
        table.insert(f, at: 0)
        size += f.0.utf8.count + f.1.utf8.count + 32
        evict()
    }

    private mutating func evict() {
        while size > maxSize, let last = table.popLast() { size -= last.0.utf8.count + last.1.utf8.count + 32 }
    }

    static func integer(_ b: ArraySlice<UInt8>, _ i: inout Int, prefix: Int) throws -> UInt64 {
        guard i < b.endIndex else { throw Malformed() }
        let mask = UInt8((1 << prefix) - 1)
        var v = UInt64(b[i] & mask)
        i += 1
        guard v == UInt64(mask) else { return v }
        var shift: UInt64 = 0
        while true {
            guard i < b.endIndex, shift < 56 else { throw Malformed() }
            let c = b[i]
            i += 1
            v += UInt64(c & 0x7F) << shift
            if c & 0x80 == 0 { return v }
            shift += 7
        }
    }

    static func string(_ b: ArraySlice<UInt8>, _ i: inout Int) throws -> String {
        guard i < b.endIndex else { throw Malformed() }
        let huffman = b[i] & 0x80 != 0
        let n = Int(try integer(b, &i, prefix: 7))
        guard n <= b.endIndex - i else { throw Malformed() }
        let raw = b[i..<(i + n)]
        i += n
        return String(decoding: huffman ? try Huffman.decode(raw) : Array(raw), as: UTF8.self)
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

    /// RFC 7541 Appendix A.
    static let staticTable: [(String, String)] = [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
        ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
        ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
        ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
        ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
        ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ]
}

/// HPACK's Huffman code (RFC 7541 Appendix B). It is canonical, so each symbol's code follows from the code lengths
/// alone: codes of one length are consecutive in symbol order, after every shorter code.
enum Huffman {
    /// The code length of each symbol 0...255 and of EOS (256).
    static let lengths: [UInt8] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ]

    /// Per code length: the first code of that length, how many codes have it, and where its symbols start in
    /// `symbols` (symbols ordered by code length, then value).
    private static let tables: (first: [UInt32], count: [Int], offset: [Int], symbols: [Int]) = {
        let symbols = (0..<257).sorted { (lengths[$0], $0) < (lengths[$1], $1) }
        var first = [UInt32](repeating: 0, count: 31), count = [Int](repeating: 0, count: 31), offset = [Int](repeating: 0, count: 31)
        for s in symbols { count[Int(lengths[s])] += 1 }
        var code: UInt32 = 0, index = 0
        for len in 1...30 {
            first[len] = code
            offset[len] = index
            code = (code + UInt32(count[len])) << 1
            index += count[len]
        }
        return (first, count, offset, symbols)
    }()

    /// `s` in the code, padded with ones to a whole byte (the other direction of `decode`; this client sends its
    /// own headers as plain strings, so the tests and the fuzzer are its users).
    static func encode(_ s: [UInt8]) -> [UInt8] {
        let t = tables
        var codes = [UInt32](repeating: 0, count: 257)
        for len in 1...30 {
            for k in 0..<t.count[len] { codes[t.symbols[t.offset[len] + k]] = t.first[len] + UInt32(k) }
        }
        var out: [UInt8] = [], acc: UInt64 = 0, n = 0
        for b in s {
            acc = acc << UInt64(lengths[Int(b)]) | UInt64(codes[Int(b)])
            n += Int(lengths[Int(b)])
            while n >= 8 { out.append(UInt8(acc >> UInt64(n - 8) & 0xFF)); n -= 8 }
            acc &= (1 << UInt64(n)) - 1
        }
        if n > 0 { out.append(UInt8((acc << UInt64(8 - n)) & 0xFF) | UInt8((1 << (8 - n)) - 1)) }
        return out
    }

    static func decode(_ bytes: ArraySlice<UInt8>) throws -> [UInt8] {
        let t = tables
        var out: [UInt8] = []
        var code: UInt32 = 0, len = 0
        for byte in bytes {
            for bit in stride(from: 7, through: 0, by: -1) {
                code = code << 1 | UInt32(byte >> UInt8(bit) & 1)
                len += 1
                guard len <= 30 else { throw HPACKDecoder.Malformed() }
                let k = Int(code) - Int(t.first[len])
                if k >= 0 && k < t.count[len] {
                    let s = t.symbols[t.offset[len] + k]
                    if s == 256 { throw HPACKDecoder.Malformed() }  // EOS inside a string
                    out.append(UInt8(s))
                    code = 0
                    len = 0
                }
            }
        }
        // What is left is padding: fewer than 8 bits, all ones.
        guard len < 8, code == (1 << UInt32(len)) - 1 else { throw HPACKDecoder.Malformed() }
        return out
    }
}
