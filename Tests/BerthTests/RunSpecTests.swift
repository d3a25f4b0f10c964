// spec.run of App and StatefulApp (what an instance runs, issue 19): checked at apply through a real berthd, each
// bad field a 400 that names it and changes nothing; a good one is kept as given; apps without it are unchanged.
import BerthWire
import Foundation
import XCTest

final class RunSpecTests: XCTestCase {
    func rootfs() throws -> String {
        let rfs = tempDir("runspec") + "/rootfs"
        try FileManager.default.createDirectory(atPath: rfs + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: rfs + "/bin/httpd", withDestinationPath: "/bin/busybox")
        return rfs
    }

    func daemon() throws -> Daemon {
        try Daemon(plugins: [["name": "stateful", "path": .string(Paths.plugin("sched-stateful"))]], tag: "runspec")
    }

    func refused(_ d: Daemon, _ kind: String, _ spec: JSON, _ phrase: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (st, body) = try d.request("PUT", "/v1/kinds/\(kind)/bad", ["spec": spec])
        XCTAssertEqual(st, 400, body.serialized, file: file, line: line)
        XCTAssertTrue(body["error"]?.string?.contains(phrase) == true, "want \"\(phrase)\" in \(body.serialized)", file: file, line: line)
        let (gst, _) = try d.request("GET", "/v1/kinds/\(kind)/bad")
        XCTAssertEqual(gst, 404, "a refused apply must create nothing", file: file, line: line)
    }

    func testBadRunSpecsAreRefusedAtApplyNamingTheField() throws {
        let d = try daemon()
        let rfs = try rootfs()
        let good: JSON = ["rootfs": .string(rfs), "command": "/bin/httpd", "args": ["-f"]]
        try refused(d, "App", ["replicas": 1, "run": good.setting("rootfs", "/no/such/rootfs")],
                    "spec.run.rootfs: /no/such/rootfs does not exist on this node")
        try refused(d, "App", ["replicas": 1, "run": good.setting("rootfs", "relative/dir")], "spec.run.rootfs: must be an absolute path")
        try refused(d, "App", ["replicas": 1, "run": good.setting("command", "/bin/nope")], "spec.run.command: /bin/nope does not exist in the rootfs")
        try refused(d, "App", ["replicas": 1, "run": good.removing("command")], "spec.run.command")
        try refused(d, "App", ["replicas": 1, "run": good, "resources": ["memory": -1]], "spec.resources.memory: -1 is not a size")
        try refused(d, "App", ["replicas": 1, "run": good.setting("env", ["BERTH_IP": "1.2.3.4"])], "spec.run.env.BERTH_IP: BERTH_* variables are set by the host")
        try refused(d, "App", ["replicas": 1, "run": good.setting("restartPolicy", "sometimes")], "spec.run.restartPolicy")
        try refused(d, "App", ["replicas": 1, "run": good.setting("graceSeconds", -5)], "spec.run.graceSeconds")
        try refused(d, "App", ["replicas": 1, "run": good.setting("extra", 1)], "spec.run.extra: unknown key")
        try refused(d, "StatefulApp", ["replicas": 1, "run": good.setting("rootfs", "/no/such/rootfs")], "spec.run.rootfs: /no/such/rootfs does not exist")
    }

    func testGoodRunSpecsAreKeptAndAppsWithoutRunAreUnchanged() throws {
        let d = try daemon()
        let rfs = try rootfs()
        let run: JSON = ["rootfs": .string(rfs), "command": "/bin/httpd", "args": ["-f", "-p", "80"], "env": ["GREETING": "hi"],
                         "restartPolicy": "on-failure", "graceSeconds": 3]
        for (kind, name) in [("App", "web"), ("StatefulApp", "db")] {
            let (st, body) = try d.request("PUT", "/v1/kinds/\(kind)/\(name)", ["spec": ["replicas": 2, "run": run]])
            XCTAssertEqual(st, 201, body.serialized)
            let (gst, got) = try d.request("GET", "/v1/kinds/\(kind)/\(name)")
            XCTAssertEqual(gst, 200)
            XCTAssertEqual(got["spec"]?["run"], run, got.serialized)
        }
        // A tarball rootfs is accepted as it is (its content is the runtime's to check).
        let tar = tempDir("runspec-tar") + "/rootfs.tar.gz"
        FileManager.default.createFile(atPath: tar, contents: Data([0x1f, 0x8b]))
        let (tst, tbody) = try d.request("PUT", "/v1/kinds/App/tarred", ["spec": ["replicas": 1, "run": ["rootfs": .string(tar), "command": "httpd"]]])
        XCTAssertEqual(tst, 201, tbody.serialized)
        let (pst, pbody) = try d.request("PUT", "/v1/kinds/App/plain", ["spec": ["replicas": 1]])
        XCTAssertEqual(pst, 201, pbody.serialized)
        XCTAssertNil(pbody["spec"]?["run"], pbody.serialized)
    }
}
