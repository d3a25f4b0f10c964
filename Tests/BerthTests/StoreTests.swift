// The state store's write-ahead log: checkpointed into the database file (after a commit once the log holds 4000
// pages, or from 1000 when the executor is idle), so it stays bounded however long the daemon runs.
@testable import BerthCheck
@testable import BerthKinds
@testable import BerthPlugins
@testable import BerthScheduler
@testable import BerthStore
@testable import BerthCore
import BerthWire
import Foundation
import XCTest

final class StoreTests: XCTestCase {
    func fileSize(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }

    func withStore(_ body: (Store, Executor, String) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "berth-store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir + "/state.db", synchronous: "normal")
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        try ex.runSync { try Array("seed".utf8).withUnsafeBytes { k in try [UInt8](repeating: 1, count: 64).withUnsafeBytes { try store.kvPut("t", k, $0) } } }
        try body(store, ex, dir + "/state.db")
    }

    /// One job as the plugin key-value calls make them: a write, and a read whose statement is left on its row at
    /// COMMIT (a connection in a read transaction cannot checkpoint: before the fix no checkpoint ever ran, the
    /// database file stayed at one page and the log took every commit).
    func job(_ store: Store, _ i: Int, bytes: Int) throws {
        try Array("k\(i)".utf8).withUnsafeBytes { k in try [UInt8](repeating: 0x61, count: bytes).withUnsafeBytes { try store.kvPut("t", k, $0) } }
        _ = try Array("seed".utf8).withUnsafeBytes { try store.kvGet("t", $0) }
    }

    /// 12,000 jobs of 4 KiB queued at once (48 MiB, group-committed, the executor never idle): the commits that take
    /// the log past 4000 pages checkpoint it, so it stays far below the data written and the database file holds it.
    func testLogIsCheckpointedUnderLoad() throws {
        try withStore { store, ex, path in
            let n = 12_000
            let group = DispatchGroup()
            let failures = Shared(0)
            for i in 0..<n {
                group.enter()
                ex.submit({ try self.job(store, i, bytes: 4096) }, complete: { e in
                    if e != nil { failures.with { $0 += 1 } }
                    group.leave()
                })
            }
            group.wait()
            XCTAssertEqual(failures.get, 0)
            XCTAssertGreaterThan(store.checkpoints.load(ordering: .relaxed), 0, "no checkpoint ran")
            XCTAssertEqual(store.checkpointFailures.load(ordering: .relaxed), 0)
            XCTAssertGreaterThan(fileSize(path), 32 << 20, "the commits reached the database file")
            XCTAssertLessThan(fileSize(path + "-wal"), 28 << 20, "the log stayed bounded")
            XCTAssertEqual(try ex.runSync { try store.kvCount("t") }, n + 1)
        }
    }

    /// Commits one at a time until the log holds 1,200 pages (more than the idle mark, less than the busy one), then
    /// nothing: an executor idle for 50 ms checkpoints all of the log, and the next commit starts it over. (That it
    /// does not checkpoint in the moments between back-to-back commits is a matter of speed: berth-bench's api
    /// section shows it.)
    func testIdleExecutorCheckpointsEarly() throws {
        try withStore { store, ex, path in
            var i = 0
            while store.logPages.load(ordering: .relaxed) < 1200 && i < 5000 {
                try ex.runSync { try self.job(store, i, bytes: 8192) }
                i += 1
            }
            XCTAssertLessThan(store.logPages.load(ordering: .relaxed), Int64(Store.checkpointPages))
            let deadline = Date().addingTimeInterval(5)
            while store.logPages.load(ordering: .relaxed) != 0 && Date() < deadline { usleep(10_000) }
            XCTAssertEqual(store.logPages.load(ordering: .relaxed), 0, "all of the log copied once idle")
            XCTAssertGreaterThan(store.checkpoints.load(ordering: .relaxed), 0)
            XCTAssertGreaterThan(fileSize(path), i * 8192, "the commits reached the database file")
            try ex.runSync { try self.job(store, 99_999, bytes: 8192) }
            XCTAssertLessThan(store.logPages.load(ordering: .relaxed), 10, "the next commit started the log over")
        }
    }

    /// store.sync "full" and a failed fsync of the log: the batch it covered is not acknowledged, and the store takes
    /// no more changes (a later fsync may report success although the kernel dropped the failed pages, so a later
    /// acknowledgement could be a lie). A new Store on the same file (berthd restarted) works, with what committed.
    func testFailedFsyncStopsTheStore() throws {
        let dir = NSTemporaryDirectory() + "berth-store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func put(_ ex: Executor, _ store: Store, _ key: String) throws {
            try ex.runSync { try Array(key.utf8).withUnsafeBytes { k in try Array("v".utf8).withUnsafeBytes { try store.kvPut("t", k, $0) } } }
        }
        do {
            // The disk fails once `broken` is set: fdatasync answers EIO, as a failing disk does.
            final class Disk: @unchecked Sendable {
                private let lock = NSLock()
                private var failing = false
                var broken: Bool {
                    get { lock.withLock { failing } }
                    set { lock.withLock { failing = newValue } }
                }
            }
            let disk = Disk()
            let store = try Store(path: dir + "/state.db", synchronous: "full", syncFile: { fd in
                if disk.broken { errno = EIO; return -1 }
                return fdatasync(fd)
            })
            let ex = Executor(store: store)
            ex.start()
            defer { ex.stop() }
            try put(ex, store, "before")
            XCTAssertNil(ex.stoppedReason)
            disk.broken = true
            XCTAssertThrowsError(try put(ex, store, "unsynced")) { e in
                XCTAssertTrue("\(e)".contains("could not be made durable: an fsync of its log failed (fdatasync"), "\(e)")
                XCTAssertTrue("\(e)".contains("restart berthd"), "\(e)")
            }
            XCTAssertNotNil(ex.stoppedReason)
            XCTAssertThrowsError(try put(ex, store, "after")) { e in
                XCTAssertTrue("\(e)".contains("the state store takes no more changes: an fsync of its log failed"), "\(e)")
            }
        }
        let store = try Store(path: dir + "/state.db", synchronous: "full")
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        XCTAssertNil(ex.stoppedReason)
        XCTAssertNotNil(try ex.runSync { try store.kvGet("t", "before") })
        XCTAssertNil(try ex.runSync { try store.kvGet("t", "after") }, "refused changes were never made")
        try put(ex, store, "again")
    }
}
