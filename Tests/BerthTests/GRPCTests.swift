// The etcd engine's gRPC transport in pieces (Host/BerthStore/Etcd/GRPC.swift, EtcdProto.swift): HPACK and its
// Huffman code against RFC 7541's own examples, the protobuf tables against known encodings, and an HTTP/2 peer
// that answers nonsense. Against a real etcd the transport is exercised by every Etcd* and Cluster* test.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

/// A peer's answer, given back in the chunks it is made of, then the end of the stream (writes are dropped).
private final class Canned: ByteStream {
    var chunks: [[UInt8]]
    init(_ chunks: [[UInt8]]) { self.chunks = chunks }
    func write(_ bytes: [UInt8]) throws {}
    func read(timeoutSeconds: Int) throws -> [UInt8] { chunks.isEmpty ? [] : chunks.removeFirst() }
    func close() {}
}

final class GRPCTests: XCTestCase {
    func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = s.filter { !$0.isWhitespace }.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
        return out
    }

    /// RFC 7541 C.4 and C.6: Huffman-coded strings.
    func testHuffmanDecodesTheRFCExamples() throws {
        let cases = [("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"), ("a8eb10649cbf", "no-cache"),
                     ("25a849e95ba97d7f", "custom-key"), ("25a849e95bb8e8b4bf", "custom-value"), ("6402", "302"),
                     ("aec3771a4b", "private"), ("d07abe941054d444a8200595040b8166e082a62d1bff", "Mon, 21 Oct 2013 20:13:21 GMT"),
                     ("9d29ad171863c78f0b97c8e9ae82ae43d3", "https://www.example.com")]
        for (h, text) in cases {
            XCTAssertEqual(String(decoding: try Huffman.decode(hex(h)[...]), as: UTF8.self), text)
            XCTAssertEqual(Huffman.encode(Array(text.utf8)), hex(h), "the encoder agrees with the RFC")
        }
    }

    /// Every byte value, in random strings, decodes to itself; padding that is not all ones, or 8 bits or more of it,
    /// and an EOS inside a string are refused.
    func testHuffmanRoundTripsEveryByteAndRefusesBadPadding() throws {
        var g = SystemRandomNumberGenerator()
        XCTAssertEqual(try Huffman.decode(Huffman.encode(Array(0...255))[...]), Array(0...255))
        for _ in 0..<200 {
            let s = (0..<Int.random(in: 0...40, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            XCTAssertEqual(try Huffman.decode(Huffman.encode(s)[...]), s)
        }
        XCTAssertThrowsError(try Huffman.decode([0x00][...]), "'0' (00000) then padding 000: not ones")
        XCTAssertThrowsError(try Huffman.decode(hex("f1e3c2e5f23a6ba0ab90f4ff")[...] + [0xFF]), "a whole byte of padding")
        XCTAssertThrowsError(try Huffman.decode([0xFF, 0xFF, 0xFF, 0xFF][...]), "EOS (30 ones) inside the string")
    }

    /// RFC 7541 C.3 (plain strings) and C.4 (Huffman): three requests on one decoder, the later ones indexing the
    /// dynamic table the earlier ones filled.
    func testHPACKDecodesTheRFCRequests() throws {
        for (first, second, third) in [
            ("828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
             "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
            ("828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf", "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"),
        ] {
            var d = HPACKDecoder()
            let one = try d.decode(hex(first)[...])
            XCTAssertEqual(one.map { "\($0.0): \($0.1)" }, [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"])
            let two = try d.decode(hex(second)[...])
            XCTAssertEqual(two.map { "\($0.0): \($0.1)" }, [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", "cache-control: no-cache"])
            let three = try d.decode(hex(third)[...])
            XCTAssertEqual(three.map { "\($0.0): \($0.1)" }, [":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com", "custom-key: custom-value"])
        }
        var d = HPACKDecoder()
        XCTAssertThrowsError(try d.decode([0xBE][...]), "index 62 with an empty dynamic table")
        XCTAssertThrowsError(try d.decode([0x40, 0x85, 0xF1][...]), "a string longer than the block")
        // A size update to 0 empties the table: the entry just added is gone.
        _ = try d.decode(hex("400a637573746f6d2d6b65790c637573746f6d2d76616c7565")[...])
        XCTAssertEqual(try d.decode([0xBE][...]).first?.0, "custom-key")
        XCTAssertThrowsError(try d.decode([0x20, 0xBE][...]))
    }

    /// The field tables against encodings worked out by hand from etcd's rpc.proto, both ways.
    func testTxnRequestEncodesAsEtcdExpects() throws {
        let key = Array("k".utf8), value = Array("v".utf8)
        let request: JSON = .object([
            ("compare", .array([EtcdClient.compareMod(key, [], .equal, 0).json, EtcdClient.compareMod(key, [], .less, 5).json])),
            ("success", .array([EtcdClient.put(key, value).json, EtcdClient.delete(key, [0]).json])),
        ])
        let bytes = try EtcdProto.txnRequest.encode(request)
        // compare 1: {result EQUAL (default, omitted), target MOD = 2, key "k", mod_revision 0 (a oneof: written)}
        // compare 2: {result LESS = 2, target MOD, key "k", mod_revision 5}
        // success: {request_put: {key "k", value "v"}}, {request_delete_range: {key "k", range_end "\0"}}
        XCTAssertEqual(bytes, hex("""
            0a 07 1002 1a016b 3000
            0a 09 1002 0802 1a016b 3005
            12 08 1206 0a016b 120176
            12 08 1a06 0a016b 120100
            """))
        let back = try EtcdProto.txnRequest.decode(bytes[...])
        XCTAssertEqual(back["success"]?.array?.count, 2)
        XCTAssertEqual(back["compare"]?.array?[1]["result"]?.string, "LESS")
        XCTAssertEqual(back["compare"]?.array?[1]["mod_revision"]?.string, "5")
        XCTAssertEqual(try EtcdClient.bytes(back["success"]?.array?[0]["request_put"]?["value"]), value)
        XCTAssertThrowsError(try EtcdProto.txnRequest.encode(["compare": [["nonsense": "1"]]]), "a field the table does not know")

        // A TxnResponse as etcd sends it: header {revision 42}, succeeded, responses [{response_range: {kvs: [{key
        // "k", mod_revision 7, value "v"}], count 1}}], in the gateway's JSON.
        let answer = try EtcdProto.txnResponse.decode(hex("0a02182a 1001 1a0e 0a0c 1208 0a016b 1807 2a0176 2001")[...])
        XCTAssertEqual(EtcdClient.int(answer["header"]?["revision"]), 42)
        XCTAssertEqual(answer["succeeded"]?.bool, true)
        let kv = answer["responses"]?.array?.first?["response_range"]?["kvs"]?.array?.first
        XCTAssertEqual(try EtcdClient.bytes(kv?["key"]), key)
        XCTAssertEqual(EtcdClient.int(kv?["mod_revision"]), 7)
        XCTAssertThrowsError(try EtcdProto.txnResponse.decode(hex("0a05182a")[...]), "a message cut short")

        // Found by the grpc fuzzer (Tests/Fuzz/corpus/grpc): a message field sent twice is merged, a scalar sent twice
        // is its last value (protobuf's rules; before, both were kept as two JSON keys); an enum value past the table,
        // even one with all 64 bits set, is its number (before: a trap converting it to Int).
        let twice = try EtcdProto.txnResponse.decode(hex("0a021002 0a020802 1001 1000")[...])
        XCTAssertEqual(twice.serialized, #"{"header":{"member_id":"2","cluster_id":"2"},"succeeded":false}"#)
        let odd = try EtcdProto.compare.decode(hex("10ffffffffffffffffff01 0809")[...])
        XCTAssertEqual(odd["target"]?.string, "-1")
        XCTAssertEqual(odd["result"]?.string, "9")
        XCTAssertEqual(try EtcdProto.compare.decode(try EtcdProto.compare.encode(odd)[...]), odd, "and encodes back to the same")
    }

    /// The engine's Txn parts encode to the same protobuf directly (the gRPC transport's way) as through their
    /// gateway JSON and the tables (how every other request goes), for random keys, values and numbers.
    func testTxnPartsEncodeAsTheTablesDo() throws {
        var g = SystemRandomNumberGenerator()
        func bytes() -> [UInt8] { (0..<Int.random(in: 0...20, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) } }
        for _ in 0..<500 {
            let n = Int64.random(in: -5...Int64.max, using: &g) / (Bool.random(using: &g) ? 1 : 1 << 40)
            let parts: [EtcdTxnPart] = [
                .put(key: bytes(), value: bytes(), lease: Bool.random(using: &g) ? 0 : n), .delete(key: bytes(), end: bytes()), .range(key: bytes()),
                .compare(.mod, .less, key: bytes(), end: bytes(), n), .compare(.version, .equal, key: bytes(), end: [], 0),
                .compare(.create, .notEqual, key: bytes(), end: [], n), .compare(.mod, .greater, key: bytes(), end: [], n),
            ]
            for p in parts {
                let table = if case .compare = p { EtcdProto.compare } else { EtcdProto.requestOp }
                XCTAssertEqual(p.protobuf, try table.encode(p.json), "\(p.json.serialized)")
            }
        }
    }

    /// An HTTP/2 peer that answers with garbage, with a frame that is not HTTP/2, or not at all: each call fails with
    /// an error (never a crash, never a hang).
    func testAPeerThatSpeaksNonsenseIsAnError() throws {
        let settings = GRPCConnection.frame(type: 0x4, flags: 0, stream: 0, [])
        let answers: [(String, [[UInt8]])] = [
            ("nothing", []),
            ("HTTP/1.1", [Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8)]),
            ("a reset", [settings, GRPCConnection.frame(type: 0x3, flags: 0, stream: 1, [0, 0, 0, 2])]),
            ("GOAWAY", [settings, GRPCConnection.frame(type: 0x7, flags: 0, stream: 0, [0, 0, 0, 0, 0, 0, 0, 1])]),
            ("a bad header block", [GRPCConnection.frame(type: 0x1, flags: 0x5, stream: 1, [0xFF, 0xFF, 0xFF])]),
            ("data without an end", [GRPCConnection.frame(type: 0x0, flags: 0, stream: 1, [0, 0, 0, 0, 9, 1, 2])]),
            ("trailers with an error", [GRPCConnection.frame(type: 0x1, flags: 0x5, stream: 1,
                                                             [0x00, 0x0B] + Array("grpc-status".utf8) + [0x01] + Array("9".utf8)
                                                             + [0x00, 0x0C] + Array("grpc-message".utf8) + [0x06] + Array("no%20k".utf8))]),
        ]
        for (what, chunks) in answers {
            let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: 1), timeoutSeconds: 1) { Canned(chunks) }
            let g = GRPCConnection(conn, authority: "test", secure: false)
            XCTAssertThrowsError(try g.unary("/etcdserverpb.KV/Range", metadata: [], message: [0x0A, 0x01, 0x6B]), what) { e in
                if what == "trailers with an error" {
                    XCTAssertEqual((e as? GRPCStatus)?.code, 9)
                    XCTAssertEqual((e as? GRPCStatus)?.message, "no k", "grpc-message is percent-decoded")
                }
            }
        }
        // A whole answer: the response message, then trailers with status 0.
        let ok: [[UInt8]] = [settings, GRPCConnection.frame(type: 0x1, flags: 0x4, stream: 1, [0x88]),
                             GRPCConnection.frame(type: 0x0, flags: 0, stream: 1, GRPCConnection.grpcMessage([0x10, 0x01])),
                             GRPCConnection.frame(type: 0x1, flags: 0x5, stream: 1, [0x00, 0x0B] + Array("grpc-status".utf8) + [0x01, 0x30])]
        let g = GRPCConnection(UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: 1), timeoutSeconds: 1) { Canned(ok) }, authority: "test", secure: false)
        XCTAssertEqual(try g.unary("/etcdserverpb.KV/Txn", metadata: [], message: []), [0x10, 0x01])
    }

    /// A fake etcd on loopback that answers calls with `succeeded: true` (field 2) and status 0, except those `drop` names (by
    /// their order, from 1): it reads the whole request and closes the connection without an answer. It counts the
    /// requests it received whole.
    final class FakeEtcd: @unchecked Sendable {
        let port = freeLoopbackPort()
        private let fd: Int32
        private let lock = NSLock()
        private var received = 0
        var requests: Int { lock.withLock { received } }

        /// `drop`: requests answered by closing the connection; `refuse`: requests answered with GOAWAY naming no
        /// stream as processed (then the connection is closed).
        init(drop: Set<Int>, refuse: Set<Int> = []) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0, listen(fd, 4) == 0 else { throw NSError(domain: "FakeEtcd", code: 1) }
            Thread.detachNewThread { [self] in
                while true {
                    let c = accept(fd, nil, nil)
                    if c < 0 { return }
                    serve(c, drop, refuse)
                }
            }
        }

        deinit { close(fd) }

        private func serve(_ c: Int32, _ drop: Set<Int>, _ refuse: Set<Int>) {
            defer { close(c) }
            let settings = GRPCConnection.frame(type: 0x4, flags: 0, stream: 0, [])
            _ = settings.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            var buf: [UInt8] = [], skipped = false
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, 65536, 0) }
                if n <= 0 { return }
                buf += chunk[0..<n]
                if !skipped { guard buf.count >= 24 else { continue }; buf.removeFirst(24); skipped = true }
                while buf.count >= 9 {
                    let len = Int(buf[0]) << 16 | Int(buf[1]) << 8 | Int(buf[2])
                    guard buf.count >= 9 + len else { break }
                    let type = buf[3], flags = buf[4], stream = Int(buf[5] & 0x7F) << 24 | Int(buf[6]) << 16 | Int(buf[7]) << 8 | Int(buf[8])
                    buf.removeFirst(9 + len)
                    guard type == 0x0, flags & 0x1 != 0 else { continue }  // a request ends with DATA and END_STREAM
                    let nth = lock.withLock { received += 1; return received }
                    if drop.contains(nth) { return }
                    if refuse.contains(nth) {
                        let goaway = GRPCConnection.frame(type: 0x7, flags: 0, stream: 0, [0, 0, 0, 0, 0, 0, 0, 0])
                        _ = goaway.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                        return
                    }
                    let answer = GRPCConnection.frame(type: 0x1, flags: 0x4, stream: stream, [0x88])
                        + GRPCConnection.frame(type: 0x0, flags: 0, stream: stream, GRPCConnection.grpcMessage([0x10, 0x01]))  // succeeded
                        + GRPCConnection.frame(type: 0x1, flags: 0x5, stream: stream, [0x00, 0x0B] + Array("grpc-status".utf8) + [0x01, 0x30])
                    _ = answer.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
    }

    /// On a kept connection that fails after the request was sent, a read is sent again on a new connection; a
    /// write is not (etcd may have applied it): it fails as UNAVAILABLE with its outcome unknown, and etcd received
    /// it once. Before, the gRPC transport sent such a write again.
    func testAWriteWhoseAnswerIsLostIsNotSentAgain() throws {
        let reads = try FakeEtcd(drop: [2])
        let client = try EtcdClient(EtcdSettings(endpoints: ["http://127.0.0.1:\(reads.port)"], site: "t", timeoutSeconds: 2))
        _ = try client.range(Array("k".utf8), [], revision: 0)
        _ = try client.range(Array("k".utf8), [], revision: 0)  // dropped, then asked again on a new connection
        XCTAssertEqual(reads.requests, 3)

        let writes = try FakeEtcd(drop: [2])
        let w = try EtcdClient(EtcdSettings(endpoints: ["http://127.0.0.1:\(writes.port)"], site: "t", timeoutSeconds: 2))
        _ = try w.txn(compares: [], operations: [EtcdClient.put(Array("k".utf8), [1])])
        XCTAssertThrowsError(try w.txn(compares: [], operations: [EtcdClient.put(Array("k".utf8), [2])])) { e in
            XCTAssertEqual((e as? BerthError)?.status, .unavailable, "\(e)")
            XCTAssertTrue("\(e)".contains("outcome of this write is unknown"), "\(e)")
        }
        XCTAssertEqual(writes.requests, 2, "the write etcd may have applied was sent once")

        // A write etcd says it did not process (GOAWAY naming no stream) is sent again on a new connection, and
        // commits.
        let refused = try FakeEtcd(drop: [], refuse: [2])
        let r = try EtcdClient(EtcdSettings(endpoints: ["http://127.0.0.1:\(refused.port)"], site: "t", timeoutSeconds: 2))
        _ = try r.txn(compares: [], operations: [EtcdClient.put(Array("k".utf8), [1])])
        XCTAssertTrue(try r.txn(compares: [], operations: [EtcdClient.put(Array("k".utf8), [2])]).succeeded)
        XCTAssertEqual(refused.requests, 3, "refused once, then answered")
    }

    /// What etcd says it did not act on (GOAWAY past the stream, REFUSED_STREAM) is marked so; other resets are not.
    /// Out-of-range settings and an HPACK table over 4096 bytes are errors.
    func testWhatEtcdDidNotProcessIsKnown() throws {
        func call(_ chunks: [[UInt8]]) -> Error? {
            let g = GRPCConnection(UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: 1), timeoutSeconds: 1) { Canned(chunks) },
                                   authority: "t", secure: false)
            if case .failure(let e) = Result(catching: { try g.unary("/etcdserverpb.KV/Txn", metadata: [], message: []) }) { return e }
            return nil
        }
        let goaway = GRPCConnection.frame(type: 0x7, flags: 0, stream: 0, [0, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual((call([goaway]) as? GRPCConnection.Ended)?.unprocessed, true)
        XCTAssertEqual((call([GRPCConnection.frame(type: 0x3, flags: 0, stream: 1, [0, 0, 0, 7])]) as? GRPCConnection.Ended)?.unprocessed, true)
        XCTAssertEqual((call([GRPCConnection.frame(type: 0x3, flags: 0, stream: 1, [0, 0, 0, 2])]) as? GRPCConnection.Ended)?.unprocessed, false)
        let tinyFrames = GRPCConnection.frame(type: 0x4, flags: 0, stream: 0, [0, 5, 0, 0, 0, 1])
        XCTAssertTrue("\(call([tinyFrames]).map { "\($0)" } ?? "")".contains("frame size of 1"))
        let hugeWindow = GRPCConnection.frame(type: 0x4, flags: 0, stream: 0, [0, 4, 0x80, 0, 0, 0])
        XCTAssertTrue("\(call([hugeWindow]).map { "\($0)" } ?? "")".contains("initial window"))
        var d = HPACKDecoder()
        XCTAssertThrowsError(try d.decode([0x3F, 0xE2, 0x1F][...]), "a table size update to 4097")
        XCTAssertNoThrow(try d.decode([0x3F, 0xE1, 0x1F][...]), "to 4096")
        // A trailers-only answer without grpc-status (a proxy's) names what it was.
        let proxy = GRPCConnection.frame(type: 0x1, flags: 0x5, stream: 1, [0x8E])  // :status 500 (static entry 14)
        let said = call([proxy]).map { "\($0)" } ?? ""
        XCTAssertTrue(said.contains("without a gRPC status (HTTP 500)"), said)
    }
}
