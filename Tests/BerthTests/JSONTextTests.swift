// The JSON scanner's text rules: strings must be UTF-8 (no overlong forms, surrogates or bytes past U+10FFFF),
// surrogate escapes must pair, and the host's parser refuses \u0000 (names and ids cannot hold a NUL).
import BerthWire
import XCTest

final class JSONTextTests: XCTestCase {
    func parse(_ bytes: [UInt8]) -> Result<JSON, Error> { Result { try JSON.parse(bytes) } }
    func str(_ inner: [UInt8]) -> [UInt8] { Array("[\"".utf8) + inner + Array("\"]".utf8) }

    func testStringsMustBeUTF8() {
        let bad: [[UInt8]] = [[0xFF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                              [0xF5, 0x80, 0x80, 0x80], [0xC3], [0xE2, 0x82], [0x61, 0x80], [0xC3, 0x28]]
        for b in bad {
            for inner in [b, Array("x".utf8) + b + Array("\\n".utf8), Array("\\n".utf8) + b] {
                guard case .failure(let e) = parse(str(inner)) else { XCTFail("accepted \(inner)"); continue }
                XCTAssertTrue("\(e)".contains("UTF-8"), "\(inner): \(e)")
            }
        }
        let good: [UInt8] = Array("é€😀 x".utf8)
        XCTAssertEqual(try JSON.parse(str(good))[0], .string("é€😀 x"))
        XCTAssertEqual(try JSON.parse(str(Array("\\u00e9\\n".utf8) + good))[0], .string("é\né€😀 x"))
    }

    func testSurrogatesMustPairAndNULIsRefused() throws {
        for t in [#"["\ud800"]"#, #"["\udc00"]"#, #"["\ud800\u0041"]"#, #"["\ud800x"]"#, #"["\udbff\ud800"]"#] {
            guard case .failure(let e) = parse(Array(t.utf8)) else { XCTFail("accepted \(t)"); continue }
            XCTAssertTrue("\(e)".contains("surrogate"), "\(t): \(e)")
        }
        XCTAssertEqual(try JSON.parse(#"["\ud83d\ude00"]"#)[0], .string("😀"))
        guard case .failure(let e) = parse(Array(#"{"containerID":"ctr\u0000A"}"#.utf8)) else { return XCTFail("accepted a NUL") }
        XCTAssertTrue("\(e)".contains("NUL"), "\(e)")
        XCTAssertEqual(try JSON.parse(#"["\u0001"]"#)[0], .string("\u{1}"), "other escapes stay JSON's")
    }
}
