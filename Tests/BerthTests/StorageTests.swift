// The storage kind end to end: the conformance suite on storage-local (all pass) and on a deliberately broken C
// plugin (the right cases fail); berthd with storage-local making real bind mounts (block and mount volumes,
// snapshot and restore); kill -9 between stage and publish with the reference counts intact. Mounting needs root:
// those tests skip with a message when not root (CI runs as root).
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

/// Mount points under `dir`, deepest first. /proc/self/mountinfo is read in several read(2) calls, and a mount or
/// unmount elsewhere in the namespace between two of them can make a read skip entries: it is read until two reads
/// in a row agree.
func mountsUnder(_ dir: String) -> [String] { MountTable.mountPoints(under: dir) }

/// Detaches every mount left under `dir` (a failed test must not leave mounts behind).
func unmountAll(_ dir: String) {
    for m in mountsUnder(dir) { _ = umount2(m, 2 /* MNT_DETACH */) }
}

final class StorageTests: XCTestCase {
    func requireRoot() throws {
        try XCTSkipUnless(getuid() == 0, "storage-local makes real bind mounts (mount(2)): this test needs root (CI runs as root)")
    }

    func storageDaemon(_ tag: String) throws -> (Daemon, String) {
        let root = tempDir("\(tag)-vols")
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "capacityBytes": .number(Double(1 << 30)), "nodes": ["node-a", "node-b"]]]],
                           tag: tag)
        return (d, root)
    }

    // MARK: berth plugin check

    func testPluginCheckStorageLocalPassesEveryCase() throws {
        try requireRoot()
        let dir = tempDir("check-storage")
        defer { unmountAll(dir); try? FileManager.default.removeItem(atPath: dir) }
        try #"{"root": "\#(dir)/root", "capacityBytes": 1073741824, "nodes": ["node-a", "node-b"]}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("storage-local"), "--config", dir + "/c.json", "-o", "json"])
        let j = try JSON.parse(out)
        let cases = j["cases"]!.array!
        let storage = cases.filter { $0["name"]!.string!.hasPrefix("storage: ") }
        let failed = cases.filter { $0["result"] == "fail" }.map { "\($0["name"]!.string!): \($0["detail"]!.string!)" }
        XCTAssertEqual(rc, 0, failed.joined(separator: "\n") + err)
        XCTAssertEqual(failed, [])
        XCTAssertGreaterThanOrEqual(storage.count, 25, "the suite has at least 25 storage cases")
        for must in ["storage: same name, compatible size → the same volume", "storage: same name, other size → ALREADY_EXISTS",
                     "storage: maximum-length name (128 bytes)", "storage: list with a bad page token → ABORTED",
                     "storage: single-node-writer on a second node → FAILED_PRECONDITION", "storage: full lifecycle ×10, every step twice",
                     "storage: node stage, publish, unpublish, unstage ×10", "storage: restore from a snapshot brings the data back"] {
            XCTAssertTrue(storage.contains { $0["name"]?.string == must && $0["result"] == "pass" }, "missing or failing: \(must)")
        }
        // Nothing is left behind: no mounts, no volume data.
        XCTAssertEqual(mountsUnder(dir), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/root/volumes"), [])
        // The table form prints every case with pass or FAIL.
        let (rc2, table, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("storage-local"), "--config", dir + "/c.json"])
        XCTAssertEqual(rc2, 0)
        XCTAssertTrue(table.contains("storage: full lifecycle ×10, every step twice") && table.contains(" 0 failed"), table)
    }

    func testPluginCheckBrokenStorageFailsTheRightCases() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-broken-storage")
        defer { unmountAll(dir); try? FileManager.default.removeItem(atPath: dir) }
        let so = dir + "/libberth-broken-storage.so"
        let (cc, _, ccErr) = try runTool("/usr/bin/env", ["cc", "-Wall", "-shared", "-fPIC", "-I", Paths.root + "/PluginABI/include",
                                                         Paths.root + "/Tests/Fixtures/storage/broken_storage.c", "-o", so])
        XCTAssertEqual(cc, 0, ccErr)
        chmod(so, 0o755)
        // It has no "info" call: the nodes come from --config.
        try #"{"nodes": ["node-1", "node-2"]}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", so, "--config", dir + "/c.json", "-o", "json"])
        XCTAssertEqual(rc, 1, "a broken plugin must fail the check")
        let cases = try JSON.parse(out)["cases"]!.array!
        func result(_ n: String) -> String? { cases.first { $0["name"]?.string == "storage: \(n)" }?["result"]?.string }
        // What it breaks on purpose fails...
        for n in ["create without name → INVALID_ARGUMENT", "create with malformed JSON → INVALID_ARGUMENT",
                  "same name, compatible size → the same volume", "same name, other size → ALREADY_EXISTS",
                  "129-byte name → INVALID_ARGUMENT", "delete of an unknown id → OK", "list with a bad page token → ABORTED",
                  "controller publish of an unknown volume → NOT_FOUND", "single-node-writer on a second node → FAILED_PRECONDITION",
                  "node publish of an unknown volume → NOT_FOUND", "node stage, publish, unpublish, unstage ×10",
                  "full lifecycle ×10, every step twice"] {
            XCTAssertEqual(result(n), "fail", n)
        }
        // ...and what it does not break passes (the suite is not failing everything).
        for n in ["operations", "create volume", "maximum-length name (128 bytes)", "list shows the new volume", "node unpublish of an unknown target → OK"] {
            XCTAssertEqual(result(n), "pass", n)
        }
    }

    // MARK: through berthd

    func testBlockAndMountVolumesThroughBerthd() throws {
        try requireRoot()
        let (d, root) = try storageDaemon("storage-e2e")
        let targets = tempDir("storage-targets")
        defer {
            unmountAll(targets); unmountAll(d.dir); unmountAll(root)
            try? FileManager.default.removeItem(atPath: targets); try? FileManager.default.removeItem(atPath: root)
        }
        // Create: a 64 MiB block volume and a mount volume. Again: the same volume (200, not 201).
        var (st, blk) = try d.request("POST", "/v1/storage/local/volumes", ["name": "db-block", "capacityBytes": 67108864, "volumeMode": "block"])
        XCTAssertEqual(st, 201, blk.serialized)
        let blockID = blk["volumeId"]!.string!
        var (st2, again) = try d.request("POST", "/v1/storage/local/volumes", ["name": "db-block", "capacityBytes": 67108864, "volumeMode": "block"])
        XCTAssertEqual(st2, 200)
        XCTAssertEqual(again["volumeId"]?.string, blockID)
        (st2, again) = try d.request("POST", "/v1/storage/local/volumes", ["name": "db-block", "capacityBytes": 134217728, "volumeMode": "block"])
        XCTAssertEqual(st2, 409, "same name, other size")
        XCTAssertEqual(again["details"]?["status"], "ALREADY_EXISTS")
        let image = blk["volumeContext"]!["path"]!.string!
        XCTAssertTrue(image.hasPrefix(root + "/"))
        var sb = stat()
        XCTAssertEqual(stat(image, &sb), 0)
        XCTAssertEqual(sb.st_size, 64 << 20)
        XCTAssertGreaterThanOrEqual(Int(sb.st_blocks) * 512, 64 << 20, "block images are preallocated")

        let (rcCLI, cliOut, cliErr) = try runTool(Paths.bin + "/berth", ["volumes", "create", "web-data", "--plugin", "local", "--size", "16Mi",
                                                                       "--socket", d.socket, "-o", "json"])
        XCTAssertEqual(rcCLI, 0, cliErr)
        let mountID = try JSON.parse(cliOut)["volumeId"]!.string!

        // Bad input is refused with the field named, and nothing is created.
        (st, blk) = try d.request("POST", "/v1/storage/local/volumes", ["name": "../etc", "capacityBytes": 4096])
        XCTAssertEqual(st, 400)
        (st, blk) = try d.request("POST", "/v1/storage/local/volumes", ["name": .string(String(repeating: "n", count: 129))])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(blk["error"]!.string!.contains("at most 128"), blk.serialized)
        (st, blk) = try d.request("POST", "/v1/storage/local/volumes", ["name": "big", "capacityBytes": 4294967296])
        XCTAssertEqual(st, 400, "beyond the plugin's maximum: OUT_OF_RANGE")
        XCTAssertEqual(blk["details"]?["status"], "OUT_OF_RANGE")

        // Paging, and a bad page token.
        var (ls, page) = try d.request("GET", "/v1/storage/local/volumes?limit=1")
        XCTAssertEqual(ls, 200)
        XCTAssertEqual(page["volumes"]?.array?.count, 1)
        let token = page["nextPageToken"]!.string!
        (ls, page) = try d.request("GET", "/v1/storage/local/volumes?limit=1&pageToken=\(token)")
        XCTAssertEqual(page["volumes"]?.array?.count, 1)
        XCTAssertNil(page["nextPageToken"])
        (ls, page) = try d.request("GET", "/v1/storage/local/volumes?pageToken=garbage")
        XCTAssertEqual(ls, 400)
        XCTAssertEqual(page["details"]?["status"], "ABORTED")

        // Publish both at a target directory on node-a: real bind mounts.
        let blockTarget = targets + "/block", dataTarget = targets + "/data"
        var (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(blockID)/publish", ["node": "node-a", "target": .string(blockTarget)])
        XCTAssertEqual(ps, 200, pv.serialized)
        let (rcPub, pubOut, pubErr) = try runTool(Paths.bin + "/berth", ["volumes", "publish", mountID, "--plugin", "local", "--node", "node-a",
                                                                       "--target", dataTarget, "--socket", d.socket])
        XCTAssertEqual(rcPub, 0, pubErr)
        XCTAssertTrue(pubOut.contains("staged at") && pubOut.contains("1 target(s)"), pubOut)
        let mounts = mountsUnder(targets)
        XCTAssertTrue(mounts.contains(blockTarget) && mounts.contains(dataTarget), "mountinfo: \(mounts)")
        XCTAssertEqual(stat(blockTarget, &sb), 0)
        XCTAssertEqual(sb.st_size, 64 << 20, "the block target is the 64 MiB image")
        // Single-node-writer: a second node is refused; delete while published is refused.
        (ps, pv) = try d.request("POST", "/v1/storage/local/volumes/\(mountID)/publish", ["node": "node-b", "target": .string(targets + "/other")])
        XCTAssertEqual(ps, 409, pv.serialized)
        XCTAssertEqual(pv["details"]?["status"], "FAILED_PRECONDITION")
        (ps, pv) = try d.request("DELETE", "/v1/storage/local/volumes/\(mountID)")
        XCTAssertEqual(ps, 409)

        // Write through the mount and through the block device file.
        try "kept across snapshots\n".write(toFile: dataTarget + "/hello.txt", atomically: false, encoding: .utf8)
        let fd = open(blockTarget, O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = "BERTHBLK".withCString { write(fd, $0, 8) }
        close(fd)
        XCTAssertEqual(firstBytes(image, 8), "BERTHBLK", "written through the published block target, read from the image")
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/volumes/\(mountID)/hello.txt"), "the file is in the volume's directory")

        // Snapshot, delete the file, restore into a new volume, publish it, read the file back.
        var (ss, snap) = try d.request("POST", "/v1/storage/local/snapshots", ["name": "web-data-1", "sourceVolumeId": .string(mountID)])
        XCTAssertEqual(ss, 201, snap.serialized)
        let snapID = snap["snapshotId"]!.string!
        try FileManager.default.removeItem(atPath: dataTarget + "/hello.txt")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dataTarget + "/hello.txt"))
        var (rs, restored) = try d.request("POST", "/v1/storage/local/volumes", ["name": "web-data-restored", "source": ["snapshotId": .string(snapID)]])
        XCTAssertEqual(rs, 201, restored.serialized)
        let restoredID = restored["volumeId"]!.string!
        XCTAssertEqual(restored["capacityBytes"], 16777216, "a restore without a size gets the source's")
        let restoredTarget = targets + "/restored"
        (rs, restored) = try d.request("POST", "/v1/storage/local/volumes/\(restoredID)/publish", ["node": "node-a", "target": .string(restoredTarget)])
        XCTAssertEqual(rs, 200, restored.serialized)
        XCTAssertEqual(try String(contentsOfFile: restoredTarget + "/hello.txt", encoding: .utf8), "kept across snapshots\n")
        (ss, snap) = try d.request("GET", "/v1/storage/local/snapshots?sourceVolumeId=\(mountID)")
        XCTAssertEqual(snap["snapshots"]?.array?.map { $0["snapshotId"] }, [.string(snapID)])

        // Expand the block volume while published: the image grows.
        var (es, ex) = try d.request("POST", "/v1/storage/local/volumes/\(blockID)/expand", ["capacityBytes": 100663296])
        XCTAssertEqual(es, 200, ex.serialized)
        XCTAssertEqual(ex["capacityBytes"], 100663296)
        XCTAssertEqual(stat(image, &sb), 0)
        XCTAssertEqual(sb.st_size, 96 << 20)
        (es, ex) = try d.request("GET", "/v1/storage/local/capacity")
        XCTAssertEqual(ex["usedBytes"]?.int, (96 << 20) + (16 << 20) * 2 + Int(snap["snapshots"]![0]!["sizeBytes"]!.int!))

        // Unpublish everything: the last target on the node unstages and controller-unpublishes.
        for (id, t) in [(blockID, blockTarget), (mountID, dataTarget), (restoredID, restoredTarget)] {
            let (us, uv) = try d.request("POST", "/v1/storage/local/volumes/\(id)/unpublish", ["target": .string(t)])
            XCTAssertEqual(us, 200, uv.serialized)
            XCTAssertEqual(uv["nodes"], [], "no node left for \(id)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: t), "the target is removed")
        }
        XCTAssertEqual(mountsUnder(targets), [])
        XCTAssertEqual(mountsUnder(d.dir), [], "no staging mount left")
        // Delete: volumes, snapshot; again is OK.
        for id in [blockID, mountID, restoredID, blockID] {
            let (ds, dv) = try d.request("DELETE", "/v1/storage/local/volumes/\(id)")
            XCTAssertEqual(ds, 200, dv.serialized)
        }
        let (rcDel, _, delErr) = try runTool(Paths.bin + "/berth", ["volumes", "snapshot", "delete", snapID, "--plugin", "local", "--socket", d.socket])
        XCTAssertEqual(rcDel, 0, delErr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/volumes"), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/snapshots"), [])
        (es, ex) = try d.request("GET", "/v1/storage/local/capacity")
        XCTAssertEqual(ex["usedBytes"], 0)
        // The event log tells the story in order.
        let (_, evs) = try d.request("GET", "/v1/events?since=0&limit=1000")
        let types = evs["events"]!.array!.map { $0["type"]!.string! }.filter { $0.hasPrefix("volume.") || $0.hasPrefix("snapshot.") }
        XCTAssertEqual(Array(types.prefix(8)), ["volume.created", "volume.created", "volume.controller-published", "volume.staged", "volume.published",
                                                "volume.controller-published", "volume.staged", "volume.published"])
        XCTAssertTrue(types.contains("snapshot.created") && types.contains("volume.expanded") && types.contains("snapshot.deleted"), "\(types)")
    }

    func firstBytes(_ path: String, _ n: Int) -> String {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var b = [UInt8](repeating: 0, count: n)
        let got = read(fd, &b, n)
        return String(decoding: b.prefix(max(0, got)), as: UTF8.self)
    }

    func testKill9BetweenStageAndPublishKeepsReferenceCounts() throws {
        try requireRoot()
        let (d, root) = try storageDaemon("storage-kill")
        let targets = tempDir("storage-kill-targets")
        defer {
            unmountAll(targets); unmountAll(d.dir); unmountAll(root)
            try? FileManager.default.removeItem(atPath: targets); try? FileManager.default.removeItem(atPath: root)
        }
        var (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "kv", "capacityBytes": 8388608, "accessMode": "single-node-multi-writer"])
        XCTAssertEqual(st, 201, v.serialized)
        let id = v["volumeId"]!.string!
        // The orchestrator drives the steps: controller publish, stage ... and berthd dies before the publish.
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/controller-publish", ["node": "node-a"])
        XCTAssertEqual(st, 200, v.serialized)
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/node-publish", ["node": "node-a", "target": .string(targets + "/early")])
        XCTAssertEqual(st, 409, "publish before stage is refused: \(v.serialized)")
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/stage", ["node": "node-a"])
        XCTAssertEqual(st, 200, v.serialized)
        let staging = v["nodes"]![0]!["stagingPath"]!.string!
        XCTAssertTrue(mountsUnder(d.dir).contains(staging), "the staging path is a bind mount")
        d.kill9()
        try d.start()

        // After the restart: controller-published and staged, no target, nothing lost.
        (st, v) = try d.request("GET", "/v1/storage/local/volumes/\(id)")
        XCTAssertEqual(st, 200, v.serialized)
        let n = v["nodes"]![0]!
        XCTAssertEqual(n["node"], "node-a")
        XCTAssertEqual(n["staged"], true)
        XCTAssertEqual(n["refCount"], 0)
        XCTAssertTrue(mountsUnder(d.dir).contains(staging), "the staging mount survived the daemon")
        // Unstage is refused only while targets exist; controller unpublish only while staged.
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/controller-unpublish", ["node": "node-a"])
        XCTAssertEqual(st, 409, "controller unpublish while staged: \(v.serialized)")

        // The lifecycle continues: two targets on the node (stage is not repeated), reference count 2.
        let t1 = targets + "/one", t2 = targets + "/two"
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/publish", ["node": "node-a", "target": .string(t1)])
        XCTAssertEqual(st, 200, v.serialized)
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/publish", ["node": "node-a", "target": .string(t2), "readonly": true])
        XCTAssertEqual(st, 200, v.serialized)
        XCTAssertEqual(v["nodes"]![0]!["refCount"], 2)
        XCTAssertTrue(mountsUnder(targets).contains(t1) && mountsUnder(targets).contains(t2))
        try "via one\n".write(toFile: t1 + "/f", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: t2 + "/f", encoding: .utf8), "via one\n", "both targets are the same volume")
        XCTAssertFalse(FileManager.default.createFile(atPath: t2 + "/g", contents: Data("x".utf8)), "the second target is read-only")
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/unstage", ["node": "node-a"])
        XCTAssertEqual(st, 409, "unstage while targets exist: \(v.serialized)")

        // Another kill -9 with two targets; unpublish one: refCount 1, still staged; the other: all torn down.
        d.kill9()
        try d.start()
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/unpublish", ["target": .string(t1)])
        XCTAssertEqual(st, 200, v.serialized)
        XCTAssertEqual(v["nodes"]![0]!["refCount"], 1)
        XCTAssertEqual(v["nodes"]![0]!["staged"], true)
        XCTAssertFalse(mountsUnder(targets).contains(t1))
        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/unpublish", ["target": .string(t2)])
        XCTAssertEqual(st, 200, v.serialized)
        XCTAssertEqual(v["nodes"], [])
        XCTAssertEqual(mountsUnder(targets), [])
        XCTAssertEqual(mountsUnder(d.dir), [])
        // Exactly one stage and one unstage happened for the node, in order.
        let (_, evs) = try d.request("GET", "/v1/events?since=0&limit=1000")
        let types = evs["events"]!.array!.map { $0["type"]!.string! }.filter { $0.hasPrefix("volume.") }
        XCTAssertEqual(types, ["volume.created", "volume.controller-published", "volume.staged", "volume.published", "volume.published",
                               "volume.unpublished", "volume.unpublished", "volume.unstaged", "volume.controller-unpublished"])
        // A storage plugin that still has volumes is not disabled unless forced.
        (st, v) = try d.request("POST", "/v1/plugins/local/disable")
        XCTAssertEqual(st, 400, v.serialized)
        XCTAssertTrue(v.serialized.contains("still holds 1 volumes"), v.serialized)
        (st, v) = try d.request("DELETE", "/v1/storage/local/volumes/\(id)")
        XCTAssertEqual(st, 200, v.serialized)
    }
}

final class StorageBenchTests: XCTestCase {
    /// The storage benchmark (berth-bench --only storage) runs and prints its row; no timing is asserted here (the
    /// benchmark reports it), but the run must leave no mount and no directory behind in its scratch root.
    func testStorageBenchmarkRuns() throws {
        try XCTSkipUnless(getuid() == 0, "the storage benchmark makes bind mounts: needs root")
        let dir = tempDir("storage-bench")
        defer { unmountAll(dir); try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.bin + "/berth-bench")
        p.arguments = ["--quick", "--only", "storage"]
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = dir
        env["BERTH_PLUGIN_DIR"] = Paths.bin
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("volume create+publish+unpublish+delete via the host"), text)
        XCTAssertEqual(mountsUnder(dir), [])
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [], [], "the benchmark left files in its scratch root")
    }
}
