// What a site may point berthd at: a dry run of PUT /v1/site stages plugins in a runner, never in berthd (a fixture
// whose constructor leaves a marker named after its process), and copies nothing; files that are not ELF shared
// objects, plugins in world-writable directories and plugins reached through another user's symlink are refused
// with the reason, and nothing of them reaches <stateDir>/plugins.
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

final class PluginPathTests: XCTestCase {
    func copies(_ d: Daemon) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: d.dir + "/state/plugins")) ?? []).sorted()
    }

    /// PUT /v1/site?dryRun=true with the daemon's site plus `extra` plugins.
    func dryRun(_ d: Daemon, _ extra: [JSON]) throws -> (Int, JSON) {
        let site = try JSON.parse(Array(FileManager.default.contents(atPath: d.siteFile)!))
        let plugins = (site["plugins"]?.array ?? []) + extra
        return try d.request("PUT", "/v1/site?dryRun=true", site.setting("plugins", .array(plugins)))
    }

    func testDryRunNeverLoadsAPluginIntoBerthd() throws {
        let markers = try FixtureBuilder.makeTempDir("berth-markers")
        defer { try? FileManager.default.removeItem(atPath: markers) }
        let so = try FixtureBuilder.plugin("constructor_marker", flags: ["-DMARKER_DIR=\"\(markers)\""])
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "dryrun")
        let berthd = d.process!.processIdentifier
        let before = copies(d)
        let (st, body) = try dryRun(d, [["name": "marker", "path": .string(so)]])
        XCTAssertEqual(st, 200, body.serialized)
        XCTAssertTrue(body["changes"]!.array!.contains { $0["plugin"] == "marker" && $0["action"] == "enable" }, body.serialized)
        let marks = try FileManager.default.contentsOfDirectory(atPath: markers)
        XCTAssertFalse(marks.contains("marker-\(berthd)"), "the dry run ran the plugin's constructor inside berthd (pid \(berthd))")
        XCTAssertEqual(marks.count, 1, "the plugin was staged (its constructor ran once, in a runner): \(marks)")
        XCTAssertEqual(copies(d), before, "a dry run copied a file into the state directory")
        XCTAssertNil(try d.request("GET", "/v1/plugins").1["plugins"]!.array!.first { $0["name"] == "marker" }, "a dry run enabled the plugin")
    }

    func testDryRunRefusesWhatIsNotASafeSharedObject() throws {
        let good = try FixtureBuilder.plugin("good")
        let d = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "dryrun-refuse")
        let before = copies(d)
        let work = try FixtureBuilder.makeTempDir("berth-paths")
        defer { try? FileManager.default.removeItem(atPath: work) }

        // A root-readable file that is not a plugin: refused before it is copied (it used to land in the state
        // directory with mode 0555).
        let secret = work + "/secret.so"
        try "password=hunter2\n".write(toFile: secret, atomically: true, encoding: .utf8)
        chmod(secret, 0o600)
        var (st, body) = try dryRun(d, [["name": "secret", "path": .string(secret)]])
        XCTAssertEqual(st, 400, body.serialized)
        XCTAssertTrue(body.serialized.contains("plugins.secret: not a loadable shared object: \(secret): not an ELF file"), body.serialized)

        // A plugin in a world-writable directory (no sticky bit): anyone could have swapped it.
        let openDir = work + "/open"
        mkdir(openDir, 0o755)
        chmod(openDir, 0o777)
        try FileManager.default.copyItem(atPath: good, toPath: openDir + "/good.so")
        chmod(openDir + "/good.so", 0o755)
        (st, body) = try dryRun(d, [["name": "in-open-dir", "path": .string(openDir + "/good.so")]])
        XCTAssertEqual(st, 400, body.serialized)
        XCTAssertTrue(body.serialized.contains("directory \(openDir) is world-writable"), body.serialized)

        // Reached through a symlink that another user owns.
        let link = work + "/link.so"
        XCTAssertEqual(symlink(good, link), 0)
        if geteuid() == 0 {
            XCTAssertEqual(lchown(link, 1234, 1234), 0)
            (st, body) = try dryRun(d, [["name": "via-link", "path": .string(link)]])
            XCTAssertEqual(st, 400, body.serialized)
            XCTAssertTrue(body.serialized.contains("symlink \(link) is owned by uid 1234"), body.serialized)
            // The site can still say it knows: a warning, and the dry run goes through.
            (st, body) = try dryRun(d, [["name": "via-link", "path": .string(link), "allowInsecurePermissions": true]])
            XCTAssertEqual(st, 200, body.serialized)
        }
        XCTAssertEqual(copies(d), before, "a refused file reached the copy directory")
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200)
    }
}
