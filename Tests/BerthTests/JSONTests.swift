// The JSON text layer shared by the host and the plugin kit (BerthJSONText): what it accepts and refuses, with
// the offset and reason it reports, and the host's JSON round trip through it.
import BerthJSONText
import BerthWire
import XCTest

final class JSONTests: XCTestCase {
    func refused(_ text: String, _ reason: String, at offset: Int? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let v = try JSON.parse(text)
            XCTFail("\(text) parsed as \(v.serialized)", file: file, line: line)
        } catch let e as JSONParseError {
            XCTAssertTrue(e.reason.contains(reason), "\(text): \(e)", file: file, line: line)
            if let offset { XCTAssertEqual(e.offset, offset, "\(text): \(e)", file: file, line: line) }
        } catch {
            XCTFail("\(text): \(error)", file: file, line: line)
        }
    }

    func testStrictGrammarAndItsErrors() {
        refused(#"{"a": 1"#, "unterminated object", at: 7)
        refused(#"{"a" 1}"#, "expected ':' after key \"a\"", at: 5)
        refused(#"{"a": 1, "a": 2}"#, "duplicate key \"a\"")
        refused("[1, 2", "unterminated array")
        refused("[1 2]", "expected ',' or ']'", at: 3)
        refused("1-2", "unexpected trailing characters", at: 1)
        refused("01", "leading zero in a number", at: 1)
        refused("-00.5", "leading zero in a number", at: 2)
        refused("1.", "expected digits after '.'")
        refused("1e", "expected exponent digits")
        refused("-", "unexpected character", at: 0)
        refused("tru", "unexpected end of input")
        refused("nul!", "invalid literal")
        refused("\"a\u{01}b\"", "control character in string")
        refused(#""\x""#, "invalid escape")
        refused(#""\u12""#, #"short \u escape"#)
        refused(#""\u12zz""#, "invalid hex digit")
        refused(#""abc"#, "unterminated string")
        refused(String(repeating: "[", count: 200), "nesting deeper than 128")
        refused("{} x", "unexpected trailing characters", at: 3)
    }

    func testValuesAndEscapesRoundTrip() throws {
        let text = #"{"s": "a\"b\\c\n\t\u00e9\ud83d\ude00/", "n": -12.5e1, "i": 9007199254740991, "b": [true, false, null], "o": {}}"#
        let v = try JSON.parse(text)
        XCTAssertEqual(v["s"], .string("a\"b\\c\n\té😀/"))
        XCTAssertEqual(v["n"], .number(-125))
        XCTAssertEqual(v["i"], .number(9_007_199_254_740_991))
        XCTAssertEqual(v["b"], [true, false, nil])
        XCTAssertEqual(v["o"], .object([]))
        // Written and read again: the same value; control characters come out as \u escapes.
        XCTAssertEqual(try JSON.parse(v.serialized), v)
        XCTAssertEqual(JSON.string("x\u{01}y").serialized, #""x\u0001y""#)
        XCTAssertEqual(JSON.number(-42).serialized, "-42")
        XCTAssertEqual(JSON.number(0).serialized, "0")
    }

    func testScannerNumbersSayWhetherTheyAreIntegral() throws {
        for (text, integral) in [("42", true), ("-7", true), ("4.0", false), ("1e3", false)] {
            let bytes = Array(text.utf8)
            let n = try bytes.withUnsafeBufferPointer { b -> (text: String, integral: Bool) in
                var s = JSONScanner(b)
                return try s.number()
            }
            XCTAssertEqual(n.text, text)
            XCTAssertEqual(n.integral, integral, text)
        }
    }

    /// The kit's policies through the same parser: a repeated key keeps its last value, integers stay exact.
    func testKeepLastAndExactIntegers() throws {
        indirect enum Kit: JSONBuildable, Equatable {
            case null, bool(Bool), string(String), int(Int64), double(Double), array([Kit]), object([String])
            static var jsonNull: Kit { .null }
            static func jsonBool(_ b: Bool) -> Kit { .bool(b) }
            static func jsonString(_ s: String) -> Kit { .string(s) }
            static func jsonNumber(_ text: String, integral: Bool) -> Kit? {
                integral ? Int64(text).map { .int($0) } : Double(text).map { .double($0) }
            }
            static func jsonArray(_ a: [Kit]) -> Kit { .array(a) }
            static func jsonObject(_ kv: [(String, Kit)]) -> Kit { .object(kv.map { "\($0.0)=\($0.1)" }) }
        }
        func parse(_ text: String, _ dup: JSONDuplicateKeys) throws -> Kit {
            try Array(text.utf8).withUnsafeBufferPointer { b in
                var s = JSONScanner(b)
                return try s.document(Kit.self, maxDepth: 64, duplicates: dup)
            }
        }
        XCTAssertEqual(try parse(#"{"a": 1, "b": 2, "a": 9223372036854775807}"#, .keepLast),
                       .object(["a=int(9223372036854775807)", "b=int(2)"]))
        XCTAssertThrowsError(try parse(#"{"a": 1, "a": 2}"#, .refuse)) { XCTAssertTrue("\($0)".contains("duplicate key \"a\"")) }
        XCTAssertEqual(try parse("[1.5, 2]", .keepLast), .array([.double(1.5), .int(2)]))
        XCTAssertThrowsError(try parse(String(repeating: "[", count: 65), .keepLast)) { XCTAssertTrue("\($0)".contains("nesting deeper than 64")) }
    }
    /// Objects past 16 keys find a repeated key through a dictionary (a linear search per key was quadratic: the 65,536
    /// MAC bindings of the largest pool cost seconds per request; berth-bench --only stalls shows the time). The same
    /// keys are repeats either way: at every size around the switch, a repeat of the first, middle or last key is
    /// refused (the host) or keeps its last value in the key's place (the kit), and canonically equal keys are one key.
    func testLargeObjectsFindRepeatedKeysAsSmallOnesDo() throws {
        indirect enum V: JSONBuildable, Equatable {
            case null, bool(Bool), string(String), number(String), array([V]), object(keys: [String], values: [V])
            static var jsonNull: V { .null }
            static func jsonBool(_ b: Bool) -> V { .bool(b) }
            static func jsonString(_ s: String) -> V { .string(s) }
            static func jsonNumber(_ text: String, integral: Bool) -> V? { .number(text) }
            static func jsonArray(_ a: [V]) -> V { .array(a) }
            static func jsonObject(_ kv: [(String, V)]) -> V { .object(keys: kv.map { $0.0 }, values: kv.map { $0.1 }) }
        }
        func parse(_ text: String, _ dup: JSONDuplicateKeys) throws -> V {
            try Array(text.utf8).withUnsafeBufferPointer { b in
                var s = JSONScanner(b)
                return try s.document(V.self, maxDepth: 64, duplicates: dup)
            }
        }
        func object(_ n: Int, repeating r: Int?, key: (Int) -> String = { "k\($0)" }) -> String {
            var parts = (0..<n).map { "\"\(key($0))\":\($0)" }
            if let r { parts.append("\"\(key(r))\":-1") }
            return "{" + parts.joined(separator: ",") + "}"
        }
        for n in [1, 15, 16, 17, 18, 40, 5000] {
            let keys = (0..<n).map { "k\($0)" }
            XCTAssertEqual(try parse(object(n, repeating: nil), .refuse), .object(keys: keys, values: (0..<n).map { .number("\($0)") }))
            for r in Set([0, n / 2, n - 1]) {
                XCTAssertThrowsError(try parse(object(n, repeating: r), .refuse), "\(n) keys, k\(r) twice") {
                    XCTAssertTrue("\($0)".contains("duplicate key \"k\(r)\""), "\($0)")
                }
                let values: [V] = (0..<n).map { .number($0 == r ? "-1" : "\($0)") }
                XCTAssertEqual(try parse(object(n, repeating: r), .keepLast), .object(keys: keys, values: values), "\(n) keys, k\(r) twice")
            }
            // "e\u0301" then "\u00e9": one String, so one key, below the switch and past it.
            let nfd = object(n, repeating: nil) { $0 == 0 ? "e\\u0301" : "k\($0)" }.dropLast() + ",\"\\u00e9\":-1}"
            XCTAssertThrowsError(try parse(String(nfd), .refuse), "\(n) keys") { XCTAssertTrue("\($0)".contains("duplicate key"), "\($0)") }
            guard case .object(let ks, let vs) = try parse(String(nfd), .keepLast) else { return XCTFail("not an object") }
            XCTAssertEqual(ks.count, n)
            XCTAssertEqual(vs.first, .number("-1"), "\(n) keys: the last value of the first key wins")
        }
    }
}
