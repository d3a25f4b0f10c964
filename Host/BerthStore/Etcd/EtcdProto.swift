// etcd's protobuf messages, for the gRPC transport (GRPC.swift): the wire format, and the few messages the engine
// sends and reads, described by field tables rather than generated code. A Txn's parts are typed (EtcdTxnPart) and
// encoded straight to protobuf or to the gateway's JSON; other requests are built as the JSON gateway takes them
// (snake_case names, bytes in base64, int64 as strings) and transcoded through the tables, and answers are given back
// in the gateway's shape, so the engine reads one answer language whichever transport carries it.
import BerthWire

/// Protocol buffers' wire format, as far as etcd's messages need it.
enum Protobuf {
    static func varint(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    /// Field `field` as a varint (int64, bool, enum); zero is the default and is not written unless the field has
    /// presence (a member of a oneof).
    static func int(_ field: Int, _ v: Int64, into out: inout [UInt8], present: Bool = false) {
        guard v != 0 || present else { return }
        varint(UInt64(field << 3), into: &out)
        varint(UInt64(bitPattern: v), into: &out)
    }

    /// Field `field` as length-delimited bytes (bytes, string, an embedded message).
    static func bytes(_ field: Int, _ b: [UInt8], into out: inout [UInt8]) {
        varint(UInt64(field << 3 | 2), into: &out)
        varint(UInt64(b.count), into: &out)
        out += b
    }

    /// A field as read: its number and either its varint (fixed-width fields too) or its bytes.
    struct Field {
        var number: Int
        var varint: UInt64 = 0
        var bytes: ArraySlice<UInt8> = []
        var delimited = false
        var int: Int64 { Int64(bitPattern: varint) }
    }

    struct Malformed: Error, CustomStringConvertible {
        var description: String { "etcd sent a gRPC message that is not valid protobuf" }
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
                f.delimited = true
                i += Int(n)
            default: throw Malformed()
            }
            out.append(f)
        }
        return out
    }
}

/// A message's fields as the JSON gateway names them, for transcoding.
struct ProtoMessage: Sendable {
    indirect enum Kind: Sendable {
        case bytes, string, int64, uint64, bool
        /// An enum: its names in value order.
        case enumeration([String])
        case message(ProtoMessage)
    }

    struct Field: Sendable {
        var name: String
        var number: Int
        var kind: Kind
        var repeated = false
        /// A member of a oneof: written even when it is zero (etcd tells "compare with 0" from "no target").
        var present = false
    }

    var name: String
    var fields: [Field]

    func field(named n: String) -> Field? { fields.first { $0.name == n } }
    func field(numbered n: Int) -> Field? { fields.first { $0.number == n } }

    /// The protobuf encoding of `j`, a request in the gateway's JSON; a field this table does not know is an error
    /// (a request the gRPC transport would silently change).
    func encode(_ j: JSON) throws -> [UInt8] {
        guard case .object(let pairs) = j else { throw BerthError(.internal, "gRPC \(name): expected an object, got \(j.serialized.prefix(80))") }
        var out: [UInt8] = []
        for (k, v) in pairs {
            guard let f = field(named: k) else { throw BerthError(.internal, "gRPC \(name): no field \"\(k)\" in this client's table") }
            for item in f.repeated ? (v.array ?? []) : [v] { try encode(item, f, into: &out) }
        }
        return out
    }

    private func encode(_ v: JSON, _ f: Field, into out: inout [UInt8]) throws {
        switch f.kind {
        case .bytes:
            guard let s = v.string, let b = Base64.decode(s) else { throw BerthError(.internal, "gRPC \(name).\(f.name): not base64") }
            Protobuf.bytes(f.number, b, into: &out)
        case .string:
            Protobuf.bytes(f.number, Array((v.string ?? "").utf8), into: &out)
        case .int64, .uint64:
            let n: Int64
            if let s = v.string { guard let x = Int64(s) ?? UInt64(s).map({ Int64(bitPattern: $0) }) else { throw BerthError(.internal, "gRPC \(name).\(f.name): \(s) is not an integer") }; n = x } else { n = Int64(v.int ?? 0) }
            Protobuf.int(f.number, n, into: &out, present: f.present)
        case .bool:
            Protobuf.int(f.number, v.bool == true ? 1 : 0, into: &out, present: f.present)
        case .enumeration(let names):
            let n: Int
            if let s = v.string {
                // A name, or the number of a value newer than this table (as `decode` gives it).
                guard let x = names.firstIndex(of: s) ?? Int(s) else { throw BerthError(.internal, "gRPC \(name).\(f.name): no value \(s)") }
                n = x
            } else {
                n = Int(v.int ?? 0)
            }
            Protobuf.int(f.number, Int64(n), into: &out, present: f.present)
        case .message(let m):
            Protobuf.bytes(f.number, try m.encode(v), into: &out)
        }
    }

    /// `m` in the gateway's JSON: fields this table does not know are left out, as are defaults (as the gateway does).
    /// A field that is not repeated but comes more than once is read as protobuf says: the last value of a scalar,
    /// the merge of every occurrence of a message.
    func decode(_ m: ArraySlice<UInt8>) throws -> JSON {
        var pairs: [(String, JSON)] = []
        var at: [String: Int] = [:]
        var merged: [String: [UInt8]] = [:]  // the bytes of every occurrence of a message field
        for raw in try Protobuf.fields(m) {
            guard let f = field(numbered: raw.number) else { continue }
            let v: JSON
            switch f.kind {
            case .bytes: v = .string(Base64.encode(Array(raw.bytes)))
            case .string: v = .string(String(decoding: raw.bytes, as: UTF8.self))
            case .int64: v = .string(String(raw.int))
            case .uint64: v = .string(String(raw.varint))
            case .bool: v = .bool(raw.varint != 0)
            case .enumeration(let names): v = .string(raw.varint < UInt64(names.count) ? names[Int(raw.varint)] : String(raw.int))
            case .message(let sub):
                if f.repeated {
                    v = try sub.decode(raw.bytes)
                } else {
                    merged[f.name, default: []] += raw.bytes
                    v = try sub.decode(merged[f.name]![...])
                }
            }
            if let i = at[f.name] {
                if f.repeated, case .array(let a) = pairs[i].1 { pairs[i].1 = .array(a + [v]) } else { pairs[i].1 = v }
            } else {
                at[f.name] = pairs.count
                pairs.append((f.name, f.repeated ? .array([v]) : v))
            }
        }
        return .object(pairs)
    }
}

/// The messages of etcd's KV service the engine uses (etcd's api/etcdserverpb/rpc.proto and mvccpb/kv.proto, v3.4).
enum EtcdProto {
    static let header = ProtoMessage(name: "ResponseHeader", fields: [
        .init(name: "cluster_id", number: 1, kind: .uint64), .init(name: "member_id", number: 2, kind: .uint64),
        .init(name: "revision", number: 3, kind: .int64), .init(name: "raft_term", number: 4, kind: .uint64),
    ])
    static let keyValue = ProtoMessage(name: "KeyValue", fields: [
        .init(name: "key", number: 1, kind: .bytes), .init(name: "create_revision", number: 2, kind: .int64),
        .init(name: "mod_revision", number: 3, kind: .int64), .init(name: "version", number: 4, kind: .int64),
        .init(name: "value", number: 5, kind: .bytes), .init(name: "lease", number: 6, kind: .int64),
    ])
    static let rangeRequest = ProtoMessage(name: "RangeRequest", fields: [
        .init(name: "key", number: 1, kind: .bytes), .init(name: "range_end", number: 2, kind: .bytes),
        .init(name: "limit", number: 3, kind: .int64), .init(name: "revision", number: 4, kind: .int64),
        .init(name: "sort_order", number: 5, kind: .enumeration(["NONE", "ASCEND", "DESCEND"])),
        .init(name: "sort_target", number: 6, kind: .enumeration(["KEY", "VERSION", "CREATE", "MOD", "VALUE"])),
        .init(name: "serializable", number: 7, kind: .bool), .init(name: "keys_only", number: 8, kind: .bool),
        .init(name: "count_only", number: 9, kind: .bool), .init(name: "min_mod_revision", number: 10, kind: .int64),
        .init(name: "max_mod_revision", number: 11, kind: .int64), .init(name: "min_create_revision", number: 12, kind: .int64),
        .init(name: "max_create_revision", number: 13, kind: .int64),
    ])
    static let rangeResponse = ProtoMessage(name: "RangeResponse", fields: [
        .init(name: "header", number: 1, kind: .message(header)), .init(name: "kvs", number: 2, kind: .message(keyValue), repeated: true),
        .init(name: "more", number: 3, kind: .bool), .init(name: "count", number: 4, kind: .int64),
    ])
    static let putRequest = ProtoMessage(name: "PutRequest", fields: [
        .init(name: "key", number: 1, kind: .bytes), .init(name: "value", number: 2, kind: .bytes),
        .init(name: "lease", number: 3, kind: .int64), .init(name: "prev_kv", number: 4, kind: .bool),
        .init(name: "ignore_value", number: 5, kind: .bool), .init(name: "ignore_lease", number: 6, kind: .bool),
    ])
    static let putResponse = ProtoMessage(name: "PutResponse", fields: [
        .init(name: "header", number: 1, kind: .message(header)), .init(name: "prev_kv", number: 2, kind: .message(keyValue)),
    ])
    static let deleteRangeRequest = ProtoMessage(name: "DeleteRangeRequest", fields: [
        .init(name: "key", number: 1, kind: .bytes), .init(name: "range_end", number: 2, kind: .bytes),
        .init(name: "prev_kv", number: 3, kind: .bool),
    ])
    static let deleteRangeResponse = ProtoMessage(name: "DeleteRangeResponse", fields: [
        .init(name: "header", number: 1, kind: .message(header)), .init(name: "deleted", number: 2, kind: .int64),
        .init(name: "prev_kvs", number: 3, kind: .message(keyValue), repeated: true),
    ])
    /// Nested Txns (request_txn) are not used by the engine and not in the table.
    static let requestOp = ProtoMessage(name: "RequestOp", fields: [
        .init(name: "request_range", number: 1, kind: .message(rangeRequest)), .init(name: "request_put", number: 2, kind: .message(putRequest)),
        .init(name: "request_delete_range", number: 3, kind: .message(deleteRangeRequest)),
    ])
    static let responseOp = ProtoMessage(name: "ResponseOp", fields: [
        .init(name: "response_range", number: 1, kind: .message(rangeResponse)), .init(name: "response_put", number: 2, kind: .message(putResponse)),
        .init(name: "response_delete_range", number: 3, kind: .message(deleteRangeResponse)),
    ])
    static let compare = ProtoMessage(name: "Compare", fields: [
        .init(name: "result", number: 1, kind: .enumeration(["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])),
        .init(name: "target", number: 2, kind: .enumeration(["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])),
        .init(name: "key", number: 3, kind: .bytes), .init(name: "version", number: 4, kind: .int64, present: true),
        .init(name: "create_revision", number: 5, kind: .int64, present: true),
        .init(name: "mod_revision", number: 6, kind: .int64, present: true), .init(name: "value", number: 7, kind: .bytes),
        .init(name: "lease", number: 8, kind: .int64, present: true),
        .init(name: "range_end", number: 64, kind: .bytes),
    ])
    static let txnRequest = ProtoMessage(name: "TxnRequest", fields: [
        .init(name: "compare", number: 1, kind: .message(compare), repeated: true),
        .init(name: "success", number: 2, kind: .message(requestOp), repeated: true),
        .init(name: "failure", number: 3, kind: .message(requestOp), repeated: true),
    ])
    static let txnResponse = ProtoMessage(name: "TxnResponse", fields: [
        .init(name: "header", number: 1, kind: .message(header)), .init(name: "succeeded", number: 2, kind: .bool),
        .init(name: "responses", number: 3, kind: .message(responseOp), repeated: true),
    ])

    /// A TxnResponse read for its outcome alone (its header and whether it succeeded): etcd answers each put of a
    /// group commit with a response and a header of its own, which nobody reads when the Txn has no failure branch.
    static let txnOutcome = ProtoMessage(name: "TxnResponse", fields: Array(txnResponse.fields.prefix(2)))

    /// The gRPC method and messages of a gateway path the transport carries (nil: the gateway carries it).
    static func method(_ path: String) -> (grpc: String, request: ProtoMessage, response: ProtoMessage)? {
        switch path {
        case "/v3/kv/range": return ("/etcdserverpb.KV/Range", rangeRequest, rangeResponse)
        case "/v3/kv/txn": return ("/etcdserverpb.KV/Txn", txnRequest, txnResponse)
        default: return nil
        }
    }
}

/// One compare or operation of a Txn (etcd's Compare and RequestOp), as EtcdClient's helpers build it. Each
/// transport encodes it its own way: the gateway's JSON, or protobuf straight from the bytes (no base64, no JSON).
enum EtcdTxnPart: Equatable {
    case put(key: [UInt8], value: [UInt8], lease: Int64)
    case delete(key: [UInt8], end: [UInt8])
    case range(key: [UInt8])
    /// Compare `target` of `key` (every key in [key, end) when `end` is set) with `number`.
    case compare(Target, Result, key: [UInt8], end: [UInt8], Int64)

    /// etcd's CompareTarget, as far as the engine compares (VALUE and LEASE are not used).
    enum Target: Int { case version = 0, create = 1, mod = 2 }
    /// etcd's CompareResult.
    enum Result: Int { case equal = 0, greater = 1, less = 2, notEqual = 3 }

    private static let targetNames = ["VERSION", "CREATE", "MOD"]
    private static let resultNames = ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
    private static let numberFields = ["version", "create_revision", "mod_revision"]

    /// The gateway's JSON (a RequestOp, or a Compare).
    var json: JSON {
        switch self {
        case .put(let k, let v, let lease):
            var f: [(String, JSON)] = [("key", .string(Base64.encode(k))), ("value", .string(Base64.encode(v)))]
            if lease != 0 { f.append(("lease", .string(String(lease)))) }
            return ["request_put": .object(f)]
        case .delete(let k, let end):
            var f: [(String, JSON)] = [("key", .string(Base64.encode(k)))]
            if !end.isEmpty { f.append(("range_end", .string(Base64.encode(end)))) }
            return ["request_delete_range": .object(f)]
        case .range(let k):
            return ["request_range": .object([("key", .string(Base64.encode(k)))])]
        case .compare(let t, let r, let k, let end, let n):
            var f: [(String, JSON)] = [("target", .string(Self.targetNames[t.rawValue])), ("result", .string(Self.resultNames[r.rawValue])),
                                       ("key", .string(Base64.encode(k))), (Self.numberFields[t.rawValue], .string(String(n)))]
            if !end.isEmpty { f.append(("range_end", .string(Base64.encode(end)))) }
            return .object(f)
        }
    }

    /// The protobuf message (RequestOp or Compare; field numbers as in EtcdProto's tables).
    var protobuf: [UInt8] {
        var out: [UInt8] = []
        switch self {
        case .put(let k, let v, let lease):
            var m: [UInt8] = []
            Protobuf.bytes(1, k, into: &m)
            Protobuf.bytes(2, v, into: &m)
            Protobuf.int(3, lease, into: &m)
            Protobuf.bytes(2, m, into: &out)  // request_put
        case .delete(let k, let end):
            var m: [UInt8] = []
            Protobuf.bytes(1, k, into: &m)
            if !end.isEmpty { Protobuf.bytes(2, end, into: &m) }
            Protobuf.bytes(3, m, into: &out)  // request_delete_range
        case .range(let k):
            var m: [UInt8] = []
            Protobuf.bytes(1, k, into: &m)
            Protobuf.bytes(1, m, into: &out)  // request_range
        case .compare(let t, let r, let k, let end, let n):
            Protobuf.int(2, Int64(t.rawValue), into: &out)  // in the JSON form's order: the same bytes either way
            Protobuf.int(1, Int64(r.rawValue), into: &out)
            Protobuf.bytes(3, k, into: &out)
            Protobuf.int(4 + t.rawValue, n, into: &out, present: true)  // version 4, create_revision 5, mod_revision 6 (a oneof)
            if !end.isEmpty { Protobuf.bytes(64, end, into: &out) }
        }
        return out
    }
}
