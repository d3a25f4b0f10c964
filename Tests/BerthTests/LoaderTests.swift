// The loader, failure mode by failure mode: one tiny C fixture per way a plugin file can be wrong
// (Tests/Fixtures/loader/*.c, compiled here with cc), each asserting the exact LoadError cause and that the message
// a user sees names the plugin, the file and the reason. Plus the positive path, the content-addressed copy,
// minor-version compatibility, and isolation between loads.
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

#if canImport(Glibc)
import Glibc
#endif

final class LoaderTests: XCTestCase {
    var tmp = ""
    var copyDir: String { tmp + "/plugins" }

    override func setUpWithError() throws {
        tmp = try FixtureBuilder.makeTempDir("berth-loader")
    }

    override func tearDownWithError() throws {
        if !tmp.isEmpty { try? FileManager.default.removeItem(atPath: tmp) }
    }

    // MARK: helpers

    func fixture(_ name: String, flags: [String] = []) throws -> String {
        try FixtureBuilder.plugin(name, flags: flags)
    }

    /// A private copy of a compiled fixture at `tmp/<as>` (mode 0755), for tests that chmod, chown or overwrite it.
    func privateCopy(of fixturePath: String, as name: String) throws -> String {
        let dst = "\(tmp)/\(name)"
        try? FileManager.default.removeItem(atPath: dst)
        try FileManager.default.copyItem(atPath: fixturePath, toPath: dst)
        XCTAssertEqual(chmod(dst, 0o755), 0)
        return dst
    }

    func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    func sha256sum(_ path: String) throws -> String {
        let r = try FixtureBuilder.run("/usr/bin/env", ["sha256sum", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        return String(r.stdout.prefix(while: { $0 != " " }))
    }

    func soFiles(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".so") }.sorted()
    }

    func echo(_ inst: PluginInstance, _ text: String = #"{"ping":1}"#, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(String(decoding: (try? inst.call(method: "echo", Array(text.utf8))) ?? [], as: UTF8.self), text,
                       "echo through \(inst.name)", file: file, line: line)
    }

    func instantiate(_ loader: Loader, _ p: LoadedPlugin, _ spec: PluginSpec) throws -> PluginInstance {
        try loader.instantiate(p, spec: spec, executor: nil, log: { _, _ in })
    }

    /// Runs `body`, expecting it to throw a LoadError, and checks everything a user would see:
    /// the exact cause (nil only where the OS supplies the text), the plugin and file fields, and a description naming the plugin, the file and each phrase.
    @discardableResult
    func expectLoadError(_ spec: PluginSpec, _ cause: LoadError.Cause?, phrases: [String],
                         file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) -> LoadError? {
        let error: LoadError
        do {
            let value = try body()
            XCTFail("expected \(cause.map { "\($0)" } ?? "a LoadError") for plugin \"\(spec.name)\", but it succeeded: \(value)", file: file, line: line)
            return nil
        } catch let e as LoadError {
            error = e
        } catch {
            XCTFail("expected a LoadError(\(cause.map { "\($0)" } ?? "")), got \(type(of: error)): \(error)", file: file, line: line)
            return nil
        }
        if let cause { XCTAssertEqual(error.cause, cause, file: file, line: line) }
        XCTAssertEqual(error.plugin, spec.name, file: file, line: line)
        XCTAssertEqual(error.file, spec.path, file: file, line: line)
        let text = error.description
        XCTAssertTrue(text.contains("plugin \"\(spec.name)\""), "no plugin name in: \(text)", file: file, line: line)
        XCTAssertTrue(text.contains(spec.path), "no file path in: \(text)", file: file, line: line)
        for phrase in phrases {
            XCTAssertTrue(text.contains(phrase), "missing \"\(phrase)\" in: \(text)", file: file, line: line)
        }
        return error
    }

    /// Loads a compiled fixture expecting a load-time failure.
    @discardableResult
    func expectLoadFailure(_ fixtureName: String, name: String, _ cause: LoadError.Cause, phrases: [String],
                           loader: Loader? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> LoadError? {
        let spec = PluginSpec(name: name, path: try fixture(fixtureName))
        let loader = loader ?? Loader(copyDir: copyDir)
        return expectLoadError(spec, cause, phrases: phrases, file: file, line: line) { try loader.load(spec) }
    }

    // MARK: the positive path

    func testGoodFixtureLoadsInstantiatesAndAnswersEcho() throws {
        let loader = Loader(copyDir: copyDir)
        let spec = PluginSpec(name: "good", path: try fixture("good"))
        let p = try loader.load(spec)
        XCTAssertEqual(p.name, "good")
        XCTAssertEqual(p.version, "1.0.0")
        XCTAssertEqual(p.kinds, [])
        XCTAssertEqual(p.file, spec.path)
        XCTAssertEqual(p.sha256, try sha256sum(spec.path))
        XCTAssertEqual(p.copy, "\(copyDir)/\(p.sha256).so")
        let inst = try instantiate(loader, p, spec)
        echo(inst)
        echo(inst, #"{"nested":{"a":[1,2,3]},"s":"x"}"#)
        XCTAssertThrowsError(try inst.call(method: "nope", [])) { e in
            XCTAssertTrue("\(e)".contains("UNIMPLEMENTED"), "\(e)")
        }
    }

    func testSecondLoadReusesTheContentAddressedCopyAndSurvivesOverwritingTheOriginal() throws {
        let loader = Loader(copyDir: copyDir)
        let goodBytes = try bytes(try fixture("good"))
        let original = try privateCopy(of: try fixture("good"), as: "site-plugin.so")
        let spec = PluginSpec(name: "site", path: original)

        let p1 = try loader.load(spec)
        let inst1 = try instantiate(loader, p1, spec)
        echo(inst1)
        XCTAssertEqual(p1.copy, "\(copyDir)/\(p1.sha256).so")
        var st1 = stat()
        XCTAssertEqual(stat(p1.copy, &st1), 0)
        XCTAssertEqual(st1.st_mode & 0o222, 0, "the content-addressed copy must not be writable")
        XCTAssertEqual(try bytes(p1.copy), goodBytes)

        // A second load of the same file reuses the same copy (same inode: not rewritten).
        let p2 = try loader.load(spec)
        XCTAssertEqual(p2.copy, p1.copy)
        XCTAssertEqual(p2.sha256, p1.sha256)
        var st2 = stat()
        XCTAssertEqual(stat(p2.copy, &st2), 0)
        XCTAssertEqual(st2.st_ino, st1.st_ino, "the second load rewrote the copy instead of reusing it")
        XCTAssertEqual(soFiles(in: copyDir), ["\(p1.sha256).so"])
        let inst2 = try instantiate(loader, p2, spec)
        echo(inst2)

        // Overwrite the original in place (truncate + write, the way `cp` does): the running code is untouched.
        let replacement = try bytes(try fixture("refuse"))
        let fd = open(original, O_WRONLY | O_TRUNC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(replacement.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, replacement.count)
        close(fd)
        XCTAssertNotEqual(try sha256sum(original), p1.sha256)

        echo(inst1)
        echo(inst2)
        XCTAssertEqual(try bytes(p1.copy), goodBytes, "overwriting the original changed the content-addressed copy")
        XCTAssertEqual(try sha256sum(p1.copy), p1.sha256)

        // Loading the path again now sees the new content, in a new copy of its own; the old copy stays.
        expectLoadError(spec, .refused(hostMinor: Int(BERTH_ABI_MINOR)), phrases: ["returned NULL"]) { try loader.load(spec) }
        XCTAssertEqual(soFiles(in: copyDir).count, 2)
        XCTAssertTrue(soFiles(in: copyDir).contains("\(p1.sha256).so"))

        // The same bytes under another path map to the same copy.
        let elsewhere = try privateCopy(of: try fixture("good"), as: "elsewhere.so")
        let p3 = try loader.load(PluginSpec(name: "elsewhere", path: elsewhere))
        XCTAssertEqual(p3.copy, p1.copy)
        XCTAssertEqual(p3.file, elsewhere)
    }

    // MARK: the file itself

    func testMissingFile() throws {
        let spec = PluginSpec(name: "ghost", path: tmp + "/does-not-exist.so")
        expectLoadError(spec, .fileMissing, phrases: ["file not found"]) { try Loader(copyDir: copyDir).load(spec) }
        XCTAssertEqual(soFiles(in: copyDir), [], "a failed load left a copy behind")
    }

    func testDirectoryIsNotAPluginFile() throws {
        let spec = PluginSpec(name: "dir", path: tmp)
        expectLoadError(spec, .unreadable("not a regular file"), phrases: ["cannot read the file", "not a regular file"]) {
            try Loader(copyDir: copyDir).load(spec)
        }
    }

    func testTextFileIsNotASharedObject() throws {
        let path = tmp + "/not_elf.so"
        let text = "this is a text file with a .so name, long enough to be read as an ELF header and rejected\n"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(path, 0o644), 0)
        let spec = PluginSpec(name: "not-elf", path: path)
        let why = "not an ELF file (it does not start with the ELF magic 7f 45 4c 46); give the path of the plugin's .so"
        expectLoadError(spec, .notSharedObject("\(path): \(why)"),
                        phrases: ["not a loadable shared object", "not an ELF file"]) { try Loader(copyDir: copyDir).load(spec) }
        XCTAssertEqual(soFiles(in: copyDir), [], "a file that is not a shared object was copied into the state directory")
    }

    /// An ELF file that is not a shared object (a relocatable .o) is refused from its header, and not copied.
    func testObjectFileIsNotASharedObject() throws {
        let object = tmp + "/good.o"
        let (rc, _, err) = try runTool("/usr/bin/env", ["cc", "-c", "-fPIC", "-I", FixtureBuilder.abiInclude,
                                                        FixtureBuilder.loaderFixtures + "/good.c", "-o", object])
        XCTAssertEqual(rc, 0, err)
        let spec = PluginSpec(name: "object", path: object)
        expectLoadError(spec, .notSharedObject("\(object): an ELF file, but a relocatable object (.o), not a shared object (ET_DYN): build the plugin with -shared"),
                        phrases: ["build the plugin with -shared"]) { try Loader(copyDir: copyDir).load(spec) }
        XCTAssertEqual(soFiles(in: copyDir), [])
    }

    /// The directories on the way count: a plugin in a world-writable directory without the sticky bit is refused
    /// (anyone could have replaced it), unless allowed; one in a sticky directory such as /tmp is not.
    func testPluginInAWorldWritableDirectoryIsRefused() throws {
        let dir = tmp + "/open"
        XCTAssertEqual(mkdir(dir, 0o755), 0)
        XCTAssertEqual(chmod(dir, 0o777), 0)
        let path = dir + "/good.so"
        try FileManager.default.copyItem(atPath: try fixture("good"), toPath: path)
        XCTAssertEqual(chmod(path, 0o755), 0)
        var spec = PluginSpec(name: "open-dir", path: path)
        expectLoadError(spec, .insecurePermissions("directory \(dir) is world-writable"), phrases: ["directory \(dir) is world-writable"]) {
            try Loader(copyDir: copyDir).load(spec)
        }
        XCTAssertEqual(soFiles(in: copyDir), [])
        XCTAssertEqual(chmod(dir, 0o1777), 0)
        XCTAssertNoThrow(try Loader(copyDir: copyDir).load(spec), "a sticky directory protects the entries of others")
        XCTAssertEqual(chmod(dir, 0o777), 0)
        spec.allowInsecurePermissions = true
        XCTAssertNoThrow(try Loader(copyDir: copyDir).load(spec))
    }

    func testCopyDirectoryUnusable() throws {
        // copyDir exists but is a regular file: the copy cannot be written.
        let blocked = tmp + "/blocked"
        try "x".write(toFile: blocked, atomically: true, encoding: .utf8)
        let spec = PluginSpec(name: "good", path: try fixture("good"))
        let loader = Loader(copyDir: blocked)
        let e = expectLoadError(spec, nil, phrases: ["cannot make the content-addressed copy", blocked]) {
            try loader.load(spec)
        }
        // The exact text holds a temporary file name; check the case and the errno text.
        if case .copyFailed(let why)? = e?.cause {
            XCTAssertTrue(why.contains("Not a directory"), why)
        } else {
            XCTFail("expected .copyFailed, got \(String(describing: e?.cause))")
        }
    }

    // MARK: permissions and pins

    func testGroupWritableFileIsRefusedUnlessAllowed() throws {
        let path = try privateCopy(of: try fixture("good"), as: "group-writable.so")
        XCTAssertEqual(chmod(path, 0o775), 0)
        var spec = PluginSpec(name: "gw", path: path)
        let loader = Loader(copyDir: copyDir)
        expectLoadError(spec, .insecurePermissions("group-writable"),
                        phrases: ["refusing an insecure plugin file: group-writable", "allowInsecurePermissions"]) {
            try loader.load(spec)
        }
        XCTAssertEqual(soFiles(in: copyDir), [], "a refused file was copied anyway")

        var warnings: [String] = []
        let warningLoader = Loader(copyDir: copyDir, warn: { warnings.append($0) })
        spec.allowInsecurePermissions = true
        let p = try warningLoader.load(spec)
        echo(try instantiate(warningLoader, p, spec))
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings.first?.contains("group-writable") ?? false, "\(warnings)")
        XCTAssertTrue(warnings.first?.contains(path) ?? false, "\(warnings)")
    }

    func testWorldWritableFileIsRefused() throws {
        let path = try privateCopy(of: try fixture("good"), as: "world-writable.so")
        XCTAssertEqual(chmod(path, 0o757), 0)
        let spec = PluginSpec(name: "ww", path: path)
        expectLoadError(spec, .insecurePermissions("world-writable"), phrases: ["world-writable"]) {
            try Loader(copyDir: copyDir).load(spec)
        }
        XCTAssertEqual(chmod(path, 0o777), 0)
        expectLoadError(spec, .insecurePermissions("group-writable, world-writable"), phrases: ["group-writable, world-writable"]) {
            try Loader(copyDir: copyDir).load(spec)
        }
    }

    func testFileOwnedByAnotherUserIsRefused() throws {
        guard geteuid() == 0 else {
            throw XCTSkip("chown to another uid needs root (CI runs as root); the ownership check is not exercised here")
        }
        let path = try privateCopy(of: try fixture("good"), as: "foreign.so")
        XCTAssertEqual(chown(path, 1234, 1234), 0, String(cString: strerror(errno)))
        var spec = PluginSpec(name: "foreign", path: path)
        expectLoadError(spec, .insecurePermissions("owned by uid 1234, not root or the daemon's user (uid 0)"),
                        phrases: ["owned by uid 1234"]) { try Loader(copyDir: copyDir).load(spec) }
        spec.allowInsecurePermissions = true
        XCTAssertNoThrow(try Loader(copyDir: copyDir).load(spec))
    }

    func testSha256Pin() throws {
        let path = try fixture("good")
        let actual = try sha256sum(path)
        let wrong = String(repeating: "0", count: 64)
        var spec = PluginSpec(name: "pinned", path: path)
        spec.sha256 = wrong
        let loader = Loader(copyDir: copyDir)
        expectLoadError(spec, .checksumMismatch(expected: wrong, actual: actual), phrases: ["sha256 mismatch", wrong, actual]) {
            try loader.load(spec)
        }
        XCTAssertEqual(soFiles(in: copyDir), [], "a file failing its pin was copied anyway")

        spec.sha256 = actual
        let p = try loader.load(spec)
        XCTAssertEqual(p.sha256, actual)
        echo(try instantiate(loader, p, spec))
        spec.sha256 = actual.uppercased()
        XCTAssertEqual(try loader.load(spec).sha256, actual, "an upper-case pin should match too")
    }

    // MARK: the entry point and the descriptor

    func testNoEntrySymbol() throws {
        try expectLoadFailure("no_entry", name: "no-entry", .entryMissing,
                              phrases: ["entry symbol berth_plugin_entry_v1 not found", "C linkage"])
    }

    func testEntryRefusesTheHost() throws {
        try expectLoadFailure("refuse", name: "refuse", .refused(hostMinor: Int(BERTH_ABI_MINOR)),
                              phrases: ["berth_plugin_entry_v1 returned NULL", "refuses this host"])
        // The message names the minor the loader offered, not the header's.
        let spec = PluginSpec(name: "refuse", path: try fixture("refuse"))
        expectLoadError(spec, .refused(hostMinor: 7), phrases: ["refuses this host (ABI 1.7)"]) {
            try Loader(copyDir: copyDir, hostMinor: 7).load(spec)
        }
    }

    func testAbiMajorMismatch() throws {
        try expectLoadFailure("abi_major", name: "abi-major", .abiMajorMismatch(plugin: 2, host: 1),
                              phrases: ["ABI major mismatch", "built for ABI 2.x", "this host speaks 1.x"])
    }

    func testAbiMinorTooNewAndAcceptedByANewerHost() throws {
        let c = try FixtureBuilder.abiConstants()
        let headerMinor = try XCTUnwrap(c["BERTH_ABI_MINOR"])
        let loader = Loader(copyDir: copyDir)
        XCTAssertEqual(Int(loader.hostMinor), headerMinor, "the loader's default minor should be the header's")
        let host = Int(loader.hostMinor)
        try expectLoadFailure("abi_minor_newer", name: "minor-newer", .abiMinorTooNew(plugin: host + 1, host: host),
                              phrases: ["ABI minor too new", "needs ABI 1.\(host + 1)", "provides 1.\(host)", "upgrade berthd"],
                              loader: loader)
        // A host one minor newer accepts it.
        let newer = Loader(copyDir: copyDir, hostMinor: UInt16(host + 1))
        let spec = PluginSpec(name: "minor-newer", path: try fixture("abi_minor_newer"))
        let p = try newer.load(spec)
        XCTAssertEqual(p.abiMinor, host + 1)
    }

    func testDescriptorStructTooSmall() throws {
        let c = try FixtureBuilder.abiConstants()
        let minimum = try XCTUnwrap(c["DESCRIPTOR_V1_0_SIZE"])
        let size = try XCTUnwrap(c["DESCRIPTOR_CALL_OFFSET"])  // the fixture's struct_size: one pointer short
        try expectLoadFailure("struct_small", name: "struct-small",
                              .structTooSmall(what: "descriptor", size: size, minimum: minimum),
                              phrases: ["descriptor struct_size \(size) is smaller than the ABI 1.0 minimum \(minimum)"])
    }

    func testHalfFilledNetworkGroup() throws {
        try expectLoadFailure("half_network", name: "half-network", .halfFilled(kind: "network", missing: ["check", "gc", "status"]),
                              phrases: ["network functions half-filled: missing check, gc, status", "all or nothing"])
    }

    func testDeclaredKindWithNullTable() throws {
        try expectLoadFailure("kind_table_missing", name: "kind-table-missing",
                              .badDescriptor("declares the storage kind but its storage table is NULL"),
                              phrases: ["invalid descriptor", "declares the storage kind but its storage table is NULL"])
    }

    // MARK: the runtime kind (ABI 1.3)

    /// A runtime plugin loads with its kind named, and the typed wrapper reads its answers as state objects,
    /// refusing a malformed one (INTERNAL naming the field) and answering UNIMPLEMENTED for the optional exec.
    func testRuntimeKindLoadsAndTheWrapperChecksStateObjects() throws {
        let loader = Loader(copyDir: copyDir)
        let spec = PluginSpec(name: "runtime-table", path: try fixture("runtime_table"))
        let p = try loader.load(spec)
        XCTAssertTrue(p.kinds.contains(.runtime))
        XCTAssertEqual(p.kinds.names, ["runtime"])
        let rt = try XCTUnwrap(RuntimePlugin(try instantiate(loader, p, spec)))
        XCTAssertFalse(rt.executes)
        let s = try rt.start(RuntimeStartSpec(id: "a", rootfs: "/", command: "/bin/true"))
        XCTAssertEqual(s.phase, .running)
        XCTAssertEqual(s.pid, 42)
        let listed = try rt.list()
        XCTAssertEqual(listed.map(\.id), ["a"])
        XCTAssertEqual(listed.first?.exitCode, 3)
        XCTAssertEqual(listed.first?.phase, .exited)
        XCTAssertThrowsError(try rt.stop("a")) { e in
            let b = e as? BerthError
            XCTAssertEqual(b?.status, .internal)
            XCTAssertTrue(b?.message.contains("invalid state object") == true && b?.message.contains("\"state\"") == true, "\(e)")
        }
        XCTAssertNoThrow(try rt.remove("a"))
        XCTAssertThrowsError(try rt.exec("a", command: "/bin/true")) { XCTAssertEqual(($0 as? BerthError)?.status, .unimplemented) }
        // An instance of another kind has no runtime face.
        let goodSpec = PluginSpec(name: "good", path: try fixture("good"))
        XCTAssertNil(RuntimePlugin(try instantiate(loader, try loader.load(goodSpec), goodSpec)))
    }

    func testHalfFilledRuntimeGroup() throws {
        let spec = PluginSpec(name: "half-runtime", path: try fixture("runtime_table", flags: ["-DHALF_RUNTIME"]))
        expectLoadError(spec, .halfFilled(kind: "runtime", missing: ["list", "remove"]),
                        phrases: ["runtime functions half-filled: missing list, remove"]) { try Loader(copyDir: copyDir).load(spec) }
    }

    func testRuntimeTableTooSmall() throws {
        let spec = PluginSpec(name: "small-runtime", path: try fixture("runtime_table", flags: ["-DSMALL_RUNTIME"]))
        let size = MemoryLayout<berth_runtime_ops>.offset(of: \berth_runtime_ops.remove)!
        let minimum = size + MemoryLayout<UnsafeRawPointer>.size
        expectLoadError(spec, .structTooSmall(what: "runtime table", size: size, minimum: minimum),
                        phrases: ["runtime table struct_size \(size) is smaller than the ABI 1.3 minimum \(minimum)"]) { try Loader(copyDir: copyDir).load(spec) }
    }

    /// A runtime plugin under "isolation": "process" is refused with a reason saying what to set instead, both by the
    /// loader and on the real path (the runner stages it; the host refuses the synthesized descriptor).
    func testRuntimePluginRefusesProcessIsolation() throws {
        var spec = PluginSpec(name: "runtime-table", path: try fixture("runtime_table"))
        spec.isolation = "process"
        let cause = LoadError.Cause.isolationUnsupported(kind: "runtime", isolation: "process")
        let phrases = ["a runtime plugin cannot run with \"isolation\": \"process\"", "set \"isolation\": \"in-process\""]
        expectLoadError(spec, cause, phrases: phrases) { try Loader(copyDir: copyDir).load(spec) }
        expectLoadError(spec, cause, phrases: phrases) { try RemotePlugin.load(spec, loader: Loader(copyDir: copyDir), callTimeoutMs: 5000) }
    }

    // MARK: instantiation

    func testConfigRejectedBySchemaNamesTheKey() throws {
        let loader = Loader(copyDir: copyDir)
        let path = try fixture("strict_schema")
        let p = try loader.load(PluginSpec(name: "strict", path: path))
        XCTAssertNotNil(p.configSchema)

        let wrongType = PluginSpec(name: "strict", path: path, config: ["pool": 5])
        expectLoadError(wrongType, .configRejected(["pool: expected string, got integer"]),
                        phrases: ["configuration rejected by the plugin's schema", "pool: expected string, got integer"]) {
            try self.instantiate(loader, p, wrongType)
        }
        let missing = PluginSpec(name: "strict", path: path, config: [:])
        expectLoadError(missing, .configRejected(["pool: is required"]), phrases: ["pool: is required"]) {
            try self.instantiate(loader, p, missing)
        }
        let unknown = PluginSpec(name: "strict", path: path, config: ["pool": "a", "pol": "b"])
        expectLoadError(unknown, .configRejected(["pol: unknown key (allowed: pool)"]), phrases: ["pol: unknown key"]) {
            try self.instantiate(loader, p, unknown)
        }
        let notObject = PluginSpec(name: "strict", path: path, config: ["pool"])
        expectLoadError(notObject, .configRejected(["(root): expected object, got array"]), phrases: ["expected object"]) {
            try self.instantiate(loader, p, notObject)
        }
        let fine = PluginSpec(name: "strict", path: path, config: ["pool": "vlan-100"])
        XCTAssertNoThrow(try instantiate(loader, p, fine))
    }

    func testCreateFailureCarriesStatusAndMessage() throws {
        let loader = Loader(copyDir: copyDir)
        let spec = PluginSpec(name: "create-fails", path: try fixture("create_fails"))
        let p = try loader.load(spec)
        expectLoadError(spec, .createFailed(status: "FAILED_PRECONDITION", message: "cannot reach the VLAN controller at 10.0.0.1"),
                        phrases: ["create failed (FAILED_PRECONDITION): cannot reach the VLAN controller at 10.0.0.1"]) {
            try self.instantiate(loader, p, spec)
        }
    }

    // MARK: minor-version compatibility

    func testAbi10PluginLoadsOnAMinor1Host() throws {
        let loader = Loader(copyDir: copyDir, hostMinor: 1)
        let spec = PluginSpec(name: "old-minor", path: try fixture("old_minor", flags: ["-DBERTH_ABI_MINOR=0"]))
        let p = try loader.load(spec)
        XCTAssertEqual(p.abiMinor, 0)
        XCTAssertEqual(p.name, "old-minor")
        XCTAssertEqual(p.kinds, [.network, .storage, .scheduler, .discovery])
        XCTAssertEqual(p.schedulerKind, "OldApp")
        XCTAssertEqual(p.info["abi"], "1.0")
        let inst = try instantiate(loader, p, spec)
        echo(inst)
        let info = try JSON.parse(try inst.call(method: "info", []))
        XCTAssertEqual(info["abi_minor"], 0)
        XCTAssertEqual(info["host_abi_major"], 1)
        // The 1.0-sized kind tables are callable.
        XCTAssertEqual(try inst.callObject("add", inst.network?.pointee.add, ["containerID": "c1", "ifname": "eth0"]), .object([]))
        XCTAssertEqual(try inst.callObject("create_volume", inst.storage?.pointee.create_volume, ["name": "v"]), .object([]))
        XCTAssertEqual(try inst.callObject("events", inst.discovery?.pointee.events, ["events": []]), .object([]))
        XCTAssertEqual(try inst.callObject("reserve", inst.scheduler?.pointee.reserve, ["kind": "OldApp"]), .object([]))
        // Optional functions the plugin left out stay absent.
        XCTAssertNil(inst.network?.pointee.capacity)
        XCTAssertNil(inst.storage?.pointee.expand_volume)
    }

    // MARK: isolation between loads

    func testAFailedLoadDoesNotAffectOtherPluginsInTheSameLoader() throws {
        let loader = Loader(copyDir: copyDir)
        let goodSpec = PluginSpec(name: "good", path: try fixture("good"))
        let first = try instantiate(loader, try loader.load(goodSpec), goodSpec)
        echo(first)

        let failing: [(String, LoadError.Cause)] = [
            ("no_entry", .entryMissing),
            ("refuse", .refused(hostMinor: Int(BERTH_ABI_MINOR))),
            ("abi_major", .abiMajorMismatch(plugin: 2, host: 1)),
            ("half_network", .halfFilled(kind: "network", missing: ["check", "gc", "status"])),
            ("kind_table_missing", .badDescriptor("declares the storage kind but its storage table is NULL")),
        ]
        for (name, cause) in failing {
            try expectLoadFailure(name, name: name.replacingOccurrences(of: "_", with: "-"), cause, phrases: [], loader: loader)
            // Each failure leaves the loader fully usable: a good plugin still loads, instantiates and answers.
            let again = try instantiate(loader, try loader.load(goodSpec), goodSpec)
            echo(again)
        }
        let missing = PluginSpec(name: "ghost", path: tmp + "/ghost.so")
        expectLoadError(missing, .fileMissing, phrases: []) { try loader.load(missing) }

        // A failed create leaves no trace either.
        let cfSpec = PluginSpec(name: "create-fails", path: try fixture("create_fails"))
        let cf = try loader.load(cfSpec)
        expectLoadError(cfSpec, .createFailed(status: "FAILED_PRECONDITION", message: "cannot reach the VLAN controller at 10.0.0.1"),
                        phrases: []) { try self.instantiate(loader, cf, cfSpec) }

        // The instance created before all of this still works, and another good plugin loads beside it.
        echo(first)
        let oldSpec = PluginSpec(name: "old-minor", path: try fixture("old_minor", flags: ["-DBERTH_ABI_MINOR=0"]))
        echo(try instantiate(loader, try loader.load(oldSpec), oldSpec))
    }
}
