// `--only etcd`: the etcd engine of the store against etcd itself, on a real etcd (Debian's etcd-server) started here
// on loopback: key-value transactions per second through the engine and through the executor, next to etcd's own
// rate of single-key Txns over the same transport (gRPC), measured in alternating blocks of the same run (a ratio).
import BerthStore
import BerthWire
import Foundation

/// An etcd process on free loopback ports with a temporary data directory.
final class BenchEtcd {
    let dir: String
    let port: Int
    let process = Process()
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init() throws {
        guard let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchFailure(description: "etcd is not installed (Debian etcd-server, in .ci/apt-packages)")
        }
        dir = NSTemporaryDirectory() + "berth-bench-etcd-\(getpid())-\(monotonicNanos())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        port = freeLoopbackPort()
        let peer = "http://127.0.0.1:\(freeLoopbackPort())"
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["--name", "b", "--data-dir", dir + "/data", "--listen-client-urls", "http://127.0.0.1:\(port)",
                             "--advertise-client-urls", "http://127.0.0.1:\(port)", "--listen-peer-urls", peer,
                             "--initial-advertise-peer-urls", peer, "--initial-cluster", "b=\(peer)", "--logger", "zap", "--log-outputs", dir + "/etcd.log"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: port), timeoutSeconds: 2)
        let deadline = monotonicNanos() + 20_000_000_000
        while monotonicNanos() < deadline {
            if let r = try? conn.request("GET", "/health"), r.status == 200 { return }
            conn.close()
            guard process.isRunning else { break }
            usleep(50_000)
        }
        stop()
        throw BenchFailure(description: "etcd on 127.0.0.1:\(port) did not become healthy within 20 s")
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// etcd's own single-key Txns per second from `clients` concurrent keep-alive connections (each its own key), `total`
/// in all, over gRPC (the engine's default transport) or the JSON gateway.
func etcdRawTxnRate(_ etcd: BenchEtcd, clients: Int, total: Int, grpc: Bool = true) throws -> Double {
    let per = max(1, total / clients)
    final class First: @unchecked Sendable { let lock = NSLock(); var error: Error? }
    let failure = First()
    let group = DispatchGroup()
    let t0 = monotonicNanos()
    for c in 0..<clients {
        group.enter()
        Thread.detachNewThread {
            do {
                let raw = try EtcdRawClient(endpoint: etcd.endpoint, grpc: grpc)
                let key = Array("/raw/\(c)".utf8)
                for i in 0..<per { try raw.put(key, Array(String(i).utf8)) }
            } catch {
                failure.lock.withLock { failure.error = failure.error ?? error }
            }
            group.leave()
        }
    }
    group.wait()
    let secs = Double(monotonicNanos() - t0) / 1e9
    if let e = failure.error { throw e }
    return Double(per * clients) / secs
}

func etcdSection() throws {
    let etcd = try BenchEtcd()
    defer { etcd.stop() }
    let block = quick ? 50 : 250, rounds = 4
    let st = try EtcdStore(EtcdSettings(endpoints: [etcd.endpoint], site: "bench"))
    let ex = Executor(store: st)
    ex.start()
    defer { ex.stop() }
    let raw = try EtcdRawClient(endpoint: etcd.endpoint, grpc: true)
    let key = Array("counter".utf8)
    /// One read-modify-write of a counter key (what a plugin operation does at the least).
    func increment() throws {
        let v = try key.withUnsafeBytes { kb in try st.kvRead("ns", kb) { $0.map { Int(String(decoding: $0, as: UTF8.self)) ?? 0 } } } ?? 0
        try key.withUnsafeBytes { kb in try Array(String(v + 1).utf8).withUnsafeBytes { try st.kvPut("ns", kb, $0) } }
    }
    var engineNs: UInt64 = 0, executorNs: UInt64 = 0, rawNs: UInt64 = 0
    for r in 0..<rounds {
        var t0 = monotonicNanos()
        for _ in 0..<block {
            try st.begin()
            do { try increment(); try st.commit() } catch { st.rollback(); throw error }
        }
        engineNs += monotonicNanos() - t0
        t0 = monotonicNanos()
        for _ in 0..<block { try ex.runSync { try increment() } }
        executorNs += monotonicNanos() - t0
        t0 = monotonicNanos()
        for i in 0..<block { try raw.put(Array("/raw".utf8), Array(String(r * block + i).utf8)) }
        rawNs += monotonicNanos() - t0
    }
    let n = Double(block * rounds)
    func rate(_ ns: UInt64) -> Double { n / (Double(ns) / 1e9) }
    let final = try key.withUnsafeBytes { kb in try st.kvRead("ns", kb) { $0.map { String(decoding: $0, as: UTF8.self) } } }
    guard final == String(2 * block * rounds) else { throw BenchFailure(description: "the counter reads \(final ?? "nothing"), not \(2 * block * rounds)") }
    rows.append(BenchRow(section: "etcd", name: "kv read-modify-write transactions/s through the etcd engine (1 client)", value: rate(engineNs),
                         unit: "txn/s", baseline: "etcd's own single-key Txn/s (same transport, same run)", baselineValue: rate(rawNs)))
    rows.append(BenchRow(section: "etcd", name: "kv read-modify-write operations/s through the executor on etcd (1 client)", value: rate(executorNs),
                         unit: "op/s", baseline: "etcd's own single-key Txn/s (same transport, same run)", baselineValue: rate(rawNs)))
}
