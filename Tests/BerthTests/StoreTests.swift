// The state store's write-ahead log: checkpointed into the database file off the executor, and started over, so it
// stays bounded however long the daemon runs.
@testable import BerthCore
import BerthWire
import Foundation
import XCTest

final class StoreTests: XCTestCase {
    func fileSize(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }

    /// 3,000 commits of 4 KiB each (12 MiB, about 6,000 log pages) through the executor, each leaving a cached read
    /// statement on a row at COMMIT, as the plugin key-value calls do. The log must be checkpointed into the database
    /// file as it goes and stay bounded; before, a statement left on a row kept a read transaction open, no checkpoint
    /// could run, and the database file stayed at one page while the log took every commit.
    func testLogIsCheckpointedAndBounded() throws {
        let dir = NSTemporaryDirectory() + "berth-store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/state.db"
        let store = try Store(path: path, synchronous: "normal")
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        let value = [UInt8](repeating: 0x61, count: 4096)
        try ex.runSync { try Array("seed".utf8).withUnsafeBytes { k in try value.withUnsafeBytes { try store.kvPut("t", k, $0) } } }
        var maxLog = 0
        for i in 0..<3000 {
            try ex.runSync {
                try Array("k\(i)".utf8).withUnsafeBytes { k in try value.withUnsafeBytes { try store.kvPut("t", k, $0) } }
                _ = try Array("seed".utf8).withUnsafeBytes { try store.kvGet("t", $0) }  // left on its row
            }
            if i % 100 == 0 { maxLog = max(maxLog, fileSize(path + "-wal")) }
        }
        // Let the checkpointer finish its last pass, then one more commit starts the log over if it caught up.
        let deadline = Date().addingTimeInterval(10)
        while store.checkpointer.done.load(ordering: .relaxed) == 0 && Date() < deadline { usleep(10_000) }
        XCTAssertGreaterThan(store.checkpointer.done.load(ordering: .relaxed), 0, "no checkpoint ran")
        XCTAssertEqual(store.checkpointer.failed.load(ordering: .relaxed), 0)
        XCTAssertGreaterThan(fileSize(path), 8 << 20, "the commits reached the database file")
        XCTAssertLessThan(maxLog, 20 << 20, "the log stayed bounded (\(maxLog) bytes at most)")
        XCTAssertEqual(try ex.runSync { try store.kvCount("t") }, 3001)
    }
}
