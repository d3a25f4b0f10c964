// JSON Schema validation (the subset the ABI documents): used for plugins' configurations, custom kinds and
// the site configuration itself. Every error names the path of the offending value.
import BerthStore
import BerthWire

public struct SchemaError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { path.isEmpty ? reason : "\(path): \(reason)" }
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
}

public enum Schema {
    /// Validates `value` against `schema`; returns every problem found (empty = valid).
    public static func validate(_ value: JSON, against schema: JSON, path: String = "") -> [SchemaError] {
        var errors: [SchemaError] = []
        check(value, schema, path, &errors)
        return errors
    }

    /// Checks that a schema only uses keywords this validator understands, so a typo cannot silently accept anything.
    public static func lint(_ schema: JSON, path: String = "") -> [SchemaError] {
        let known: Set<String> = ["type", "properties", "required", "additionalProperties", "items", "enum", "minimum", "maximum",
                                  "minLength", "maxLength", "minItems", "maxItems", "pattern", "description", "title", "default",
                                  "$schema", "$id", "examples", "const", "oneOf", "anyOf", "format"]
        guard case .object(let kv) = schema else {
            if case .bool = schema { return [] }
            return [SchemaError(path: path, reason: "a schema must be an object")]
        }
        var errs: [SchemaError] = []
        for (k, v) in kv {
            if !known.contains(k) { errs.append(SchemaError(path: path, reason: "unsupported schema keyword \"\(k)\"")) }
            if k == "pattern", let p = v.string, Pattern.compile(Array(p.unicodeScalars).filter { $0 != "^" && $0 != "$" }) == nil {
                errs.append(SchemaError(path: path, reason: "unsupported pattern \(p) (use literals, ., [classes], \\d, \\w, *, +, ?, ^ and $)"))
            }
            if k == "properties", case .object(let props) = v {
                for (pk, pv) in props { errs += lint(pv, path: join(path, pk)) }
            }
            if k == "items" || k == "additionalProperties", case .object = v { errs += lint(v, path: path + "[]") }
        }
        return errs
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    static func matchesType(_ v: JSON, _ t: String) -> Bool {
        switch (t, v) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object), ("number", .number), ("number", .int), ("integer", .int): return true
        case ("integer", .number(let d)): return d.rounded() == d
        default: return false
        }
    }

    static func check(_ v: JSON, _ s: JSON, _ path: String, _ errors: inout [SchemaError]) {
        if case .bool(let b) = s {
            if !b { errors.append(SchemaError(path: path, reason: "no value is allowed here")) }
            return
        }
        let at = path.isEmpty ? "(root)" : path
        if let t = s["type"] {
            let types: [String] = t.string.map { [$0] } ?? (t.array?.compactMap { $0.string } ?? [])
            if !types.isEmpty, !types.contains(where: { matchesType(v, $0) }) {
                errors.append(SchemaError(path: at, reason: "expected \(types.joined(separator: " or ")), got \(v.typeName)"))
                return
            }
        }
        if let e = s["enum"]?.array, !e.contains(v) {
            errors.append(SchemaError(path: at, reason: "must be one of \(e.map { $0.serialized }.joined(separator: ", ")), got \(v.serialized)"))
        }
        if let c = s["const"], c != v {
            errors.append(SchemaError(path: at, reason: "must be \(c.serialized)"))
        }
        if let alts = s["oneOf"]?.array ?? s["anyOf"]?.array {
            let ok = alts.filter { validate(v, against: $0).isEmpty }.count
            if ok == 0 { errors.append(SchemaError(path: at, reason: "matches none of the allowed forms")) }
        }
        switch v {
        case .int(let i):
            // Exact: compare as integers when the bound is one (a Double would round 2^53 + 1).
            if let m = s["minimum"], let b = m.int ?? m.double.flatMap({ Int(exactly: $0.rounded(.up)) }), Int(i) < b {
                errors.append(SchemaError(path: at, reason: "must be >= \(m.serialized), got \(i)"))
            }
            if let m = s["maximum"], let b = m.int ?? m.double.flatMap({ Int(exactly: $0.rounded(.down)) }), Int(i) > b {
                errors.append(SchemaError(path: at, reason: "must be <= \(m.serialized), got \(i)"))
            }
        case .number(let d):
            if let m = s["minimum"]?.double, d < m { errors.append(SchemaError(path: at, reason: "must be >= \(fmt(m)), got \(fmt(d))")) }
            if let m = s["maximum"]?.double, d > m { errors.append(SchemaError(path: at, reason: "must be <= \(fmt(m)), got \(fmt(d))")) }
        case .string(let str):
            let n = str.unicodeScalars.count
            if let m = s["minLength"]?.int, n < m { errors.append(SchemaError(path: at, reason: "must be at least \(m) characters")) }
            if let m = s["maxLength"]?.int, n > m { errors.append(SchemaError(path: at, reason: "must be at most \(m) characters, got \(n)")) }
            if let p = s["pattern"]?.string, !Pattern.matches(p, str) {
                errors.append(SchemaError(path: at, reason: "\"\(str)\" does not match the pattern \(p)"))
            }
        case .array(let a):
            if let m = s["minItems"]?.int, a.count < m { errors.append(SchemaError(path: at, reason: "must have at least \(m) items")) }
            if let m = s["maxItems"]?.int, a.count > m { errors.append(SchemaError(path: at, reason: "must have at most \(m) items, got \(a.count)")) }
            if let items = s["items"] {
                for (i, e) in a.enumerated() { check(e, items, "\(path)[\(i)]", &errors) }
            }
        case .object(let kv):
            let props = s["properties"]
            for r in s["required"]?.array ?? [] {
                if let name = r.string, !kv.contains(where: { $0.0 == name }) {
                    errors.append(SchemaError(path: join(path, name), reason: "is required"))
                }
            }
            for (k, val) in kv {
                if let ps = props?[k] {
                    check(val, ps, join(path, k), &errors)
                } else if let ap = s["additionalProperties"] {
                    if case .bool(false) = ap {
                        let allowed = props?.keys.sorted().joined(separator: ", ") ?? ""
                        errors.append(SchemaError(path: join(path, k), reason: "unknown key" + (allowed.isEmpty ? "" : " (allowed: \(allowed))")))
                    } else {
                        check(val, ap, join(path, k), &errors)
                    }
                }
            }
        default: break
        }
    }

    /// A whole number without ".0"; one beyond Int64 (1e20 against a maximum) as Double prints it (Int64(d) trapped).
    static func fmt(_ d: Double) -> String { d.rounded() == d && abs(d) < 9e18 ? String(Int64(d)) : "\(d)" }
}

/// Anchored patterns of the simple kind schemas use: literal characters, '.', character classes [a-z0-9-],
/// and the quantifiers *, + and ? (plus ^ and $). Enough for names; anything fancier is refused by lint.
package enum Pattern {
    package static func matches(_ pattern: String, _ s: String) -> Bool {
        var p = Array(pattern.unicodeScalars)
        let anchoredStart = p.first == "^"
        if anchoredStart { p.removeFirst() }
        let anchoredEnd = p.last == "$"
        if anchoredEnd { p.removeLast() }
        guard let atoms = compile(p) else { return false }  // lint refuses such schemas before they are used
        let t = Array(s.unicodeScalars)
        let starts = anchoredStart ? [0] : Array(0...t.count)
        for st in starts where match(atoms, 0, t, st, anchoredEnd) { return true }
        return false
    }

    struct Atom { var set: (Unicode.Scalar) -> Bool; var min: Int; var max: Int }

    static func compile(_ p: [Unicode.Scalar]) -> [Atom]? {
        var atoms: [Atom] = []
        var i = 0
        while i < p.count {
            var set: (Unicode.Scalar) -> Bool
            if p[i] == "[" {
                var j = i + 1
                var negate = false
                if j < p.count, p[j] == "^" { negate = true; j += 1 }
                var ranges: [(Unicode.Scalar, Unicode.Scalar)] = []
                while j < p.count, p[j] != "]" {
                    var c = p[j]
                    if c == "\\", j + 1 < p.count { j += 1; c = p[j] }
                    if j + 2 < p.count, p[j + 1] == "-", p[j + 2] != "]" { ranges.append((c, p[j + 2])); j += 3 } else { ranges.append((c, c)); j += 1 }
                }
                guard j < p.count else { return nil }
                let rs = ranges
                set = { ch in rs.contains { $0.0 <= ch && ch <= $0.1 } != negate }
                i = j + 1
            } else if p[i] == "." {
                set = { _ in true }
                i += 1
            } else if p[i] == "\\", i + 1 < p.count {
                let c = p[i + 1]
                switch c {
                case "d": set = { ("0"..."9").contains($0) }
                case "w": set = { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
                default: set = { $0 == c }
                }
                i += 2
            } else if "()|{}".unicodeScalars.contains(p[i]) {
                return nil
            } else {
                let c = p[i]
                set = { $0 == c }
                i += 1
            }
            var mn = 1, mx = 1
            if i < p.count {
                switch p[i] {
                case "*": mn = 0; mx = Int.max; i += 1
                case "+": mn = 1; mx = Int.max; i += 1
                case "?": mn = 0; mx = 1; i += 1
                default: break
                }
            }
            atoms.append(Atom(set: set, min: mn, max: mx))
        }
        return atoms
    }

    static func match(_ atoms: [Atom], _ ai: Int, _ t: [Unicode.Scalar], _ ti: Int, _ anchoredEnd: Bool) -> Bool {
        if ai == atoms.count { return !anchoredEnd || ti == t.count }
        let a = atoms[ai]
        var n = 0
        while n < a.min { guard ti + n < t.count, a.set(t[ti + n]) else { return false }; n += 1 }
        var k = n
        while k < a.max, ti + k < t.count, a.set(t[ti + k]) { k += 1 }
        while k >= n {
            if match(atoms, ai + 1, t, ti + k, anchoredEnd) { return true }
            k -= 1
        }
        return false
    }
}
