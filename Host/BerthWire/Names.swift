// Names and ids that enter Berth from outside — API paths, queries and bodies, berth-cni's environment and
// configuration, the site file, plugin output — are checked here, in one place, so that `ctr\0A`, `ctr\0B` and
// `ctr` (cut at the NUL by C) or two ids that differ only in bytes that are not UTF-8 never become one attachment.
// (JSON text is checked by the parser itself: JSONScanner refuses bytes that are not UTF-8, lone surrogates and,
// for the host, `\u0000`.) Standard library only: berth-cni uses it.
import BerthJSONText

public enum Names {
    /// A name or id that cannot be used, with a message that says which input and why.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let message: String
        public var description: String { message }
    }

    /// Checks a decoded name or id (`what` names it in the error, e.g. `containerID`): no NUL and no other control
    /// character (U+0000-U+001F, U+007F), which C strings, logs and file names would cut or misread.
    public static func check(_ s: String, _ what: String) throws {
        var at = 0
        for b in s.utf8 {
            if b < 0x20 || b == 0x7F {
                let kind = b == 0 ? "a NUL byte" : "a control character (0x\(b < 16 ? "0" : "")\(String(b, radix: 16)))"
                throw Invalid(message: "\(what) \(quoted(s)) contains \(kind) at byte \(at): names and ids must be UTF-8 text without control characters")
            }
            at += 1
        }
    }

    /// Decodes a name or id given as bytes (an environment variable, a percent-decoded path segment): refused when
    /// the bytes are not UTF-8 (they would otherwise become U+FFFD and collide) or hold a control character.
    public static func decode<C: Collection>(_ bytes: C, _ what: String) throws -> String where C.Element == UInt8 {
        let a = Array(bytes)
        if let bad = a.withUnsafeBufferPointer({ JSONText.firstInvalidUTF8($0) }) {
            throw Invalid(message: "\(what) is not valid UTF-8 (byte \(bad) is 0x\(String(a[bad], radix: 16))): names and ids must be UTF-8 text")
        }
        let s = String(decoding: a, as: UTF8.self)
        try check(s, what)
        return s
    }

    /// Decodes a percent-encoded URL component (`%41` -> `A`) strictly: a malformed escape, bytes that are not
    /// UTF-8 and control characters are refused (never passed on as they were, which would make `%FF` and `%25FF`
    /// the same name).
    public static func percentDecoded(_ s: Substring, _ what: String) throws -> String {
        guard s.utf8.contains(UInt8(ascii: "%")) else {
            let v = String(s)
            try check(v, what)
            return v
        }
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while let c = it.popFirst() {
            guard c == UInt8(ascii: "%") else { out.append(c); continue }
            guard it.count >= 2, let h = hex(it[it.startIndex]), let l = hex(it[it.startIndex + 1]) else {
                throw Invalid(message: "\(what) \(quoted(String(s))) has a malformed percent escape: use %XX with two hex digits")
            }
            out.append(h << 4 | l)
            it = it.dropFirst(2)
        }
        return try decode(out, what)
    }

    /// Checks a network interface name as Linux does (dev_valid_name): 1 to 15 bytes, not `.` or `..`, and no `/`,
    /// `:`, whitespace or control character.
    public static func interface(_ s: String, _ what: String = "ifname") throws {
        try check(s, what)
        let n = s.utf8.count
        let why: String?
        if n == 0 { why = "is empty" } else if n > 15 { why = "is \(n) bytes long (Linux allows at most 15)" } else if s == "." || s == ".." {
            why = "is \"\(s)\", which Linux reserves"
        } else if let c = s.unicodeScalars.first(where: { $0 == "/" || $0 == ":" || $0.properties.isWhitespace }) {
            why = "contains \(c == "/" || c == ":" ? "\"\(c)\"" : "whitespace")"
        } else { why = nil }
        if let why {
            throw Invalid(message: "\(what) \(quoted(s)) is not a valid interface name: it \(why). Linux interface names are 1-15 bytes without \"/\", \":\" or whitespace, and not \".\" or \"..\"")
        }
    }

    /// `s` as a JSON string literal (control characters escaped), for error messages.
    static func quoted(_ s: String) -> String {
        var o = ""
        JSON.quote(s.count > 80 ? String(s.prefix(80)) + "..." : s, into: &o)
        return o
    }
}
