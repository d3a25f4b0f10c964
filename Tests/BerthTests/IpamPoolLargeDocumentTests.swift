// Tests of ipam-pool with large pool documents: a pool.import of 32 KiB or more is parsed and validated off the
// transaction thread before it touches the store (Prepare.swift), a pool's deletion keeps only the addresses it must
// visit, never the whole document (Staged.swift), and calls find a parsed definition by its stamp (poolv/, State.swift).
// The speed itself is measured by `berth-bench --only stalls`.

import BerthCore
import BerthWire
import Foundation
import XCTest

extension IpamPoolTests {
    /// 4,096 ranges, 2,048 explicit addresses (256 of them reserved) and 2,048 MAC bindings: about 180 KiB. `badMAC`
    /// makes the last binding a multicast MAC.
    static func largeDocument(badMAC: Bool = false) -> JSON {
        let ranges: [JSON] = (0..<4095).map { i in ["subnet": .string("10.\(64 + i / 256).\(i % 256).0/29")] }
        func hex(_ n: Int) -> String { (n < 16 ? "0" : "") + String(n, radix: 16) }
        let macs: [(String, JSON)] = (0..<2048).map { i in
            let mac = badMAC && i == 2047 ? "01:00:5e:00:00:01" : "52:54:00:00:\(hex(i >> 8)):\(hex(i & 255))"
            return ("10.200.\(1 + i / 256).\(i % 256)", .string(mac))
        }
        return ["name": "large", "ranges": .array(ranges + [["subnet": "10.200.0.0/16", "end": "10.200.0.10"]]),
                "ips": ["10.200.1.0-10.200.8.255"], "reserved": ["10.200.1.0-10.200.1.255"], "macs": .object(macs)]
    }
    /// Free addresses of `largeDocument`: 4,095 /29s of 5, .2-.10 of the /16, the explicit ones, less the reserved.
    static let largeFree = 4095 * 5 + 9 + 2048 - 256

    func testLargeImportIsPreparedBeforeItTouchesTheStore() throws {
        let n = try net(pool: ["name": "small", "ranges": [["subnet": "10.9.0.0/24"]]])
        let doc = Self.largeDocument()
        XCTAssertGreaterThan(doc.bytes.count, 32 * 1024)
        let before = try n.store.kvCount("net1")
        let first = try n.adminStep("pool.import", doc)
        XCTAssertNotNil(first["continue"]?["prepare"], "a large document is parsed off the transaction thread first: \(first)")
        XCTAssertEqual(try n.store.kvCount("net1"), before, "the first step of a large import changed the store")
        try n.add("c1", "eth0", ["pool": "small"])  // allocations run meanwhile
        let done = try n.admin("pool.import", doc.setting("continue", first["continue"]!))
        XCTAssertEqual(done["created"]?.bool, true)
        XCTAssertEqual(done["free"]?.int, Self.largeFree)
        XCTAssertEqual(done["reserved"]?.int, 256)
        XCTAssertNil(try n.kv("importing/large"))
        XCTAssertNil(try n.kv("importdoc/large"))
        // What was imported works as a one-step import's would: explicit addresses with their MACs, reservations.
        let got = try n.add("c2", "eth0", ["ips": ["10.200.8.255"]])
        XCTAssertEqual(got["ips"]?[0]?["address"]?.string, "10.200.8.255/16")
        XCTAssertEqual(got["ips"]?[0]?["mac"]?.string, "52:54:00:00:07:ff")
        XCTAssertEqual(try n.state("large", "10.200.1.7"), "reserved")
        XCTAssertEqual(try n.admin("pool.show", ["name": "large"])["pool"]?["macs"]?.object?.count, 2048)
    }

    /// A large document that is not valid gets the error an inline import gives, and nothing changes.
    func testInvalidLargeImportChangesNothing() throws {
        let n = try net(.object([]))
        expectError(Self.INVALID, "macs[\"10.200.8.255\"]: 01:00:5e:00:00:01 is a multicast address") {
            _ = try n.admin("pool.import", Self.largeDocument(badMAC: true))
        }
        var unknown = Self.largeDocument()
        unknown = unknown.setting("colour", "red")
        expectError(Self.INVALID, "pool large: the pool document has unknown field \"colour\"") { _ = try n.admin("pool.import", unknown) }
        XCTAssertEqual(try n.store.kvCount("net1"), 0)
    }

    /// A preparation the plugin no longer knows (berthd reloaded it between two steps) is made again from the request.
    func testLargeImportPreparedAgainAfterAReload() throws {
        let n = try net(.object([]))
        let first = try n.adminStep("pool.import", Self.largeDocument())
        XCTAssertNotNil(first["continue"]?["prepare"])
        try n.restart()
        let done = try n.admin("pool.import", Self.largeDocument().setting("continue", first["continue"]!))
        XCTAssertEqual(done["free"]?.int, Self.largeFree)
    }

    /// Deleting a pool keeps only its listed addresses for the steps ("ips"), not its document (megabytes for the
    /// largest pool); a deletion left halfway by an earlier version (whole document, "pos") still finishes clean.
    func testStagedDeleteKeepsOnlyTheListedAddresses() throws {
        let n = try net(pool: ["name": "small", "ranges": [["subnet": "10.9.0.0/24"]]])
        let before = try n.store.kvCount("net1")
        _ = try n.admin("pool.import", Self.largeDocument())
        XCTAssertNotNil(try n.adminStep("pool.delete", ["name": "large"])["continue"])
        XCTAssertEqual(try n.kv("deletedoc/large"), #"{"ips":["10.200.1.0-10.200.8.255"]}"#)
        XCTAssertEqual(try n.admin("pool.delete", ["name": "large"])["deleted"]?.string, "large")
        XCTAssertEqual(try n.store.kvCount("net1"), before)

        _ = try n.admin("pool.import", Self.largeDocument())
        let spec = try XCTUnwrap(try n.admin("pool.show", ["name": "large"])["pool"])
        let store = n.store
        try n.ex.runSync {  // a first step of the previous version: the whole document, and a position in another list
            for (k, v) in [("deletedoc/large", spec.bytes), ("deleting/large", Array(#"{"phase":0,"pos":1500}"#.utf8))] {
                try Array(k.utf8).withUnsafeBytes { kb in try v.withUnsafeBytes { vb in try store.kvPut("net1", kb, vb) } }
            }
            for k in ["pool/large", "spec/large", "count/large"] { try Array(k.utf8).withUnsafeBytes { try store.kvDelete("net1", $0) } }
        }
        XCTAssertEqual(try n.admin("pool.delete", ["name": "large"])["deleted"]?.string, "large")
        XCTAssertEqual(try n.store.kvCount("net1"), before, "owner entries left behind")
    }

    /// Pools stored by an earlier version have no stamp (or one that no longer matches): a new instance stamps them,
    /// so they are listed and allocated from with the definition actually stored.
    func testPoolsWithoutAStampAreStampedOnCreate() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.0.0/29"]]])
        _ = try n.admin("pool.import", ["name": "q", "ranges": [["subnet": "10.2.0.0/29"]]])
        let stampQ = try XCTUnwrap(try n.kv("poolv/q"))
        _ = try n.admin("pool.import", ["name": "q", "ranges": [["subnet": "10.3.0.0/29"]]])
        let store = n.store
        try n.ex.runSync {  // as an earlier version leaves it: p without a stamp, q with the stamp of another definition
            try Array("poolv/p".utf8).withUnsafeBytes { try store.kvDelete("net1", $0) }
            try Array("poolv/q".utf8).withUnsafeBytes { kb in try Array(stampQ.utf8).withUnsafeBytes { try store.kvPut("net1", kb, $0) } }
        }
        try n.restart()
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.compactMap { $0["name"]?.string }, ["p", "q"])
        XCTAssertNotNil(try n.kv("poolv/p"))
        XCTAssertNotEqual(try n.kv("poolv/q"), stampQ)
        XCTAssertEqual(try n.addIP("c1", "eth0", ["pool": "q"]), "10.3.0.2")
        _ = try n.call("del", ["containerID": "c1", "ifname": "eth0"])
        _ = try n.admin("pool.delete", ["name": "q"])
        XCTAssertNil(try n.kv("poolv/q"))
    }
}
