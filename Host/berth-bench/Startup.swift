// Daemon start-up: time to a healthy API and resident memory with every reference plugin loaded, next to
// berthd with no plugins at all, in the same run.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation

func residentKiB(_ pid: Int32) -> Double {
    guard let b = try? readFile("/proc/\(pid)/status") else { return 0 }  // not String(contentsOfFile:): it stops at 4 KiB of a procfs file
    let s = String(decoding: b, as: UTF8.self)
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Double(line.split(separator: " ").dropFirst().first.map(String.init) ?? "0") ?? 0
    }
    return 0
}

/// Starts berthd with `plugins`, returns (ms to first healthy /healthz, RSS KiB once healthy).
func startOnce(plugins: JSON) throws -> (Double, Double) {
    let t0 = monotonicNanos()
    let d = try BenchDaemon(plugins: plugins)
    let ms = Double(monotonicNanos() - t0) / 1e6
    usleep(200_000)
    let rss = residentKiB(d.process.processIdentifier)
    d.stop()
    return (ms, rss)
}

func startupSection() throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: binDir).filter { $0.hasPrefix("libberth-") && $0.hasSuffix(".so") }.sorted()
    let all = JSON.array(files.map { f in
        let name = String(f.dropFirst(9).dropLast(3))
        var p: JSON = ["name": .string(name), "path": .string("\(binDir)/\(f)")]
        if name == "ipam-pool" { p = p.setting("config", ["pools": [["name": "p", "ranges": [["subnet": "10.250.0.0/16"]]]]]) }
        if name == "storage-local" { p = p.setting("config", ["root": .string(NSTemporaryDirectory() + "berth-bench-vol-\(getpid())"), "capacityBytes": 1_073_741_824]) }
        if name == "discovery-dns" {
            let d = NSTemporaryDirectory() + "berth-bench-dns-\(getpid())"
            p = p.setting("config", ["hostsFile": .string(d + "-hosts"), "fileSdFile": .string(d + "-sd.json"), "domain": "bench"])
        }
        return p
    })
    let runs = quick ? 2 : 5
    var bare: [(Double, Double)] = [], full: [(Double, Double)] = []
    for _ in 0..<runs {
        bare.append(try startOnce(plugins: []))
        full.append(try startOnce(plugins: all))
    }
    func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }
    rows.append(BenchRow(section: "startup", name: "berthd start to healthy API, \(files.count) reference plugins", value: median(full.map { $0.0 }),
                         unit: "ms", baseline: "berthd with no plugins", baselineValue: median(bare.map { $0.0 })))
    rows.append(BenchRow(section: "startup", name: "berthd resident memory, \(files.count) reference plugins", value: median(full.map { $0.1 }) / 1024,
                         unit: "MiB", baseline: "berthd with no plugins", baselineValue: median(bare.map { $0.1 }) / 1024))
}
