// Regressions found by the fuzzers of Tests/suites/fuzz.sh (Tests/Fuzz/): each input that crashed or broke an
// oracle, kept here as a unit test (and in Tests/Fuzz/corpus/ so the fuzzer starts from it).
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import XCTest

final class FuzzRegressionTests: XCTestCase {
    /// fuzz json: a high surrogate escape followed by an escape that is not a low surrogate trapped the scanner on
    /// an arithmetic overflow (any request body could stop berthd). An unpaired surrogate is not text: it is refused
    /// (as a lone one is, so that two different ids cannot both read as U+FFFD).
    func testHighSurrogateFollowedByANonLowSurrogateEscape() throws {
        for text in [#""\ud83d\u0041""#, #"["a\ud83d\ud0e0b"]"#, #""\udbff\ue000""#, #""\udbff\ud800""#] {
            XCTAssertThrowsError(try JSON.parse(text), text) { e in
                XCTAssertTrue("\(e)".contains("surrogate"), "\(text): \(e)")
            }
        }
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

    /// fuzz site: a whole number beyond Int64 against a schema's maximum (api.maxBodyBytes 6.5e76) trapped while the
    /// error message was written, so a PUT /v1/site (even a dry run) or an object spec with one stopped berthd. It is
    /// a 400 naming the key, and berthd goes on.
    func testHugeNumberAgainstAMaximumIsAnError() throws {
        let dir = tempDir("fuzz-huge")
        for n in [1e20, 6.5e76, -1e30] {
            let site: JSON = ["site": "x", "stateDir": .string(dir), "api": ["maxBodyBytes": .number(n)]]
            XCTAssertThrowsError(try SiteConfig.parse(site.bytes, baseDir: dir)) { e in
                XCTAssertTrue("\(e)".contains("maxBodyBytes"), "\(n): \(e)")
            }
        }
        let d = try Daemon(plugins: [], tag: "fuzz-huge")
        let (st, body) = try d.request("PUT", "/v1/site?dryRun=true", ["site": "x", "stateDir": .string(dir), "events": ["retain": 1e20]])
        XCTAssertEqual(st, 400, body.serialized)
        XCTAssertTrue(body.serialized.contains("events.retain") || body.serialized.contains("retain"), body.serialized)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "berthd is still serving")
    }
}
