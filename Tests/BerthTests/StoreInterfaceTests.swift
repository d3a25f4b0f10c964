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
    /// Appends one event in a transaction of its own; its revision, whether the engine gives it at append (SQLite) or
    /// at commit (etcd).
    static func appendCommitted(_ st: StateStore, _ type: String = "t", _ subject: String = "s", data: JSON = .object([])) throws -> Int64 {
        let r = try inTransaction(st) { try st.appendEvent(type: type, subject: subject, actor: "test", data: data) }
        if r != 0 { return r }
        guard let c = st.committedEventRevision else { throw BerthError(.internal, "the engine gave the event no revision, at append or at commit") }
        return c
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
            revs.append(try appendCommitted(st, t, s, data: ["i": .number(Double(revs.count))]))
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

    /// A prefix delete followed by puts under that prefix in the same transaction: the puts win, the rest is gone.
    static func deletePrefixThenPut(_ open: OpenStore, _ dir: String) throws {
        let st = try open(dir)
        try inTransaction(st) { for k in ["p/a", "p/b", "p/c", "q/a"] { try put(st, "ns", bytes(k), [1]) } }
        let n = try inTransaction(st) { () throws -> Int64 in
            let n = try bytes("p/").withUnsafeBytes { try st.kvDeletePrefix("ns", $0) }
            try put(st, "ns", bytes("p/b"), [2])
            try put(st, "ns", bytes("p/z"), [3])
            XCTAssertEqual(try scan(st, "ns", prefix: bytes("p/")), [bytes("p/b"), bytes("p/z")], "the transaction sees its own writes")
            return n
        }
        XCTAssertEqual(n, 3)
        XCTAssertEqual(try scan(st, "ns", prefix: []), [bytes("p/b"), bytes("p/z"), bytes("q/a")])
        XCTAssertEqual(try get(st, "ns", bytes("p/b")), [2])
    }

    /// What was committed is there after the store is closed and opened again.
    static func durableAcrossReopen(_ open: OpenStore, _ dir: String) throws {
        var rev: Int64 = 0
        do {
            let st = try open(dir)
            try inTransaction(st) { try put(st, "ns", bytes("kept"), bytes("v")) }
            rev = try appendCommitted(st)
        }
        let again = try open(dir)
        XCTAssertEqual(try get(again, "ns", bytes("kept")), bytes("v"))
        XCTAssertEqual(try again.lastRevision(), rev)
        let next = try appendCommitted(again)
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
    func testDeletePrefixThenPut() throws { try StoreContract.deletePrefixThenPut(open, dir) }
}

/// The contract against the etcd engine, on a real etcd started for this class (Support/Etcd.swift), each case on a
/// site of its own; then what only an optimistic engine shared by several berthd has: conflicts, phantoms, limits.
final class EtcdStoreInterfaceTests: EtcdTestCase {

    var dir = ""
    var endpoint: String { Self.etcd?.endpoint ?? "" }
    /// The site is the directory's last component: reopening the same directory reopens the same site.
    var open: OpenStore {
        let e = endpoint
        return { dir in try EtcdStore(EtcdSettings(endpoints: [e], site: String(dir.split(separator: "/").last!))) }
    }
    override func setUpWithError() throws {
        try super.setUpWithError()
        dir = "/etcd-contract-\(UUID().uuidString)"
    }

    func testOrderedKeys() throws { try StoreContract.orderedKeys(open, dir) }
    func testScanAfter() throws { try StoreContract.scanAfter(open, dir) }
    func testValuesAndDeletes() throws { try StoreContract.valuesAndDeletes(open, dir) }
    func testSavepoints() throws { try StoreContract.savepoints(open, dir) }
    func testRollback() throws { try StoreContract.rollback(open, dir) }
    func testEventLog() throws { try StoreContract.eventLog(open, dir) }
    func testPrefixes() throws { try StoreContract.prefixes(open, dir) }
    func testDurableAcrossReopen() throws { try StoreContract.durableAcrossReopen(open, dir) }
    func testDeletePrefixThenPut() throws { try StoreContract.deletePrefixThenPut(open, dir) }

    typealias C = StoreContract
    func assertAborted(_ body: @autoclosure () throws -> Void, _ why: String, line: UInt = #line) {
        XCTAssertThrowsError(try body(), why, line: line) { e in
            XCTAssertEqual((e as? BerthError)?.status, .aborted, "\(e)", line: line)
        }
    }

    /// Two engines on the same site read the same key in interleaved transactions: the first commit wins, the second
    /// is ABORTED and none of its writes (to that key or elsewhere) is applied.
    func testInterleavedTransactionsOnOneKey() throws {
        let a = try open(dir), b = try open(dir)
        try C.inTransaction(a) { try C.put(a, "ns", C.bytes("k"), [0]) }
        try a.begin()
        try b.begin()
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [0])
        XCTAssertEqual(try C.get(b, "ns", C.bytes("k")), [0])
        try C.put(b, "ns", C.bytes("k"), [2])
        try b.commit()
        try C.put(a, "ns", C.bytes("k"), [1])
        try C.put(a, "ns", C.bytes("elsewhere"), [1])
        assertAborted(try a.commit(), "a read k before b changed it")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [2])
        XCTAssertNil(try C.get(a, "ns", C.bytes("elsewhere")), "nothing of the aborted transaction is applied")
        // Run again from the start, it commits.
        try C.inTransaction(a) {
            let v = try C.get(a, "ns", C.bytes("k"))!
            try C.put(a, "ns", C.bytes("k"), [v[0] + 1])
        }
        XCTAssertEqual(try C.get(b, "ns", C.bytes("k")), [3])
        // A key read as absent that another writer creates is a conflict too.
        try a.begin()
        XCTAssertNil(try C.get(a, "ns", C.bytes("new")))
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("new"), [1]) }
        try C.put(a, "ns", C.bytes("new"), [9])
        assertAborted(try a.commit(), "a read new as absent")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("new")), [1])
    }

    /// A scan records its range: a key inserted into it (a phantom) or deleted from what it saw aborts the scanner's
    /// commit even though it wrote elsewhere; a change outside the range does not.
    func testPhantomInScannedRange() throws {
        let a = try open(dir), b = try open(dir)
        try C.inTransaction(a) { try C.put(a, "ns", C.bytes("p/a"), [1]); try C.put(a, "ns", C.bytes("r/a"), [1]) }
        try a.begin()
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), [C.bytes("p/a")])
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("p/x"), [1]) }
        try C.put(a, "ns", C.bytes("q/y"), [1])
        assertAborted(try a.commit(), "p/x appeared in the range a scanned")
        XCTAssertNil(try C.get(a, "ns", C.bytes("q/y")))

        try a.begin()
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: []), C.bytes("p/a"))
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("r/b"), [1]) }
        try C.put(a, "ns", C.bytes("q/y"), [1])
        try a.commit()
        XCTAssertEqual(try C.get(b, "ns", C.bytes("q/y")), [1], "a change outside the scanned range is no conflict")

        try a.begin()
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: []), C.bytes("p/a"))
        try C.inTransaction(b) { try C.bytes("p/a").withUnsafeBytes { try b.kvDelete("ns", $0) } }
        try C.put(a, "ns", C.bytes("q/z"), [1])
        assertAborted(try a.commit(), "the key a's scan returned was deleted")

        try a.begin()
        XCTAssertEqual(try C.bytes("p/").withUnsafeBytes { try a.kvCountPrefix("ns", $0) }, 1)
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("p/y"), [1]) }
        try C.put(a, "ns", C.bytes("q/z"), [1])
        assertAborted(try a.commit(), "a counted p/ and p/y appeared")

        try a.begin()
        XCTAssertEqual(try C.bytes("p/").withUnsafeBytes { try a.kvCountPrefix("ns", $0) }, 2)
        try C.inTransaction(b) { try C.bytes("p/x").withUnsafeBytes { try b.kvDelete("ns", $0) } }
        try C.put(a, "ns", C.bytes("q/z"), [1])
        assertAborted(try a.commit(), "a counted p/x, which was deleted")
        XCTAssertNil(try C.get(a, "ns", C.bytes("q/z")))
    }

    /// Scans repeated in one transaction (answered from the ranges it already read, at its snapshot) see what the
    /// first scan saw merged with the transaction's own writes, never another writer's commit made meanwhile, page
    /// past etcd's answer size the same way, and the commit still conflicts on that other writer's phantom.
    func testRepeatedScansInOneTransaction() throws {
        let a = try open(dir), b = try open(dir)
        let keys = (0..<40).map { C.bytes("p/" + String(format: "%02d", $0)) }
        try C.inTransaction(a) { for k in keys { try C.put(a, "ns", k, [1]) } }
        try a.begin()
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), keys)
        try C.inTransaction(b) {
            try C.put(b, "ns", C.bytes("p/15x"), [1])
            try C.bytes("p/20").withUnsafeBytes { try b.kvDelete("ns", $0) }
        }
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), keys, "the snapshot, not b's commit")
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: C.bytes("p/15")), C.bytes("p/16"))
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: C.bytes("p/39")), nil)
        try C.put(a, "ns", C.bytes("p/05a"), [1])
        try C.bytes("p/30").withUnsafeBytes { try a.kvDelete("ns", $0) }
        var mine = keys.filter { $0 != C.bytes("p/30") } + [C.bytes("p/05a")]
        mine.sort { $0.lexicographicallyPrecedes($1) }
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), mine, "with a's own put and delete")
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: C.bytes("p/05")), C.bytes("p/05a"))
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: C.bytes("p/29")), C.bytes("p/31"))
        assertAborted(try a.commit(), "p/15x appeared in the range a scanned")
        var now = keys.filter { $0 != C.bytes("p/20") } + [C.bytes("p/15x")]
        now.sort { $0.lexicographicallyPrecedes($1) }
        try C.inTransaction(a) { XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), now, "a new transaction sees b's commit") }
    }

    /// etcd's limits (128 operations, 1.5 MiB per Txn): over them, a clear RESOURCE_EXHAUSTED naming the limit and
    /// nothing applied; at them, the commit goes through. With the engine's limits set above the member's, etcd's own
    /// refusal is reported as clearly.
    func testTxnLimits() throws {
        let st = try open(dir)
        func expectLimit(_ flag: String, _ store: StateStore, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try C.inTransaction(store, body), line: line) { e in
                let be = e as? BerthError
                XCTAssertEqual(be?.status, .resourceExhausted, "\(e)", line: line)
                XCTAssertTrue(be?.message.contains(flag) ?? false, "the error names \(flag): \(e)", line: line)
            }
        }
        expectLimit("--max-txn-ops", st) { for i in 0..<129 { try C.put(st, "ns", C.bytes("k\(i)"), [1]) } }
        XCTAssertEqual(try C.bytes("k").withUnsafeBytes { try st.kvCountPrefix("ns", $0) }, 0)
        try C.inTransaction(st) { for i in 0..<128 { try C.put(st, "ns", C.bytes("k\(i)"), [1]) } }
        XCTAssertEqual(try C.bytes("k").withUnsafeBytes { try st.kvCountPrefix("ns", $0) }, 128)
        let mib = [UInt8](repeating: 7, count: 1 << 20)
        expectLimit("--max-request-bytes", st) { try C.put(st, "ns", C.bytes("big1"), mib); try C.put(st, "ns", C.bytes("big2"), mib) }
        XCTAssertNil(try C.get(st, "ns", C.bytes("big1")))
        // Under it, a request many times etcd's HTTP/2 windows (64 KiB) goes through: the gRPC transport waits for
        // them to open (the gateway's HTTP/1.1 has no windows).
        try C.inTransaction(st) { try C.put(st, "ns", C.bytes("big1"), mib) }
        XCTAssertEqual(try C.get(st, "ns", C.bytes("big1")), mib)
        try C.inTransaction(st) { try C.bytes("big1").withUnsafeBytes { try st.kvDelete("ns", $0) } }
        // Reads past the limit are no error: that transaction commits exclusively (testReadsBeyondOneTxnCommitExclusively).

        let lax = try EtcdStore(EtcdSettings(endpoints: [endpoint], site: String(dir.dropFirst()), maxTxnOps: 1000, maxRequestBytes: 8 << 20))
        expectLimit("--max-txn-ops", lax) { for i in 0..<129 { try C.put(lax, "ns", C.bytes("m\(i)"), [1]) } }
        expectLimit("--max-request-bytes", lax) { try C.put(lax, "ns", C.bytes("big1"), mib); try C.put(lax, "ns", C.bytes("big2"), mib) }
        XCTAssertNil(try C.get(st, "ns", C.bytes("m0")))
        XCTAssertNil(try C.get(st, "ns", C.bytes("big1")))
    }

    /// A transaction that read more keys than one Txn may compare (here 300, limit 128) commits exclusively: its reads
    /// checked in several Txns while it holds the site's exclusive key, then its writes. A key it read changed by
    /// another writer before that is still a conflict, nothing applied. While the key is held, another engine's commit
    /// waits for its release and is a conflict (ABORTED, nothing applied), and commits when run again. Before, such
    /// a transaction failed with RESOURCE_EXHAUSTED (--max-txn-ops) however often it ran.
    func testReadsBeyondOneTxnCommitExclusively() throws {
        let a = try open(dir) as! EtcdStore, b = try open(dir) as! EtcdStore
        let keys = (0..<300).map { C.bytes("r/" + String(format: "%03d", $0)) }
        for i in stride(from: 0, to: keys.count, by: 100) { try C.inTransaction(a) { for k in keys[i..<i + 100] { try C.put(a, "ns", k, [1]) } } }
        try C.inTransaction(a) {
            for k in keys { XCTAssertEqual(try C.get(a, "ns", k), [1]) }
            try C.put(a, "ns", C.bytes("sum"), [44])
        }
        XCTAssertEqual(try C.get(b, "ns", C.bytes("sum")), [44])
        XCTAssertEqual(a.exclusiveCommits.load(ordering: .relaxed), 1)

        try a.begin()
        for k in keys { _ = try C.get(a, "ns", k) }
        try C.inTransaction(b) { try C.put(b, "ns", keys[250], [2]) }
        try C.put(a, "ns", C.bytes("sum"), [45])
        assertAborted(try a.commit(), "b changed a key a read (in one of its chunks of compares)")
        XCTAssertEqual(try C.get(b, "ns", C.bytes("sum")), [44], "nothing of the aborted transaction is applied")
        XCTAssertEqual(a.exclusiveCommits.load(ordering: .relaxed), 1)
        XCTAssertEqual(try b.client.range(b.exclusiveKey, [], revision: 0, countOnly: true).count, 0, "the exclusive key was released")

        // Another berthd holding the key (here: put by hand; deleted by a store of its own once c polls for it).
        _ = try b.client.txn(compares: [], operations: [EtcdClient.put(b.exclusiveKey, C.bytes("other"))])
        let c = try open(dir) as! EtcdStore, d = try open(dir) as! EtcdStore
        try c.begin()
        try C.put(c, "ns", C.bytes("during"), [1])
        let polls = c.client.ranges.load(ordering: .relaxed)
        let released = DispatchSemaphore(value: 0)
        Thread {
            while c.client.ranges.load(ordering: .relaxed) < polls + 2 { usleep(2_000) }  // c is waiting for the key
            _ = try? d.client.txn(compares: [], operations: [EtcdClient.delete(d.exclusiveKey, [])])
            released.signal()
        }.start()
        assertAborted(try c.commit(), "the exclusive key is held")
        XCTAssertEqual(released.wait(timeout: .now() + 10), .success, "c waited for the key's release")
        XCTAssertNil(try C.get(b, "ns", C.bytes("during")))
        try C.inTransaction(c) { try C.put(c, "ns", C.bytes("during"), [1]) }
        XCTAssertEqual(try C.get(b, "ns", C.bytes("during")), [1])
    }

    /// A holder of the exclusive key that dies (its key under a lease nobody renews) holds up other writers only until
    /// etcd ends that lease: a commit meanwhile waits, is ABORTED with nothing applied, and commits when run again.
    func testAHolderThatDiedReleasesTheExclusiveKeyWithItsLease() throws {
        let b = try open(dir) as! EtcdStore, c = try open(dir) as! EtcdStore
        let lease = try b.client.grantLease(ttlSeconds: 2)
        _ = try b.client.txn(compares: [], operations: [EtcdClient.put(b.exclusiveKey, C.bytes("dead"), lease: lease.id)])
        let t0 = Date()
        try c.begin()
        try C.put(c, "ns", C.bytes("after"), [1])
        assertAborted(try c.commit(), "the dead holder's key is still there")
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 1.0, "it waited for the lease to end")
        XCTAssertEqual(try b.client.range(b.exclusiveKey, [], revision: 0, countOnly: true).count, 0, "etcd ended the lease and its key")
        XCTAssertNil(try C.get(b, "ns", C.bytes("after")))
        try C.inTransaction(c) { try C.put(c, "ns", C.bytes("after"), [1]) }
        XCTAssertEqual(try C.get(b, "ns", C.bytes("after")), [1])
    }

    /// Two engines append events: revisions are one sequence across both, strictly increasing in commit order and
    /// never reused, and either engine reads every event. Two transactions appending at once both commit: events share
    /// no counter key, so writers on many hosts do not conflict on the event log (the old "evseq" key made the second
    /// one ABORTED). The revisions are etcd's of each commit x 1024 + the event's index in it.
    func testEventRevisionsAcrossEngines() throws {
        let a = try open(dir), b = try open(dir)
        var revs: [Int64] = []
        for i in 0..<10 {
            let st = i % 2 == 0 ? a as! EtcdStore : b as! EtcdStore
            try C.inTransaction(st) {
                for _ in 0..<(i % 3 + 1) { XCTAssertEqual(try st.appendEvent(type: "t", subject: "s/\(i)", actor: i % 2 == 0 ? "a" : "b", data: .object([])), 0) }
            }
            let last = try XCTUnwrap(st.committedEventRevision)
            revs += (0..<Int64(i % 3 + 1)).map { last - Int64(i % 3) + $0 }
        }
        XCTAssertEqual(revs, revs.sorted(), "increasing in commit order")
        XCTAssertEqual(Set(revs).count, revs.count, "never reused")
        try a.begin()
        try b.begin()
        XCTAssertEqual(try a.appendEvent(type: "t", subject: "race", actor: "a", data: .object([])), 0)
        XCTAssertEqual(try b.appendEvent(type: "t", subject: "race", actor: "b", data: .object([])), 0)
        try a.commit()
        try b.commit()  // no conflict: the two events are different keys
        let ra = try XCTUnwrap(a.committedEventRevision), rb = try XCTUnwrap(b.committedEventRevision)
        XCTAssertGreaterThan(rb, ra, "b committed after a")
        for st in [a, b] {
            let evs = try st.events(since: 0, limit: 1000, type: nil, subject: nil)
            XCTAssertEqual(evs.map(\.rev), revs + [ra, rb])
            XCTAssertEqual(evs.suffix(2).map(\.actor), ["a", "b"])
            XCTAssertEqual(try st.events(since: 0, limit: 1000, type: nil, subject: "race").count, 2)
            XCTAssertEqual(try st.events(since: revs[4], limit: 3, type: nil, subject: nil).map(\.rev), Array(revs[5..<8]), "since a revision inside a commit, and a limit")
            XCTAssertEqual(try st.lastRevision(), rb)
        }
    }

    /// Endpoints are tried in order (a refused one is skipped, reads and writes alike); bad settings and an
    /// unreachable etcd are clear errors.
    func testEndpointsAndSettings() throws {
        let dead = "http://127.0.0.1:\(freeLoopbackPort())"
        let st = try EtcdStore(EtcdSettings(endpoints: [dead, endpoint], site: "failover"))
        try C.inTransaction(st) { try C.put(st, "ns", C.bytes("k"), [1]) }
        XCTAssertEqual(try C.get(st, "ns", C.bytes("k")), [1])
        func expect(_ status: BerthStatus, _ words: String, _ s: EtcdSettings, line: UInt = #line) {
            XCTAssertThrowsError(try EtcdStore(s), line: line) { e in
                XCTAssertEqual((e as? BerthError)?.status, status, "\(e)", line: line)
                XCTAssertTrue("\(e)".contains(words), "\(e)", line: line)
            }
        }
        expect(.unavailable, "etcd is unreachable", EtcdSettings(endpoints: [dead], site: "x"))
        expect(.invalidArgument, "store.endpoints is empty", EtcdSettings(endpoints: [], site: "x"))
        expect(.invalidArgument, "http://etcd:2379", EtcdSettings(endpoints: ["http://etcd:2379"], site: "x"))  // plain HTTP needs an address
        expect(.invalidArgument, "https://-bad-:2379", EtcdSettings(endpoints: ["https://-bad-:2379"], site: "x"))
        expect(.invalidArgument, "site name \"a/b\"", EtcdSettings(endpoints: [endpoint], site: "a/b"))
    }

    /// Read-modify-write of one key through the engine (begin, read, put, commit: a range and a Txn with a compare),
    /// next to etcd's own single-key Txn (one put) and a raw Range + comparing Txn over the same transport, in the same run: alternating blocks of 50,
    /// so that a change in the machine's load hits both alike. Prints both rates; checks that every increment landed.
    func testSingleKeyTxnRate() throws {
        let st = try open(dir)
        let raw = try EtcdClient(EtcdSettings(endpoints: [endpoint], site: "raw"))
        let block = 50, rounds = 4
        var engineNanos: UInt64 = 0, rawNanos: UInt64 = 0, stmNanos: UInt64 = 0
        for round in 0..<rounds {
            var t0 = monotonicNanos()
            for _ in 0..<block {
                try C.inTransaction(st) {
                    let v = try C.get(st, "ns", C.bytes("counter")).map { Int(String(decoding: $0, as: UTF8.self))! } ?? 0
                    try C.put(st, "ns", C.bytes("counter"), Array(String(v + 1).utf8))
                }
            }
            engineNanos += monotonicNanos() - t0
            t0 = monotonicNanos()
            for i in 0..<block {
                let r = try raw.txn(compares: [], operations: [EtcdClient.put(Array("/raw/counter".utf8), Array(String(round * block + i).utf8))])
                XCTAssertTrue(r.succeeded)
            }
            rawNanos += monotonicNanos() - t0
            t0 = monotonicNanos()
            for i in 0..<block {  // what etcd's own STM sends for a read-modify-write: a Range, then a Txn comparing it
                let k = Array("/raw/stm".utf8)
                let mod = try raw.range(k, [], revision: 0).kvs.first?.modRevision ?? 0
                let r = try raw.txn(compares: [EtcdClient.compareMod(k, [], .equal, mod)], operations: [EtcdClient.put(k, Array(String(i).utf8))])
                XCTAssertTrue(r.succeeded)
            }
            stmNanos += monotonicNanos() - t0
        }
        let n = block * rounds
        XCTAssertEqual(try C.get(st, "ns", C.bytes("counter")), Array(String(n).utf8))
        func rate(_ ns: UInt64) -> Double { Double(n) / (Double(ns) / 1e9) }
        let engine = rate(engineNanos), etcdRate = rate(rawNanos), stm = rate(stmNanos)
        print("etcd engine: \(Int(engine)) read-modify-write txn/s; etcd raw single-key Txn: \(Int(etcdRate))/s (ratio \(String(format: "%.2f", engine / etcdRate))); raw Range+Txn: \(Int(stm))/s (ratio \(String(format: "%.2f", engine / stm))); \(n) each, alternating blocks of \(block), JSON gateway")
    }
}
