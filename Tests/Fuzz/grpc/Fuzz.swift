// libFuzzer entry for the etcd engine's gRPC transport (Host/BerthStore/Etcd/GRPC.swift, EtcdProto.swift): the
// bytes an etcd member (or anything listening where it should be) sends back. The first byte picks the target:
//   0  the whole HTTP/2 client: the rest is the peer's byte stream, answering one unary call. It must end in an
//      answer or an error, never a crash, a hang or unbounded memory.
//   1  HPACK: the rest is a header block. Oracle: a Huffman-coded string decodes to what it encoded.
//   2  protobuf through the engine's tables (TxnResponse, RangeResponse, TxnRequest, WatchResponse). Oracle: what
//      decodes, once re-encoded and decoded, is stable (the transcoding is a function of its own output).
@testable import BerthStore
import BerthWire

final class Canned: ByteStream {
    var bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func write(_ b: [UInt8]) throws {}
    func read(timeoutSeconds: Int) throws -> [UInt8] {
        let n = min(bytes.count, 7)  // in small pieces: frames split across reads
        defer { bytes.removeFirst(n) }
        return Array(bytes.prefix(n))
    }
    func close() {}
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGRPC(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let which = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    switch which % 3 {
    case 0:
        let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: 1), timeoutSeconds: 1) { Canned(rest) }
        let g = GRPCConnection(conn, authority: "fuzz", secure: false)
        _ = try? g.unary("/etcdserverpb.KV/Txn", metadata: [("token", "t")], message: [0x10, 0x01])
        _ = try? g.unary("/etcdserverpb.KV/Range", metadata: [], message: [])  // a second call on what is left
    case 1:
        var d = HPACKDecoder()
        _ = try? d.decode(rest[...])
        _ = try? d.decode(rest.reversed()[...])
        if let s = try? Huffman.decode(rest[...]) {
            // Whatever decodes is bytes; encode them back with the canonical code and decode again.
            if (try? Huffman.decode(Huffman.encode(s)[...])) != s { fatalError("Huffman round trip failed for \(s)") }
        }
    default:
        for m in [EtcdProto.txnResponse, EtcdProto.rangeResponse, EtcdProto.txnRequest] {
            guard let j1 = try? m.decode(rest[...]) else { continue }
            let j2: JSON, j3: JSON
            do {
                j2 = try m.decode(try m.encode(j1)[...])
                j3 = try m.decode(try m.encode(j2)[...])
            } catch { fatalError("\(m.name): what decoded does not encode and decode again: \(error) \(j1.serialized)") }
            if j2 != j3 { fatalError("\(m.name): transcoding not stable: \(j2.serialized) -> \(j3.serialized)") }
        }
        _ = try? WatchMessage(protobuf: rest)
    }
    return 0
}
