// JSONText — the byte-level half of JSON, shared by the plugin kit's PluginJSON and the host's JSON (BerthWire),
// which differ only in the values they build (the kit keeps integers exact as Int64): encoding (string escaping and
// integer formatting straight into a byte buffer) and decoding (`JSONScanner`: whitespace, literals, strings and
// numbers, with the error type both report). Both run on every plugin call and every API request and answer.
// Standard library only: plugins built with the kit inherit nothing else.
public enum JSONText {
    /// Appends the decimal digits of `v`.
    public static func int(_ v: Int64, into out: inout [UInt8]) {
        if v == 0 { out.append(UInt8(ascii: "0")); return }
        var m = v < 0 ? UInt64(0) &- UInt64(bitPattern: v) : UInt64(v)
        if v < 0 { out.append(UInt8(ascii: "-")) }
        let start = out.count
        while m > 0 {
            out.append(UInt8(ascii: "0") + UInt8(m % 10))
            m /= 10
        }
        out[start...].reverse()
    }

    /// Appends `s` as a JSON string literal (quotes included). Runs of bytes that need no escape are copied in one piece.
    public static func quote(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            var run = 0
            for i in 0..<u.count {
                let c = u[i]
                guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i]))
                run = i + 1
                switch c {
                case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
                case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
                case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
                case UInt8(ascii: "\r"): out.append(contentsOf: "\\r".utf8)
                case UInt8(ascii: "\t"): out.append(contentsOf: "\\t".utf8)
                default:
                    let hex = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hex[Int(c >> 4)])
                    out.append(hex[Int(c & 15)])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<u.count]))
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlong forms, no
    /// surrogates, nothing above U+10FFFF), or nil when all of `b` is UTF-8.
    public static func firstInvalidUTF8(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 { i += 1; continue }
            let len: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF  // the allowed range of the second byte
            switch c {
            case 0xC2...0xDF: len = 2
            case 0xE0: len = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: len = 3
            case 0xED: len = 3; hi = 0x9F
            case 0xF0: len = 4; lo = 0x90
            case 0xF1...0xF3: len = 4
            case 0xF4: len = 4; hi = 0x8F
            default: return i
            }
            guard i + len <= n else { return i }
            guard b[i + 1] >= lo && b[i + 1] <= hi else { return i }
            for k in 2..<len where b[i + k] & 0xC0 != 0x80 { return i }
            i += len
        }
        return nil
    }
}

/// A malformed JSON text: where (byte offset) and what.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let offset: Int
    public let reason: String
    public init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// The token level of a JSON parser over bytes (RFC 8259 grammar, strictly): the structure (objects, arrays,
/// depth, duplicate keys) is left to the caller, which builds its own values from the tokens.
public struct JSONScanner {
    public let b: UnsafeBufferPointer<UInt8>
    /// The offset of the next byte to read.
    public var i = 0
    /// Refuse `\u0000` in strings (the host: a NUL would cut a name short in C, SQLite and plugins, so that
    /// `ctr\u0000A` and `ctr` became one id). Bytes that are not UTF-8 and unpaired surrogates are always refused.
    public var refuseNUL = false

    public init(_ bytes: UnsafeBufferPointer<UInt8>) { b = bytes }

    /// The next byte, or nil at the end of the input.
    public var peek: UInt8? { i < b.count ? b[i] : nil }

    public func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: i, reason: reason) }

    public mutating func skipWhitespace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    /// Consumes `s` (true, false, null) or fails.
    public mutating func literal(_ s: StaticString) throws {
        let n = s.utf8CodeUnitCount
        guard i + n <= b.count else { throw fail("unexpected end of input") }
        for k in 0..<n where b[i + k] != s.utf8Start[k] { throw fail("invalid literal") }
        i += n
    }

    /// A number: its text, and whether it is integral (no fraction, no exponent).
    public mutating func number() throws -> (text: String, integral: Bool) {
        let start = i
        var integral = true
        if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
        var digits = 0
        while i < b.count, (0x30...0x39).contains(b[i]) { i += 1; digits += 1 }
        guard digits > 0 else { i = start; throw fail("unexpected character") }
        if digits > 1, b[i - digits] == UInt8(ascii: "0") { i -= digits - 1; throw fail("leading zero in a number") }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            integral = false
            i += 1
            var f = 0
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1; f += 1 }
            guard f > 0 else { throw fail("expected digits after '.'") }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            integral = false
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            var e = 0
            while i < b.count, (0x30...0x39).contains(b[i]) { i += 1; e += 1 }
            guard e > 0 else { throw fail("expected exponent digits") }
        }
        return (String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self), integral)
    }

    /// A string, the scanner at its opening quote. Strings without escapes are decoded in one piece.
    public mutating func string() throws -> String {
        i += 1  // opening quote
        let start = i
        while i < b.count, b[i] != UInt8(ascii: "\""), b[i] != UInt8(ascii: "\\"), b[i] >= 0x20 { i += 1 }
        guard i < b.count else { throw fail("unterminated string") }
        if b[i] == UInt8(ascii: "\"") {
            let raw = UnsafeBufferPointer(rebasing: b[start..<i])
            if let bad = JSONText.firstInvalidUTF8(raw) { i = start + bad; throw fail("bytes that are not UTF-8 in a string") }
            let s = String(decoding: raw, as: UTF8.self)
            i += 1
            return s
        }
        var out = Array(b[start..<i])
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                if out.withUnsafeBufferPointer({ JSONText.firstInvalidUTF8($0) }) != nil { i = start; throw fail("bytes that are not UTF-8 in a string") }
                i += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw fail("control character in string") }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < b.count else { break }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    let at = i - 2
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        // A high surrogate must be followed by a low one; anything else is not text (it used to
                        // become U+FFFD, so that two different ids read as one).
                        guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { i = at; throw fail("unpaired UTF-16 surrogate escape") }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { i = at; throw fail("unpaired UTF-16 surrogate escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    if refuseNUL && code == 0 { i = at; throw fail("a NUL character (\\u0000) in a string: names and ids cannot hold one") }
                    guard let scalar = Unicode.Scalar(code) else { i = at; throw fail("unpaired UTF-16 surrogate escape") }
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw fail("invalid escape")
                }
            } else {
                out.append(c)
                i += 1
            }
        }
        throw fail("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid hex digit")
            }
            v = v * 16 + d
            i += 1
        }
        return v
    }
}

/// A JSON value type that `JSONScanner.document` can build: the host's JSON (numbers as Double) and the kit's
/// PluginJSON (integers kept exact as Int64) share the whole parser and differ only here.
public protocol JSONBuildable {
    static var jsonNull: Self { get }
    static func jsonBool(_ b: Bool) -> Self
    static func jsonString(_ s: String) -> Self
    /// The number whose text (valid JSON grammar) is `text`; nil when it cannot be represented.
    static func jsonNumber(_ text: String, integral: Bool) -> Self?
    static func jsonArray(_ a: [Self]) -> Self
    static func jsonObject(_ kv: [(String, Self)]) -> Self
}

/// What a repeated key in an object does.
public enum JSONDuplicateKeys: Sendable {
    /// Refuse the text ("duplicate key"): the host, where a repeated field is a mistake to report.
    case refuse
    /// The last value wins, as most parsers do: the kit, which reads what the host wrote.
    case keepLast
}

extension JSONScanner {
    /// One whole JSON text (surrounding whitespace allowed, nothing after it) as a `V`.
    @inlinable
    public mutating func document<V: JSONBuildable>(_: V.Type, maxDepth: Int, duplicates: JSONDuplicateKeys) throws -> V {
        skipWhitespace()
        let v: V = try value(depth: 0, maxDepth: maxDepth, duplicates: duplicates)
        skipWhitespace()
        if peek != nil { throw fail("unexpected trailing characters") }
        return v
    }

    @inlinable
    mutating func value<V: JSONBuildable>(depth: Int, maxDepth: Int, duplicates: JSONDuplicateKeys) throws -> V {
        guard depth < maxDepth else { throw fail("nesting deeper than \(maxDepth)") }
        guard let c = peek else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"):
            i += 1
            var kv: [(String, V)] = []
            // Keys seen, by position, once the object has more than 16 of them (a small one searches its few keys): a
            // linear search for each key made a large object quadratic (the 65,536 keys of a pool's "macs": seconds
            // of CPU for one request). String's hashing agrees with its ==, so the same keys are duplicates either way.
            var index: [String: Int]? = nil
            skipWhitespace()
            if peek == UInt8(ascii: "}") { i += 1; return .jsonObject(kv) }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let k = try string()
                skipWhitespace()
                guard peek == UInt8(ascii: ":") else { throw fail("expected ':' after key \"\(k)\"") }
                i += 1
                skipWhitespace()
                let v: V = try value(depth: depth + 1, maxDepth: maxDepth, duplicates: duplicates)
                let at = index != nil ? index![k] : kv.firstIndex(where: { $0.0 == k })
                if let at {
                    if duplicates == .refuse { throw fail("duplicate key \"\(k)\"") }
                    kv[at].1 = v
                } else {
                    kv.append((k, v))
                    if index != nil {
                        index![k] = kv.count - 1
                    } else if kv.count > 16 {
                        index = Dictionary(uniqueKeysWithValues: kv.indices.map { (kv[$0].0, $0) })
                    }
                }
                skipWhitespace()
                guard let d = peek else { throw fail("unterminated object") }
                if d == UInt8(ascii: ",") { i += 1; continue }
                if d == UInt8(ascii: "}") { i += 1; return .jsonObject(kv) }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            i += 1
            var a: [V] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") { i += 1; return .jsonArray(a) }
            while true {
                skipWhitespace()
                a.append(try value(depth: depth + 1, maxDepth: maxDepth, duplicates: duplicates))
                skipWhitespace()
                guard let d = peek else { throw fail("unterminated array") }
                if d == UInt8(ascii: ",") { i += 1; continue }
                if d == UInt8(ascii: "]") { i += 1; return .jsonArray(a) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .jsonString(try string())
        case UInt8(ascii: "t"): try literal("true"); return .jsonBool(true)
        case UInt8(ascii: "f"): try literal("false"); return .jsonBool(false)
        case UInt8(ascii: "n"): try literal("null"); return .jsonNull
        default:
            let n = try number()
            guard let v = V.jsonNumber(n.text, integral: n.integral) else { throw fail("invalid number \(n.text)") }
            return v
        }
    }
}
