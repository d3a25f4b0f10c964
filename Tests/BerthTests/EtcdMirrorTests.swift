// The etcd engine's local copy of the key-value state (EtcdMirror), against a real etcd: transactions read it instead
// of etcd, a copy that is behind costs a conflict and never a wrong answer, it follows other writers (deletes too), it
// has this berthd's own commits before the next transaction reads, and it is loaded again when it cannot catch up.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdMirrorTests: EtcdTestCase {
    typealias C = StoreContract
    var site = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        site = "mirror-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    func store(mirror: Bool = true) throws -> EtcdStore {
        try EtcdStore(EtcdSettings(endpoints: [Self.etcd!.endpoint], site: site, mirror: mirror))
    }

    func assertAborted(_ body: @autoclosure () throws -> Void, _ why: String, line: UInt = #line) {
        XCTAssertThrowsError(try body(), why, line: line) { e in
            XCTAssertEqual((e as? BerthError)?.status, .aborted, "\(e)", line: line)
        }
    }

    /// Reads in a transaction on the copy send no range request to etcd; a read-only one sends its compares in one Txn.
    func testReadsComeFromTheCopy() throws {
        let b = try store(mirror: false)
        try C.inTransaction(b) { for i in 0..<20 { try C.put(b, "ns", C.bytes("k\(i)"), [UInt8(i)]) } }
        let a = try store()
        try C.inTransaction(a) { _ = try C.get(a, "ns", C.bytes("k0")) }  // loads the copy
        let ranges = a.client.ranges.load(ordering: .relaxed), txns = a.client.txns.load(ordering: .relaxed)
        try C.inTransaction(a) {
            for i in 0..<20 { XCTAssertEqual(try C.get(a, "ns", C.bytes("k\(i)")), [UInt8(i)]) }
            XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("k1")).count, 11)  // k1, k10...k19
            XCTAssertEqual(try C.bytes("k").withUnsafeBytes { try a.kvCountPrefix("ns", $0) }, 20)
            XCTAssertNil(try C.get(a, "ns", C.bytes("absent")))
        }
        XCTAssertEqual(a.client.ranges.load(ordering: .relaxed), ranges, "no read went to etcd")
        XCTAssertEqual(a.client.txns.load(ordering: .relaxed), txns + 1, "one Txn of compares for the read-only transaction")
        // The same with the copy off: every read is a request.
        let d = try store(mirror: false)
        let before = d.client.ranges.load(ordering: .relaxed)
        try C.inTransaction(d) { for i in 0..<20 { _ = try C.get(d, "ns", C.bytes("k\(i)")) } }
        XCTAssertGreaterThanOrEqual(d.client.ranges.load(ordering: .relaxed) - before, 20)
    }

    /// A transaction reads the copy as it was when it began. Another writer's change in the meantime makes its commit
    /// a conflict (writing or read-only), and the run after it reads etcd itself and sees the change.
    func testACopyBehindIsAConflictNeverAWrongAnswer() throws {
        let a = try store(), b = try store(mirror: false)
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [0]) }
        try C.inTransaction(a) { XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [0]) }

        try a.begin()
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [1]) }
        let seen = try C.get(a, "ns", C.bytes("k"))!
        XCTAssertEqual(seen, [0], "the copy as it was at begin")
        try C.put(a, "ns", C.bytes("k"), [seen[0] + 10])
        assertAborted(try a.commit(), "a read k before b changed it")
        // The run after the conflict reads the copy, once the copy has etcd's revision at the conflict (which
        // includes b's change); it does not go to etcd for every read.
        try a.begin()
        XCTAssertNotNil(a.txn?.mirror, "the run after a conflict reads the copy")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [1], "the change that caused the conflict")
        try a.commit()
        XCTAssertEqual(a.mirror!.fallbacks.load(ordering: .relaxed), 0)

        // Read-only: its answer would be stale, so its commit is a conflict too.
        try waitUntilTheCopyHas(a, "k", value: [1])
        try a.begin()
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [2]) }
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [1])
        assertAborted(try a.commit(), "a read-only transaction that read a stale k")
        try a.begin()
        XCTAssertNotNil(a.txn?.mirror, "the run after a read-only conflict reads the copy too")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [2])
        try a.commit()
        XCTAssertEqual(a.mirror!.fallbacks.load(ordering: .relaxed), 0)

        // A key created in a range the copy scanned, and a key deleted that the copy still had.
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("p/a"), [1]) }
        try waitUntilTheCopyHas(a, "p/a")
        try a.begin()
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("p/0"), [1]) }
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("p/")), [C.bytes("p/a")])
        try C.put(a, "ns", C.bytes("q"), [1])
        assertAborted(try a.commit(), "p/0 appeared in the range a scanned")
        try waitUntilTheCopyHas(a, "p/0")
        try a.begin()
        try C.inTransaction(b) { try C.bytes("p/0").withUnsafeBytes { try b.kvDelete("ns", $0) } }
        XCTAssertEqual(try C.next(a, "ns", prefix: C.bytes("p/"), after: []), C.bytes("p/0"))
        try C.put(a, "ns", C.bytes("q"), [1])
        assertAborted(try a.commit(), "the key a's scan returned was deleted")
        XCTAssertNil(try C.get(b, "ns", C.bytes("q")), "nothing of the aborted transactions was applied")
    }

    /// Waits until a transaction of `a` on its copy sees `key` (another writer's change reaches it through the watch).
    func waitUntilTheCopyHas(_ a: EtcdStore, _ key: String, present: Bool = true, value: [UInt8]? = nil, line: UInt = #line) throws {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            try a.begin()
            let v = try C.get(a, "ns", C.bytes(key))
            let onCopy = a.txn?.mirror != nil
            a.rollback()
            if onCopy && (v != nil) == present && (value == nil || v == value) { return }
            usleep(10_000)
        }
        XCTFail("the copy did not get \(key) \(present ? "put" : "deleted") within 5 s", line: line)
    }

    /// Puts and deletes by another writer reach the copy; this store's own commit is there for its next transaction
    /// at once (it waits for the watch to bring it).
    func testTheCopyFollowsOtherWritersAndHasItsOwnCommits() throws {
        let a = try store(), b = try store(mirror: false)
        try C.inTransaction(a) { _ = try C.get(a, "ns", C.bytes("x")) }
        try C.inTransaction(b) { for i in 0..<5 { try C.put(b, "ns", C.bytes("o/\(i)"), [1]) } }
        try waitUntilTheCopyHas(a, "o/4")
        try C.inTransaction(b) { try C.bytes("o/").withUnsafeBytes { _ = try b.kvDeletePrefix("ns", $0) } }
        try waitUntilTheCopyHas(a, "o/0", present: false)
        try a.begin()
        XCTAssertEqual(try C.scan(a, "ns", prefix: C.bytes("o/")), [], "the prefix delete reached the copy")
        a.rollback()

        for i in 0..<30 {
            try C.inTransaction(a) { try C.put(a, "ns", C.bytes("own"), [UInt8(i)]) }
            try a.begin()
            XCTAssertNotNil(a.txn?.mirror, "the transaction reads the copy")
            XCTAssertEqual(try C.get(a, "ns", C.bytes("own")), [UInt8(i)], "its own last commit")
            a.rollback()
        }
        XCTAssertEqual(a.mirror!.fallbacks.load(ordering: .relaxed), 0)
    }

    /// A conflict whose revision changed nothing under the copy's prefix (here an event, written after the key):
    /// the copy never reaches it, so the run after the conflict waits briefly and reads etcd, and the copy is kept
    /// (not loaded again) for the runs after that.
    func testAConflictAtARevisionTheCopyNeverSeesReadsEtcdOnce() throws {
        let a = try store(), b = try store(mirror: false)
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [0]) }
        try C.inTransaction(a) { XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [0]) }
        try a.begin()
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [0])
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [5]) }
        _ = try b.appendEvent(type: "t", subject: "s", actor: "test", data: .object([]))  // etcd's revision moves on, not under kv/
        try C.put(a, "ns", C.bytes("k"), [6])
        assertAborted(try a.commit(), "a read k before b changed it")
        let loads = a.mirror!.loads.load(ordering: .relaxed)
        let t0 = Date()
        try a.begin()
        XCTAssertNil(a.txn?.mirror, "the copy cannot reach the conflict's revision: etcd is read")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [5])
        a.rollback()
        XCTAssertLessThan(Date().timeIntervalSince(t0), 0.5, "waited no longer than the short catch-up")
        XCTAssertEqual(a.mirror!.fallbacks.load(ordering: .relaxed), 1)
        try a.begin()
        XCTAssertNotNil(a.txn?.mirror, "the copy is used again")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [5])
        a.rollback()
        XCTAssertEqual(a.mirror!.loads.load(ordering: .relaxed), loads, "the copy was kept, not loaded again")
    }

    /// A copy whose watch is gone does not hold transactions up: the next one reads etcd (after waiting at most the
    /// copy's wait), and the one after that loads the copy again. One that lost changes is loaded again too.
    func testACopyThatCannotCatchUpIsLoadedAgain() throws {
        let a = try store(), b = try store(mirror: false)
        try C.inTransaction(a) { try C.put(a, "ns", C.bytes("k"), [1]) }
        try a.begin()  // the copy has that commit
        XCTAssertNotNil(a.txn?.mirror)
        a.rollback()
        XCTAssertEqual(a.mirror!.loads.load(ordering: .relaxed), 1)
        a.mirror!.stop()  // its watch: gone
        try C.put(a, "ns", C.bytes("k"), [2])  // outside a transaction: committed at once
        let t0 = Date()
        try a.begin()
        XCTAssertNil(a.txn?.mirror, "the copy did not get the last commit: etcd is read")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [2])
        a.rollback()
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2)
        XCTAssertEqual(a.mirror!.fallbacks.load(ordering: .relaxed), 1)
        try a.begin()
        XCTAssertNotNil(a.txn?.mirror, "loaded again")
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [2])
        a.rollback()
        XCTAssertEqual(a.mirror!.loads.load(ordering: .relaxed), 2)

        a.mirror!.markLost()  // as when etcd compacted past what its watch had seen
        try C.inTransaction(b) { try C.put(b, "ns", C.bytes("k"), [3]) }
        try a.begin()
        XCTAssertEqual(try C.get(a, "ns", C.bytes("k")), [3])
        a.rollback()
        XCTAssertEqual(a.mirror!.loads.load(ordering: .relaxed), 3)
    }

    /// A read-only transaction that read more keys than a Txn may compare sends its compares in several Txns; and a
    /// copy whose queue of changes overflowed (no transaction applied them) drops it and is loaded again, complete.
    func testLargeReadsAndAnOverflowingQueue() throws {
        let b = try store(mirror: false)
        for chunk in 0..<3 {
            try C.inTransaction(b) { for i in 0..<100 { try C.put(b, "ns", C.bytes("r/\(chunk * 100 + i)"), [1]) } }
        }
        let a = try store()
        try C.inTransaction(a) { _ = try C.get(a, "ns", C.bytes("x")) }
        let txns = a.client.txns.load(ordering: .relaxed)
        try C.inTransaction(a) { for i in 0..<300 { XCTAssertEqual(try C.get(a, "ns", C.bytes("r/\(i)")), [1]) } }
        XCTAssertEqual(a.client.txns.load(ordering: .relaxed) - txns, 3, "300 compares in Txns of at most 128")

        let m = EtcdMirror(settings: a.settings, prefix: a.kvPrefix, inboxLimit: 10)
        XCTAssertNotNil(m.ready(atLeast: 0, client: a.client))
        XCTAssertEqual(m.loads.load(ordering: .relaxed), 1)
        try C.inTransaction(b) { for i in 0..<20 { try C.put(b, "ns", C.bytes("s/\(i)"), [2]) } }
        let deadline = Date().addingTimeInterval(5)
        while m.loads.load(ordering: .relaxed) < 2 && Date() < deadline {
            _ = m.ready(atLeast: 0, client: a.client)
            usleep(20_000)
        }
        XCTAssertEqual(m.loads.load(ordering: .relaxed), 2, "the overflowing queue made it load again")
        var copied = 0
        m.rows.forEach(from: a.kvPrefix, below: Keys.prefixEnd(a.kvPrefix)) { _ in copied += 1; return true }
        XCTAssertEqual(copied, 320, "every key, those whose changes were dropped too")
        m.stop()
    }

    /// BytesMap (byte-string keys hashed in one call) against a Dictionary: random puts, deletes of present and
    /// absent keys and nil-valued entries (a transaction's buffered delete), keys that are prefixes of each other and
    /// the empty key; the same lookups, count and contents after every step.
    func testBytesMapAgainstADictionary() {
        var rng = SystemRandomNumberGenerator()
        var m = BytesMap<[UInt8]?>(), ref: [[UInt8]: [UInt8]?] = [:]
        let keys: [[UInt8]] = [[], [0], [0, 0], [1], [1, 2, 3], Array("kv/net addr/p/4/0ac00005".utf8), Array("kv/net addr/p/4/0ac00005x".utf8)]
            + (0..<40).map { _ in (0..<Int.random(in: 0...24, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        for step in 0..<5_000 {
            let k = keys.randomElement(using: &rng)!
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: m[k] = [UInt8(step & 255)]; ref[k] = [UInt8(step & 255)]
            case 1: m[k] = .some(nil); ref[k] = .some(nil)
            case 2: XCTAssertEqual(m.removeValue(forKey: k) == nil, ref.removeValue(forKey: k) == nil)
            default: XCTAssertEqual(m.updateValue([9], forKey: k).map { $0 ?? [] }, ref.updateValue([9], forKey: k).map { $0 ?? [] })
            }
            XCTAssertEqual(m.count, ref.count)
            XCTAssertEqual(m[k].map { $0 ?? [] }, ref[k].map { $0 ?? [] })
        }
        XCTAssertEqual(Set(m.keys.map { Data($0) }), Set(ref.keys.map { Data($0) }))
        for (k, v) in m { XCTAssertEqual(ref[k]!, v) }
        XCTAssertEqual(Array(m).count, ref.count)
    }

    /// The copy's ordered rows against a sorted reference: random puts and deletes (enough to split chunks), then
    /// ordered walks from random keys with and without an end.
    func testSortedRowsAgainstAReference() {
        var rows = SortedRows(), reference: [[UInt8]: Int64] = [:]
        var rng = SystemRandomNumberGenerator()
        func key() -> [UInt8] { (0..<Int.random(in: 1...3, using: &rng)).map { _ in UInt8.random(in: 0...40, using: &rng) } }
        for i in 0..<20_000 {
            let k = key()
            if Int.random(in: 0..<3, using: &rng) == 0 {
                rows.delete(k)
                reference[k] = nil
            } else {
                rows.put(k, [1], mod: Int64(i))
                reference[k] = Int64(i)
            }
        }
        XCTAssertEqual(rows.count, reference.count)
        let sorted = reference.keys.sorted { $0.lexicographicallyPrecedes($1) }
        for _ in 0..<200 {
            let lo = key(), hi = Bool.random() ? key() : []
            var walked: [[UInt8]] = []
            rows.forEach(from: lo, below: hi) { walked.append($0); return true }
            let expected = sorted.filter { !$0.lexicographicallyPrecedes(lo) && (hi.isEmpty || $0.lexicographicallyPrecedes(hi)) }
            XCTAssertEqual(walked, expected)
            if let first = expected.first { XCTAssertEqual(rows[first]?.mod, reference[first]) }
        }
    }

    /// The group commit checks the limits after every operation by counting compares and operations without building
    /// them: the counts agree with what the commit sends, on random transactions (puts, deletes, prefix deletes, reads).
    func testTheLimitCountsAgreeWithTheTxn() {
        func key() -> [UInt8] { (0..<Int.random(in: 1...3)).map { _ in UInt8.random(in: 0...9) } }
        for _ in 0..<300 {
            let t = EtcdTxn()
            t.snapshot = 5
            for _ in 0..<Int.random(in: 0...30) {
                switch Int.random(in: 0..<5) {
                case 0: t.write(key(), [1])
                case 1: t.write(key(), nil)
                case 2: let lo = key(); t.deleteRange(lo, Keys.prefixEnd(lo))
                case 3: t.noteRead(key(), Int64.random(in: 0...4), nil)
                default: let lo = key(); t.ranges.append((lo, Keys.prefixEnd(lo))); t.noteVersion(key(), 3)
                }
            }
            XCTAssertEqual(t.compareCount(), t.compares().count)
            XCTAssertEqual(t.operationCount(), t.operations().count)
        }
    }

    /// The same over the JSON gateway alone (`store.transport: "gateway"`; every other etcd class runs over gRPC),
    /// with the copy on and off.
    func testContractOverTheGateway() throws {
        let e = Self.etcd!.endpoint
        for mirror in [true, false] {
            let open: OpenStore = { dir in
                try EtcdStore(EtcdSettings(endpoints: [e], site: String(dir.split(separator: "/").last!), mirror: mirror, grpc: false))
            }
            try C.orderedKeys(open, "/\(site)-g\(mirror)a")
            try C.scanAfter(open, "/\(site)-g\(mirror)b")
            try C.valuesAndDeletes(open, "/\(site)-g\(mirror)c")
            try C.savepoints(open, "/\(site)-g\(mirror)d")
            try C.deletePrefixThenPut(open, "/\(site)-g\(mirror)f")
        }
    }

    /// The contract cases that matter most, with the copy off (every other etcd class runs with it on).
    var direct: OpenStore {
        let e = Self.etcd!.endpoint
        return { dir in try EtcdStore(EtcdSettings(endpoints: [e], site: String(dir.split(separator: "/").last!), mirror: false)) }
    }
    func testContractWithoutTheCopy() throws {
        try C.orderedKeys(direct, "/\(site)-a")
        try C.scanAfter(direct, "/\(site)-b")
        try C.valuesAndDeletes(direct, "/\(site)-c")
        try C.savepoints(direct, "/\(site)-d")
        try C.prefixes(direct, "/\(site)-e")
        try C.deletePrefixThenPut(direct, "/\(site)-f")
    }
}
