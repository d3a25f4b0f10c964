// Stall benchmarks: the p99 latency of single ADDs from 8 clients through the API while one large request runs (an
// import of the largest pool the API accepts, its deletion, an apply of the largest app), next to the p99 of the same
// ADDs with nothing else running, measured on the same daemon in the same run. `--quick` uses smaller pools and apps.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation

/// ADD latencies in ms from `clients` threads on `d`: `perClient` each, and while `during` (if any) runs on its own
/// thread, until it has returned (and at least `perClient` each). Only ADDs that started while it ran are kept.
private func addLatencies(_ d: BenchDaemon, clients: Int, perClient: Int, prefix: String,
                          during: (@Sendable () throws -> Void)? = nil) throws -> [Double] {
    final class Box: @unchecked Sendable {
        let lock = NSLock()
        var samples: [Double] = []
        var failure: String?
        var running = true
        var busyFrom: UInt64 = 0, busyTo: UInt64 = .max
    }
    let box = Box()
    if let during {
        box.busyFrom = monotonicNanos()
        Thread.detachNewThread {
            do { try during() } catch { box.lock.withLock { box.failure = "\(error)" } }
            box.lock.withLock { box.running = false; box.busyTo = monotonicNanos() }
        }
    } else {
        box.running = false
    }
    _ = onConnections(d, clients) { c, conn in
        var i = 0
        var mine: [(UInt64, Double)] = []
        while i < perClient || box.lock.withLock({ box.running }) {
            let body: JSON = ["containerID": .string("\(prefix)-\(c)-\(i)"), "ifname": "eth0", "node": "bench", "pool": "bench"]
            let t0 = monotonicNanos()
            let r = try? conn.request("POST", "/v1/networks/net/attachments", body: body.bytes)
            let dt = Double(monotonicNanos() - t0) / 1e6
            if r?.status != 200 { box.lock.withLock { box.failure = box.failure ?? (r.map { "\($0.status) \($0.text)" } ?? "no response") } }
            mine.append((t0, dt))
            i += 1
        }
        box.lock.withLock {
            box.samples += mine.filter { during == nil || ($0.0 >= box.busyFrom && $0.0 <= box.busyTo) }.map { $0.1 }
        }
    }
    if let f = box.failure { throw BenchFailure(description: f) }
    return box.samples
}

private func p99(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return 0 }
    let s = xs.sorted()
    return s[min(s.count - 1, Int((Double(s.count) * 0.99).rounded(.up)) - 1)]
}

/// The largest pool the API accepts: the most ranges, "ips" and "reserved" at their limits (65,536 addresses each),
/// and as many MAC bindings as fit in the request body (berthd's default api.maxBodyBytes) with the rest, up to the
/// 65,536 a pool may bind. `scale` < 1 for --quick (the body budget scales too).
func largestPool(scale: Double) -> JSON {
    let ranges = Int(8192 * scale), addrs = Int(65536 * scale), bodyLimit = Int(Double(1 << 20) * scale)
    // ranges - 1 of /29, and one more below (a /14 whose subnet holds the explicit addresses).
    let rs: [JSON] = (0..<ranges - 1).map { i in ["subnet": .string("10.\(64 + i / 256).\(i % 256).0/29")] }
    let last = addrs - 1
    let span = "10.201.0.0-10.201.\(last / 256).\(last % 256)"
    let rest: JSON = ["name": "large", "ranges": .array(rs + [["subnet": "10.200.0.0/14", "end": "10.200.0.10"]]),
                      "ips": [.string(span)], "reserved": [.string(span)]]
    // Compact JSON: ,"macs":{} once, then "10.201.a.b":"52:54:00:00:hh:ll" and a comma per binding.
    var room = bodyLimit - rest.bytes.count - 10
    var ms: [(String, JSON)] = []
    for i in 0..<addrs {
        let ip = "10.201.\(i / 256).\(i % 256)"
        room -= ip.utf8.count + 23
        if room < 0 { break }
        ms.append((ip, .string("52:54:00:00:" + [(i >> 8) & 255, i & 255].map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":"))))
    }
    return rest.setting("macs", .object(ms))
}

/// Waits (polling, off the executor) until `done` says the app's instances are all there / all gone.
private func waitForApp(_ socket: String, _ path: String, _ done: (Int, JSON) -> Bool) throws {
    let conn = UnixHTTPConnection(path: socket, timeoutSeconds: 60)
    let deadline = monotonicNanos() + 600_000_000_000
    while monotonicNanos() < deadline {
        let r = try conn.request("GET", path)
        if done(r.status, (try? r.json()) ?? .null) { return }
        usleep(100_000)
    }
    throw BenchFailure(description: "\(path) did not settle in 600 s")
}

func stallsSection() throws {
    let d = try BenchDaemon(plugins: [["name": "net", "path": .string(binDir + "/libberth-ipam-pool.so"),
                                       "config": ["pools": [["name": "bench", "ranges": [["subnet": "10.16.0.0/12"]]]]]],
                                      ["name": "stateful", "path": .string(binDir + "/libberth-sched-stateful.so")]])
    defer { d.stop() }
    let clients = 8, perClient = quick ? 50 : 250
    let scale = quick ? 0.125 : 1.0
    _ = try addLatencies(d, clients: clients, perClient: 20, prefix: "warm")
    let idle = p99(try addLatencies(d, clients: clients, perClient: perClient, prefix: "idle"))
    let pool = largestPool(scale: scale)
    let body = pool.bytes
    let socket = d.socket
    let importing = try addLatencies(d, clients: clients, perClient: perClient, prefix: "imp") {
        let r = try UnixHTTPConnection(path: socket, timeoutSeconds: 600).request("POST", "/v1/networks/net/pools", body: body)
        guard r.status == 201 else { throw BenchFailure(description: "import: \(r.status) \(r.text.prefix(300))") }
    }
    let ranges = pool["ranges"]?.array?.count ?? 0
    rows.append(BenchRow(section: "stalls", name: "ADD p99, 8 clients, during import of \(ranges.formatted()) ranges + \(Int(65536 * scale).formatted()) ips/reserved + \((pool["macs"]?.object?.count ?? 0).formatted()) MACs (\(body.count / 1024) KiB)",
                         value: p99(importing), unit: "ms", baseline: "ADD p99, 8 clients, nothing else running", baselineValue: idle))
    let deleting = try addLatencies(d, clients: clients, perClient: perClient, prefix: "del") {
        let r = try UnixHTTPConnection(path: socket, timeoutSeconds: 600).request("DELETE", "/v1/networks/net/pools/large")
        guard r.status == 200 else { throw BenchFailure(description: "delete: \(r.status) \(r.text.prefix(300))") }
    }
    rows.append(BenchRow(section: "stalls", name: "ADD p99, 8 clients, during deletion of that pool", value: p99(deleting), unit: "ms",
                         baseline: "ADD p99, 8 clients, nothing else running", baselineValue: idle))

    // The largest app: a StatefulApp of the most replicas an app may have, placed on 100 nodes.
    let conn = UnixHTTPConnection(path: socket)
    for i in 0..<100 {
        let r = try conn.request("PUT", "/v1/nodes/n\(i)", body: (["capacity": ["cpu": 1_000_000, "memory": "1Ti", "disk": "10Ti", "ports": 1000]] as JSON).bytes)
        guard r.status == 200 || r.status == 201 else { throw BenchFailure(description: "node: \(r.status) \(r.text)") }
    }
    let replicas = quick ? 1000 : 10_000
    let app: JSON = ["spec": ["replicas": .number(Double(replicas)), "podManagementPolicy": "Parallel", "resources": ["cpu": "10m", "memory": "1Mi"]]]
    let applying = try addLatencies(d, clients: clients, perClient: perClient, prefix: "app") {
        let r = try UnixHTTPConnection(path: socket, timeoutSeconds: 600).request("PUT", "/v1/kinds/StatefulApp/big", body: app.bytes)
        guard r.status == 200 || r.status == 201 else { throw BenchFailure(description: "apply: \(r.status) \(r.text.prefix(300))") }
        try waitForApp(socket, "/v1/kinds/StatefulApp/big") { _, j in j["status"]?["placed"]?.int == replicas }
    }
    rows.append(BenchRow(section: "stalls", name: "ADD p99, 8 clients, during apply and placement of a StatefulApp of \(replicas.formatted()) replicas",
                         value: p99(applying), unit: "ms", baseline: "ADD p99, 8 clients, nothing else running", baselineValue: idle))
    let removing = try addLatencies(d, clients: clients, perClient: perClient, prefix: "rm") {
        let r = try UnixHTTPConnection(path: socket, timeoutSeconds: 600).request("DELETE", "/v1/kinds/StatefulApp/big")
        guard r.status == 200 else { throw BenchFailure(description: "delete app: \(r.status) \(r.text.prefix(300))") }
        for ord in [0, replicas - 1] { try waitForApp(socket, "/v1/instances/StatefulApp/big/\(ord)") { status, _ in status == 404 } }
    }
    rows.append(BenchRow(section: "stalls", name: "ADD p99, 8 clients, during deletion of that app", value: p99(removing), unit: "ms",
                         baseline: "ADD p99, 8 clients, nothing else running", baselineValue: idle))
}
