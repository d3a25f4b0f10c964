// The conformance kit of `berth plugin check` finds the fault of each deliberately broken fixture in
// Tests/Fixtures/kit (one per rule) and names it, without crashing itself; the reference plugins pass everything.
import BerthWire
import Foundation
import XCTest

final class ConformanceKitTests: XCTestCase {
    static let kitDir = FixtureBuilder.packageRoot + "/Tests/Fixtures/kit"

    /// Runs the built `berth plugin check -o json` and returns its exit status and report.
    func check(_ so: String, _ extra: [String] = []) throws -> (Int32, JSON, String) {
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", so, "-o", "json"] + extra)
        let j = try JSON.parse(out)
        return (rc, j, err)
    }

    func failures(_ j: JSON) -> [String: String] {
        var m: [String: String] = [:]
        for c in j["cases"]?.array ?? [] where c["result"]?.string == "fail" { m[c["name"]!.string!] = c["detail"]?.string ?? "" }
        return m
    }

    func expectFault(_ fixture: String, _ cases: [String], reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let so = try FixtureBuilder.plugin(fixture, in: Self.kitDir)
        let (rc, j, err) = try check(so)
        XCTAssertEqual(rc, 1, "the check itself must exit 1, not crash: \(err)", file: file, line: line)
        let failed = failures(j)
        for c in cases {
            let detail = try XCTUnwrap(failed[c], "\(fixture): expected \"\(c)\" to fail; failures: \(failed)", file: file, line: line)
            XCTAssertTrue(detail.contains(reason), "\(fixture): \(c): \(detail)", file: file, line: line)
        }
        XCTAssertEqual(j["cases"]?.array?.last?["name"], "destroy", "the check ran to the end", file: file, line: line)
    }

    func testKitBasePassesEverything() throws {
        let (rc, j, _) = try check(try FixtureBuilder.plugin("base", in: Self.kitDir))
        XCTAssertEqual(rc, 0, j.pretty)
        XCTAssertEqual(j["failed"], 0)
        let names = (j["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        for c in ["no duplicates under concurrency", "release policies", "huge input", "exhaustion", "state survives a new instance"] {
            XCTAssertTrue(names.contains("network: " + c), "\(names)")
        }
    }

    func testAddNotIdempotent() throws { try expectFault("add_not_idempotent", ["network: add is idempotent"], reason: "second ADD returned") }
    func testDelOfUnknownFails() throws { try expectFault("del_unknown_fails", ["network: del of unknown attachment", "network: del twice"], reason: "NOT_FOUND") }
    func testDuplicatesUnderConcurrency() throws { try expectFault("duplicates", ["network: no duplicates under concurrency"], reason: "handed to both") }
    func testExhaustionNotReported() throws { try expectFault("exhaust_ok", ["network: exhaustion"], reason: "must return RESOURCE_EXHAUSTED") }
    func testGCIgnored() throws { try expectFault("gc_ignored", ["network: gc releases unlisted"], reason: "still checks OK after gc") }
    func testStateLostOnNewInstance() throws { try expectFault("memory_state", ["network: state survives a new instance"], reason: "CHECK in a new instance: NOT_FOUND") }
    func testCrashOnMalformedJSON() throws {
        try expectFault("segv_malformed", ["network: malformed JSON is refused"], reason: "crashed (SIGSEGV)")
        // The cases after the crash ran against a restarted runner and passed.
        let (_, j, _) = try check(try FixtureBuilder.plugin("segv_malformed", in: Self.kitDir))
        XCTAssertEqual(Array(failures(j).keys), ["network: malformed JSON is refused"])
    }
    func testSchedulerScoresOutOfRange() throws { try expectFault("sched_scores_out_of_range", ["scheduler: scores in 0..100"], reason: "max 150") }

    func testReferencePluginsPass() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-kit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"pools":[{"name":"p","ranges":[{"subnet":"10.9.0.0/29"}]}]}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, j, _) = try check(Paths.plugin("ipam-pool"), ["--config", dir + "/c.json"])
        XCTAssertEqual(rc, 0, j.pretty)
        XCTAssertEqual(failures(j), [:])
        let detail = (j["cases"]?.array ?? []).first { $0["name"] == "network: exhaustion" }?["detail"]?.string ?? ""
        XCTAssertTrue(detail.contains("RESOURCE_EXHAUSTED after"), detail)
        let (rc2, j2, _) = try check(Paths.plugin("hello"))
        XCTAssertEqual(rc2, 0, j2.pretty)
        XCTAssertEqual(failures(j2), [:])
        // --in-process runs the same cases without a runner.
        let (rc3, j3, _) = try check(Paths.plugin("ipam-pool"), ["--config", dir + "/c.json", "--in-process"])
        XCTAssertEqual(rc3, 0, j3.pretty)
        XCTAssertEqual(j3["passed"], j["passed"])
    }
}
