// A small JSON value: parse, build, serialise. The one JSON representation of the host, the CLI and berth-cni
// (which must start fast, so this depends on nothing but the standard library).

import BerthJSONText

public enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    /// An integer kept exact (every integer the parser reads that fits 64 bits; JSON(Int) and integer literals).
    case int(Int64)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.int(x), .number(y)), let (.number(y), .int(x)): return JSON.exact(y) == x
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { k, v in b[k] == v }
        default: return false
        }
    }

    // MARK: access

    public subscript(key: String) -> JSON? {
        if case .object(let kv) = self { for (k, v) in kv where k == key { return v } }
        return nil
    }
    public subscript(index: Int) -> JSON? {
        if case .array(let a) = self, index >= 0, index < a.count { return a[index] }
        return nil
    }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var double: Double? {
        if case .number(let d) = self { return d }
        if case .int(let i) = self { return Double(i) }
        return nil
    }
    /// The exact integer: any `.int`, and a `.number` that is integral and exactly representable (|d| < 2^63).
    public var int: Int? {
        if case .int(let i) = self { return Int(i) }
        if case .number(let d) = self { return JSON.exact(d).map { Int($0) } }
        return nil
    }
    /// The Int64 a Double holds exactly, or nil (a fraction, or out of range).
    static func exact(_ d: Double) -> Int64? {
        guard d.isFinite, d.rounded() == d, d >= -9.223372036854775808e18, d < 9.223372036854775808e18 else { return nil }
        return Int64(d)
    }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }
    public var object: [(String, JSON)]? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }
    public var keys: [String] { object?.map { $0.0 } ?? [] }

    /// A copy with `key` set (replaced in place when present, appended otherwise).
    public func setting(_ key: String, _ value: JSON) -> JSON {
        guard case .object(var kv) = self else { return .object([(key, value)]) }
        if let i = kv.firstIndex(where: { $0.0 == key }) { kv[i].1 = value } else { kv.append((key, value)) }
        return .object(kv)
    }
    public func removing(_ key: String) -> JSON {
        guard case .object(let kv) = self else { return self }
        return .object(kv.filter { $0.0 != key })
    }

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number(let d): return d.rounded() == d ? "integer" : "number"
        case .int: return "integer"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    // MARK: serialise

    public var serialized: String { String(decoding: bytes, as: UTF8.self) }

    public var pretty: String {
        var out: [UInt8] = []
        write(to: &out, indent: "  ", level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    /// The compact UTF-8 encoding. Written straight into bytes: this is on every API answer and every plugin call.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        write(to: &out, indent: nil, level: 0)
        return out
    }

    func write(to out: inout [UInt8], indent: String?, level: Int) {
        func newline(_ l: Int) {
            guard let indent else { return }
            out.append(UInt8(ascii: "\n"))
            for _ in 0..<l { out.append(contentsOf: indent.utf8) }
        }
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let d):
            // An integral Double is written as the integer it holds (2^62, not 4.611686018427388e+18).
            if let i = JSON.exact(d) { JSONText.int(i, into: &out) } else if d.isFinite { out.append(contentsOf: "\(d)".utf8) } else { out.append(contentsOf: "null".utf8) }
        case .int(let i): JSONText.int(i, into: &out)
        case .string(let s): JSONText.quote(s, into: &out)
        case .array(let a):
            if a.isEmpty { out.append(contentsOf: "[]".utf8); return }
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                v.write(to: &out, indent: indent, level: level + 1)
            }
            newline(level)
            out.append(UInt8(ascii: "]"))
        case .object(let kv):
            if kv.isEmpty { out.append(contentsOf: "{}".utf8); return }
            out.append(UInt8(ascii: "{"))
            for (i, (k, v)) in kv.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                JSONText.quote(k, into: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(UInt8(ascii: " ")) }
                v.write(to: &out, indent: indent, level: level + 1)
            }
            newline(level)
            out.append(UInt8(ascii: "}"))
        }
    }

    /// The String form of `quote`, for callers that build text.
    public static func quote(_ s: String, into out: inout String) {
        var b: [UInt8] = []
        JSONText.quote(s, into: &b)
        out += String(decoding: b, as: UTF8.self)
    }

    // MARK: parse

    public typealias ParseError = JSONParseError

    public static func parse(_ text: String) throws -> JSON { try parse(Array(text.utf8)) }

    public static func parse(_ bytes: [UInt8], maxDepth: Int = 128) throws -> JSON {
        try bytes.withUnsafeBufferPointer { try parse($0, maxDepth: maxDepth) }
    }

    public static func parse(_ raw: UnsafeRawBufferPointer) throws -> JSON {
        try parse(Array(raw))
    }

    static func parse(_ buf: UnsafeBufferPointer<UInt8>, maxDepth: Int) throws -> JSON {
        var s = JSONScanner(buf)
        s.refuseNUL = true  // no \u0000 in the host's text: see Names.swift
        return try s.document(JSON.self, maxDepth: maxDepth, duplicates: .refuse)
    }
}

/// The host's values: integers that fit 64 bits are exact (`.int`), other numbers Doubles; a repeated key, `\u0000`, bytes that are not UTF-8 and unpaired surrogates
/// are refused (JSON.parse).
extension JSON: JSONBuildable {
    public static var jsonNull: JSON { .null }
    public static func jsonBool(_ b: Bool) -> JSON { .bool(b) }
    public static func jsonString(_ s: String) -> JSON { .string(s) }
    public static func jsonNumber(_ text: String, integral: Bool) -> JSON? {
        if integral, let i = Int64(text) { return .int(i) }
        return Double(text).flatMap { $0.isFinite ? .number($0) : nil }
    }
    public static func jsonArray(_ a: [JSON]) -> JSON { .array(a) }
    public static func jsonObject(_ kv: [(String, JSON)]) -> JSON { .object(kv) }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(Int64(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(_ i: Int) { self = .int(Int64(i)) }
    public init(_ i: Int64) { self = .int(i) }
    public init(_ s: String) { self = .string(s) }
    public init(_ s: String?) { self = s.map { .string($0) } ?? .null }
}
