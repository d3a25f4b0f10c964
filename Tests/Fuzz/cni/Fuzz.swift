// libFuzzer entry for CNI invocations as berth-cni forwards them (Host/berth-cni builds the request from the
// environment and stdin; Host/BerthKinds/Network/CNI.swift decodes it and drives a real network: ipam-pool loaded in
// process on a temporary state directory). Input: lines CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_ARGS, then
// the network configuration. Oracle beyond "no crash": the answer keeps the CNI contract (exit 0 prints a result
// with cniVersion or nothing; any other exit code prints an error object whose "code" is that exit code).
import BerthWire
import Dispatch
import Foundation
@testable import BerthCore
@testable import BerthPlugins
@testable import BerthKinds

final class Box<T>: @unchecked Sendable { var value: T?; init() {} }

let service: NetworkService = {
    let plugins = ProcessInfo.processInfo.environment["BERTH_FUZZ_PLUGIN_DIR"] ?? ".build/debug"
    let dir = NSTemporaryDirectory() + "berth-fuzz-cni-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    let site: JSON = ["site": "fuzz", "stateDir": .string(dir), "store": ["sync": "normal"],
                      "plugins": [["name": "default", "path": .string(plugins + "/libberth-ipam-pool.so"),
                                   "config": ["defaultPool": "p", "pools": [["name": "p", "ranges": [["subnet": "10.99.0.0/16"], ["subnet": "fd99::/64"]]]]]]]]
    let rt = try! BerthRuntime(site: try! SiteConfig.parse(site.bytes, baseDir: dir))
    rt.loadPlugins()
    guard rt.entry("default")?.instance != nil else { fatalError("ipam-pool did not load from \(plugins): \(rt.entry("default")?.stateName ?? "-")") }
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "berth-fuzz-cni-\(getpid())") }
    return rt.network
}()

func run(_ req: JSON) -> (Int, JSON?) {
    let sem = DispatchSemaphore(value: 0)
    let box = Box<(Int, JSON?)>()
    let svc = service
    Task { box.value = await CNI.handle(req, network: svc); sem.signal() }
    sem.wait()
    return box.value!
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCNI(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var fields: [String] = []
    var rest = bytes[...]
    for _ in 0..<4 {
        guard let nl = rest.firstIndex(of: 10) else { break }
        fields.append(String(decoding: rest[..<nl], as: UTF8.self))
        rest = rest[(nl + 1)...]
    }
    while fields.count < 4 { fields.append("") }
    let input = Array(rest)
    // As berth-cni does it.
    let config = (try? JSON.parse(input)) ?? .null
    let request: JSON = ["command": .string(fields[0]), "containerID": .string(fields[1]), "netns": "/var/run/netns/fuzz",
                         "ifname": .string(fields[2].isEmpty ? "eth0" : fields[2]), "args": .string(fields[3]), "config": config]
    let (code, out) = run(request)
    if code == 0 {
        if let out, out["cniVersion"]?.string == nil { fatalError("exit 0 with a result lacking cniVersion: \(out.serialized)") }
    } else {
        guard let out, out["code"]?.int == code, out["msg"]?.string != nil else {
            fatalError("exit \(code) without a CNI error object of that code: \(out?.serialized ?? "nothing")")
        }
    }
    return 0
}
