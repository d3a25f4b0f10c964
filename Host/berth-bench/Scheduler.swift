// Scheduler benchmark: 10,000 placements on 5,000 nodes in 10 zones, driven in-process through the workload
// service (no HTTP) with the real store transactions (each placement: its instance row and its event, plus the
// plugin's key-value writes for StatefulApp), in the same run:
//   - the built-in App kind (core pipeline only), against the floor of writing the same records without scheduling;
//   - StatefulApp through the C plugin sched-stateful (typed batch filter + score, JSON reserve + bind), against App;
//   - App with network wiring on (an ipam-pool ADD per instance), against App without it.
// Network wiring is off in the first two rows (said in their names); volumes are not part of the benchmark.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation
import Logging

func benchRuntime(_ dir: String, plugins: JSON, settings: CoordinatorSettings = CoordinatorSettings()) throws -> BerthRuntime {
    let site: JSON = ["site": "bench", "stateDir": .string(dir + "/state"), "api": ["socket": .string(dir + "/berthd.sock"), "link": ""],
                      "store": ["sync": "normal"], "plugins": plugins]
    var quiet = Logger(label: "bench")
    quiet.logLevel = .error
    let rt = try BerthRuntime(site: try SiteConfig.parse(site.bytes, baseDir: dir), logger: quiet, settings: settings)
    rt.loadPlugins()
    for e in rt.plugins where e.instance == nil { throw BenchFailure(description: "plugin \(e.spec.name) did not load: \(e.json.serialized)") }
    return rt
}

private func addNodes(_ w: WorkloadService, _ n: Int) throws {
    for i in 0..<n {
        try w.putNodeSync(String(format: "node-%05d", i), ["capacity": ["cpu": 32000, "memory": "128Gi", "disk": "1Ti", "ports": 1000],
                                                          "labels": ["zone": .string("z\(i % 10)"), "rack": .string("r\(i % 100)")]])
    }
}

/// Creates `apps` objects of `replicas` each (pending instances; not timed), then times the passes that place them.
private func placeAll(_ w: WorkloadService, kind: String, apps: Int, replicas: Int, spec: JSON) throws -> Double {
    for a in 0..<apps {
        try w.putObjectSync(kind: kind, name: "\(kind.lowercased())-\(a)", body: ["spec": spec.setting("replicas", .number(Double(replicas)))])
    }
    let t0 = monotonicNanos()
    let placed = try w.scheduleUntilIdle(budget: 512)
    let dt = Double(monotonicNanos() - t0) / 1e9
    guard placed == apps * replicas else { throw BenchFailure(description: "\(kind): placed \(placed) of \(apps * replicas)") }
    return Double(placed) / dt
}

/// The floor: the same records (instance row + event per placement, 512 per transaction) without scheduling, written
/// through the store's instances table as a placement writes them.
private func storeFloor(_ dir: String, _ n: Int) throws -> Double {
    let store = try Store(path: dir + "/floor.db", synchronous: "normal")
    let ex = Executor(store: store)
    ex.start()
    defer { ex.stop() }
    let t0 = monotonicNanos()
    var i = 0
    while i < n {
        let lo = i, hi = min(n, i + 512)
        try ex.runSync {
            for k in lo..<hi {
                let now = wallClock()
                try store.saveInstance(InstanceRecord(kind: "App", app: "app-\(k / 100)", ordinal: Int64(k % 100), state: "placed",
                                                      node: "node-\(k % 5000)", prevNode: "", volumeNode: "", incarnation: 1,
                                                      containerID: "app-\(k / 100)-\(k % 100)-1", network: "", addresses: "[]", volumes: "[]",
                                                      cpu: 250, memory: 536_870_912, disk: 0, ports: "[]", reason: "", final: false,
                                                      created: now, updated: now))
                try store.appendEvent(type: "instance.placed", subject: "App/app-\(k / 100)/\(k % 100)",
                                      data: ["kind": "App", "app": .string("app-\(k / 100)"), "ordinal": .number(Double(k % 100)),
                                             "node": .string("node-\(k % 5000)"), "state": "placed", "ips": []])
            }
        }
        i = hi
    }
    return Double(n) / (Double(monotonicNanos() - t0) / 1e9)
}

func schedulerSection() throws {
    let nodes = 5_000
    let total = quick ? 2_000 : 10_000
    let apps = total / 100
    let dir = NSTemporaryDirectory() + "berth-bench-sched-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }

    let floor = try storeFloor(dir, total)

    // App and StatefulApp in one runtime, on the same 5,000 nodes, network wiring off.
    var noWiring = CoordinatorSettings()
    noWiring.scheduler.wireNetworks = false
    let rt = try benchRuntime(dir + "/a", plugins: [["name": "stateful", "path": .string("\(binDir)/libberth-sched-stateful.so")]], settings: noWiring)
    let w = rt.workloads
    try addNodes(w, nodes)
    let resources: JSON = ["cpu": 250, "memory": "512Mi"]
    let app = try placeAll(w, kind: "App", apps: apps, replicas: 100, spec: ["resources": resources])
    let stateful = try placeAll(w, kind: "StatefulApp", apps: apps, replicas: 100,
                                spec: ["resources": resources, "podManagementPolicy": "Parallel"])
    rows.append(BenchRow(section: "scheduler", name: "App: \(total.formatted()) placements on 5,000 nodes (core only, network wiring off)",
                         value: app, unit: "placements/s", baseline: "the same records written without scheduling", baselineValue: floor))
    rows.append(BenchRow(section: "scheduler", name: "StatefulApp via C plugin sched-stateful, \(total.formatted()) on 5,000 nodes (network wiring off)",
                         value: stateful, unit: "placements/s", baseline: "App (core only), same run", baselineValue: app))
    rt.shutdown()

    // App with network wiring: an ipam-pool ADD (with the instance's identity) per placement.
    let pool: JSON = ["defaultPool": "bench", "pools": [["name": "bench", "ranges": [["subnet": "10.64.0.0/16"]]]]]
    let rt2 = try benchRuntime(dir + "/b", plugins: [["name": "net", "path": .string("\(binDir)/libberth-ipam-pool.so"), "config": pool]])
    let w2 = rt2.workloads
    try addNodes(w2, nodes)
    let wired = try placeAll(w2, kind: "App", apps: apps, replicas: 100,
                             spec: ["resources": resources, "network": ["name": "net", "releasePolicy": "onDelete"]])
    rows.append(BenchRow(section: "scheduler", name: "App with network wiring: ipam-pool ADD per placement, \(total.formatted()) on 5,000 nodes",
                         value: wired, unit: "placements/s", baseline: "App (core only), same run", baselineValue: app))
    rt2.shutdown()
}
