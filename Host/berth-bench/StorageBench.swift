// Storage benchmark: volume create + publish + unpublish + delete cycles per second through the host (a
// StorageService on a temporary runtime with storage-local: each cycle is 8 store transactions with the plugin's
// calls, two bind mounts (stage + publish) and their unmounts), next to the same operations done directly on the
// filesystem in the same run (mkdir, mount --bind, umount, rmdir: one bind mount). The ratio is the host's
// overhead. Needs root (mount(2)); returns zeros otherwise. berth-bench prints the figures.
import BerthCheck
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthWire
import Logging
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs an async body to completion from a thread outside Swift concurrency (benchmarks, tools).
final class AwaitBox<T>: @unchecked Sendable { var result: Result<T, Error>? }

func blockingAwait<T>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = AwaitBox<T>()
    let sem = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        sem.signal()
    }
    sem.wait()
    return try box.result!.get()
}

/// Cycles per second through the host (`apiPerSec`) and directly on the filesystem (`directPerSec`), same run.
/// `root` is a scratch directory (created if needed, emptied of what the benchmark made afterwards).
/// `sync` is the store's synchronous mode: "full" (berthd's default: every commit reaches the disk) or "normal".
public func benchStorageCycles(root: String, cycles: Int, sync: String = "full") -> (apiPerSec: Double, directPerSec: Double) {
    guard getuid() == 0 else {
        FileHandle.standardError.write(Data("storage benchmark: needs root for bind mounts (mount(2)); skipped\n".utf8))
        return (0, 0)
    }
    let base = root.hasSuffix("/") ? String(root.dropLast()) : root
    let dir = "\(base)/storage-bench-\(getpid())-\(monotonicNanos())"
    defer {
        for m in MountTable.mountPoints() where m.hasPrefix(dir + "/") { _ = umount2(m, 2) }
        try? FileManager.default.removeItem(atPath: dir)
    }
    do {
        try makeDirectories(dir + "/targets", mode: 0o755)
        try makeDirectories(dir + "/direct", mode: 0o755)
        let plugin = SiteConfig.pluginDirectory + "/libberth-storage-local.so"
        guard fileExists(plugin) else {
            FileHandle.standardError.write(Data("storage benchmark: \(plugin) not found (build the plugins, or set BERTH_PLUGIN_DIR)\n".utf8))
            return (0, 0)
        }
        var site = SiteConfig()
        site.site = "bench"
        site.sync = sync
        site.stateDir = dir + "/state"
        site.plugins = [PluginSpec(name: "local", path: plugin,
                                   config: ["root": .string(dir + "/volumes"), "capacityBytes": .number(Double(1 << 40)), "nodes": ["bench-node"],
                                            // plain directories, as the direct baseline makes (a size-limited volume is an ext4 image: mkfs + loop mount)
                                            "enforceSize": false])]
        let rt = try BerthRuntime(site: site)
        rt.logger.logLevel = .error
        defer { rt.shutdown() }
        rt.loadPlugins()
        guard rt.entry("local")?.instance != nil else {
            FileHandle.standardError.write(Data("storage benchmark: storage-local did not load: \(rt.entry("local")?.json.serialized ?? "?")\n".utf8))
            return (0, 0)
        }
        let st = rt.storage

        func apiCycle(_ i: Int) throws {
            let target = "\(dir)/targets/t\(i)"
            try blockingAwait {
                let (v, _) = try await st.createVolume(plugin: "local", request: ["name": .string("bench-\(i)"), "capacityBytes": 1048576])
                let id = v["volumeId"]!.string!
                _ = try await st.publish(plugin: "local", id: id, node: "bench-node", target: target)
                _ = try await st.unpublish(plugin: "local", id: id, target: target, node: nil)
                try await st.deleteVolume(plugin: "local", id: id)
            }
        }
        func directCycle(_ i: Int) throws {
            let vol = "\(dir)/direct/v\(i)", target = "\(dir)/targets/d\(i)"
            guard mkdir(vol, 0o755) == 0, mkdir(target, 0o755) == 0 else { throw BerthError(.internal, "mkdir: \(String(cString: strerror(errno)))") }
            guard mount(vol, target, nil, 4096 /* MS_BIND */, nil) == 0 else { throw BerthError(.internal, "mount --bind: \(String(cString: strerror(errno)))") }
            guard umount2(target, 0) == 0 else { throw BerthError(.internal, "umount: \(String(cString: strerror(errno)))") }
            guard rmdir(target) == 0, rmdir(vol) == 0 else { throw BerthError(.internal, "rmdir: \(String(cString: strerror(errno)))") }
        }
        // Warm up both paths (page cache, statement cache, first mounts). Then interleave them, cycle by cycle, so
        // that both see the same machine: mount and umount latency (RCU grace periods) swings with system load.
        for i in 0..<min(5, cycles) { try apiCycle(-1 - i); try directCycle(-1 - i) }
        let n = max(1, cycles)
        var apiNanos: UInt64 = 0, directNanos: UInt64 = 0
        for i in 0..<n {
            var t0 = monotonicNanos()
            try directCycle(i)
            directNanos += monotonicNanos() - t0
            t0 = monotonicNanos()
            try apiCycle(i)
            apiNanos += monotonicNanos() - t0
        }
        let direct = Double(n) / (Double(directNanos) / 1e9)
        let api = Double(n) / (Double(apiNanos) / 1e9)
        return (api, direct)
    } catch {
        FileHandle.standardError.write(Data("storage benchmark failed: \(error)\n".utf8))
        return (0, 0)
    }
}
