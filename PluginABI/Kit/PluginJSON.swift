// PluginJSON — a small JSON value for plugins written with the kit: parse, build, serialise. Objects keep their
// key order, so responses and stored records serialise deterministically; integers that fit in Int64 stay exact.
// Standard library only, like the rest of the kit.
import BerthJSONText

public enum PluginJSON: Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([PluginJSON])
    case object([(String, PluginJSON)])

    public static func == (a: PluginJSON, b: PluginJSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.int(x), .double(y)), let (.double(y), .int(x)): return Double(x) == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { k, v in b[k] == v }
        default: return false
        }
    }

    // MARK: access

    public subscript(key: String) -> PluginJSON? {
        get {
            if case .object(let kv) = self { for (k, v) in kv where k == key { return v } }
            return nil
        }
        set {
            guard case .object(var kv) = self else { return }
            if let i = kv.firstIndex(where: { $0.0 == key }) {
                if let newValue { kv[i].1 = newValue } else { kv.remove(at: i) }
            } else if let newValue {
                kv.append((key, newValue))
            }
            self = .object(kv)
        }
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [PluginJSON]? { if case .array(let a) = self { return a }; return nil }
    public var object: [(String, PluginJSON)]? { if case .object(let o) = self { return o }; return nil }
    public var isObject: Bool { if case .object = self { return true }; return false }
    public var isNull: Bool { if case .null = self { return true }; return false }
    /// An integral number as Int64 (doubles only when they are whole and in range).
    public var int64: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e18: return Int64(d)
        default: return nil
        }
    }
    public var int: Int? { int64.map { Int($0) } }

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    // MARK: serialise

    public var serialized: String { String(decoding: bytes, as: UTF8.self) }

    /// The compact UTF-8 encoding, written straight into bytes (it is on every call's answer).
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        write(to: &out)
        return out
    }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): JSONText.int(i, into: &out)
        case .double(let d):
            if d.isFinite && d.rounded() == d && d >= -9.223372036854775808e18 && d < 9.223372036854775808e18 { JSONText.int(Int64(d), into: &out) }
            else { out.append(contentsOf: (d.isFinite ? "\(d)" : "null").utf8) }
        case .string(let s): JSONText.quote(s, into: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let kv):
            out.append(UInt8(ascii: "{"))
            for (i, (k, v)) in kv.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.quote(k, into: &out)
                out.append(UInt8(ascii: ":"))
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `s` as a JSON string literal to text.
    public static func quote(_ s: String, into out: inout String) {
        var b: [UInt8] = []
        JSONText.quote(s, into: &b)
        out += String(decoding: b, as: UTF8.self)
    }

    // MARK: parse

    public typealias ParseError = JSONParseError

    public static func parse(_ bytes: [UInt8]) throws -> PluginJSON {
        try bytes.withUnsafeBufferPointer { buf in
            var s = JSONScanner(buf)
            return try s.document(PluginJSON.self, maxDepth: 64, duplicates: .keepLast)
        }
    }

    public static func parse(_ s: String) throws -> PluginJSON { try parse(Array(s.utf8)) }
}

/// The kit's values: integers that fit stay exact as Int64, other numbers are Doubles; a repeated key keeps its
/// last value.
extension PluginJSON: JSONBuildable {
    public static var jsonNull: PluginJSON { .null }
    public static func jsonBool(_ b: Bool) -> PluginJSON { .bool(b) }
    public static func jsonString(_ s: String) -> PluginJSON { .string(s) }
    public static func jsonNumber(_ text: String, integral: Bool) -> PluginJSON? {
        if integral, let v = Int64(text) { return .int(v) }
        return Double(text).flatMap { $0.isFinite ? .double($0) : nil }  // 1e999 would be infinity: not a JSON number
    }
    public static func jsonArray(_ a: [PluginJSON]) -> PluginJSON { .array(a) }
    public static func jsonObject(_ kv: [(String, PluginJSON)]) -> PluginJSON { .object(kv) }
}

extension PluginJSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
              ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(Int64(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: PluginJSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, PluginJSON)...) { self = .object(elements) }
    public init(_ i: Int) { self = .int(Int64(i)) }
    public init(_ i: Int64) { self = .int(i) }
    public init(_ s: String) { self = .string(s) }
}
