// Test support: a real etcd (Debian's etcd-server, binary `etcd`) started on free loopback ports with a temporary data
// directory, waited for until healthy, and killed by `stop()`.
import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdProcess {
    let dir: String
    let clientPort: Int
    let process = Process()
    var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    /// Starts etcd; throws with a clear message when the binary is missing or it does not become healthy in time.
    init(extraArgs: [String] = []) throws {
        guard let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BerthError(.failedPrecondition, "etcd is not installed (looked for /usr/bin/etcd and /usr/local/bin/etcd): install Debian's etcd-server (it is in .ci/apt-packages)")
        }
        dir = tempDir("etcd")
        clientPort = freeLoopbackPort()
        let peerPort = freeLoopbackPort()
        let peer = "http://127.0.0.1:\(peerPort)"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--name", "t", "--data-dir", dir + "/data",
                             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", "t=\(peer)", "--log-outputs", dir + "/etcd.log", "--logger", "zap"] + extraArgs
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: clientPort), timeoutSeconds: 2)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let r = try? conn.request("GET", "/health"), r.status == 200, r.text.contains("true") { return }
            conn.close()
            guard process.isRunning else { break }
            usleep(100_000)
        }
        let log = (try? String(contentsOfFile: dir + "/etcd.log", encoding: .utf8)) ?? ""
        stop()
        throw BerthError(.unavailable, "etcd on 127.0.0.1:\(clientPort) did not become healthy within 20 s; its log ends:\n\(log.suffix(1500))")
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A 3-member etcd cluster on loopback (members m0, m1, m2), each with its own data directory; `kill(i)` SIGKILLs one,
/// `restart(i)` starts it again on its data directory, `leader()` names the member that leads.
final class EtcdCluster {
    let dir: String
    let clientPorts: [Int]
    private(set) var processes: [Process]
    private let binary: String
    private var arguments: [[String]] = []
    var endpoints: [String] { clientPorts.map { "http://127.0.0.1:\($0)" } }
    var storeURL: String { "etcd://" + clientPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    init(members n: Int = 3) throws {
        guard let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BerthError(.failedPrecondition, "etcd is not installed: install Debian's etcd-server (it is in .ci/apt-packages)")
        }
        self.binary = binary
        dir = tempDir("etcd-cluster")
        clientPorts = (0..<n).map { _ in freeLoopbackPort() }
        let peers = (0..<n).map { _ in "http://127.0.0.1:\(freeLoopbackPort())" }
        let initial = (0..<n).map { "m\($0)=\(peers[$0])" }.joined(separator: ",")
        processes = []
        for i in 0..<n {
            let client = "http://127.0.0.1:\(clientPorts[i])"
            arguments.append(["--name", "m\(i)", "--data-dir", "\(dir)/m\(i)", "--listen-client-urls", client, "--advertise-client-urls", client,
                              "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i], "--initial-cluster", initial,
                              "--initial-cluster-state", "new", "--initial-cluster-token", "berth-test",
                              "--log-outputs", "\(dir)/m\(i).log", "--logger", "zap"])
            processes.append(try launch(arguments[i]))
        }
        let healthy = waitHealthy(Array(0..<n), seconds: 30)
        guard healthy.count == n else {
            stop()
            throw BerthError(.unavailable, "the \(n)-member etcd cluster did not become healthy within 30 s (members healthy: \(healthy.sorted()))")
        }
    }

    private func launch(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// The members of `members` that answer /health within `seconds`.
    private func waitHealthy(_ members: [Int], seconds: Double) -> Set<Int> {
        let deadline = Date().addingTimeInterval(seconds)
        var healthy = Set<Int>()
        while Date() < deadline && healthy.count < members.count {
            for i in members where !healthy.contains(i) {
                let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: clientPorts[i]), timeoutSeconds: 2)
                if let r = try? conn.request("GET", "/health"), r.status == 200, r.text.contains("true") { healthy.insert(i) }
                conn.close()
            }
            if healthy.count < members.count { usleep(100_000) }
        }
        return healthy
    }

    /// Starts member `i` again (after `kill(i)`) on its data directory, rejoining as an existing member; throws when it
    /// is not healthy within 20 s.
    func restart(_ i: Int) throws {
        guard !processes[i].isRunning else { return }
        var args = arguments[i]
        if let k = args.firstIndex(of: "--initial-cluster-state") { args[k + 1] = "existing" }
        processes[i] = try launch(args)
        guard waitHealthy([i], seconds: 20).count == 1 else {
            let log = (try? String(contentsOfFile: "\(dir)/m\(i).log", encoding: .utf8)) ?? ""
            throw BerthError(.unavailable, "etcd member m\(i) did not become healthy within 20 s of its restart; its log ends:\n\(log.suffix(1500))")
        }
    }

    /// The index of the member that leads the cluster now (asked of the members that run), nil when none answers.
    func leader() -> Int? {
        var ids: [String: Int] = [:]
        var leaderID: String?
        for i in processes.indices where processes[i].isRunning {
            let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: clientPorts[i]), timeoutSeconds: 2)
            defer { conn.close() }
            guard let r = try? conn.request("POST", "/v3/maintenance/status", body: Array("{}".utf8)), r.status == 200, let j = try? r.json() else { continue }
            if let id = j["header"]?["member_id"]?.string { ids[id] = i }
            if let l = j["leader"]?.string { leaderID = l }
        }
        return leaderID.flatMap { ids[$0] }
    }

    func kill(_ i: Int) {
        guard processes[i].isRunning else { return }
        Glibc.kill(processes[i].processIdentifier, SIGKILL)
        processes[i].waitUntilExit()
    }

    func stop() { for i in processes.indices { kill(i) } }
}

/// A test class with one real etcd for all its cases: started before the first case, killed after the last; each case
/// fails with etcd's start error when it could not start.
class EtcdTestCase: XCTestCase {
    nonisolated(unsafe) static var etcd: EtcdProcess?
    nonisolated(unsafe) static var startError: Error?
    override class func setUp() {
        super.setUp()
        do { etcd = try EtcdProcess(); startError = nil } catch { etcd = nil; startError = error }
    }
    override class func tearDown() {
        etcd?.stop()
        etcd = nil
        super.tearDown()
    }
    override func setUpWithError() throws {
        try super.setUpWithError()
        if let e = Self.startError { throw e }
    }
}

/// Starts an EtcdWatch with `settings` and checks that an event appended through `store` wakes it (TLS, auth: the
/// watch makes its connections like the store's), then that `stop()` returns promptly; fails the test otherwise.
func assertAWatchWakes(_ settings: EtcdSettings, onEventFrom store: EtcdStore, file: StaticString = #filePath, line: UInt = #line) throws {
    let woke = Shared(0)
    let watch = EtcdWatch(settings) { woke.with { $0 += 1 } }
    watch.start()
    let deadline = Date().addingTimeInterval(8)
    while !watch.isWatching && Date() < deadline { usleep(20_000) }
    XCTAssertTrue(watch.isWatching, watch.lastFailure ?? "not watching", file: file, line: line)
    XCTAssertEqual(watch.transport, settings.grpc ? "grpc" : "json", watch.lastFailure ?? "", file: file, line: line)
    let before = woke.with { $0 }
    _ = try store.appendEvent(type: "test.watch", subject: "x")
    while woke.with({ $0 }) == before && Date() < deadline { usleep(20_000) }
    XCTAssertGreaterThan(woke.with { $0 }, before, "an event woke the watch", file: file, line: line)
    let t0 = Date()
    watch.stop()
    XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "stop() ends a blocked read", file: file, line: line)
}
