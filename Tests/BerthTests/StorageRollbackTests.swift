// storage-local inside a host transaction that rolls back (a conflict on a shared store runs an operation again):
// what the rolled-back create, stage and publish did on disk is undone, and the same operations then succeed. Before,
// the stage and publish mounts stayed, and running them again failed "already a mount point of something else".
import BerthCheck
import BerthPlugins
import BerthStore
import BerthWire
import Foundation
import XCTest

final class StorageRollbackTests: XCTestCase {
    struct Rollback: Error {}

    func testARolledBackCreateStageAndPublishLeaveNothingAndRunAgain() throws {
        let dir = tempDir("storage-rollback")
        let store = try Store(path: dir + "/state.db", synchronous: "normal")
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        let spec = PluginSpec(name: "local", path: Paths.plugin("storage-local"),
                              config: ["root": .string(dir + "/root"), "capacityBytes": 1_073_741_824, "nodes": ["n1"]])
        let loader = Loader(copyDir: dir + "/plugins")
        let inst = try loader.instantiate(try loader.load(spec), spec: spec, executor: ex, log: { _, _ in })
        defer { inst.destroy() }
        let ops = try XCTUnwrap(inst.storageOps)
        let staging = dir + "/staging/db-0", target = dir + "/target/db-0/data"
        /// create → controller publish → stage → publish, as a placement does; then `fail` or not.
        func place(fail: Bool) throws -> String {
            try ex.runSync {
                let v = try ops.call(.createVolume, ["name": "db-0-data", "capacityBytes": 8_388_608])
                let id = v["volumeId"]?.string ?? ""
                _ = try ops.call(.controllerPublish, ["volumeId": .string(id), "nodeId": "n1"])
                _ = try ops.call(.nodeStage, ["volumeId": .string(id), "nodeId": "n1", "stagingPath": .string(staging)])
                _ = try ops.call(.nodePublish, ["volumeId": .string(id), "nodeId": "n1", "stagingPath": .string(staging), "targetPath": .string(target)])
                XCTAssertTrue(MountTable.isMountPoint(target), "published inside the transaction")
                if fail { throw Rollback() }
                return id
            }
        }
        XCTAssertThrowsError(try place(fail: true)) { XCTAssertTrue($0 is Rollback, "\($0)") }
        XCTAssertEqual(MountTable.mountPoints(under: dir), [], "no mount left by the rolled-back stage and publish")
        let volumes = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/root/volumes")) ?? []
        XCTAssertEqual(volumes.filter { $0.hasPrefix("vol-") }, [], "no data left by the rolled-back create")
        let id = try place(fail: false)
        XCTAssertTrue(MountTable.isMountPoint(target), "the same placement runs again")
        XCTAssertEqual(id, "vol-00000001", "the id the rolled-back create took is free again")
        removeTree(dir)
    }
}
