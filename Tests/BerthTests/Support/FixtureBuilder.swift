// Compiles the C fixtures under Tests/Fixtures/ at test time with the system C compiler, once per test process,
// into a private temporary directory. Nothing is skipped when cc is missing: the build fails loudly instead.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct FixtureError: Error, CustomStringConvertible {
    let description: String
}

enum FixtureBuilder {
    /// The package root, found from this file's path (Tests/BerthTests/Support/FixtureBuilder.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()

    static var abiInclude: String { packageRoot + "/PluginABI/include" }
    static var loaderFixtures: String { packageRoot + "/Tests/Fixtures/loader" }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var built: [String: String] = [:]
    nonisolated(unsafe) private static var outDir: String?

    /// Creates a fresh directory `<tmp>/<prefix>-XXXXXX`, mode 0755 whatever the umask.
    static func makeTempDir(_ prefix: String) throws -> String {
        var base = NSTemporaryDirectory()
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw FixtureError(description: "mkdtemp failed: \(String(cString: strerror(errno)))") }
        let dir = String(cString: p)
        chmod(dir, 0o755)
        return dir
    }

    /// A directory private to this test process where compiled fixtures live; removed when the process exits.
    static func buildDir() throws -> String {
        if let outDir { return outDir }
        let dir = try makeTempDir("berth-fixtures")
        outDir = dir
        atexit { if let d = FixtureBuilder.outDir { try? FileManager.default.removeItem(atPath: d) } }
        return dir
    }

    /// Compiles `<dir>/<name>.c` (by default Tests/Fixtures/loader) into a shared object and returns its path.
    /// `flags` are extra compiler arguments (e.g. "-DBERTH_ABI_MINOR=0"); each distinct (source, flags) is compiled
    /// once per process.
    static func plugin(_ name: String, in dir: String = loaderFixtures, flags: [String] = []) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        let key = (["\(dir)/\(name).c"] + flags).joined(separator: " ")
        if let path = built[key] { return path }
        let out = "\(try buildDir())/\(name)-\(built.count).so"
        try compile(["-shared", "-fPIC"] + flags + ["\(dir)/\(name).c", "-o", out])
        // The loader refuses group- or world-writable files: do not depend on the umask of whoever runs the tests.
        chmod(out, 0o755)
        built[key] = out
        return out
    }

    /// Compiles and runs `Tests/Fixtures/loader/abi_constants.c`, which prints NAME=value lines: the ABI numbers
    /// as the C compiler sees them through berth_plugin.h.
    static func abiConstants() throws -> [String: Int] {
        lock.lock()
        defer { lock.unlock() }
        let exe = try buildDir() + "/abi_constants"
        if built["abi_constants"] == nil {
            try compile(["\(loaderFixtures)/abi_constants.c", "-o", exe])
            built["abi_constants"] = exe
        }
        let r = try run(exe, [])
        guard r.status == 0 else { throw FixtureError(description: "\(exe) exited with \(r.status): \(r.stderr)") }
        var values: [String: Int] = [:]
        for line in r.stdout.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let v = Int(parts[1]) { values[String(parts[0])] = v }
        }
        return values
    }

    private static func compile(_ args: [String]) throws {
        let full = ["cc", "-Wall", "-I", abiInclude] + args
        let r = try run("/usr/bin/env", full)
        guard r.status == 0 else {
            throw FixtureError(description: "\(full.joined(separator: " ")) failed (exit \(r.status)):\n\(r.stderr)\(r.stdout)")
        }
    }

    /// Runs a program and collects its output (small outputs only).
    static func run(_ executable: String, _ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

