// The node agent: time from applying an App of N replicas (busybox httpd under runtime-oci with runc, each in its
// own namespace on the CNI bridge) to all N answering HTTP at the addresses Berth gave them, next to starting the
// same N processes with `runc run -d` directly (no scheduling, no network) in the same run: the ratio is Berth's
// overhead. Needs root, runc, busybox-static and the CNI bridge plugin; says so and skips otherwise.
import BerthStore
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a tool; its output is discarded (a detached container inherits runc's stdio: a pipe would never reach EOF).
private func tool(_ path: String, _ args: [String]) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return 127 }
    p.waitUntilExit()
    return p.terminationStatus
}

private func seconds(since t0: UInt64) -> Double { Double(monotonicNanos() - t0) / 1e9 }

/// berthd with ipam-pool and runtime-oci; apply N replicas; seconds until every instance answers HTTP at its address.
private func applyToServing(_ n: Int, rootfs: String, work: String) throws -> Double {
    let bridge = "bbr\(getpid() % 100000)"
    let d = try BenchDaemon(plugins: [
        ["name": "lan", "path": .string("\(binDir)/libberth-ipam-pool.so"),
         "config": ["defaultPool": "p", "pools": [["name": "p", "ranges": [["subnet": "10.232.7.0/24", "gateway": "10.232.7.1"]]]]]],
        ["name": "oci", "path": .string("\(binDir)/libberth-runtime-oci.so"),
         "config": ["runtime": "runc", "monitor": .string("\(binDir)/berth-runtime-monitor"), "stateDir": .string("\(work)/oci-\(n)"),
                    "cgroupParent": .string("berth-bench-\(getpid())")]],
    ], sync: "normal", extra: [("node", "bench-node"), ("agent", ["tickSeconds": 0.5, "bridge": .string(bridge)])])
    defer {
        d.stop()
        _ = tool("/usr/sbin/ip", ["link", "delete", bridge])
    }
    func call(_ method: String, _ path: String, _ body: JSON? = nil) throws -> JSON {
        let r = try UnixHTTPConnection(path: d.socket).request(method, path, body: body?.bytes)
        guard r.status < 300 else { throw BenchFailure(description: "\(method) \(path): \(r.status) \(r.text)") }
        return try r.json()
    }
    _ = try call("PUT", "/v1/nodes/bench-node", ["capacity": ["cpu": "64", "memory": "64Gi", "disk": "100Gi"]])
    let spec: JSON = ["replicas": .number(Double(n)), "network": ["name": "lan"],
                      "run": ["rootfs": .string(rootfs), "command": "/bin/httpd", "args": ["-f", "-p", "8080", "-h", "/"], "graceSeconds": 1]]
    let t0 = monotonicNanos()
    _ = try call("PUT", "/v1/kinds/App/bench", ["spec": spec])
    var serving = Set<String>()
    while serving.count < n {
        guard seconds(since: t0) < 120 else { throw BenchFailure(description: "runtime: \(serving.count) of \(n) instances serving after 120 s") }
        let xs = try call("GET", "/v1/instances?app=bench")["instances"]?.array ?? []
        for x in xs where x["runtime"]?["phase"] == "running" {
            guard let ip = x["ips"]?[0]?.string, !serving.contains(ip) else { continue }
            if tool("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "1", "http://\(ip):8080/"]) == 0 { serving.insert(ip) }
        }
        if serving.count < n { usleep(20_000) }
    }
    let took = seconds(since: t0)
    _ = try call("DELETE", "/v1/kinds/App/bench")
    let deadline = monotonicNanos() + 60_000_000_000
    while monotonicNanos() < deadline {
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix("berth-bench-") }
        if left.isEmpty, (try call("GET", "/v1/instances?app=bench")["instances"]?.array ?? []).isEmpty { break }
        usleep(100_000)
    }
    return took
}

/// The same N processes with `runc run -d` (a bundle each, default `runc spec` with httpd as the process).
private func runcDirect(_ n: Int, rootfs: String, work: String) throws -> Double {
    let root = "\(work)/runc-\(n)"
    let template = "\(work)/spec"
    try FileManager.default.createDirectory(atPath: template, withIntermediateDirectories: true)
    let made = FileManager.default.fileExists(atPath: "\(template)/config.json") || tool("/usr/sbin/runc", ["spec", "--bundle", template]) == 0
    guard made,
          let text = FileManager.default.contents(atPath: "\(template)/config.json"), let spec = try? JSON.parse(Array(text)) else {
        throw BenchFailure(description: "runtime: runc spec failed")
    }
    let process = (spec["process"] ?? .object([])).setting("terminal", false).setting("args", ["/bin/httpd", "-f", "-p", "8080", "-h", "/"])
    let config = spec.setting("process", process).setting("root", ["path": .string(rootfs), "readonly": false])
    var ids: [String] = []
    for i in 0..<n {
        let b = "\(work)/bundle-\(n)-\(i)"
        try FileManager.default.createDirectory(atPath: b, withIntermediateDirectories: true)
        try config.serialized.write(toFile: "\(b)/config.json", atomically: true, encoding: .utf8)
    }
    defer { for id in ids { _ = tool("/usr/sbin/runc", ["--root", root, "delete", "--force", id]) } }
    let t0 = monotonicNanos()
    for i in 0..<n {
        let id = "bench-direct-\(getpid())-\(n)-\(i)"
        guard tool("/usr/sbin/runc", ["--root", root, "run", "-d", "--bundle", "\(work)/bundle-\(n)-\(i)", id]) == 0 else {
            throw BenchFailure(description: "runtime: runc run -d \(id) failed")
        }
        ids.append(id)
    }
    return seconds(since: t0)
}

func runtimeSection() throws {
    let needs = ["/usr/sbin/runc", "/bin/busybox", "/usr/lib/cni/bridge", "/usr/bin/curl", "\(binDir)/berth-runtime-monitor", "\(binDir)/berth-cni"]
    guard getuid() == 0, needs.allSatisfy({ FileManager.default.isExecutableFile(atPath: $0) }) else {
        print("runtime: skipped (needs root, runc, busybox-static, curl, the CNI bridge plugin and a built berth-cni and berth-runtime-monitor)")
        return
    }
    let work = NSTemporaryDirectory() + "berth-bench-rt-\(getpid())"
    defer {
        try? FileManager.default.removeItem(atPath: work)
        for c in ["", "memory/", "pids/", "cpu/", "cpuacct/", "blkio/", "cpuset/", "devices/", "freezer/", "net_cls/", "perf_event/", "hugetlb/", "unified/", "systemd/"] {
            rmdir("/sys/fs/cgroup/\(c)berth-bench-\(getpid())")
        }
    }
    let rootfs = "\(work)/rootfs"
    for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] { try FileManager.default.createDirectory(atPath: "\(rootfs)/\(dir)", withIntermediateDirectories: true) }
    try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: "\(rootfs)/bin/busybox")
    for a in ["sh", "httpd"] { try FileManager.default.createSymbolicLink(atPath: "\(rootfs)/bin/\(a)", withDestinationPath: "/bin/busybox") }
    for n in quick ? [1, 10] : [1, 50] {
        let direct = try runcDirect(n, rootfs: rootfs, work: work)
        let berth = try applyToServing(n, rootfs: rootfs, work: work)
        rows.append(BenchRow(section: "runtime", name: "berth apply to \(n) instance(s) serving HTTP at their addresses", value: berth * 1000, unit: "ms",
                             baseline: "runc run -d of the same \(n) process(es), no network", baselineValue: direct * 1000))
    }
}
