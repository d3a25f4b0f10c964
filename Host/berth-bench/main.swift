// berth-bench — every benchmark of the project, one table. Each figure is printed next to a baseline measured
// in the same run, with the ratio. Results are never asserted against absolute times (machines are noisy);
// the command fails only if a benchmark itself errors.
//
//   berth-bench [--quick] [--json FILE] [--only SECTION]
//
// Sections: abi (plugin call cost), network (allocations through the API, berth-cni vs host-local),
// storage (volume lifecycle cycles), startup (daemon start-up time and memory), stalls (ADD p99 during large admin
// requests), etcd (the etcd engine of the store next to etcd's own Txn rate), cluster (ipam-pool ADDs from 3 hosts on one
// etcd next to one host alone, and the conflict rate), cluster-api (allocations through the API of 3 berthd on one etcd
// and of one berthd on SQLite, next to etcd's own single-key Txn rate, and the conflicts per commit).
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthPluginABI
import BerthWire
import Foundation

struct BenchRow {
    let section: String
    let name: String
    let value: Double
    let unit: String
    let baseline: String
    let baselineValue: Double
    /// How the ratio reads: "x slower" for times, "x faster"/"x" for rates.
    var ratio: Double { baselineValue == 0 ? 0 : value / baselineValue }
    var json: JSON {
        ["section": .string(section), "name": .string(name), "value": .number(value), "unit": .string(unit),
         "baseline": .string(baseline), "baselineValue": .number(baselineValue), "ratio": .number(ratio)]
    }
}

struct BenchFailure: Error, CustomStringConvertible { let description: String }

var rows: [BenchRow] = []
var failures: [String] = []
let args = CommandLine.arguments
let quick = args.contains("--quick")
let jsonOut: String? = args.firstIndex(of: "--json").flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil }
let only: String? = args.firstIndex(of: "--only").flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil }
if args.contains("--help") || args.contains("-h") {
    print("""
    usage: berth-bench [--quick] [--json FILE] [--only abi|network|api|ipam|storage|startup|scheduler|isolation|stalls|etcd|runtime|cluster|cluster-api]
      --quick        reduced iteration counts (CI runs this so the benchmarks never rot)
      --json FILE    also write the table as JSON
      --only SECTION run one section
    Plugins and binaries are taken from the directory of this executable (build with: swift build -c release).
    """)
    exit(0)
}

// The benchmarks feed stdin to executables that may exit without reading it (CNI VERSION): a write to their closed
// pipe must fail with EPIPE, not kill the benchmark with SIGPIPE.
signal(SIGPIPE, SIG_IGN)

let binDir: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? args[0]
    return (exe as NSString).deletingLastPathComponent
}()

/// Median of `runs` timings of `body`, each over `iterations`; returns nanoseconds per iteration.
@inline(never)
func measure(runs: Int = 5, iterations: Int, _ body: (Int) throws -> Void) rethrows -> Double {
    var samples: [Double] = []
    for _ in 0..<runs {
        let t0 = monotonicNanos()
        try body(iterations)
        samples.append(Double(monotonicNanos() - t0) / Double(iterations))
    }
    samples.sort()
    return samples[samples.count / 2]
}

func section(_ name: String, _ body: () throws -> Void) {
    guard only == nil || only == name else { return }
    do { try body() } catch {
        failures.append("\(name): \(error)")
        FileHandle.standardError.write(Data("berth-bench: section \(name) failed: \(error)\n".utf8))
    }
}

// MARK: - ABI: cost of one in-process plugin call

/// The baseline: a plain Swift function doing the same work as the plugin's echo (copy the request out).
@inline(never)
func plainEcho(_ req: [UInt8], _ out: inout [UInt8]) {
    out.removeAll(keepingCapacity: true)
    out.append(contentsOf: req)
}

struct PlainNode { var cpu: Int64; var mem: Int64 }

@inline(never)
func plainFilterScore(_ nodes: UnsafeBufferPointer<PlainNode>, _ codes: UnsafeMutablePointer<UInt8>, _ scores: UnsafeMutablePointer<Int64>) {
    for i in 0..<nodes.count {
        let c = nodes[i].cpu
        codes[i] = c >= 0 ? 0 : 2
        scores[i] = c <= 0 ? 100 : c >= 100_000 ? 0 : 100 - c / 1000
    }
}

func abiSection() throws {
    let dir = NSTemporaryDirectory() + "berth-bench-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let loader = Loader(copyDir: dir + "/plugins")
    func instance(_ name: String) throws -> PluginInstance {
        let spec = PluginSpec(name: name, path: "\(binDir)/libberth-\(name).so")
        return try loader.instantiate(try loader.load(spec), spec: spec, executor: nil, log: { _, _ in })
    }
    let c = try instance("hello")
    let sw = try instance("hello-swift")
    let req = Array(#"{"containerID":"4f3c2b1a","ifname":"eth0","node":"node-1"}"#.utf8)
    let n = quick ? 20_000 : 1_000_000
    var out: [UInt8] = []
    let plain = measure(iterations: n) { k in for _ in 0..<k { plainEcho(req, &out) } }
    let viaC = try measure(iterations: n) { k in for _ in 0..<k { _ = try c.call(method: "echo", req) } }
    let viaSwift = try measure(iterations: n) { k in for _ in 0..<k { _ = try sw.call(method: "echo", req) } }
    rows.append(BenchRow(section: "abi", name: "JSON control call round trip (C plugin)", value: viaC, unit: "ns/call",
                         baseline: "plain Swift function call", baselineValue: plain))
    rows.append(BenchRow(section: "abi", name: "JSON control call round trip (Swift kit plugin)", value: viaSwift, unit: "ns/call",
                         baseline: "plain Swift function call", baselineValue: plain))

    let nodes = 5_000
    let batch = NodeBatch(count: nodes) { i in (name: "node-\(i)", zone: UInt32(i % 3), cpu: Int64((i * 7919) % 64_000) - 1000, mem: 1 << 34) }
    var plainNodes = (0..<nodes).map { i in PlainNode(cpu: Int64((i * 7919) % 64_000) - 1000, mem: 1 << 34) }
    var codes = [UInt8](repeating: 0, count: nodes)
    var scores = [Int64](repeating: 0, count: nodes)
    let reps = quick ? 200 : 5_000
    let plainBatch = measure(iterations: reps) { k in
        plainNodes.withUnsafeMutableBufferPointer { nb in
            codes.withUnsafeMutableBufferPointer { cb in
                scores.withUnsafeMutableBufferPointer { sb in
                    for _ in 0..<k { plainFilterScore(UnsafeBufferPointer(nb), cb.baseAddress!, sb.baseAddress!) }
                }
            }
        }
    } / Double(nodes)
    let abiBatch = try measure(iterations: reps) { k in
        try batch.with(kind: "HelloApp", app: "bench", ordinal: 0) { inst, b in
            try codes.withUnsafeMutableBufferPointer { cb in
                try scores.withUnsafeMutableBufferPointer { sb in
                    for _ in 0..<k {
                        try c.filter(inst, b, codes: cb.baseAddress!)
                        try c.score(inst, b, scores: sb.baseAddress!)
                    }
                }
            }
        }
    } / Double(nodes)
    rows.append(BenchRow(section: "abi", name: "typed batch filter+score, 5,000 nodes (C plugin)", value: abiBatch, unit: "ns/node",
                         baseline: "plain Swift loop, same logic", baselineValue: plainBatch))
    c.destroy()
    sw.destroy()
}

section("abi", abiSection)
for extra in extraSections { section(extra.0, extra.1) }

// MARK: - report

func fmt(_ v: Double) -> String {
    if v >= 100 { return String(format: "%.0f", v) }
    if v >= 10 { return String(format: "%.1f", v) }
    if v > 0 && v < 0.1 { return String(format: "%.2g", v) }  // small ratios (conflicts per commit) keep two digits
    return String(format: "%.2f", v)
}
let header = ["section", "benchmark", "value", "unit", "baseline (same run)", "baseline value", "ratio"]
let table = rows.map { [$0.section, $0.name, fmt($0.value), $0.unit, $0.baseline, fmt($0.baselineValue), fmt($0.ratio) + "x"] }
var widths = header.map { $0.count }
for r in table { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
func line(_ r: [String]) -> String { "| " + r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |" }
print(line(header))
print("|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|")
for r in table { print(line(r)) }
if let jsonOut {
    let doc: JSON = ["quick": .bool(quick), "time": .number(wallClock()), "rows": .array(rows.map { $0.json }),
                     "failures": .array(failures.map { .string($0) })]
    try doc.pretty.write(toFile: jsonOut, atomically: true, encoding: .utf8)
    print("wrote \(jsonOut)")
}
if !failures.isEmpty {
    print("\(failures.count) benchmark section(s) failed:")
    for f in failures { print("  - \(f)") }
    exit(1)
}
