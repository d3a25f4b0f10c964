// The plugin SDK, round two (issue 21): ABI 1.2 completion callbacks in process and through the runner, the check's
// skipped/failed/passed accounting and its identity case, nodes from --config, exact 64-bit integers in the host's
// JSON, and the small kv additions of the store.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthPluginABI
import BerthWire
import Foundation
import XCTest

final class SDKTests: XCTestCase {
    static let storageFixtures = FixtureBuilder.packageRoot + "/Tests/Fixtures/storage"
    static let kitDir = FixtureBuilder.packageRoot + "/Tests/Fixtures/kit"
    struct Rollback: Error {}

    /// An in-process instance of `so` on a fresh store and executor.
    /// `sync` "full" (berthd's default) runs after_commit on the thread that waits for the disk, "normal" on the executor's.
    func withInstance(_ so: String, config: JSON, sync: String = "normal", _ body: (PluginInstance, Executor) throws -> Void) throws {
        let dir = tempDir("sdk-inst")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir + "/state.db", synchronous: sync)
        let ex = Executor(store: store)
        ex.start()
        defer { ex.stop() }
        let loader = Loader(copyDir: dir + "/plugins")
        var spec = PluginSpec(name: "fx", path: so, config: config)
        spec.enabled = true
        let inst = try loader.instantiate(try loader.load(spec), spec: spec, executor: ex, log: { _, _ in })
        defer { inst.destroy() }
        try body(inst, ex)
    }

    // MARK: ABI 1.2 completion callbacks

    /// The fixture deletes a volume's directory in delete_volume; the host rolls the deletion back after the plugin
    /// returned OK. Deleting in place loses the data of a volume that still exists; deferring to after_commit keeps it,
    /// and a committed deletion still removes it.
    func testDeferredDeleteKeepsDataAcrossForcedRollback() throws {
        for (flags, keeps) in [([String](), false), (["-DDEFER_DELETE"], true)] {
          for sync in ["normal", "full"] {
            let so = try FixtureBuilder.plugin("delete_data", in: Self.storageFixtures, flags: flags)
            let root = tempDir("sdk-vols")
            defer { removeTree(root) }
            try withInstance(so, config: ["root": .string(root)], sync: sync) { inst, ex in
                let ops = inst.storage!.pointee
                _ = try ex.runSync { try inst.callObject("create_volume", ops.create_volume, ["name": "v1"]) }
                XCTAssertTrue(FileManager.default.createFile(atPath: root + "/v1/data", contents: Data("payload".utf8)))
                XCTAssertThrowsError(try ex.runSync { () throws -> JSON in
                    _ = try inst.callObject("delete_volume", ops.delete_volume, ["volumeId": "v1"])
                    throw Rollback()
                })
                XCTAssertEqual(try ex.runSync { try ex.store.kvGet("fx", "v/v1") } != nil, true, "the rolled-back deletion left the volume in the namespace")
                XCTAssertEqual(FileManager.default.fileExists(atPath: root + "/v1/data"), keeps, "flags \(flags)")
                _ = try ex.runSync { try inst.callObject("delete_volume", ops.delete_volume, ["volumeId": "v1"]) }
                XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/v1"), "a committed deletion removes the data (\(flags), sync \(sync)) before the caller is answered")
            }
          }
        }
    }

    /// The check forces the same rollback, in process and through a berth-plugin-runner (which forwards the callbacks).
    func testCheckCatchesDataDeletedBeforeCommit() throws {
        for (flags, keeps) in [([String](), false), (["-DDEFER_DELETE"], true)] {
            let so = try FixtureBuilder.plugin("delete_data", in: Self.storageFixtures, flags: flags)
            for inProcess in [true, false] {
                let root = tempDir("sdk-check-vols")
                defer { removeTree(root) }
                let report = PluginChecker.check(path: so, config: ["root": .string(root)], inProcess: inProcess,
                                                 runnerPath: Paths.bin + "/berth-plugin-runner")
                let c = try XCTUnwrap(report.cases.first { $0.name == "storage: a rolled-back delete keeps the volume's data" },
                                      report.cases.map { "\($0.name): \($0.detail)" }.joined(separator: "\n"))
                XCTAssertEqual(c.passed, keeps, "\(flags) inProcess \(inProcess): \(c.detail)")
                XCTAssertFalse(c.skipped)
                if !keeps { XCTAssertTrue(c.detail.contains("after_commit"), c.detail) }
            }
        }
    }

    /// Callbacks of a rolled-back operation run after_rollback in reverse order; of a committed one after_commit in order.
    func testCompletionOrderThroughTheCExample() throws {
        let dir = tempDir("sdk-cexample")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let so = dir + "/libberth-storplug.so"
        let (rc, _, err) = try runTool("/usr/bin/env", ["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-I", Paths.root + "/PluginABI/include",
                                                        Paths.root + "/sdk-docs/examples/c-storage/storplug.c", "-o", so])
        XCTAssertEqual(rc, 0, err)
        chmod(so, 0o755)
        try withInstance(so, config: ["root": .string(dir + "/root"), "nodes": ["n1"]]) { inst, ex in
            let ops = inst.storage!.pointee
            // A rolled-back create removes the directory it made (after_rollback); a committed one keeps it.
            XCTAssertThrowsError(try ex.runSync { () throws -> JSON in
                _ = try inst.callObject("create_volume", ops.create_volume, ["name": "a"])
                throw Rollback()
            })
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/root/volumes"), [])
            let v = try ex.runSync { try inst.callObject("create_volume", ops.create_volume, ["name": "a"]) }
            let id = try XCTUnwrap(v["volumeId"]?.string)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/root/volumes/" + id))
            // A rolled-back publish leaves no target; a committed one does, and unpublish removes it after commit.
            let target = dir + "/t1"
            XCTAssertThrowsError(try ex.runSync { () throws -> JSON in
                _ = try inst.callObject("node_publish", ops.node_publish, ["volumeId": .string(id), "targetPath": .string(target)])
                throw Rollback()
            })
            XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: target))
            _ = try ex.runSync { try inst.callObject("node_publish", ops.node_publish, ["volumeId": .string(id), "targetPath": .string(target)]) }
            XCTAssertNotNil(try? FileManager.default.destinationOfSymbolicLink(atPath: target))
            _ = try ex.runSync { try inst.callObject("node_unpublish", ops.node_unpublish, ["volumeId": .string(id), "targetPath": .string(target)]) }
            XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: target))
        }
    }

    // MARK: the check's accounting

    /// A network plugin that refuses identities (the old advice) fails, with a case saying apps cannot use it; the
    /// output separates passed, failed and skipped, and the check exits 1.
    func testRefusingIdentitiesFailsTheCheck() throws {
        let so = try FixtureBuilder.plugin("identity_refused", in: Self.kitDir)
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", so, "-o", "json"])
        XCTAssertEqual(rc, 1)
        let j = try JSON.parse(out)
        let cases = j["cases"]?.array ?? []
        let idCase = try XCTUnwrap(cases.first { $0["name"]?.string == "network: apps can use it (ADD with an identity)" })
        XCTAssertEqual(idCase["result"], "fail")
        XCTAssertTrue(idCase["detail"]?.string?.contains("apps cannot use this network") ?? false, idCase.serialized)
        XCTAssertEqual(cases.filter { $0["result"] == "fail" }.count, 1, "only the identity case fails: \(out)")
        XCTAssertEqual(j["failed"], 1)
        let skipped = cases.filter { $0["result"] == "skip" }
        XCTAssertEqual(j["skipped"]?.int, skipped.count)
        XCTAssertTrue(skipped.contains { $0["name"] == "network: add_batch" }, "an optional feature not provided is a skip, not a pass")
        XCTAssertEqual(j["passed"]?.int, cases.filter { $0["result"] == "pass" }.count)
        // The table: one line per case with pass / FAIL / skip, and the three counts.
        let (rc2, table, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", so])
        XCTAssertEqual(rc2, 1)
        XCTAssertTrue(table.contains("\(j["passed"]!.int!) passed, 1 failed, \(skipped.count) skipped"), table)
        XCTAssertTrue(table.split(separator: "\n").contains { $0.hasPrefix("network: add_batch ") && $0.contains(" skip ") }, table)
        // The same base accepting identities with releasePolicy onDelete passes; its release-policy case is a skip.
        let (rc3, out3, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", try FixtureBuilder.plugin("base", in: Self.kitDir), "-o", "json"])
        XCTAssertEqual(rc3, 0, out3)
        let base = try JSON.parse(out3)["cases"]?.array ?? []
        XCTAssertEqual(base.first { $0["name"] == "network: apps can use it (ADD with an identity)" }?["result"], "pass")
        XCTAssertEqual(base.first { $0["name"] == "network: release policies" }?["result"], "skip")
    }

    /// A storage plugin without "info" and no nodes in --config stops at one clear case; with --config nodes it runs.
    func testStorageNodesFromConfig() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-sdk-nodes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let so = dir + "/libberth-broken-storage.so"
        let (cc, _, ccErr) = try runTool("/usr/bin/env", ["cc", "-shared", "-fPIC", "-I", Paths.root + "/PluginABI/include",
                                                         Self.storageFixtures + "/broken_storage.c", "-o", so])
        XCTAssertEqual(cc, 0, ccErr)
        chmod(so, 0o755)
        let bare = PluginChecker.check(path: so, inProcess: true)
        let storage = bare.cases.filter { $0.name.hasPrefix("storage: ") }
        XCTAssertEqual(storage.map { $0.name }, ["storage: nodes"])
        XCTAssertTrue(storage.first?.detail.contains("\"info\"") ?? false, storage.first?.detail ?? "")
        let configured = PluginChecker.check(path: so, config: ["nodes": ["node-x", "node-y"]], inProcess: true)
        let ops = try XCTUnwrap(configured.cases.first { $0.name == "storage: operations" })
        XCTAssertTrue(ops.detail.contains("nodes node-x, node-y"), ops.detail)
    }

    /// Plugins that declare ABI 1.0 and 1.1 load and pass their suites on this 1.2 host.
    func testOlderMinorsLoadAndWork() throws {
        for minor in [0, 1] {
            let so = try FixtureBuilder.plugin("base", in: Self.kitDir, flags: ["-DBERTH_ABI_MINOR=\(minor)"])
            let report = PluginChecker.check(path: so, inProcess: true)
            XCTAssertEqual(report.plugin?.abiMinor, minor)
            XCTAssertEqual(report.failed, 0, report.cases.filter { !$0.passed }.map { "\($0.name): \($0.detail)" }.joined(separator: "\n"))
            XCTAssertGreaterThan(report.passed, 15)
        }
    }

    // MARK: exact integers

    func testIntegersAreExactEndToEnd() throws {
        for text in ["4611686018427387904", "9007199254740993", "9223372036854775807", "-9223372036854775808"] {
            let v = try JSON.parse("{\"n\":\(text)}")
            XCTAssertEqual(v["n"]?.int.map { String($0) }, text, "the API reads \(text) exactly")
            XCTAssertEqual(v.serialized, "{\"n\":\(text)}")
        }
        // What the host sends: 2^62 as an integer, never 4.611686018427388e+18, also from a Double.
        XCTAssertEqual(JSON.object([("capacityBytes", JSON(Int64(1) << 62))]).serialized, "{\"capacityBytes\":4611686018427387904}")
        XCTAssertEqual(JSON.number(Double(1 << 62)).serialized, "4611686018427387904")
        XCTAssertEqual(JSON.number(1.5).serialized, "1.5")
        XCTAssertEqual(try JSON.parse("2.0"), JSON(2))
        XCTAssertNil(try JSON.parse("1e300").int)
        XCTAssertEqual(try JSON.parse("18446744073709551615").double, 18446744073709551615.0, "beyond Int64: a Double")
        // Schema integer bounds compare exactly.
        let schema: JSON = ["type": "integer", "minimum": 1, "maximum": 9007199254740992]
        XCTAssertFalse(Schema.validate(try JSON.parse("9007199254740993"), against: schema).isEmpty)
        XCTAssertTrue(Schema.validate(try JSON.parse("9007199254740992"), against: schema).isEmpty)
    }

    /// Through berthd: the API takes 2^53 + 1 and 2^62 as the integers they are and hands them to the plugin exactly
    /// (it used to refuse them as "not a non-negative integer"); the plugin's answer carries them back exactly.
    func testAPIKeepsLargeSizesExact() throws {
        let root = tempDir("sdk-api-vols")
        defer { removeTree(root) }
        let d = try Daemon(plugins: [["name": "local", "path": .string(Paths.plugin("storage-local")),
                                      "config": ["root": .string(root), "capacityBytes": JSON((Int64(1) << 62) + (Int64(1) << 54)), "maxVolumeBytes": JSON(Int64(1) << 62),
                                                 "nodes": ["node-a"], "enforceSize": false]]], tag: "sdk-ints")  // accounted, not enforced: no 4 EiB image
        defer { d.stop() }
        // storage-local rounds sizes up to 4 KiB: 2^53 + 1 becomes 9007199254745088 (through a double it would have
        // been 2^53, already a multiple of 4096).
        for (size, want) in [(Int64(1) << 62, Int64(1) << 62), (Int64(9007199254740993), Int64(9007199254745088))] {
            let (st, body) = try d.request("POST", "/v1/storage/local/volumes", ["name": .string("v\(size)"), "capacityBytes": JSON(size)])
            XCTAssertFalse(body.serialized.contains("non-negative integer"), "\(size): \(st) \(body.serialized)")
            XCTAssertEqual(st, 201, body.serialized)
            XCTAssertEqual(body["capacityBytes"]?.int.map { Int64($0) }, want, body.serialized)
            XCTAssertTrue(body.serialized.contains("\"capacityBytes\":\(want)"), body.serialized)
        }
    }

    // MARK: kv additions

    func testPrefixCountAndDelete() throws {
        let dir = tempDir("sdk-kv")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir + "/s.db", synchronous: "normal")
        func put(_ k: [UInt8], _ v: String = "v") throws { try k.withUnsafeBytes { kb in try Array(v.utf8).withUnsafeBytes { try store.kvPut("ns", kb, $0) } } }
        for k in ["a/1", "a/2", "a/3", "ab", "b/1"] { try put(Array(k.utf8)) }
        try put([0xFF, 0xFF, 1]); try put([0xFF, 0xFF]); try put([0xFE])
        try put(Array("a/1".utf8), "a longer value, 34 b")
        func count(_ p: [UInt8]) throws -> Int64 { try p.withUnsafeBytes { try store.kvCountPrefix("ns", $0) } }
        XCTAssertEqual(try count(Array("a/".utf8)), 3)
        XCTAssertEqual(try count(Array("a".utf8)), 4)
        XCTAssertEqual(try count([0xFF, 0xFF]), 2, "an all-0xFF prefix has no upper bound")
        XCTAssertEqual(try count([]), 8)
        XCTAssertEqual(try Array("a/1".utf8).withUnsafeBytes { try store.kvLen("ns", $0) }, 20)
        XCTAssertEqual(try Array("zz".utf8).withUnsafeBytes { try store.kvLen("ns", $0) }, nil)
        XCTAssertEqual(try Array("a/".utf8).withUnsafeBytes { try store.kvDeletePrefix("ns", $0) }, 3)
        XCTAssertEqual(try count([]), 5)
        XCTAssertEqual(try [UInt8(0xFF)].withUnsafeBytes { try store.kvDeletePrefix("ns", $0) }, 2)
        XCTAssertEqual(try count([]), 3)
    }
}
