// The one status table (BerthWire/Status.swift) against the header it mirrors: every berth_status value of
// PluginABI/include/berth_plugin.h, with the same name and number, and nothing the header lacks.
@testable import BerthKinds
@testable import BerthPlugins
import BerthPluginABI
@testable import BerthServer
import BerthWire
import Foundation
import XCTest

final class StatusTableTests: XCTestCase {
    func testStatusTableMatchesTheHeader() throws {
        let header = try String(contentsOfFile: FixtureBuilder.packageRoot + "/PluginABI/include/berth_plugin.h", encoding: .utf8)
        guard let start = header.range(of: "typedef enum berth_status {"), let end = header.range(of: "} berth_status;", range: start.upperBound..<header.endIndex) else {
            return XCTFail("berth_status enum not found in berth_plugin.h")
        }
        var fromHeader: [(String, Int32)] = []
        for line in header[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("BERTH_"), let eq = t.firstIndex(of: "=") else { continue }
            let name = String(t[t.index(t.startIndex, offsetBy: 6)..<eq]).trimmingCharacters(in: .whitespaces)
            let num = t[t.index(after: eq)...].prefix { $0 == " " || $0.isNumber }.trimmingCharacters(in: .whitespaces)
            guard let v = Int32(num) else { return XCTFail("cannot read the value of \(t)") }
            fromHeader.append((name, v))
        }
        XCTAssertGreaterThanOrEqual(fromHeader.count, 11)
        XCTAssertEqual(fromHeader.map { "\($0.0)=\($0.1)" }, BerthStatus.all.map { "\($0.name)=\($0.status.rawValue)" })
        XCTAssertEqual(BerthStatus(rawValue: 99).name, "UNKNOWN(99)")
        XCTAssertEqual(BerthStatus(rawValue: 99).known, .internal, "an unknown value is treated as INTERNAL")
    }

    /// Every status has its HTTP answer in the server's one table; the host's own refusals map like a plugin's.
    func testHTTPMapping() {
        let want: [BerthStatus: Int] = [.invalidArgument: 400, .outOfRange: 400, .notFound: 404, .alreadyExists: 409,
                                        .failedPrecondition: 409, .aborted: 409, .resourceExhausted: 507, .unimplemented: 501,
                                        .internal: 500, .unavailable: 503, BerthStatus(rawValue: 42): 500]
        for (s, code) in want {
            XCTAssertEqual(httpStatus(BerthError(s, "x")), code, s.name)
            XCTAssertEqual(httpStatus(BerthError(plugin: "p", operation: "op", status: s, message: "x")), code, s.name)
        }
    }

    /// The CNI adapter's one mapping, from the status (not from a string in the details): the host's own refusals
    /// map like a plugin's, except NOT_FOUND, which is a bad configuration (7) from the host and an unknown container
    /// (3) from a plugin.
    func testCNIMapping() {
        let want: [BerthStatus: Int] = [.invalidArgument: 7, .outOfRange: 7, .alreadyExists: 100, .failedPrecondition: 102,
                                        .aborted: 11, .unavailable: 11, .resourceExhausted: 101, .unimplemented: 999,
                                        .internal: 999, BerthStatus(rawValue: 42): 999]
        for (s, code) in want {
            XCTAssertEqual(CNI.code(BerthError(s, "x")).rawValue, code, "host \(s.name)")
            XCTAssertEqual(CNI.code(BerthError(plugin: "p", operation: "op", status: s, message: "x")).rawValue, code, "plugin \(s.name)")
        }
        XCTAssertEqual(CNI.code(BerthError(.notFound, "no network named x")).rawValue, 7)
        XCTAssertEqual(CNI.code(BerthError(plugin: "p", operation: "del", status: .notFound, message: "x")).rawValue, 3)
    }

    /// A store failure reaches the plugin's key-value call with the store's status (UNAVAILABLE while etcd elects
    /// a leader), not as INTERNAL; anything that is not a BerthError is INTERNAL.
    func testHostServiceStatusKeepsTheStoresStatus() {
        for s in BerthStatus.all.map(\.status) {
            XCTAssertEqual(hostStatus(BerthError(s, "x")).rawValue, UInt32(s.rawValue), s.name)
        }
        XCTAssertEqual(hostStatus(CocoaError(.fileNoSuchFile)), BERTH_INTERNAL)
    }
}
