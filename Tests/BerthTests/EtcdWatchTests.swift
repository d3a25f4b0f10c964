// EtcdWatch against a real etcd started here: an event appended through another store (another berthd) wakes the
// watch within a bound, deletes and other keys do not, it survives idle timeouts, a compacted resume revision and the
// death of the member it watched (a 3-member cluster), and stop() returns at once even while blocked on a read.
@testable import BerthStore
import BerthWire
import Foundation
import XCTest

/// Counts onChange calls (from the watch thread).
final class ChangeCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func bump() { lock.lock(); n += 1; lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return n }
}

final class EtcdWatchTests: EtcdTestCase {
    func settings(_ site: String, timeout: Int = 10, endpoints: [String]? = nil) -> EtcdSettings {
        EtcdSettings(endpoints: endpoints ?? [Self.etcd!.endpoint], site: site, timeoutSeconds: timeout)
    }

    /// Waits up to `seconds` for `cond`; returns the seconds it took, nil when it never held.
    func waitFor(_ seconds: Double, _ cond: () -> Bool) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if cond() { return Date().timeIntervalSince(start) }
            usleep(2_000)
        }
        return cond() ? Date().timeIntervalSince(start) : nil
    }

    func appendOne(_ st: EtcdStore) throws { _ = try st.appendEvent(type: "t", subject: "s", actor: "test", data: .object([])) }

    func testAnEventAppendedElsewhereWakesTheWatch() throws { try wakes(grpc: true) }

    /// The same over etcd's JSON gateway (`grpc: false`; a gRPC watch not established falls back to it).
    func testAnEventAppendedElsewhereWakesTheGatewaysWatch() throws { try wakes(grpc: false) }

    func wakes(grpc: Bool) throws {
        let site = "watch-wake-\(grpc)-\(getpid())"
        let a = try EtcdStore(settings(site)), b = try EtcdStore(settings(site))
        defer { try? a.removeSite() }
        let changes = ChangeCounter()
        var s = settings(site)
        s.grpc = grpc
        let watch = EtcdWatch(s) { changes.bump() }
        defer { watch.stop() }
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching }, "the watch was never established: \(watch.lastFailure ?? "")")
        XCTAssertEqual(watch.transport, grpc ? "grpc" : "json", watch.lastFailure ?? "")
        XCTAssertEqual(changes.count, 1, "one call once the watch exists (events appended before it are the consumer's to read)")
        // Each event through store b (another berthd's writer) wakes the watch; the latency is measured.
        var latencies: [Double] = []
        for _ in 0..<20 {
            let base = changes.count
            let start = Date()
            try appendOne(b)
            let t = waitFor(2) { changes.count > base }
            XCTAssertNotNil(t, "no onChange within 2 s of an event appended by another store")
            latencies.append(Date().timeIntervalSince(start))
        }
        latencies.sort()
        print("EtcdWatch (\(grpc ? "gRPC" : "JSON gateway")): event appended by another store -> onChange: median \(Int(latencies[10] * 1e6)) us, max \(Int(latencies.last! * 1e6)) us (20 events)")
        XCTAssertLessThan(latencies.last!, 2)
        // Deletes of events (retention) and keys outside the event log do not wake it.
        let base = changes.count
        _ = try a.client.txn(compares: [], operations: [EtcdClient.delete(a.evPrefix, Keys.prefixEnd(a.evPrefix))])
        XCTAssertEqual(try a.events(since: 0, limit: 10, type: nil, subject: nil).count, 0)
        try StoreContract.put(a, "ns", Array("k".utf8), Array("v".utf8))
        usleep(500_000)
        XCTAssertEqual(changes.count, base, "a compaction's deletes or a key write called onChange")
        XCTAssertEqual(watch.reconnects, 0, watch.lastFailure ?? "")
    }

    /// The watch reads each event's index and type from the start of its value (no JSON parse); what it reports is
    /// what the event log itself says, for several events of one Txn, and a value in another key order (written
    /// before "i" came first) is still read, by parsing it.
    func testTheWatchReportsEachEventsRevisionAndType() throws {
        let site = "watch-types-\(getpid())"
        let a = try EtcdStore(settings(site)), b = try EtcdStore(settings(site))
        defer { try? a.removeSite() }
        final class Seen: @unchecked Sendable {
            let lock = NSLock()
            var events: [EtcdWatchedEvent] = []
        }
        let seen = Seen()
        let watch = EtcdWatch(settings(site), onEvents: { evs in if let evs { seen.lock.withLock { seen.events += evs } } })
        defer { watch.stop() }
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching }, watch.lastFailure ?? "")
        try b.begin()
        for type in ["network.attached", "instance.placed", "t-\u{e9}"] {
            _ = try b.appendEvent(type: type, subject: "s", actor: "test", data: ["x": "y \" } {"])
        }
        try b.commit()
        // What appendEvent stored is read without parsing (the watch's fast path), to the same index and type.
        let stored = try a.client.range(a.evPrefix, Keys.prefixEnd(a.evPrefix), revision: 0).kvs
        XCTAssertEqual(stored.count, 3)
        for kv in stored {
            let j = try JSON.parse(kv.value)
            let fast = EtcdStore.indexAndType(kv.value)
            XCTAssertNotNil(fast, "an event as appendEvent writes it is not read by the fast path: \(String(decoding: kv.value, as: UTF8.self))")
            XCTAssertEqual(fast?.i, Int64(j["i"]?.int ?? -1))
            XCTAssertEqual(fast?.type, j["type"]?.string)
        }
        // A value in the old key order, written straight to the event log.
        let old: JSON = ["time": 1, "type": "old.order", "subject": "s", "actor": "a", "data": .object([]), "i": 0]
        XCTAssertNil(EtcdStore.indexAndType(old.bytes))
        _ = try a.client.txn(compares: [], operations: [EtcdClient.put(a.evPrefix + Array("zz/0000000000000001".utf8), old.bytes)])
        XCTAssertNotNil(waitFor(5) { seen.lock.withLock { seen.events.count } >= 4 }, "the watch did not report 4 events")
        let logged = try a.events(since: 0, limit: 10, type: nil, subject: nil)
        // One Txn's events come in the order of its puts, not of their index: ordered by revision here.
        let got = seen.lock.withLock { seen.events }.sorted { $0.revision < $1.revision }
        XCTAssertEqual(got.map(\.type), ["network.attached", "instance.placed", "t-\u{e9}", "old.order"])
        XCTAssertEqual(Array(got.prefix(3).map(\.revision)), Array(logged.prefix(3).map(\.rev)), "the revisions the watch reports are the log's")
        XCTAssertEqual(Set(got.map(\.revision)).count, 4)
        XCTAssertEqual(EtcdStore.indexAndType(Array(#"{"i":7,"type":"a\"b"}"#.utf8))?.i, nil, "an escape in the type: parsed instead")
        XCTAssertEqual(EtcdStore.indexAndType(Array(#"{"i":12,"type":"a.b","time":1}"#.utf8))?.i, 12)
        XCTAssertEqual(EtcdStore.indexAndType(Array(#"{"i":12,"type":"a.b","time":1}"#.utf8))?.type, "a.b")
        XCTAssertNil(EtcdStore.indexAndType(Array(#"{"i":,"type":"a"}"#.utf8)))
        XCTAssertNil(EtcdStore.indexAndType(Array(#"{"i":1,"type":"unterminated"#.utf8)))
    }

    func testStopReturnsPromptlyWhileIdleAndWhileRetrying() throws {
        let site = "watch-stop-\(getpid())"
        let watch = EtcdWatch(settings(site)) {}
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching })
        usleep(200_000)  // blocked on its read
        var start = Date()
        watch.stop()
        let idle = Date().timeIntervalSince(start)
        XCTAssertLessThan(idle, 1, "stop() took \(idle) s while the watch was idle")
        // A watch retrying a dead endpoint stops as quickly.
        let dead = "http://127.0.0.1:\(freeLoopbackPort())"
        let retrying = EtcdWatch(settings(site, endpoints: [dead])) {}
        retrying.start()
        usleep(500_000)
        XCTAssertFalse(retrying.isWatching)
        XCTAssertTrue(retrying.lastFailure?.contains("127.0.0.1") ?? false, retrying.lastFailure ?? "no failure recorded")
        start = Date()
        retrying.stop()
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        // A malformed endpoint is reported, and the next one used.
        let mixed = EtcdWatch(settings(site, endpoints: ["127.0.0.1:1", Self.etcd!.endpoint])) {}
        mixed.start()
        XCTAssertNotNil(waitFor(5) { mixed.isWatching })
        XCTAssertTrue(mixed.lastFailure?.contains("is not http://HOST:PORT") ?? false, mixed.lastFailure ?? "no failure recorded")
        mixed.stop()
        print("EtcdWatch: stop() while idle took \(Int(idle * 1e6)) us")
    }

    /// An idle watch times out its read and resumes after the last event seen: no call for the timeout itself, and an
    /// event after it still wakes the watch. A resume revision compacted meanwhile restarts the watch, with a call.
    func testIdleTimeoutAndCompactedResume() throws {
        let site = "watch-idle-\(getpid())"
        let b = try EtcdStore(settings(site))
        defer { try? b.removeSite() }
        let changes = ChangeCounter()
        let watch = EtcdWatch(settings(site, timeout: 1)) { changes.bump() }
        defer { watch.stop() }
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching })
        try appendOne(b)
        XCTAssertNotNil(waitFor(2) { changes.count >= 2 })
        let base = changes.count
        XCTAssertNotNil(waitFor(4) { watch.reconnects >= 2 }, "no idle reconnect: \(watch.lastFailure ?? "")")
        XCTAssertTrue(watch.lastFailure?.contains("no event within 1 s") ?? false, watch.lastFailure ?? "")
        XCTAssertEqual(changes.count, base, "an idle reconnect resumes where it was: nothing to tell")
        try appendOne(b)
        XCTAssertNotNil(waitFor(2) { changes.count > base }, "no onChange for an event after idle reconnects")

        // Other keys move etcd's revision on, then its history is compacted past the watch's resume point.
        let before = changes.count, reconnects = watch.reconnects
        for i in 0..<5 { try StoreContract.put(b, "ns", Array("k\(i)".utf8), Array("v".utf8)) }
        try b.compactHistory(keepRevisions: 0)
        XCTAssertNotNil(waitFor(5) { watch.lastFailure?.contains("compacted") ?? false }, "no compacted restart: \(watch.lastFailure ?? "")")
        XCTAssertNotNil(waitFor(2) { changes.count > before && watch.isWatching }, "no onChange after a compacted restart")
        XCTAssertGreaterThan(watch.reconnects, reconnects)
        let after = changes.count
        try appendOne(b)
        XCTAssertNotNil(waitFor(2) { changes.count > after }, "no onChange for an event after the restart")
    }

    /// A 3-member cluster: the member the watch is on is SIGKILLed; the watch moves to another member, tells its
    /// consumer, and an event appended afterwards through another member still wakes it.
    func testTheWatchSurvivesItsMemberBeingKilled() throws {
        let cluster = try EtcdCluster()
        defer { cluster.stop() }
        let site = "watch-kill-\(getpid())"
        let changes = ChangeCounter()
        let watch = EtcdWatch(settings(site, timeout: 3, endpoints: cluster.endpoints)) { changes.bump() }
        defer { watch.stop() }
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching })
        let on = try XCTUnwrap(watch.endpoint)
        let victim = try XCTUnwrap(cluster.endpoints.firstIndex(of: on), "\(on) is not one of \(cluster.endpoints)")
        let others = cluster.endpoints.enumerated().filter { $0.offset != victim }.map(\.element)
        let b = try EtcdStore(settings(site, endpoints: others))
        try appendOne(b)
        XCTAssertNotNil(waitFor(2) { changes.count >= 2 })

        let base = changes.count
        let killed = Date()
        cluster.kill(victim)
        let moved = waitFor(10) { watch.isWatching && watch.endpoint != on }
        XCTAssertNotNil(moved, "the watch did not move off the killed member: \(watch.lastFailure ?? "")")
        print("EtcdWatch: re-established on \(watch.endpoint ?? "-") \(Int(Date().timeIntervalSince(killed) * 1000)) ms after its member was killed")
        XCTAssertGreaterThan(changes.count, base, "no onChange after reconnecting (events may have been missed)")
        XCTAssertGreaterThanOrEqual(watch.reconnects, 1)
        let again = changes.count
        // When the killed member led, a write may time out during the election ("request timed out, possibly due to
        // previous leader failure"; its outcome unknown): the test asks again until one is acknowledged.
        var start = Date()
        let deadline = start.addingTimeInterval(15)
        while true {
            start = Date()
            do { try appendOne(b); break } catch let e as BerthError where e.status == .unavailable && Date() < deadline { usleep(100_000) }
        }
        XCTAssertNotNil(waitFor(5) { changes.count > again }, "no onChange for an event after the member died")
        print("EtcdWatch: event after the kill -> onChange in \(Int(Date().timeIntervalSince(start) * 1000)) ms")
        try? b.removeSite()
    }

    /// The member the watch is on is cut off (both others killed): when the idle watch is created again it refuses it
    /// ("hasleader"), so the watch is not taken for established while no event can come (without the header it is).
    func testAMemberWithoutLeaderEndsTheWatch() throws {
        let cluster = try EtcdCluster()
        defer { cluster.stop() }
        let watch = EtcdWatch(settings("watch-noleader-\(getpid())", timeout: 3, endpoints: [cluster.endpoints[0]])) {}
        defer { watch.stop() }
        watch.start()
        XCTAssertNotNil(waitFor(5) { watch.isWatching })
        cluster.kill(1)
        cluster.kill(2)
        let lost = waitFor(10) { !watch.isWatching && watch.lastFailure != nil }
        XCTAssertNotNil(lost, "the watch stayed on a member without leader")
        print("EtcdWatch: member without leader: watch ended after \(lost.map { Int($0 * 1000) } ?? -1) ms: \(watch.lastFailure ?? "")")
        usleep(1_000_000)
        XCTAssertFalse(watch.isWatching, "re-established on a member without leader: \(watch.lastFailure ?? "")")
        XCTAssertTrue(watch.lastFailure?.contains("no leader") ?? false, "the member says why it refused: \(watch.lastFailure ?? "")")
    }
}
