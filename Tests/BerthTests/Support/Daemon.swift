// Test support: run a real berthd process on a temporary state directory and talk to it over its socket.
import BerthCheck
import BerthWire
import Foundation
import XCTest

enum Paths {
    /// The package root, from this file's location.
    static let root: String = {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { u.deleteLastPathComponent() }
        return u.path
    }()
    static var bin: String { root + "/.build/debug" }
    static func plugin(_ name: String) -> String { "\(bin)/libberth-\(name).so" }
}

/// A fresh directory under the temporary directory, removed when the test run ends.
func tempDir(_ tag: String) -> String {
    let d = NSTemporaryDirectory() + "berth-\(tag)-\(getpid())-\(UInt64.random(in: 0..<UInt64.max))"
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    TempDirs.shared.add(d)
    return d
}

/// Every `tempDir` of the run, removed when the test bundle finishes (a test that fails or throws half way leaves
/// nothing behind in /tmp either).
final class TempDirs: NSObject, XCTestObservation, @unchecked Sendable {
    static let shared: TempDirs = {
        let t = TempDirs()
        XCTestObservationCenter.shared.addTestObserver(t)
        return t
    }()
    private let lock = NSLock()
    private var dirs: [String] = []

    func add(_ d: String) { lock.withLock { dirs.append(d) } }

    func testBundleDidFinish(_ testBundle: Bundle) {
        for d in lock.withLock({ dirs }) { removeTree(d) }
    }
}

/// Removes a directory after unmounting what is mounted inside it, deepest first (storage-local's volumes are
/// loop-mounted filesystems, publish targets bind mounts): nothing mounted is left behind in /tmp.
func removeTree(_ dir: String) {
    for m in MountTable.mountPoints(under: dir) + (MountTable.isMountPoint(dir) ? [dir] : []) { _ = umount2(m, 2 /* MNT_DETACH */) }
    try? FileManager.default.removeItem(atPath: dir)
}

final class Daemon {
    let dir: String
    let siteFile: String
    var process: Process?
    /// Working directory of berthd (default: the test's own).
    var cwd: String?
    /// A command that runs berthd (e.g. ["/usr/bin/prlimit", "--nofile=512:512", "--"]); berthd's path and arguments follow.
    var launcher: [String] = []
    var socket: String { dir + "/berthd.sock" }
    var logFile: String { dir + "/berthd.log" }

    /// Writes a site file with the given plugins (JSON array) and starts berthd on it.
    init(plugins: JSON, tag: String = "daemon", extra: [(String, JSON)] = [], start: Bool = true) throws {
        dir = tempDir(tag)
        siteFile = dir + "/site.json"
        var site: JSON = ["site": "test", "stateDir": .string(dir + "/state"), "api": ["socket": .string(dir + "/berthd.sock"), "link": ""],
                          "store": ["sync": "normal"], "plugins": plugins]
        for (k, v) in extra {
            // "api" keys are merged into the default (so the socket stays where `socket` says); others replace.
            if k == "api", let base = site["api"], let add = v.object {
                site = site.setting("api", add.reduce(base) { $0.setting($1.0, $1.1) })
            } else {
                site = site.setting(k, v)
            }
        }
        try site.pretty.write(toFile: siteFile, atomically: true, encoding: .utf8)
        if start { try self.start() }
    }

    func start() throws {
        let p = Process()
        let argv = launcher + [Paths.bin + "/berthd", "--site", siteFile, "--log-level", "warning"]
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        _ = FileManager.default.createFile(atPath: logFile, contents: nil)
        let logHandle = FileHandle(forWritingAtPath: logFile)!
        logHandle.seekToEndOfFile()
        p.standardOutput = logHandle
        p.standardError = logHandle
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let r = try? UnixHTTPConnection(path: socket, timeoutSeconds: 2).request("GET", "/healthz"), r.status == 200 { return }
            if !p.isRunning { break }
            usleep(50_000)
        }
        throw NSError(domain: "berth", code: 1, userInfo: [NSLocalizedDescriptionKey: "berthd did not start: \(self.log())"])
    }

    func log() -> String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    func kill9() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    func stop() {
        guard let p = process else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    func request(_ method: String, _ path: String, _ body: JSON? = nil) throws -> (Int, JSON) {
        let r = try UnixHTTPConnection(path: socket).request(method, path, body: body?.bytes)
        return (r.status, (try? r.json()) ?? .string(r.text))
    }

    func rawRequest(_ method: String, _ path: String, _ body: [UInt8]) throws -> (Int, JSON) {
        let r = try UnixHTTPConnection(path: socket).request(method, path, body: body)
        return (r.status, (try? r.json()) ?? .string(r.text))
    }

    deinit {
        stop()
        removeTree(dir)
    }
}

/// Polls `probe` until `cond` holds of its answer (up to `timeout` seconds); fails the test with the last answer (or
/// the last error of the probe: a daemon being restarted does not answer for a moment) otherwise.
@discardableResult
func waitFor(_ what: String, timeout: Double = 20, file: StaticString = #filePath, line: UInt = #line,
             _ probe: () throws -> JSON, _ cond: (JSON) -> Bool) throws -> JSON {
    let deadline = Date().addingTimeInterval(timeout)
    var last: JSON = .null
    var lastError: Error?
    while Date() < deadline {
        do {
            last = try probe()
            lastError = nil
            if cond(last) { return last }
        } catch { lastError = error }
        usleep(20_000)
    }
    XCTFail("timed out waiting for \(what); last: \(lastError.map { "error \($0)" } ?? last.serialized)", file: file, line: line)
    throw NSError(domain: "wait", code: 1)
}

/// Runs a command and returns (exit status, stdout, stderr).
@discardableResult
func runTool(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: String? = nil) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if let env { p.environment = env }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let inPipe = Pipe()
    p.standardInput = inPipe
    try p.run()
    if let stdin { inPipe.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? inPipe.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A value shared between test threads, behind a lock.
final class Shared<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func with<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
    var get: T { lock.withLock { value } }
}
