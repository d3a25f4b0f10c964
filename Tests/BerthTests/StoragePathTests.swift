// storage-local's paths with real bind mounts (root): a publish target that reaches the data root through a symlink
// is refused and the refused publish changes nothing; a target through a harmless symlink is published and
// unpublished for real (mountinfo shows the resolved path); the default data root follows the state directory,
// whatever directory berthd is restarted from.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class StoragePathTests: XCTestCase {
    func requireRoot() throws {
        try XCTSkipUnless(getuid() == 0, "storage-local makes real bind mounts (mount(2)): this test needs root (CI runs as root)")
    }

    func testPublishThroughASymlinkIntoTheDataRootIsRefusedAndChangesNothing() throws {
        try requireRoot()
        let root = tempDir("symlink-vols")
        let targets = tempDir("symlink-targets")
        // Plain directories (enforceSize false): with enforced sizes each volume is a loop mount of its own inside
        // the data root, and this test looks for mounts there that should not be.
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "nodes": ["node-a"], "enforceSize": false]]], tag: "symlink")
        defer { unmountAll(targets); unmountAll(d.dir); unmountAll(root) }
        let (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "data", "capacityBytes": 1048576])
        XCTAssertEqual(st, 201, v.serialized)
        let id = v["volumeId"]!.string!

        // <targets>/sneaky -> <root>/volumes: textually outside the root, really inside it.
        XCTAssertEqual(symlink(root + "/volumes", targets + "/sneaky"), 0)
        let (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(id)/publish", ["node": "node-a", "target": .string(targets + "/sneaky/t")])
        XCTAssertEqual(ps, 400, pv.serialized)
        XCTAssertTrue(pv["error"]?.string?.contains("overlaps the plugin's data root") ?? false, pv.serialized)
        XCTAssertEqual(mountsUnder(root), [], "a mount landed inside the data root")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/volumes/t"), "the refused publish created its target in the data root")
        // Nothing changed: not controller-published, not staged, no mount anywhere under the state directory.
        let (gs, gv) = try d.request("GET", "/v1/storage/local/volumes/\(id)")
        XCTAssertEqual(gs, 200)
        XCTAssertEqual(gv["nodes"]?.array?.count ?? -1, 0, "a refused publish left the volume published or staged: \(gv.serialized)")
        XCTAssertEqual(mountsUnder(d.dir), [], "a refused publish left the stage mounted")
    }

    func testPublishAndUnpublishThroughAHarmlessSymlinkReallyUnmount() throws {
        try requireRoot()
        let root = tempDir("symlink2-vols")
        let targets = tempDir("symlink2-targets")
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "nodes": ["node-a"]]]], tag: "symlink2")
        defer { unmountAll(targets); unmountAll(d.dir); unmountAll(root) }
        let (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "data", "capacityBytes": 1048576])
        XCTAssertEqual(st, 201, v.serialized)
        let id = v["volumeId"]!.string!
        mkdir(targets + "/real", 0o755)
        XCTAssertEqual(symlink(targets + "/real", targets + "/alias"), 0)
        let target = targets + "/alias/t"
        var (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(id)/publish", ["node": "node-a", "target": .string(target)])
        XCTAssertEqual(ps, 200, pv.serialized)
        XCTAssertEqual(mountsUnder(targets), [targets + "/real/t"])
        try "through the alias\n".write(toFile: target + "/f", atomically: false, encoding: .utf8)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/volumes/\(id)/f"), "the write reached the volume")
        (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(id)/unpublish", ["target": .string(target)])
        XCTAssertEqual(ps, 200, pv.serialized)
        XCTAssertEqual(mountsUnder(targets), [], "unpublish said done but the volume is still mounted")
        XCTAssertEqual(mountsUnder(d.dir), [], "the stage is still mounted")
        let (_, gv) = try d.request("GET", "/v1/storage/local/volumes/\(id)")
        XCTAssertEqual(gv["nodes"]?.array?.count ?? -1, 0, gv.serialized)
        // A target through a symlink that points nowhere is refused (a mkdir there would follow it).
        XCTAssertEqual(symlink(targets + "/nowhere", targets + "/dangling"), 0)
        (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(id)/publish", ["node": "node-a", "target": .string(targets + "/dangling")])
        XCTAssertEqual(ps, 400, pv.serialized)
        XCTAssertTrue(pv["error"]?.string?.contains("symlink that points nowhere") ?? false, pv.serialized)
        XCTAssertFalse(FileManager.default.fileExists(atPath: targets + "/nowhere"))
    }

    /// No root in the configuration: the volumes live under the state directory, and a restart from another working
    /// directory finds them (a snapshot copies the volume's data).
    func testDefaultRootFollowsTheStateDirectory() throws {
        let cwdA = tempDir("cwd-a"), cwdB = tempDir("cwd-b")
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")), "config": ["nodes": ["node-a"]]]],
                           tag: "default-root", start: false)
        d.cwd = cwdA
        try d.start()
        let (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "kept", "capacityBytes": 1048576])
        XCTAssertEqual(st, 201, v.serialized)
        let id = v["volumeId"]!.string!
        XCTAssertTrue(FileManager.default.fileExists(atPath: d.dir + "/state/volumes/volumes/\(id)"), "the volume is not under the state directory")
        XCTAssertFalse(FileManager.default.fileExists(atPath: cwdA + "/berth-state"), "the volume went under the working directory")
        d.stop()
        d.cwd = cwdB
        try d.start()
        let (ss, sv) = try d.request("POST", "/v1/storage/local/snapshots", ["name": "snap", "sourceVolumeId": .string(id)])
        XCTAssertEqual(ss, 201, "after a restart from another directory the volume's data is not found: \(sv.serialized)")
    }

    /// The mount table used by the conformance kit and the tests lists every mount, however long mountinfo is.
    /// Foundation's `String(contentsOfFile:)` stopped after the first read of /proc/self/mountinfo (about 4 KiB),
    /// so on a host with a few dozen mounts the newest were missing: a publish looked unmounted (a CI failure of
    /// testBlockAndMountVolumesThroughBerthd), and "nothing is left mounted" checks could not fail.
    func testMountTableListsEveryMountBeyondTheFirstPage() throws {
        try requireRoot()
        let dir = tempDir("mounttable")
        defer { removeTree(dir) }
        var made: [String] = []
        for i in 0..<60 {
            let m = dir + "/bind-mount-\(i)-" + String(repeating: "x", count: 40)
            XCTAssertEqual(mkdir(m, 0o755), 0)
            XCTAssertEqual(mount(m, m, nil, UInt(MS_BIND), nil), 0, "bind mount \(m): \(String(cString: strerror(errno)))")
            made.append(m)
        }
        XCTAssertGreaterThan(try readFile("/proc/self/mountinfo").count, 8192, "the table is past the first page")
        XCTAssertEqual(Set(MountTable.mountPoints(under: dir)), Set(made), "mounts missing from the table")
        XCTAssertTrue(MountTable.isMountPoint(made.last!), "the newest mount is listed")
        removeTree(dir)
        XCTAssertEqual(MountTable.mountPoints(under: dir), [], "removeTree unmounted everything under the directory")
    }
}
