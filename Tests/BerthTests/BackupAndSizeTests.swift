// Online backup under load and its restore on a fresh state directory; storage-local's enforced volume sizes,
// proven by real writes past the size (root: the volumes are loop-mounted ext4 filesystems).
import BerthCheck
import BerthWire
import Foundation
import XCTest

final class BackupAndSizeTests: XCTestCase {
    /// `berth backup` while clients keep allocating, `berthd --restore` into a fresh state directory: the restored
    /// berthd has every attachment acknowledged before the backup began, with the same addresses, and its pool agrees.
    func testBackupUnderLoadRestoresTheSameAttachments() throws {
        let net: JSON = [["name": "net1", "path": .string(Paths.plugin("ipam-pool")),
                          "config": ["pools": [["name": "p", "ranges": [["subnet": "10.66.0.0/16"]]]]]]]
        let d = try Daemon(plugins: net, tag: "backup")
        let acked = Shared<[String: String]>([:])
        let running = Shared(true)
        let group = DispatchGroup()
        for c in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: d.socket)
                var i = 0
                while running.get {
                    let id = "b\(c)-\(i)"
                    i += 1
                    if let r = try? conn.request("POST", "/v1/networks/net1/attachments", body: (["containerID": .string(id)] as JSON).bytes),
                       r.status == 200, let ip = (try? r.json())?["ips"]?[0]?["address"]?.string {
                        acked.with { $0[id] = ip }
                    }
                }
                group.leave()
            }
        }
        usleep(500_000)
        let before = acked.get
        let file = d.dir + "/state.backup"
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["backup", file, "--socket", d.socket])
        usleep(200_000)
        running.with { $0 = false }
        group.wait()
        XCTAssertEqual(rc, 0, out + err)
        XCTAssertTrue(out.hasPrefix("backup \(file):"), out)
        XCTAssertGreaterThan(before.count, 10, "load was running")
        XCTAssertGreaterThan(acked.get.count, before.count, "allocations went on during the backup")

        // Restore on "a new host": an empty state directory, then start berthd on it.
        let r = try Daemon(plugins: net, tag: "restored", start: false)
        let (rrc, rout, rerr) = try runTool(Paths.bin + "/berthd", ["--site", r.siteFile, "--restore", file])
        XCTAssertEqual(rrc, 0, rout + rerr)
        XCTAssertTrue(rout.contains("restored \(file)"), rout)
        let (again, _, againErr) = try runTool(Paths.bin + "/berthd", ["--site", r.siteFile, "--restore", file])
        XCTAssertNotEqual(again, 0, "a state directory that holds a store is not overwritten")
        XCTAssertTrue(againErr.contains("already holds a state store"), againErr)
        try r.start()
        let list = try r.request("GET", "/v1/networks/net1/attachments").1["attachments"]!.array!
        var restored: [String: String] = [:]
        for a in list { restored[a["containerID"]!.string!] = a["result"]?["ips"]?[0]?["address"]?.string ?? a["ips"]?[0]?["address"]?.string }
        let all = acked.get
        for (id, ip) in before { XCTAssertEqual(restored[id], ip, "attachment \(id) acknowledged before the backup") }
        for (id, ip) in restored { XCTAssertEqual(all[id], ip, "\(id) in the backup was acknowledged with the same address") }
        XCTAssertEqual(try r.request("GET", "/v1/networks/net1/capacity").1["active"]?.int, restored.count, "the pool agrees with the attachments")
        print("backup under load: \(before.count) before, \(restored.count) in the backup, \(all.count) in all")
    }

    /// A 64 MiB directory volume takes no more than 64 MiB: dd of 100 MiB into it fails with ENOSPC. Expanded to
    /// 160 MiB it takes the 100 MiB; deleted, its filesystem is unmounted and its image removed.
    func testDirectoryVolumeSizeIsEnforced() throws {
        guard getuid() == 0 else { return XCTFail("needs root (loop mounts); CI runs as root") }
        let root = tempDir("sizes") + "/vols"
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "nodes": ["n1"]]]], tag: "sizes")
        var (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "small", "capacityBytes": .number(Double(64 << 20))])
        XCTAssertEqual(st, 201, v.serialized)
        let id = v["volumeId"]!.string!
        let path = v["volumeContext"]!["path"]!.string!
        defer { _ = try? d.request("DELETE", "/v1/storage/local/volumes/\(id)") }
        func dd(_ mib: Int) throws -> (Int32, String) {
            let (rc, _, err) = try runTool("/bin/dd", ["if=/dev/zero", "of=\(path)/data", "bs=1M", "count=\(mib)", "conv=fsync"])
            return (rc, err)
        }
        var (rc, err) = try dd(100)
        XCTAssertNotEqual(rc, 0, "100 MiB must not fit in a 64 MiB volume: \(err)")
        XCTAssertTrue(err.contains("No space left on device") || err.contains("Disk quota exceeded"), err)

        (st, v) = try d.request("POST", "/v1/storage/local/volumes/\(id)/expand", ["capacityBytes": .number(Double(160 << 20))])
        XCTAssertEqual(st, 200, v.serialized)
        (rc, err) = try dd(100)
        XCTAssertEqual(rc, 0, "after expanding to 160 MiB, 100 MiB fits: \(err)")

        (st, v) = try d.request("DELETE", "/v1/storage/local/volumes/\(id)")
        XCTAssertEqual(st, 200, v.serialized)
        XCTAssertFalse(MountTable.isMountPoint(path), "the volume's filesystem is unmounted")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path) || FileManager.default.fileExists(atPath: path + ".ext4"))
    }

    /// An enforced volume larger than the filesystem under the root can hold as one file (2^62 bytes: EFBIG) is the
    /// caller's error (OUT_OF_RANGE, a 4xx naming enforceSize), not a 500, and leaves no image file behind.
    func testAnEnforcedSizeTheFilesystemCannotHoldIsRefusedAndLeavesNothing() throws {
        guard getuid() == 0 else { return XCTFail("needs root (loop mounts); CI runs as root") }
        let root = tempDir("sizes-big") + "/vols"
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "nodes": ["n1"], "capacityBytes": JSON(Int64(1) << 62),
                                                 "maxVolumeBytes": JSON(Int64(1) << 62)]]], tag: "sizes-big")
        defer { d.stop() }
        let (st, v) = try d.request("POST", "/v1/storage/local/volumes", ["name": "huge", "capacityBytes": JSON(Int64(1) << 62)])
        XCTAssertTrue((400..<500).contains(st), "\(st) \(v.serialized)")
        XCTAssertTrue(v.serialized.contains("enforceSize"), v.serialized)
        let left = (try? FileManager.default.contentsOfDirectory(atPath: root + "/volumes")) ?? []
        XCTAssertEqual(left.filter { $0.hasSuffix(".ext4") }, [], "a refused create leaves no image")
        XCTAssertEqual(try d.request("GET", "/v1/storage/local/volumes").1["volumes"]?.array?.count ?? 0, 0)
    }
}
