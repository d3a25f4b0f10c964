// The store interface's contract (Host/BerthStore/Interface.swift), written once and run against every engine: each
// engine gets a test class whose cases are one line each, calling StoreContract with a way to open that engine.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

/// Opens (or reopens) an engine's store at a directory of its own.
typealias OpenStore = (_ dir: String) throws -> StateStore

enum StoreContract {
    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    static func put(_ st: StateStore, _ ns: String, _ k: [UInt8], _ v: [UInt8]) throws {
        try k.withUnsafeBytes { kb in try v.withUnsafeBytes { try st.kvPut(ns, kb, $0) } }
    }
    static func get(_ st: StateStore, _ ns: String, _ k: [UInt8]) throws -> [UInt8]? {
        try k.withUnsafeBytes { kb in try st.kvRead(ns, kb) { $0.map { Array($0) } } }
    }
    static func next(_ st: StateStore, _ ns: String, prefix: [UInt8], after: [UInt8]) throws -> [UInt8]? {
        try prefix.withUnsafeBytes { p in try after.withUnsafeBytes { a in try st.kvScanNext(ns, prefix: p, after: a) { $0.map { Array($0.key) } } } }
    }
    /// Every key with `prefix`, in the engine's order, by repeated kvScanNext.
    static func scan(_ st: StateStore, _ ns: String, prefix: [UInt8]) throws -> [[UInt8]] {
        var out: [[UInt8]] = [], after: [UInt8] = []
        while let k = try next(st, ns, prefix: prefix, after: after) {
            out.append(k)
            after = k
        }
        return out
    }
    static func inTransaction<T>(_ st: StateStore, _ body: () throws -> T) throws -> T {
        try st.begin()
        do {
            let r = try body()
            try st.commit()
            return r
        } catch {
            st.rollback()
            throw error
        }
    }
    struct Abort: Error {}

    /// Keys compare as unsigned bytes, a shorter key first on a common prefix; a scan visits each key once, in order.
    static func orderedKeys(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        let keys: [[UInt8]] = [[0x61, 0xFF], [0x61], [0x61, 0x00], [0x62], [0x61, 0x80, 0x01], [0x00], [0xFF, 0xFF], [0x61, 0x7F]]
        try inTransaction(st) { for k in keys { try put(st, "ns", k, [1]) } }
        let sorted = keys.sorted { $0.lexicographicallyPrecedes($1) }
        XCTAssertEqual(try scan(st, "ns", prefix: []), sorted)
        XCTAssertEqual(try scan(st, "ns", prefix: [0x61]), sorted.filter { $0.first == 0x61 })
        XCTAssertEqual(try scan(st, "ns", prefix: [0xFF]), [[0xFF, 0xFF]], "a prefix of 0xFF has no upper bound key")
        XCTAssertEqual(try scan(st, "other", prefix: []), [], "namespaces are separate")
    }

    /// `after` is strict when it is at or past the prefix, and ignored when it sorts before it.
    static func scanAfter(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        try inTransaction(st) { for k in ["p/a", "p/b", "p/c", "q/a"] { try put(st, "ns", bytes(k), bytes(k)) } }
        XCTAssertEqual(try next(st, "ns", prefix: bytes("p/"), after: bytes("p/a")), bytes("p/b"))
        XCTAssertEqual(try next(st, "ns", prefix: bytes("p/"), after: bytes("a")), bytes("p/a"), "after before the prefix: from the prefix")
        XCTAssertEqual(try next(st, "ns", prefix: bytes("p/"), after: bytes("p/bb")), bytes("p/c"), "after need not exist")
        XCTAssertNil(try next(st, "ns", prefix: bytes("p/"), after: bytes("p/c")), "nothing past the last key with the prefix")
    }

    /// A present empty value is not a missing key; a put replaces; a delete of a missing key succeeds.
    static func valuesAndDeletes(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        try inTransaction(st) {
            try put(st, "ns", bytes("empty"), [])
            try put(st, "ns", bytes("k"), bytes("one"))
            try put(st, "ns", bytes("k"), bytes("two"))
            let big = [UInt8](repeating: 0xAB, count: 1 << 20)
            try put(st, "ns", bytes("big"), big)
            XCTAssertEqual(try get(st, "ns", bytes("big")), big)
        }
        XCTAssertEqual(try get(st, "ns", bytes("empty")), [])
        XCTAssertNil(try get(st, "ns", bytes("missing")))
        XCTAssertEqual(try get(st, "ns", bytes("k")), bytes("two"))
        try inTransaction(st) {
            try bytes("k").withUnsafeBytes { try st.kvDelete("ns", $0) }
            try bytes("never").withUnsafeBytes { try st.kvDelete("ns", $0) }
        }
        XCTAssertNil(try get(st, "ns", bytes("k")))
    }

    /// A savepoint's writes vanish alone when its body throws; the transaction's other writes commit. Savepoints nest.
    static func savepoints(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        try inTransaction(st) {
            try put(st, "ns", bytes("a"), [1])
            XCTAssertThrowsError(try st.savepoint("sp") { () throws -> Void in
                try put(st, "ns", bytes("b"), [2])
                throw Abort()
            })
            try st.savepoint("outer") {
                try put(st, "ns", bytes("c"), [3])
                _ = try? st.savepoint("inner") { () throws -> Void in
                    try put(st, "ns", bytes("d"), [4])
                    throw Abort()
                }
            }
        }
        XCTAssertEqual(try get(st, "ns", bytes("a")), [1])
        XCTAssertNil(try get(st, "ns", bytes("b")), "the failed savepoint's write is gone")
        XCTAssertEqual(try get(st, "ns", bytes("c")), [3], "the outer savepoint released into the transaction")
        XCTAssertNil(try get(st, "ns", bytes("d")), "the inner failed savepoint's write is gone")
    }

    /// A rolled-back transaction leaves nothing: keys and events alike.
    static func rollback(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        let before = try st.lastRevision()
        XCTAssertThrowsError(try inTransaction(st) { () throws -> Void in
            try put(st, "ns", bytes("x"), [1])
            _ = try st.appendEvent(type: "t", subject: "s", actor: "test", data: .object([]))
            throw Abort()
        })
        XCTAssertNil(try get(st, "ns", bytes("x")))
        XCTAssertEqual(try st.lastRevision(), before)
        XCTAssertEqual(try st.events(since: before, limit: 10, type: nil, subject: nil).count, 0)
    }

    /// Revisions of committed events strictly increase; reads since a revision, type and subject filters (a value or
    /// the values under it, never a mere string prefix), and the limit.
    static func eventLog(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        XCTAssertEqual(try st.lastRevision(), 0)
        let specs: [(String, String)] = [("network.attached", "n/c1/eth0"), ("networkx.odd", "n/c1/eth0"), ("network", "n"),
                                         ("instance.placed", "App/web/0"), ("instance.placed", "App/webby/0"), ("instance.running", "App/web")]
        var revs: [Int64] = []
        for (t, s) in specs {
            revs.append(try inTransaction(st) { try st.appendEvent(type: t, subject: s, actor: "test", data: ["i": .number(Double(revs.count))]) })
        }
        XCTAssertEqual(revs, revs.sorted())
        XCTAssertEqual(Set(revs).count, revs.count)
        XCTAssertEqual(try st.lastRevision(), revs.last)
        XCTAssertEqual(try st.events(since: revs[2], limit: 100, type: nil, subject: nil).map(\.rev), Array(revs[3...]))
        XCTAssertEqual(try st.events(since: 0, limit: 2, type: nil, subject: nil).map(\.rev), Array(revs[..<2]))
        XCTAssertEqual(try st.events(since: 0, limit: 100, type: "network", subject: nil).map(\.type), ["network.attached", "network"])
        XCTAssertEqual(try st.events(since: 0, limit: 100, type: nil, subject: "App/web").map(\.subject), ["App/web/0", "App/web"])
        let e = try st.events(since: revs[0] - 1, limit: 1, type: nil, subject: nil)[0]
        XCTAssertEqual(e.actor, "test")
        XCTAssertEqual(e.data["i"]?.int, 0)
    }

    /// Counting and deleting by prefix, including the empty prefix and a prefix of 0xFF bytes.
    static func prefixes(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        try inTransaction(st) {
            for k in ["a/1", "a/2", "a/3", "b/1"] { try put(st, "ns", bytes(k), [0]) }
            try put(st, "ns", [0xFF, 0x01], [0])
            try put(st, "ns", [0xFF], [0])
        }
        func count(_ p: [UInt8]) throws -> Int64 { try p.withUnsafeBytes { try st.kvCountPrefix("ns", $0) } }
        XCTAssertEqual(try count(bytes("a/")), 3)
        XCTAssertEqual(try count([0xFF]), 2)
        XCTAssertEqual(try count([]), 6)
        let deleted = try inTransaction(st) { try bytes("a/").withUnsafeBytes { try st.kvDeletePrefix("ns", $0) } }
        XCTAssertEqual(deleted, 3)
        XCTAssertEqual(try scan(st, "ns", prefix: []), [bytes("b/1"), [0xFF], [0xFF, 0x01]])
    }

    /// What was committed is there after the store is closed and opened again.
    static func durableAcrossReopen(_ open: OpenStore, _ dir: String) throws {
        var rev: Int64 = 0
        do {
            let st = try open(dir)
            rev = try inTransaction(st) { () throws -> Int64 in
                try put(st, "ns", bytes("kept"), bytes("v"))
                return try st.appendEvent(type: "t", subject: "s", actor: "test", data: .object([]))
            }
        }
        let again = try open(dir)
        XCTAssertEqual(try get(again, "ns", bytes("kept")), bytes("v"))
        XCTAssertEqual(try again.lastRevision(), rev)
        let next = try inTransaction(again) { try again.appendEvent(type: "t", subject: "s", actor: "test", data: .object([])) }
        XCTAssertGreaterThan(next, rev, "revisions go on increasing after a reopen")
    }
}

/// The contract against the SQLite engine.
final class SQLiteStoreInterfaceTests: XCTestCase {
    let open: OpenStore = { dir in try Store(path: dir + "/state.db", synchronous: "normal") }
    var dir = ""
    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "berth-store-contract-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testOrderedKeys() throws { try StoreContract.orderedKeys(open, dir) }
    func testScanAfter() throws { try StoreContract.scanAfter(open, dir) }
    func testValuesAndDeletes() throws { try StoreContract.valuesAndDeletes(open, dir) }
    func testSavepoints() throws { try StoreContract.savepoints(open, dir) }
    func testRollback() throws { try StoreContract.rollback(open, dir) }
    func testEventLog() throws { try StoreContract.eventLog(open, dir) }
    func testPrefixes() throws { try StoreContract.prefixes(open, dir) }
    func testDurableAcrossReopen() throws { try StoreContract.durableAcrossReopen(open, dir) }
}
