// The composition root's ordering: parts come after what they require; a requirement nobody provides and a cycle
// are refused with the parts named, before anything is built.
@testable import BerthCore
import XCTest

final class CompositionTests: XCTestCase {
    final class Part {}
    func reg(_ id: String, _ requires: [String]) -> Registration { Registration(id: id, requires: requires) { _ in Part() } }

    func testOrderFollowsRequirements() throws {
        let order = try Parts.order([reg("c", ["b"]), reg("b", ["a", "given"]), reg("a", [])], given: ["given"]).map(\.id)
        XCTAssertEqual(order, ["a", "b", "c"])
        // The daemon's own parts: each after everything it requires.
        let ids = try Parts.order(BerthRuntime.registrations, given: ["plugins", "settings"]).map(\.id)
        for r in BerthRuntime.registrations {
            for q in r.requires where !["plugins", "settings"].contains(q) {
                XCTAssertLessThan(ids.firstIndex(of: q)!, ids.firstIndex(of: r.id)!, "\(r.id) built before \(q): \(ids)")
            }
        }
    }

    func testMissingRequirementAndCycleAreRefused() {
        XCTAssertThrowsError(try Parts.order([reg("a", ["nobody"])], given: [])) { e in
            XCTAssertTrue("\(e)".contains("\"a\" requires \"nobody\""), "\(e)")
        }
        XCTAssertThrowsError(try Parts.order([reg("a", ["b"]), reg("b", ["a"])], given: [])) { e in
            XCTAssertTrue("\(e)".contains("a, b") && "\(e)".contains("require each other"), "\(e)")
        }
    }
}
