// Regressions found by the fuzzers of Tests/suites/fuzz.sh (Tests/Fuzz/): each input that crashed or broke an
// oracle, kept here as a unit test (and in Tests/Fuzz/corpus/ so the fuzzer starts from it).
import BerthWire
import XCTest

final class FuzzRegressionTests: XCTestCase {
    /// fuzz json: a high surrogate escape followed by an escape that is not a low surrogate trapped the scanner on
    /// an arithmetic overflow (any request body could stop berthd). The lone high surrogate becomes U+FFFD and the
    /// next escape is read on its own.
    func testHighSurrogateFollowedByANonLowSurrogateEscape() throws {
        XCTAssertEqual(try JSON.parse(#""\ud83d\u0041""#), .string("\u{FFFD}A"))
        XCTAssertEqual(try JSON.parse(#"["a\ud83d\ud0e0b"]"#), ["a\u{FFFD}\u{D0E0}b"])
        XCTAssertEqual(try JSON.parse(#""\udbff\ue000""#), .string("\u{FFFD}\u{E000}"))
        // A real pair still combines; a pair cut short is still an error.
        XCTAssertEqual(try JSON.parse(#""\ud83d\ude00""#), .string("\u{1F600}"))
        XCTAssertThrowsError(try JSON.parse(#""\ud83d\u00""#))
        XCTAssertThrowsError(try JSON.parse(#""\ud83d\uzzzz""#))
    }

    /// fuzz json: a number beyond Double's range (1E+56890) parsed as infinity, which serialises as null: the value
    /// changed on its way through. It is refused as an invalid number, as the builders' contract says.
    func testNumbersBeyondDoubleAreRefused() {
        for text in ["1E+56890", "-1e400", "[1, 2e308]", "{\"capacityBytes\": 1e999}"] {
            XCTAssertThrowsError(try JSON.parse(text), text) { e in
                XCTAssertTrue("\(e)".contains("invalid number"), "\(text): \(e)")
            }
        }
        XCTAssertEqual(try JSON.parse("1.7976931348623157e308"), .number(1.7976931348623157e308))
        XCTAssertEqual(try JSON.parse("1e-400"), .number(0))
    }
}
