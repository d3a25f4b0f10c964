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

    /// Checks the fixture with `berth plugin check`: it exits 1 (not a crash), each of `cases` fails with `reason` in its
    /// detail, and the check ran to the end. Returns every failure (name → detail).
    @discardableResult
    func expectFault(_ fixture: String, _ cases: [String], reason: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: String] {
        let so = try FixtureBuilder.plugin(fixture, in: Self.kitDir)
        let (rc, j, err) = try check(so)
        XCTAssertEqual(rc, 1, "the check itself must exit 1, not crash: \(err)", file: file, line: line)
        let failed = failures(j)
        for c in cases {
            let detail = try XCTUnwrap(failed[c], "\(fixture): expected \"\(c)\" to fail; failures: \(failed)", file: file, line: line)
            XCTAssertTrue(detail.contains(reason), "\(fixture): \(c): \(detail)", file: file, line: line)
        }
        XCTAssertEqual(j["cases"]?.array?.last?["name"], "destroy", "the check ran to the end", file: file, line: line)
        return failed
    }

    /// A fixture without a fault passes everything, and the report lists `cases`.
    func expectPass(_ fixture: String, _ cases: [String], file: StaticString = #filePath, line: UInt = #line) throws -> JSON {
        let (rc, j, _) = try check(try FixtureBuilder.plugin(fixture, in: Self.kitDir))
        XCTAssertEqual(rc, 0, j.pretty, file: file, line: line)
        XCTAssertEqual(failures(j), [:], file: file, line: line)
        let names = (j["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        for c in cases { XCTAssertTrue(names.contains(c), "\(fixture): no case \"\(c)\" in \(names)", file: file, line: line) }
        return j
    }

    func detail(_ j: JSON, _ name: String) -> String { (j["cases"]?.array ?? []).first { $0["name"]?.string == name }?["detail"]?.string ?? "" }

    static let schedulerCases = ["filter writes a code per node", "filter is deterministic", "filter is consistent", "scores in 0..100",
                                 "deterministic", "reserve", "reserve is idempotent", "bind", "reserve then unreserve works",
                                 "unreserve is idempotent", "unreserve of something never reserved", "final unreserve is idempotent",
                                 "malformed JSON is refused (reserve)", "missing fields are refused (reserve)", "malformed JSON is refused (bind)",
                                 "missing fields are refused (bind)", "malformed input is handled (unreserve)", "huge input", "large node batch"].map { "scheduler: " + $0 }

    func testKitBasePassesEverything() throws {
        let (rc, j, _) = try check(try FixtureBuilder.plugin("base", in: Self.kitDir))
        XCTAssertEqual(rc, 0, j.pretty)
        XCTAssertEqual(j["failed"], 0)
        let names = (j["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        for c in ["no duplicates under concurrency", "release policies", "huge input", "exhaustion", "state survives a new instance"] {
            XCTAssertTrue(names.contains("network: " + c), "\(names)")
        }
        // Without add_batch: one passing case says so, and none of the add_batch cases run.
        XCTAssertEqual(detail(j, "network: add_batch"), "not provided (the host adds one at a time)")
        XCTAssertEqual(names.filter { Self.batchCases.contains($0) }, [])
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
    func testNetworkCrashOnHugeInput() throws {
        let failed = try expectFault("segv_huge", ["network: huge input"], reason: "crashed (SIGSEGV) during add")
        XCTAssertEqual(Array(failed.keys), ["network: huge input"], "the cases after the crash ran against a restarted runner")
    }
    func testReleasePolicyBroken() throws {
        try expectFault("identity_not_returned", ["network: release policies"], reason: "re-ADD of the identity got")
    }
    func testIdentityTakeoverSharesAnAddress() throws {
        // ipam-pool's old behaviour: a second ADD of an identity took its address from the live attachment.
        let failed = try expectFault("identity_takes_over", ["network: no address shared by two live attachments"],
                                     reason: "while dup-old (not deleted) holds it")
        XCTAssertEqual(Array(failed.keys), ["network: no address shared by two live attachments"])
    }
    func testIdentitiesHonouredPassReleasePolicies() throws {
        // The same base with identities kept correctly: the release-policy case runs (it is not skipped) and passes.
        let j = try expectPass("identity_ok", ["network: release policies"])
        XCTAssertTrue(detail(j, "network: release policies").hasPrefix("immutable identity kept"), detail(j, "network: release policies"))
    }

    // MARK: add_batch (ABI 1.1)

    static let batchCases = ["add_batch agrees with add", "add_batch returns one result per item", "add_batch is all or nothing",
                             "add_batch refuses malformed input"].map { "network: " + $0 }

    func testKitBatchPassesEverything() throws {
        let j = try expectPass("batch_ok", Self.batchCases)
        let names = (j["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        XCTAssertFalse(names.contains("network: add_batch"), "no \"not provided\" case for a plugin with add_batch")
        XCTAssertEqual(detail(j, "network: add_batch agrees with add"), "8 of 8 results equal to add one item at a time on a fresh instance")
        XCTAssertEqual(detail(j, "network: add_batch returns one result per item"), "8 items, 8 results, each with ips")
        XCTAssertEqual(detail(j, "network: add_batch is all or nothing"),
                       "failed with INVALID_ARGUMENT: items[2]: containerID is required; the items before the invalid one are not attached")
        XCTAssertEqual(detail(j, "network: add_batch refuses malformed input"), "\"items\" not an array: INVALID_ARGUMENT; malformed JSON: INVALID_ARGUMENT")
    }
    func testBatchDisagreesWithAdd() throws {
        let failed = try expectFault("batch_disagrees", ["network: add_batch agrees with add"],
                                     reason: #"item 0 (batch-0/eth0): add_batch returned {"ips":[{"address":"10.88.0.9/28"}]}, add one at a time {"ips":[{"address":"10.88.0.2/28"}]}"#)
        XCTAssertEqual(Array(failed.keys), ["network: add_batch agrees with add"])
    }
    func testBatchResultMissing() throws {
        let failed = try expectFault("batch_short", ["network: add_batch returns one result per item"], reason: "7 results for 8 items")
        XCTAssertEqual(Array(failed.keys), ["network: add_batch returns one result per item"], "the 7 results there are agree with add")
    }
    func testBatchNotAllOrNothing() throws {
        let failed = try expectFault("batch_not_atomic", ["network: add_batch is all or nothing"],
                                     reason: "returned OK for a batch whose last item has no containerID")
        XCTAssertTrue(failed["network: add_batch is all or nothing"]!.contains("item 0 (batch-atomic-1/eth0) is attached after the call"),
                      failed["network: add_batch is all or nothing"]!)
        XCTAssertEqual(Array(failed.keys), ["network: add_batch is all or nothing"])
    }
    func testBatchCrash() throws {
        let failed = try expectFault("batch_segv", ["network: add_batch refuses malformed input"], reason: "crashed (SIGSEGV) during add_batch")
        XCTAssertEqual(Array(failed.keys), ["network: add_batch refuses malformed input"], "a crash fails only its own case")
        XCTAssertTrue(failed["network: add_batch refuses malformed input"]!.hasPrefix("\"items\" not an array: UNAVAILABLE"),
                      "the malformed JSON after the crash went to a restarted runner and was refused: \(failed)")
    }

    // MARK: scheduler

    func testKitSchedulerBasePassesEverything() throws { _ = try expectPass("sched_base", Self.schedulerCases) }
    func testSchedulerScoresOutOfRange() throws { try expectFault("sched_scores_out_of_range", ["scheduler: scores in 0..100"], reason: "max 150") }
    func testSchedulerScoresNondeterministic() throws {
        try expectFault("sched_scores_nondeterministic", ["scheduler: deterministic"], reason: "two score calls over the same batch differ")
    }
    func testSchedulerFilterNondeterministic() throws {
        try expectFault("sched_filter_nondeterministic", ["scheduler: filter is deterministic"], reason: "two filter calls over the same batch differ")
    }
    func testSchedulerFilterPositional() throws {
        let failed = try expectFault("sched_filter_positional", ["scheduler: filter is consistent"], reason: "depends on its position or on the other nodes")
        XCTAssertNil(failed["scheduler: filter is deterministic"], "positional codes are still deterministic")
    }
    func testSchedulerUnreserveLeaks() throws {
        try expectFault("sched_unreserve_leaks", ["scheduler: reserve then unreserve works"], reason: "differs from before the reserve: +r/check/1=node-3")
    }
    func testSchedulerUnreserveNotIdempotent() throws {
        let failed = try expectFault("sched_unreserve_not_idempotent", ["scheduler: unreserve is idempotent", "scheduler: unreserve of something never reserved",
                                                                       "scheduler: final unreserve is idempotent"], reason: "NOT_FOUND")
        XCTAssertNil(failed["scheduler: reserve then unreserve works"], "the first unreserve after a reserve is fine")
    }
    func testSchedulerReserveFails() throws {
        try expectFault("sched_reserve_needs_uid", ["scheduler: reserve", "scheduler: reserve then unreserve works"], reason: "\"uid\" is required to reserve")
    }
    func testSchedulerReserveNotIdempotent() throws {
        let failed = try expectFault("sched_reserve_not_idempotent", ["scheduler: reserve is idempotent"], reason: "ALREADY_EXISTS")
        XCTAssertEqual(Array(failed.keys), ["scheduler: reserve is idempotent"])
    }
    func testSchedulerBindFails() throws {
        let failed = try expectFault("sched_bind_wrong_key", ["scheduler: bind"], reason: "NOT_FOUND: bind of /check/0 without a reservation")
        XCTAssertEqual(Array(failed.keys), ["scheduler: bind"])
    }
    func testSchedulerAcceptsInvalidInput() throws {
        try expectFault("sched_accepts_invalid", ["scheduler: malformed JSON is refused (reserve)", "scheduler: missing fields are refused (reserve)",
                                                  "scheduler: malformed JSON is refused (bind)", "scheduler: missing fields are refused (bind)"],
                        reason: "accepted invalid input; want INVALID_ARGUMENT")
    }
    func testSchedulerCrashOnMalformedUnreserve() throws {
        let failed = try expectFault("sched_segv_unreserve", ["scheduler: malformed input is handled (unreserve)"], reason: "crashed (SIGSEGV) during unreserve")
        XCTAssertEqual(Array(failed.keys), ["scheduler: malformed input is handled (unreserve)"])
    }
    func testSchedulerCrashOnMalformedReserve() throws {
        let failed = try expectFault("sched_segv_reserve", ["scheduler: malformed JSON is refused (reserve)"], reason: "crashed (SIGSEGV) during reserve")
        XCTAssertEqual(Array(failed.keys), ["scheduler: malformed JSON is refused (reserve)"], "the cases after the crash ran against a restarted runner")
    }
    func testSchedulerCrashOnHugeInput() throws {
        let failed = try expectFault("sched_segv_huge", ["scheduler: huge input"], reason: "crashed (SIGSEGV) during reserve")
        // Three crashes (reserve, bind, unreserve) in a row: the runner's restart backoff is waited out, the next case passes.
        XCTAssertEqual(Array(failed.keys), ["scheduler: huge input"])
        XCTAssertTrue(failed["scheduler: huge input"]!.contains("crashed (SIGSEGV) during unreserve"), failed["scheduler: huge input"]!)
    }
    func testSchedulerCrashOnLargeBatch() throws {
        let failed = try expectFault("sched_segv_large_batch", ["scheduler: large node batch"], reason: "crashed (SIGSEGV) during filter")
        XCTAssertEqual(Array(failed.keys), ["scheduler: large node batch"])
    }

    // MARK: discovery

    func testKitDiscoveryBasePassesEverything() throws {
        _ = try expectPass("disc_base", ["discovery: repeated batch is idempotent", "discovery: out-of-order batch", "discovery: resync converges",
                                         "discovery: malformed JSON is refused (events)", "discovery: missing fields are refused", "discovery: huge input"])
    }
    func testDiscoveryRepeatedBatchNotIdempotent() throws {
        try expectFault("disc_counts", ["discovery: repeated batch is idempotent"], reason: "redelivery changed the namespace: changed: +deliveries=")
    }
    func testDiscoveryOutOfOrderResurrects() throws {
        try expectFault("disc_ignores_rev", ["discovery: out-of-order batch"], reason: "an out-of-order batch changed the namespace: changed: +i/App/web/1=")
    }
    func testDiscoveryResyncDoesNotConverge() throws {
        // The reference instance is made the way the check runs the plugin (here in a runner), so this case compares
        // against a fresh instance rather than falling back to "a repeated resync is idempotent".
        let failed = try expectFault("disc_resync_merges", ["discovery: resync converges"],
                                     reason: "the namespace after the resync still depends on the history before it")
        XCTAssertEqual(Array(failed.keys), ["discovery: resync converges"])
    }
    func testDiscoveryCrashOnHugeInput() throws {
        let failed = try expectFault("disc_segv_huge", ["discovery: huge input"], reason: "crashed (SIGSEGV) during events")
        XCTAssertEqual(Array(failed.keys), ["discovery: huge input"])
    }

    func testReferencePluginsPass() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-kit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"pools":[{"name":"p","ranges":[{"subnet":"10.9.0.0/29"}]}]}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, j, _) = try check(Paths.plugin("ipam-pool"), ["--config", dir + "/c.json"])
        XCTAssertEqual(rc, 0, j.pretty)
        XCTAssertEqual(failures(j), [:])
        let detail = (j["cases"]?.array ?? []).first { $0["name"] == "network: exhaustion" }?["detail"]?.string ?? ""
        XCTAssertTrue(detail.contains("RESOURCE_EXHAUSTED after"), detail)
        // ipam-pool has add_batch: every add_batch case runs and passes. Its /29 holds 5 addresses, so the comparison
        // with add stops where add runs out.
        let names = (j["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        XCTAssertEqual(names.filter { $0.hasPrefix("network: add_batch") }, Self.batchCases)
        XCTAssertEqual(self.detail(j, "network: add_batch agrees with add"),
                       "5 of 5 results equal to add one item at a time on a fresh instance; add refused item 5 (batch-5/eth0): RESOURCE_EXHAUSTED")
        // The scheduler reference plugins pass every scheduler case (sched-stateful binds; hello has no bind).
        for p in ["hello", "sched-stateful"] {
            let (rc2, j2, _) = try check(Paths.plugin(p))
            XCTAssertEqual(rc2, 0, j2.pretty)
            XCTAssertEqual(failures(j2), [:], p)
            let names = (j2["cases"]?.array ?? []).compactMap { $0["name"]?.string }
            XCTAssertEqual(names.filter { $0.hasPrefix("scheduler: ") }, Self.schedulerCases, p)
        }
        // --in-process runs the same cases without a runner.
        let (rc3, j3, _) = try check(Paths.plugin("ipam-pool"), ["--config", dir + "/c.json", "--in-process"])
        XCTAssertEqual(rc3, 0, j3.pretty)
        XCTAssertEqual(j3["passed"], j["passed"])
    }
}
