// Process isolation: the cost of a call through berth-plugin-runner (a socket-pair round trip, binary frames, the
// synthesized descriptor's trampolines) next to the same call in process, in the same run; then the same for the
// typed batch, and for a network allocation through berthd's API with a key-value round trip or more per call.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation

func isolationSection() throws {
    let dir = NSTemporaryDirectory() + "berth-bench-iso-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let loader = Loader(copyDir: dir + "/plugins")
    let spec = PluginSpec(name: "hello", path: "\(binDir)/libberth-hello.so")
    let local = try loader.instantiate(try loader.load(spec), spec: spec, executor: nil, log: { _, _ in })
    var rspec = spec
    rspec.isolation = "process"
    let remote = try RemotePlugin.instantiate(rspec, loader: loader, executor: nil, callTimeoutMs: 10_000,
                                              runnerPath: binDir + "/berth-plugin-runner", log: { _, _ in })
    defer {
        local.destroy()
        remote.destroy()
    }
    let req = Array(#"{"containerID":"4f3c2b1a","ifname":"eth0","node":"node-1"}"#.utf8)
    guard try remote.call(method: "echo", req) == req else { throw BenchFailure(description: "echo through the runner returned something else") }

    let n = quick ? 5_000 : 200_000
    _ = try measure(runs: 1, iterations: n / 10) { k in for _ in 0..<k { _ = try remote.call(method: "echo", req) } }  // warm-up
    let inProcess = try measure(iterations: n) { k in for _ in 0..<k { _ = try local.call(method: "echo", req) } }
    let viaRunner = try measure(iterations: n) { k in for _ in 0..<k { _ = try remote.call(method: "echo", req) } }
    rows.append(BenchRow(section: "isolation", name: "JSON control call through berth-plugin-runner (target < 30 µs)", value: viaRunner / 1000,
                         unit: "µs/call", baseline: "the same call in process", baselineValue: inProcess / 1000))
    let big = Array("{\"pad\":\"\(String(repeating: "x", count: 64 << 10))\"}".utf8)
    let m = quick ? 500 : 20_000
    let bigLocal = try measure(iterations: m) { k in for _ in 0..<k { _ = try local.call(method: "echo", big) } }
    let bigRunner = try measure(iterations: m) { k in for _ in 0..<k { _ = try remote.call(method: "echo", big) } }
    rows.append(BenchRow(section: "isolation", name: "64 KiB JSON call through berth-plugin-runner", value: bigRunner / 1000, unit: "µs/call",
                         baseline: "the same call in process", baselineValue: bigLocal / 1000))

    let nodes = 5_000
    let batch = NodeBatch(count: nodes) { i in (name: "node-\(i)", zone: UInt32(i % 3), cpu: Int64((i * 7919) % 64_000) - 1000, mem: 1 << 34) }
    var codes = [UInt8](repeating: 0, count: nodes)
    var scores = [Int64](repeating: 0, count: nodes)
    let reps = quick ? 50 : 1_000
    func filterScore(_ inst: PluginInstance) throws -> Double {
        try measure(iterations: reps) { k in
            try batch.with(kind: "HelloApp", app: "bench", ordinal: 0) { i, b in
                try codes.withUnsafeMutableBufferPointer { cb in
                    try scores.withUnsafeMutableBufferPointer { sb in
                        for _ in 0..<k {
                            try inst.filter(i, b, codes: cb.baseAddress!)
                            try inst.score(i, b, scores: sb.baseAddress!)
                        }
                    }
                }
            }
        }
    }
    let batchLocal = try filterScore(local)
    let batchRunner = try filterScore(remote)
    rows.append(BenchRow(section: "isolation", name: "typed batch filter+score, 5,000 nodes, through the runner", value: batchRunner / 1000,
                         unit: "µs/placement", baseline: "the same batch in process", baselineValue: batchLocal / 1000))

    // End to end: sequential allocations through berthd's API, the network plugin in process and isolated.
    let ipam = "\(binDir)/libberth-ipam-pool.so"
    guard (try? loader.load(PluginSpec(name: "probe", path: ipam)))?.kinds.contains(.network) == true else { return }
    func allocations(_ isolation: String) throws -> Double {
        let d = try BenchDaemon(plugins: [["name": "net1", "path": .string(ipam), "isolation": .string(isolation),
                                           "config": ["pools": [["name": "p", "ranges": [["subnet": "10.64.0.0/14"]]]]]]], sync: "normal")
        defer { d.stop() }
        let conn = UnixHTTPConnection(path: d.socket)
        let count = quick ? 200 : 3_000
        var i = 0
        return try measure(runs: 3, iterations: count) { k in
            for _ in 0..<k {
                i += 1
                let body: JSON = ["containerID": .string("c\(i)"), "ifname": "eth0", "node": "n1"]
                let r = try conn.request("POST", "/v1/networks/net1/attachments", body: body.bytes)
                guard r.status == 200 else { throw BenchFailure(description: "allocation failed: \(r.status) \(r.text)") }
            }
        }
    }
    let apiLocal = try allocations("in-process")
    let apiRunner = try allocations("process")
    rows.append(BenchRow(section: "isolation", name: "network ADD through the API, plugin isolated", value: apiRunner / 1000, unit: "µs/op",
                         baseline: "the same, plugin in process", baselineValue: apiLocal / 1000))
}
