// `--only cluster`: ipam-pool allocations from 3 simulated hosts at once on one etcd (each its own etcd engine
// connection, executor and plugin instance on the same key prefix and pool, each allocating for its own node), next to
// one host alone on the same etcd in the same run (a ratio), with the conflict rate (conflicts per 1,000 allocations).
import BerthCore
import BerthPlugins
import BerthStore
import BerthWire
import Foundation

/// One simulated berthd: an etcd engine connection, its executor and an ipam-pool instance named "net".
private final class ClusterHost {
    let store: EtcdStore
    let executor: Executor
    let instance: PluginInstance
    let node: String

    init(endpoint: String, site: String, node: String, loader: Loader, config: JSON) throws {
        self.node = node
        store = try EtcdStore(EtcdSettings(endpoints: [endpoint], site: site))
        executor = Executor(store: store)
        executor.start()
        let spec = PluginSpec(name: "net", path: "\(binDir)/libberth-ipam-pool.so", config: config)
        instance = try loader.instantiate(try loader.load(spec), spec: spec, executor: executor, log: { _, _ in })
    }

    /// ADDs that failed ABORTED (conflicts on every retry of the executor) and were sent again, as a client would.
    var aborted = 0

    /// `count` ADDs one after another (one per commit), each for a container of its own on this host's node.
    func allocate(_ count: Int, tag: String) throws {
        let ops = instance.networkOps!
        for i in 0..<count {
            let req: JSON = ["network": "net", "containerID": .string("\(tag)-\(node)-\(i)"), "ifname": "eth0", "node": .string(node)]
            while true {
                do {
                    _ = try executor.runSync { try ops.call(.add, req) }
                    break
                } catch let e as BerthError where e.status == .aborted && aborted < 10 * count {
                    aborted += 1
                }
            }
        }
    }

    /// `count` rounds of churn: release one of this host's containers, attach a new one.
    func churn(_ count: Int, tag: String) throws {
        let ops = instance.networkOps!
        for i in 0..<count {
            let old: JSON = ["network": "net", "containerID": .string("\(tag)-\(node)-\(i)"), "ifname": "eth0", "node": .string(node)]
            let new = old.setting("containerID", .string("\(tag)-\(node)-churn-\(i)"))
            for (op, req) in [(NetworkOps.Op.del, old), (.add, new)] {
                while true {
                    do { _ = try executor.runSync { try ops.call(op, req) }; break } catch let e as BerthError where e.status == .aborted && aborted < 10 * count {
                        aborted += 1
                    }
                }
            }
        }
    }

    func stop() {
        instance.destroy()
        executor.stop()
    }
}

/// Allocations per second and conflicts per allocation of `hosts` hosts allocating `perHost` each, concurrently.
private func clusterRun(_ etcd: BenchEtcd, loader: Loader, hosts: Int, perHost: Int, site: String, churn: Bool = false) throws -> (rate: Double, conflictRate: Double, abortRate: Double) {
    let config: JSON = ["pools": [["name": "bench", "ranges": [["subnet": "10.192.0.0/16"]], "nodeCounters": true]]]
    let nodes = try (0..<hosts).map { try ClusterHost(endpoint: etcd.endpoint, site: site, node: "node-\($0)", loader: loader, config: config) }
    defer { for h in nodes { h.stop() } }
    let errors = NSLock()
    var firstError: Error?
    if churn {  // the steady state measured: every host holds perHost addresses, then releases and attaches
        for h in nodes { try h.allocate(perHost, tag: site) }
        for h in nodes { h.aborted = 0 }
    }
    let conflictsBefore = nodes.reduce(UInt64(0)) { $0 + $1.executor.conflicts }
    let t0 = monotonicNanos()
    DispatchQueue.concurrentPerform(iterations: hosts) { i in
        do { try churn ? nodes[i].churn(perHost, tag: site) : nodes[i].allocate(perHost, tag: site) } catch {
            errors.lock(); firstError = firstError ?? error; errors.unlock()
        }
    }
    let secs = Double(monotonicNanos() - t0) / 1e9
    if let e = firstError { throw BenchFailure(description: "an ADD failed: \(e)") }
    let total = hosts * perHost
    let conflicts = nodes.reduce(UInt64(0)) { $0 + $1.executor.conflicts } - conflictsBefore
    let aborted = nodes.reduce(0) { $0 + $1.aborted }
    return (Double(total) / secs, 1000 * Double(conflicts) / Double(total), 1000 * Double(aborted) / Double(total))
}

func clusterSection() throws {
    let etcd = try BenchEtcd()
    defer { etcd.stop() }
    let dir = NSTemporaryDirectory() + "berth-bench-cluster-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let loader = Loader(copyDir: dir + "/plugins")
    let per = quick ? 100 : 400
    let single = try clusterRun(etcd, loader: loader, hosts: 1, perHost: per * 3, site: "single")
    let three = try clusterRun(etcd, loader: loader, hosts: 3, perHost: per, site: "three")
    let singleChurn = try clusterRun(etcd, loader: loader, hosts: 1, perHost: per * 3, site: "single-churn", churn: true)
    let threeChurn = try clusterRun(etcd, loader: loader, hosts: 3, perHost: per, site: "three-churn", churn: true)
    rows.append(BenchRow(section: "cluster", name: "ipam-pool ADDs/s, 3 hosts on one etcd, one pool (each its own node)", value: three.rate,
                         unit: "alloc/s", baseline: "one host alone, same etcd, same run", baselineValue: single.rate))
    rows.append(BenchRow(section: "cluster", name: "store conflicts per 1,000 ADDs, 3 hosts on one etcd", value: three.conflictRate,
                         unit: "per 1k alloc", baseline: "one host alone (same run)", baselineValue: single.conflictRate))
    rows.append(BenchRow(section: "cluster", name: "ADDs failed ABORTED (after 8 retries; sent again) per 1,000 ADDs, 3 hosts", value: three.abortRate,
                         unit: "per 1k alloc", baseline: "one host alone (same run)", baselineValue: single.abortRate))
    rows.append(BenchRow(section: "cluster", name: "ipam-pool DEL+ADD rounds/s (churn), 3 hosts on one etcd", value: threeChurn.rate,
                         unit: "round/s", baseline: "one host alone, same etcd, same run", baselineValue: singleChurn.rate))
    rows.append(BenchRow(section: "cluster", name: "store conflicts per 1,000 DEL+ADD rounds (churn), 3 hosts", value: threeChurn.conflictRate,
                         unit: "per 1k round", baseline: "one host alone (same run)", baselineValue: singleChurn.conflictRate))
}
