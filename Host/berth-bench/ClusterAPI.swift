// `--only cluster-api`: allocations per second through the API of 3 real berthd sharing one real etcd (ipam-pool with
// per-node blocks, N keep-alive clients per berthd), next to etcd's own single-key Txn rate with as many clients in the
// same run (a ratio), the conflicts per commit from the berthds' /metrics; then one berthd on SQLite, same clients.
import BerthStore
import BerthWire
import Foundation

/// The counters of a berthd's /metrics that the conflict rate is made of.
private struct StoreCounters {
    var commits: Double = 0
    var conflicts: Double = 0
    var operations: Double = 0
    var ranges: Double = 0
    var txns: Double = 0

    static func read(_ d: BenchDaemon) throws -> StoreCounters {
        let r = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics")
        guard r.status == 200 else { throw BenchFailure(description: "GET /metrics: HTTP \(r.status)") }
        var c = StoreCounters()
        for line in r.text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            guard f.count == 2, let v = Double(f[1]) else { continue }
            switch f[0] {
            case "berth_store_commits_total": c.commits = v
            case "berth_store_conflicts_total": c.conflicts = v
            case "berth_store_operations_total": c.operations = v
            case "berth_store_etcd_requests_total{kind=\"range\"}": c.ranges = v
            case "berth_store_etcd_requests_total{kind=\"txn\"}": c.txns = v
            default: break
            }
        }
        return c
    }

    static func - (a: StoreCounters, b: StoreCounters) -> StoreCounters {
        StoreCounters(commits: a.commits - b.commits, conflicts: a.conflicts - b.conflicts, operations: a.operations - b.operations,
                      ranges: a.ranges - b.ranges, txns: a.txns - b.txns)
    }
    static func + (a: StoreCounters, b: StoreCounters) -> StoreCounters {
        StoreCounters(commits: a.commits + b.commits, conflicts: a.conflicts + b.conflicts, operations: a.operations + b.operations,
                      ranges: a.ranges + b.ranges, txns: a.txns + b.txns)
    }
}

/// CPU seconds (user + system, every thread) a process has used so far, from /proc/PID/stat.
private func cpuSeconds(_ pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return 0 }
    let f = text[text.index(after: close)...].split(separator: " ")
    guard f.count > 13, let u = Double(f[11]), let s = Double(f[12]) else { return 0 }  // utime, stime (fields 14, 15)
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Allocations through the API of several berthd at once: `clients` keep-alive connections to each, every client
/// allocating `perClient` attachments for its berthd's node, one ADD per request. An ADD answered ABORTED (it
/// conflicted on every retry of the executor) is sent again, as a client would, and counted.
private func apiAllocations(_ targets: [(daemon: BenchDaemon, node: String)], clients: Int, perClient: Int,
                            prefix: String) throws -> (rate: Double, aborted: Int) {
    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var failed = 0, aborted = 0
        var first: String?
    }
    let tally = Tally()
    let group = DispatchGroup()
    let t0 = monotonicNanos()
    for (t, target) in targets.enumerated() {
        for c in 0..<clients {
            let socket = target.daemon.socket, node = target.node
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: socket)
                var i = 0, resent = 0
                while i < perClient {
                    let req: JSON = ["containerID": .string("\(prefix)-\(t)-\(c)-\(i)"), "ifname": "eth0", "node": .string(node)]
                    let r = try? conn.request("POST", "/v1/networks/net/attachments", body: req.bytes)
                    if r?.status == 200 {
                        i += 1
                    } else if r?.status == 409, r!.text.contains("conflicted"), resent < 10 * perClient {
                        resent += 1
                    } else {
                        tally.lock.withLock {
                            tally.failed += 1
                            if tally.first == nil { tally.first = r.map { "\($0.status) \($0.text.prefix(300))" } ?? "no response" }
                        }
                        i += 1
                    }
                }
                tally.lock.withLock { tally.aborted += resent }
                group.leave()
            }
        }
    }
    group.wait()
    let secs = Double(monotonicNanos() - t0) / 1e9
    if tally.failed > 0 { throw BenchFailure(description: "\(tally.failed) API allocations failed; first: \(tally.first ?? "")") }
    return (Double(targets.count * clients * perClient) / secs, tally.aborted)
}

/// 3 berthd of a fresh site on `etcd` (their own prefix), allocating through the API at once: the rate and the sum of
/// their store counters over the allocations.
private func clusterAllocations(_ etcd: BenchEtcd, plugins: JSON, hosts: Int, clients: Int, perClient: Int,
                                mirror: Bool, transport: String = "grpc", round: Int = 0) throws -> ClusterRun {
    let site = "bench-\(mirror ? "cluster" : "direct")-\(transport)-\(round)"
    let daemons = try (0..<hosts).map { i in
        try BenchDaemon(plugins: plugins, extra: [("store", ["engine": "etcd", "endpoints": [.string(etcd.endpoint)], "mirror": .bool(mirror), "transport": .string(transport)]),
                                                  ("node", .string("bench-\(i)")), ("site", .string(site))])
    }
    defer { for d in daemons { d.stop() } }
    let targets = daemons.enumerated().map { (daemon: $1, node: "bench-\($0)") }
    let before = try daemons.map(StoreCounters.read)
    let cpu0 = (cpuSeconds(etcd.process.processIdentifier), daemons.map { cpuSeconds($0.process.processIdentifier) }.reduce(0, +))
    let r = try apiAllocations(targets, clients: clients, perClient: perClient, prefix: site)
    let cpu1 = (cpuSeconds(etcd.process.processIdentifier), daemons.map { cpuSeconds($0.process.processIdentifier) }.reduce(0, +))
    let after = try daemons.map(StoreCounters.read)
    return ClusterRun(rate: r.rate, aborted: r.aborted, counters: zip(after, before).map { $0 - $1 }.reduce(StoreCounters(), +),
                      etcdCPU: cpu1.0 - cpu0.0, berthdCPU: cpu1.1 - cpu0.1)
}

/// What one measurement of the 3 berthd gave: the rate, the ADDs sent again, their store counters, the CPU seconds.
private struct ClusterRun {
    var rate: Double
    var aborted: Int
    var counters: StoreCounters
    var etcdCPU: Double
    var berthdCPU: Double
}

func clusterAPISection() throws {
    let clients = Int(ProcessInfo.processInfo.environment["BERTH_BENCH_CLIENTS"] ?? "") ?? 16  // per berthd
    let perClient = quick ? 20 : 200
    let hosts = 3
    // Per-node blocks of 256 addresses (a node claims a new block, the only write nodes may race on, every 256 ADDs),
    // counters per node: hosts share no key on the allocation path.
    let plugins: JSON = [["name": "net", "path": .string(binDir + "/libberth-ipam-pool.so"),
                          "config": ["pools": [["name": "bench", "ranges": [["subnet": "10.192.0.0/12"]], "blockSize": 24, "nodeCounters": true]]]]]

    // etcd's own rate with every client of the run at once, half before and half after the berthds' allocations,
    // over gRPC (the engine's transport). On a machine whose neighbours take its CPU now and then, one such pair
    // varies by a fifth: a full run measures several rounds (BERTH_BENCH_ROUNDS, default 3) and reports the round
    // of the median ratio, with every round's figures next to it. --quick: one round.
    let rawTotal = hosts * clients * perClient
    let rounds = quick ? 1 : max(1, Int(ProcessInfo.processInfo.environment["BERTH_BENCH_ROUNDS"] ?? "") ?? 3)
    var trials: [(cluster: ClusterRun, raw: Double, rawCPU: Double)] = []
    for round in 0..<rounds {
        // Each round on a fresh etcd: one that holds the keys of earlier rounds (and expires their berthds' leases)
        // answers raw Txns more slowly, which would flatter the later rounds' ratios.
        let fresh = try BenchEtcd()
        defer { fresh.stop() }
        let pid = fresh.process.processIdentifier
        var cpu = -cpuSeconds(pid)
        let before = try etcdRawTxnRate(fresh, clients: hosts * clients, total: rawTotal / 2)
        cpu += cpuSeconds(pid)
        let run = try clusterAllocations(fresh, plugins: plugins, hosts: hosts, clients: clients, perClient: perClient, mirror: true, round: round)
        cpu -= cpuSeconds(pid)
        let after = try etcdRawTxnRate(fresh, clients: hosts * clients, total: rawTotal / 2)
        cpu += cpuSeconds(pid)
        trials.append((run, 2 / (1 / before + 1 / after), cpu))  // the rate of both halves together (equal counts)
    }
    let median = trials.sorted { $0.cluster.rate / $0.raw < $1.cluster.rate / $1.raw }[trials.count / 2]
    let cluster = median.cluster, raw = median.raw, rawCPU = median.rawCPU
    // The same pair over the JSON gateway (store.transport "gateway"), and the berthds without their local copy: once,
    // on an etcd of their own.
    let etcd = try BenchEtcd()
    defer { etcd.stop() }
    let etcdPid = etcd.process.processIdentifier
    let direct = try clusterAllocations(etcd, plugins: plugins, hosts: hosts, clients: clients, perClient: perClient, mirror: false)
    var gatewayRawCPU = -cpuSeconds(etcdPid)
    let gatewayRaw = try etcdRawTxnRate(etcd, clients: hosts * clients, total: rawTotal / 2, grpc: false)
    gatewayRawCPU += cpuSeconds(etcdPid)
    let gateway = try clusterAllocations(etcd, plugins: plugins, hosts: hosts, clients: clients, perClient: perClient, mirror: true,
                                         transport: "gateway")
    let rawTxns = Double(max(1, rawTotal / 2 / (hosts * clients)) * hosts * clients * 2)
    let delta = cluster.counters
    let all = trials.map(\.cluster.counters).reduce(StoreCounters(), +)

    // One berthd on SQLite (store.sync full, the default), as many clients in all, the same plugin and pool.
    let single = try BenchDaemon(plugins: plugins)
    defer { single.stop() }
    var sqliteCPU = -cpuSeconds(single.process.processIdentifier)
    let sqlite = try apiAllocations([(single, "bench-0")], clients: hosts * clients, perClient: perClient, prefix: "sapi")
    sqliteCPU += cpuSeconds(single.process.processIdentifier)

    let total = hosts * clients
    for (i, t) in trials.enumerated() where rounds > 1 {
        rows.append(BenchRow(section: "cluster-api", name: "allocations/s through the API, 3 berthd on one etcd, round \(i + 1) of \(rounds)",
                             value: t.cluster.rate, unit: "alloc/s", baseline: "etcd's own single-key Txn/s (\(total) clients, the same round)", baselineValue: t.raw))
    }
    rows.append(BenchRow(section: "cluster-api", name: "allocations/s through the API, 3 berthd on one etcd (\(hosts) x \(clients) clients\(rounds > 1 ? ", the median round" : ""))",
                         value: cluster.rate, unit: "alloc/s", baseline: "etcd's own single-key Txn/s (\(total) clients, same run)", baselineValue: raw))
    rows.append(BenchRow(section: "cluster-api", name: "allocations/s through the API, 3 berthd on one etcd, store.transport gateway",
                         value: gateway.rate, unit: "alloc/s", baseline: "etcd's own single-key Txn/s through its JSON gateway (same run)",
                         baselineValue: gatewayRaw))
    rows.append(BenchRow(section: "cluster-api", name: "allocations/s through the API, 3 berthd on one etcd, store.mirror false",
                         value: direct.rate, unit: "alloc/s", baseline: "etcd's own single-key Txn/s (\(total) clients, same run)", baselineValue: raw))
    rows.append(BenchRow(section: "cluster-api", name: "etcd requests (ranges + Txns) per ADD, 3 berthd on one etcd",
                         value: (delta.ranges + delta.txns) / max(delta.operations, 1), unit: "requests",
                         baseline: "the same with store.mirror false", baselineValue: (direct.counters.ranges + direct.counters.txns) / max(direct.counters.operations, 1)))
    rows.append(BenchRow(section: "cluster-api", name: "store conflicts, 3 berthd on one etcd\(rounds > 1 ? ", all rounds" : "") (ratio: per commit; target < 0.01)",
                         value: all.conflicts, unit: "conflicts", baseline: "store commits of the 3 berthd (same run)", baselineValue: all.commits))
    rows.append(BenchRow(section: "cluster-api", name: "ADDs per store commit (group commit), 3 berthd on one etcd",
                         value: delta.commits > 0 ? delta.operations / delta.commits : 0, unit: "ops/commit",
                         baseline: "clients per berthd", baselineValue: Double(clients)))
    rows.append(BenchRow(section: "cluster-api", name: "ADDs answered ABORTED (sent again), 3 berthd on one etcd", value: Double(cluster.aborted),
                         unit: "ADDs", baseline: "ADDs made (same run)", baselineValue: Double(hosts * clients * perClient)))
    // Where the CPU goes (every process shares the machine's cores): etcd's per ADD against its per raw Txn, and the
    // berthds' per ADD against one berthd's on SQLite.
    let adds = Double(hosts * clients * perClient)
    rows.append(BenchRow(section: "cluster-api", name: "etcd CPU per ADD, 3 berthd on one etcd", value: cluster.etcdCPU / adds * 1000, unit: "ms",
                         baseline: "etcd CPU per single-key Txn (raw, same run)", baselineValue: rawCPU / rawTxns * 1000))
    rows.append(BenchRow(section: "cluster-api", name: "etcd CPU per ADD, 3 berthd on one etcd, store.transport gateway", value: gateway.etcdCPU / adds * 1000,
                         unit: "ms", baseline: "etcd CPU per single-key Txn through its JSON gateway (raw, same run)",
                         baselineValue: gatewayRawCPU / (rawTxns / 2) * 1000))
    rows.append(BenchRow(section: "cluster-api", name: "berthd CPU per ADD, 3 berthd on one etcd (all three)", value: cluster.berthdCPU / adds * 1000, unit: "ms",
                         baseline: "berthd CPU per ADD, one berthd on SQLite", baselineValue: sqliteCPU / adds * 1000))
    rows.append(BenchRow(section: "cluster-api", name: "berthd CPU per ADD, 3 berthd on one etcd (all three), store.transport gateway",
                         value: gateway.berthdCPU / adds * 1000, unit: "ms", baseline: "the same over gRPC (same run)",
                         baselineValue: cluster.berthdCPU / adds * 1000))
    rows.append(BenchRow(section: "cluster-api", name: "allocations/s through the API, one berthd on SQLite (\(total) clients, sync=full)",
                         value: sqlite.rate, unit: "alloc/s", baseline: "etcd's own single-key Txn/s (\(total) clients, same run)", baselineValue: raw))
}
