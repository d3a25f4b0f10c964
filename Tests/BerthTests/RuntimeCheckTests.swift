// `berth plugin check` of a runtime plugin: the runtime conformance cases pass against runtime-oci with real runc
// and a busybox root filesystem made here (as root), and they fail a plugin that breaks the contract.
import BerthWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class RuntimeCheckTests: XCTestCase {
    /// A busybox-static root filesystem with its applets linked (what Tests/suites/runtime-oci.sh makes too).
    func busyboxRootfs() throws -> String {
        let busybox = "/bin/busybox"
        guard FileManager.default.isExecutableFile(atPath: busybox) else {
            throw XCTSkip("\(busybox) is missing (Debian busybox-static, in .ci/apt-packages)")
        }
        let rfs = tempDir("rt-rootfs") + "/rootfs"
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            try FileManager.default.createDirectory(atPath: rfs + "/" + d, withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: busybox, toPath: rfs + "/bin/busybox")
        let (rc, out, err) = try runTool(busybox, ["--list"])
        XCTAssertEqual(rc, 0, err)
        for applet in out.split(separator: "\n") where applet != "busybox" {
            try? FileManager.default.createSymbolicLink(atPath: "\(rfs)/bin/\(applet)", withDestinationPath: "/bin/busybox")
        }
        return rfs
    }

    func check(_ plugin: String, config: JSON, rootfs: String?) throws -> (Int32, JSON, String) {
        let dir = tempDir("rt-check")
        try config.serialized.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        var args = ["plugin", "check", plugin, "--config", dir + "/config.json", "-o", "json"]
        if let rootfs { args += ["--rootfs", rootfs] }
        let (rc, out, err) = try runTool(Paths.bin + "/berth", args)
        return (rc, (try? JSON.parse(out)) ?? .null, out + err)
    }

    func result(_ report: JSON, _ name: String) -> String? {
        (report["cases"]?.array ?? []).first { $0["name"]?.string == name }?["result"]?.string
    }

    /// runtime-oci passes every runtime case with real runc; nothing is skipped, and nothing is left behind.
    func testRuntimeOCIPassesTheRuntimeConformanceCases() throws {
        guard geteuid() == 0 else { throw XCTSkip("runc, cgroups and namespaces need root (CI runs as root)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc") || FileManager.default.isExecutableFile(atPath: "/usr/bin/runc") else {
            throw XCTSkip("runc is missing (Debian runc, in .ci/apt-packages)")
        }
        let rootfs = try busyboxRootfs()
        let state = tempDir("rt-state")
        let cgroup = "berth-check-test-\(getpid())"
        let (rc, report, text) = try check(Paths.plugin("runtime-oci"), config: ["stateDir": .string(state), "cgroupParent": .string(cgroup), "monitor": .string(Paths.bin + "/berth-runtime-monitor")],
                                         rootfs: rootfs)
        XCTAssertEqual(rc, 0, text)
        XCTAssertEqual(report["failed"], 0, text)
        XCTAssertEqual(report["skipped"], 0, text)
        XCTAssertEqual(result(report, "isolation"), "pass", text)
        for c in ["start", "start is idempotent", "start with a different spec is ALREADY_EXISTS", "list finds a started instance",
                  "stop", "stop is idempotent", "remove is idempotent", "stop of an unknown id succeeds", "remove of an unknown id succeeds",
                  "a bad spec (a negative memory limit) is INVALID_ARGUMENT and leaves nothing",
                  "a bad spec (a command not in the rootfs) is INVALID_ARGUMENT and leaves nothing"] {
            XCTAssertEqual(result(report, "runtime: " + c), "pass", "\(c): \(text)")
        }
        // Every instance the check started is gone: no bundle directory and no container in runc's state.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: state + "/instances")) ?? []
        XCTAssertEqual(left, [], text)
        let (_, runcList, _) = try runTool("/usr/bin/env", ["runc", "--root", state + "/runtime", "list", "-q"])
        XCTAssertEqual(runcList.trimmingCharacters(in: .whitespacesAndNewlines), "")
        // No instance cgroup is left under the parent the check used; the (shared, empty) parent is removed here.
        let fm = FileManager.default
        let layouts = ((try? fm.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/\($0)/\(cgroup)" } + ["/sys/fs/cgroup/\(cgroup)"]
        for parent in layouts where fm.fileExists(atPath: parent) {
            let children = ((try? fm.contentsOfDirectory(atPath: parent)) ?? []).filter { c in
                var isDir: ObjCBool = false
                return fm.fileExists(atPath: parent + "/" + c, isDirectory: &isDir) && isDir.boolValue
            }
            XCTAssertEqual(children, [], "instance cgroups left under \(parent)")
            rmdir(parent)
        }
    }

    /// Without --rootfs the lifecycle cases are skipped (shown as skipped, not passed); the rest still run.
    func testWithoutRootfsTheLifecycleIsSkippedNotPassed() throws {
        let (_, report, text) = try check(Paths.plugin("runtime-oci"), config: ["stateDir": .string(tempDir("rt-state2")), "monitor": .string(Paths.bin + "/berth-runtime-monitor")], rootfs: nil)
        XCTAssertEqual(result(report, "runtime: instance lifecycle"), "skip", text)
        XCTAssertNil(result(report, "runtime: start"), text)
        XCTAssertEqual(result(report, "runtime: stop of an unknown id succeeds"), "pass", text)
    }

    /// A runtime plugin that breaks the contract fails the cases it breaks (the loader fixture answers a canned pid,
    /// an invalid state object from stop, and succeeds on every bad spec).
    func testTheCheckFailsABrokenRuntimePlugin() throws {
        let so = try FixtureBuilder.plugin("runtime_table")
        let (rc, report, text) = try check(so, config: .object([]), rootfs: "/")
        XCTAssertEqual(rc, 1, text)
        XCTAssertEqual(result(report, "runtime: stop"), "fail", text)
        XCTAssertEqual(result(report, "runtime: state of an unknown id is NOT_FOUND"), "fail", text)
        XCTAssertEqual(result(report, "runtime: a bad spec (a negative memory limit) is INVALID_ARGUMENT and leaves nothing"), "fail", text)
    }
}
