// Network benchmarks: allocations per second through berthd's API (many concurrent clients), berth-cni ADD
// latency, and Debian's host-local ADD on the same machine in the same run; then the same latencies with
// 10,000 addresses in use next to the empty pool.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation

let hostLocal = "/usr/lib/cni/host-local"

/// A berthd process on a temporary site.
final class BenchDaemon {
    let dir: String
    let process: Process
    var socket: String { dir + "/berthd.sock" }

    init(plugins: JSON, sync: String = "full", extra: [(String, JSON)] = []) throws {
        dir = NSTemporaryDirectory() + "berth-bench-d-\(getpid())-\(monotonicNanos())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var site: JSON = ["site": "bench", "stateDir": .string(dir + "/state"), "api": ["socket": .string(dir + "/berthd.sock"), "link": ""],
                          "store": ["sync": .string(sync)], "plugins": plugins]
        for (k, v) in extra { site = site.setting(k, v) }
        try site.serialized.write(toFile: dir + "/site.json", atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: binDir + "/berthd")
        process.arguments = ["--site", dir + "/site.json", "--log-level", "error"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = monotonicNanos() + 20_000_000_000
        while monotonicNanos() < deadline {
            if let r = try? UnixHTTPConnection(path: socket, timeoutSeconds: 2).request("GET", "/healthz"), r.status == 200 { return }
            usleep(20_000)
        }
        throw BenchFailure(description: "berthd did not start in \(dir)")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Runs a command with env and stdin through posix_spawn (no Foundation Process overhead, so the figure is the
/// plugin's own cost, as a runtime exec'ing it would see); returns (status, stdout).
func exec(_ path: String, env: [String: String], stdin: [UInt8]) throws -> (Int32, [UInt8]) {
    var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0]
    guard pipe(&inPipe) == 0, pipe(&outPipe) == 0 else { throw BenchFailure(description: "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    for fd in [inPipe[0], inPipe[1], outPipe[0], outPipe[1]] { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in argv + envp { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
    close(inPipe[0]); close(outPipe[1])
    guard rc == 0 else { close(inPipe[1]); close(outPipe[0]); throw BenchFailure(description: "cannot run \(path): \(String(cString: strerror(rc)))") }
    _ = stdin.withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
    close(inPipe[1])
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(outPipe[0], $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    close(outPipe[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return ((status >> 8) & 0xff, out)
}

/// Mean latency in ms of `n` CNI ADDs by `plugin` with `config`.
func cniAddLatency(_ plugin: String, config: JSON, n: Int, prefix: String, command: String = "ADD") throws -> Double {
    let stdin = config.bytes
    var total: UInt64 = 0
    for i in 0..<n {
        let env = ["CNI_COMMAND": command, "CNI_CONTAINERID": "\(prefix)-\(i)", "CNI_NETNS": "/var/run/netns/bench", "CNI_IFNAME": "eth0",
                   "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin"]
        let t0 = monotonicNanos()
        let (rc, out) = try exec(plugin, env: env, stdin: stdin)
        total += monotonicNanos() - t0
        guard rc == 0 else { throw BenchFailure(description: "\(plugin) \(command) failed (\(rc)): \(String(decoding: out, as: UTF8.self))") }
    }
    return Double(total) / Double(n) / 1e6
}

/// Runs `body(client, connection)` on `clients` threads at once, each with its own keep-alive connection to `d`;
/// returns the seconds until the last one finished.
func onConnections(_ d: BenchDaemon, _ clients: Int, _ body: @escaping @Sendable (Int, UnixHTTPConnection) -> Void) -> Double {
    let group = DispatchGroup()
    let t0 = monotonicNanos()
    for c in 0..<clients {
        group.enter()
        Thread.detachNewThread {
            body(c, UnixHTTPConnection(path: d.socket))
            group.leave()
        }
    }
    group.wait()
    return Double(monotonicNanos() - t0) / 1e9
}

/// Allocations per second through the API from `clients` concurrent keep-alive connections; `batch` > 1 sends
/// that many ADDs per request to /v1/networks/{net}/attachments/batch.
func apiAllocationRate(_ d: BenchDaemon, total: Int, clients: Int, prefix: String, batch: Int = 1) throws -> Double {
    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var failed = 0
        var first: String?
        func fail(_ n: Int, _ why: @autoclosure () -> String) {
            lock.lock()
            failed += n
            if first == nil { first = why() }
            lock.unlock()
        }
    }
    let tally = Tally()
    let per = total / clients
    let secs = onConnections(d, clients) { c, conn in
            var i = 0
            while i < per {
                let n = min(batch, per - i)
                let items = (i..<i + n).map { k -> JSON in ["containerID": .string("\(prefix)-\(c)-\(k)"), "ifname": "eth0", "node": "bench"] }
                i += n
                let r = batch == 1 ? try? conn.request("POST", "/v1/networks/net/attachments", body: items[0].bytes)
                    : try? conn.request("POST", "/v1/networks/net/attachments/batch", body: (["attachments": .array(items)] as JSON).bytes)
                if r?.status == 200, batch > 1, let j = try? JSON.parse(r!.body), j["failed"]?.int != 0 {
                    tally.fail(j["failed"]?.int ?? 1, "batch item failed: \(r!.text.prefix(300))")
                } else if r?.status != 200 {
                    tally.fail(1, r.map { "\($0.status) \($0.text)" } ?? "no response")
                }
            }
    }
    if tally.failed > 0 { throw BenchFailure(description: "\(tally.failed) API allocations failed; first: \(tally.first ?? "")") }
    return Double(per * clients) / secs
}

func networkSection() throws {
    guard FileManager.default.isExecutableFile(atPath: hostLocal) else {
        throw BenchFailure(description: "\(hostLocal) not found: install Debian's containernetworking-plugins")
    }
    let n = quick ? 20 : 200
    let apiTotal = quick ? 2_000 : 20_000, batchTotal = quick ? 4_096 : 40_960
    func daemon(_ sync: String) throws -> BenchDaemon {
        try BenchDaemon(plugins: [["name": "net", "path": .string(binDir + "/libberth-ipam-pool.so"),
                                   "config": ["pools": [["name": "bench", "ranges": [["subnet": "10.192.0.0/12"]]]]]]], sync: sync)
    }
    let hlDir = NSTemporaryDirectory() + "berth-bench-hl-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: hlDir) }
    let hlConf: JSON = ["cniVersion": "1.0.0", "name": "hl", "type": "host-local",
                        "ipam": ["type": "host-local", "dataDir": .string(hlDir), "ranges": [[["subnet": "10.201.0.0/16"]]]]]
    func berthConf(_ d: BenchDaemon) -> JSON {
        ["cniVersion": "1.0.0", "name": "bn", "type": "berth-cni", "ipam": ["type": "berth-cni", "socket": .string(d.socket), "network": "net"]]
    }

    // Start-up alone: CNI VERSION answers without any work (berth-cni does not even contact berthd).
    let hlVersion = try cniAddLatency(hostLocal, config: hlConf, n: n, prefix: "hl-v", command: "VERSION")
    let bcVersion = try cniAddLatency(binDir + "/berth-cni", config: hlConf, n: n, prefix: "bc-v", command: "VERSION")
    rows.append(BenchRow(section: "network", name: "berth-cni start-up (CNI VERSION)", value: bcVersion, unit: "ms",
                         baseline: "host-local VERSION", baselineValue: hlVersion))
    // CNI ADD latency on empty pools: host-local, then berth-cni with the default store.sync (full) and with normal.
    let hlEmpty = try cniAddLatency(hostLocal, config: hlConf, n: n, prefix: "hl-e")
    let hlRate = 1000.0 / hlEmpty
    let d = try daemon("full")
    defer { d.stop() }
    let bcEmpty = try cniAddLatency(binDir + "/berth-cni", config: berthConf(d), n: n, prefix: "bc-e")
    rows.append(BenchRow(section: "network", name: "berth-cni ADD latency, empty pool", value: bcEmpty, unit: "ms",
                         baseline: "host-local ADD latency, empty", baselineValue: hlEmpty))
    let dn = try daemon("normal")
    defer { dn.stop() }
    let bcNormal = try cniAddLatency(binDir + "/berth-cni", config: berthConf(dn), n: n, prefix: "bc-n")
    rows.append(BenchRow(section: "network", name: "berth-cni ADD latency, empty pool, store.sync=normal", value: bcNormal, unit: "ms",
                         baseline: "host-local ADD latency, empty", baselineValue: hlEmpty))

    // Allocation rates through the API (64 concurrent keep-alive clients), one ADD per request and 64 per batch request.
    // store.sync "normal" is WAL without an fsync per commit: it survives kill -9, not power loss (host-local does not
    // fsync either).
    let da = try daemon("full")
    defer { da.stop() }
    // One ADD per request on `d`, the daemon that is filled below, so the figure with 10,000+ in use compares like
    // with like; the batch figures run on a daemon of their own.
    let apiRate = try apiAllocationRate(d, total: apiTotal, clients: 64, prefix: "api")
    rows.append(BenchRow(section: "network", name: "allocations/s through the API (64 clients, sync=full)", value: apiRate, unit: "alloc/s",
                         baseline: "host-local ADD rate", baselineValue: hlRate))
    let apiBatch = try apiAllocationRate(da, total: batchTotal, clients: 64, prefix: "apib", batch: 64)
    rows.append(BenchRow(section: "network", name: "allocations/s through the batch API (64 clients x 64 per request, sync=full)", value: apiBatch,
                         unit: "alloc/s", baseline: "host-local ADD rate", baselineValue: hlRate))
    let apiMax = try apiAllocationRate(da, total: batchTotal, clients: 8, prefix: "apim", batch: NetworkService.maxBatch)
    rows.append(BenchRow(section: "network", name: "allocations/s through the batch API (8 clients x 1024 per request, sync=full)", value: apiMax,
                         unit: "alloc/s", baseline: "host-local ADD rate", baselineValue: hlRate))
    // The ceiling of this design: the store rows one ADD reads and writes, written straight through the Store with no
    // plugin, JSON or HTTP, 1024 per commit. No API figure can pass it; its ratio is the most this store allows.
    let floorRate = try storeFloorRate(total: quick ? 20_000 : 200_000)
    rows.append(BenchRow(section: "network", name: "store floor: the rows of one ADD, nothing else (1024 per commit)", value: floorRate,
                         unit: "alloc/s", baseline: "host-local ADD rate", baselineValue: hlRate))
    let apiNormal = try apiAllocationRate(dn, total: apiTotal, clients: 64, prefix: "apin")
    rows.append(BenchRow(section: "network", name: "allocations/s through the API (64 clients, sync=normal)", value: apiNormal,
                         unit: "alloc/s", baseline: "host-local ADD rate", baselineValue: hlRate))
    let apiBatchNormal = try apiAllocationRate(dn, total: batchTotal, clients: 64, prefix: "apinb", batch: 64)
    rows.append(BenchRow(section: "network", name: "allocations/s through the batch API (64 x 64, sync=normal)", value: apiBatchNormal,
                         unit: "alloc/s", baseline: "host-local ADD rate", baselineValue: hlRate))

    try networkFilledRows(d, hostLocalConfig: hlConf, dataDir: hlDir, berthConfig: berthConf(d), n: n, apiTotal: apiTotal,
                          empty: (hostLocal: hlEmpty, berth: bcEmpty, apiRate: apiRate))
}

/// The network rows with 10,000 addresses in use on `d` (filled through the batch API) and in host-local's data
/// directory (one file per address, as its own ADDs would leave), each next to its figure on empty pools.
func networkFilledRows(_ d: BenchDaemon, hostLocalConfig hlConf: JSON, dataDir hlDir: String, berthConfig: JSON, n: Int,
                       apiTotal: Int, empty: (hostLocal: Double, berth: Double, apiRate: Double)) throws {
    func inUse(_ d: BenchDaemon) throws -> Int {
        (try UnixHTTPConnection(path: d.socket).request("GET", "/v1/networks/net/capacity").json())["active"]?.int ?? 0
    }
    let (hlEmpty, bcEmpty, apiRate) = empty
    // Fill to 10,000 addresses in use, then measure again. host-local keeps one file per address in its data
    // directory: fill it the same way its own ADDs would.
    let fill = 10_000 - (try inUse(d))
    if fill > 0 { _ = try apiAllocationRate(d, total: (fill + 4_095) / 4_096 * 4_096, clients: 64, prefix: "fill", batch: 64) }
    let used = try inUse(d)
    let hlNet = hlDir + "/hl"
    for i in 0..<10_000 {
        let ip = "10.201.\(100 + i / 250).\(1 + i % 250)"
        try "fill-\(i)\r\neth0".write(toFile: "\(hlNet)/\(ip)", atomically: false, encoding: .utf8)
    }
    let hlFull = try cniAddLatency(hostLocal, config: hlConf, n: n, prefix: "hl-f")
    let bcFull = try cniAddLatency(binDir + "/berth-cni", config: berthConfig, n: n, prefix: "bc-f")
    rows.append(BenchRow(section: "network", name: "berth-cni ADD latency, \(used.formatted()) in use", value: bcFull, unit: "ms",
                         baseline: "host-local ADD latency, 10,000 in use", baselineValue: hlFull))
    rows.append(BenchRow(section: "network", name: "berth-cni ADD latency, \(used.formatted()) in use", value: bcFull, unit: "ms",
                         baseline: "berth-cni ADD latency, empty pool", baselineValue: bcEmpty))
    rows.append(BenchRow(section: "network", name: "host-local ADD latency, 10,000 in use", value: hlFull, unit: "ms",
                         baseline: "host-local ADD latency, empty", baselineValue: hlEmpty))
    // Flush what the fills above left dirty (10,000 host-local files, the store floor's database): on ext4 an fsync
    // commits the whole journal, so the dirty data of other files would otherwise be paid for by berthd's fsyncs here.
    sync()
    let apiFull = try apiAllocationRate(d, total: apiTotal, clients: 64, prefix: "api2")
    rows.append(BenchRow(section: "network", name: "allocations/s through the API, \(used.formatted())+ in use", value: apiFull, unit: "alloc/s",
                         baseline: "allocations/s through the API, empty", baselineValue: apiRate))
}

/// ADDs per second when each does only its store work, as the add_batch path does it for ipam-pool: the host's
/// lookup of the attachment, the plugin's reads (attachment, address record at the frontier) and writes
/// (address record, attachment, node index), the host's attachment row and its event. Key and value shapes are
/// ipam-pool's.
func storeFloorRate(total: Int) throws -> Double {
    let dir = NSTemporaryDirectory() + "berth-bench-floor-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let store = try Store(path: dir + "/state.db", synchronous: "normal")
    let result = #"{"ips":[{"address":"10.192.0.2/12","family":4,"pool":"bench","mac":"0a:58:0a:c0:00:02"}],"routes":[]}"#
    let t0 = monotonicNanos()
    func bytes(_ s: String, _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows { try Array(s.utf8).withUnsafeBytes(body) }
    for i in 0..<total {
        if i % 1024 == 0 { try store.begin() }
        let cid = "c-\(i)", ref = "4/" + String(0x0ac0_0002 + i, radix: 16)
        _ = try store.attachmentResult(network: "net", containerID: cid, ifname: "eth0")
        for k in ["att/\(cid)/eth0", "addr/bench/\(ref)"] { try bytes(k) { _ = try store.kvGet("net", $0) } }
        for (k, v) in [("addr/bench/\(ref)", #"{"s":"active","p":"available","cid":"\#(cid)","if":"eth0"}"#),
                       ("att/\(cid)/eth0", result), ("node/bench/\(cid)/eth0", "")] {
            try bytes(k) { kb in try bytes(v) { vb in try store.kvPut("net", kb, vb) } }
        }
        try store.insertAttachment(network: "net", containerID: cid, ifname: "eth0", node: "bench", result: result, created: 1.0)
        _ = try store.appendEvent(type: "network.attached", subject: "net/\(cid)/eth0", data: ["node": "bench", "ips": ["10.192.0.2/12"]])
        if i % 1024 == 1023 || i == total - 1 { try store.commit() }
    }
    return Double(total) / (Double(monotonicNanos() - t0) / 1e9)
}

/// Requests per second of `GET path` from `clients` concurrent keep-alive connections (the HTTP floor).
func apiGetRate(_ d: BenchDaemon, path: String, total: Int, clients: Int) throws -> Double {
    let per = total / clients
    let secs = onConnections(d, clients) { _, conn in for _ in 0..<per { _ = try? conn.request("GET", path) } }
    return Double(per * clients) / secs
}

/// `--only api`: the API allocation rate alone, with sync=full and sync=normal, for profiling the hot path.
func apiSection() throws {
    let total = Int(ProcessInfo.processInfo.environment["BERTH_BENCH_API_TOTAL"] ?? "") ?? (quick ? 2_000 : 20_000)
    let clients = Int(ProcessInfo.processInfo.environment["BERTH_BENCH_CLIENTS"] ?? "") ?? 16
    for sync in ["full", "normal"] {
        let d = try BenchDaemon(plugins: [["name": "net", "path": .string(binDir + "/libberth-ipam-pool.so"),
                                            "config": ["pools": [["name": "bench", "ranges": [["subnet": "10.192.0.0/12"]]]]]]], sync: sync)
        defer { d.stop() }
        let floor = try apiGetRate(d, path: "/healthz", total: total, clients: clients)
        rows.append(BenchRow(section: "api", name: "GET /healthz per second (\(clients) clients)", value: floor, unit: "req/s",
                             baseline: "none (the HTTP floor)", baselineValue: floor))
        let rate = try apiAllocationRate(d, total: total, clients: clients, prefix: "api")
        let batched = try apiAllocationRate(d, total: total, clients: clients, prefix: "apib", batch: 64)
        rows.append(BenchRow(section: "api", name: "allocations/s through the batch API (\(clients) x 64, sync=\(sync))", value: batched, unit: "alloc/s",
                             baseline: "single ADD per request, same daemon", baselineValue: rate))
    }
}

/// `--only ipam`: the executor-side cost of an ADD (ipam-pool in process, no HTTP), batches of 256 per commit.
func ipamSection() throws {
    let total = Int(ProcessInfo.processInfo.environment["BERTH_BENCH_API_TOTAL"] ?? "") ?? (quick ? 2_000 : 50_000)
    let dir = NSTemporaryDirectory() + "berth-bench-ipam-\(getpid())"
    defer { if ProcessInfo.processInfo.environment["BERTH_BENCH_KEEP"] == nil { try? FileManager.default.removeItem(atPath: dir) } }
    let rt = try benchRuntime(dir, plugins: [["name": "net", "path": .string(binDir + "/libberth-ipam-pool.so"),
                                              "config": ["pools": [["name": "bench", "ranges": [["subnet": "10.192.0.0/12"]]]]]]])
    defer { rt.shutdown() }
    let svc = rt.network
    let t0 = monotonicNanos()
    var i = 0
    while i < total {
        let reqs: [JSON] = (i..<min(total, i + 256)).map { ["containerID": .string("c-\($0)"), "ifname": "eth0", "node": "bench"] }
        let res = try rt.executor.runSync { svc.attachBatchInTransaction(network: "net", requests: reqs) }
        if case .failure(let e) = res.first! { throw BenchFailure(description: "ADD failed: \(e)") }
        i += reqs.count
    }
    let rate = Double(total) / (Double(monotonicNanos() - t0) / 1e9)
    rows.append(BenchRow(section: "ipam", name: "ADDs/s in process (ipam-pool, 256 per commit, sync=normal)", value: rate, unit: "alloc/s",
                         baseline: "none (profiling aid)", baselineValue: rate))
}
