// What the CLI prints: -o table (aligned columns or KEY: value lines), json, or yaml (a small emitter: block
// style, strings quoted whenever a plain scalar could be read back as something else).
import BerthWire
import Foundation

/// Prints `json` as JSON or YAML, or runs `tableBody` for the table format.
func emit(_ json: JSON, _ format: OutputFormat, _ tableBody: () -> Void) {
    switch format {
    case .json: print(json.pretty)
    case .yaml: print(yaml(json), terminator: "")
    case .table: tableBody()
    }
}

/// An object as KEY: value lines, nested objects and lists inline as compact JSON.
func printFields(_ j: JSON, skip: Set<String> = []) {
    let kv = (j.object ?? []).filter { !skip.contains($0.0) }
    let width = max(20, (kv.map { $0.0.count }.max() ?? 0) + 2)
    for (k, v) in kv {
        let text = v.object != nil ? v.serialized : (v.array?.isEmpty == true ? "-" : str(v))
        print("\(k):".padding(toLength: width, withPad: " ", startingAt: 0) + text)
    }
}

/// Prints rows as an aligned table.
func table(_ header: [String], _ rows: [[String]]) {
    var widths = header.map { $0.count }
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

func str(_ j: JSON?) -> String {
    guard let j else { return "-" }
    switch j {
    case .string(let s): return s
    case .null: return "-"
    case .array(let a): return a.map { str($0) }.joined(separator: ",")
    default: return j.serialized
    }
}

// MARK: YAML

/// The YAML 1.2 block form of a JSON value, ending with a newline.
func yaml(_ j: JSON) -> String { yamlLines(j).map { $0 + "\n" }.joined() }

private func isBlock(_ j: JSON) -> Bool {
    switch j {
    case .object(let kv): return !kv.isEmpty
    case .array(let a): return !a.isEmpty
    default: return false
    }
}

private func yamlLines(_ j: JSON) -> [String] {
    switch j {
    case .object(let kv) where !kv.isEmpty:
        var out: [String] = []
        for (k, v) in kv {
            if isBlock(v) {
                out.append("\(yamlScalar(.string(k))):")
                out += yamlLines(v).map { "  " + $0 }
            } else {
                out.append("\(yamlScalar(.string(k))): \(yamlScalar(v))")
            }
        }
        return out
    case .array(let a) where !a.isEmpty:
        var out: [String] = []
        for v in a {
            if isBlock(v) {
                let ls = yamlLines(v)
                out.append("- " + ls[0])
                out += ls.dropFirst().map { "  " + $0 }
            } else {
                out.append("- " + yamlScalar(v))
            }
        }
        return out
    default:
        return [yamlScalar(j)]
    }
}

/// Words a YAML 1.1 or 1.2 reader takes for something other than a string.
private let reservedWords: Set<String> = ["null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".nan", ".inf", "-.inf", "+.inf"]
private let plainFirst = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_/")
private let plainRest = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_/.-+@")

private func yamlScalar(_ j: JSON) -> String {
    switch j {
    case .null: return "null"
    case .bool(let b): return b ? "true" : "false"
    case .number, .int: return j.serialized
    case .object: return "{}"
    case .array: return "[]"
    case .string(let s):
        // Plain only when nothing could read it as another type or as YAML syntax; otherwise JSON's double-quoted
        // form, which is also a valid YAML double-quoted scalar.
        if let f = s.first, plainFirst.contains(f), s.allSatisfy({ plainRest.contains($0) }), !reservedWords.contains(s.lowercased()) {
            return s
        }
        return j.serialized
    }
}
