// A test fixture for BerthPluginKit's runtime glue (ABI 1.3): each operation answers which Swift method ran and the
// request it got, and "state" of id "missing" throws NOT_FOUND. Tests/suites/runtime-oci.sh loads it with rt-harness.
import BerthPluginKit

final class RuntimeEcho: BerthPlugin, RuntimePlugin {
    init(host: HostServices, config: [UInt8]) throws {}

    private func echo(_ op: String, _ request: [UInt8]) -> [UInt8] {
        Array("{\"op\":\"\(op)\",\"request\":".utf8) + (request.isEmpty ? Array("{}".utf8) : request) + Array("}".utf8)
    }

    func start(_ request: [UInt8]) throws -> [UInt8] { echo("start", request) }
    func stop(_ request: [UInt8]) throws -> [UInt8] { echo("stop", request) }
    func state(_ request: [UInt8]) throws -> [UInt8] {
        if String(decoding: request, as: UTF8.self).contains("\"missing\"") {
            throw PluginError(.notFound, "no instance missing on this node")
        }
        return echo("state", request)
    }
    func list(_ request: [UInt8]) throws -> [UInt8] { echo("list", request) }
    func remove(_ request: [UInt8]) throws -> [UInt8] { echo("remove", request) }
    static var executes: Bool { true }
    func exec(_ request: [UInt8]) throws -> [UInt8] { echo("exec", request) }
}

@_cdecl("berth_plugin_entry_v1")
public func berthEntry(_ major: UInt16, _ minor: UInt16) -> UnsafeRawPointer? {
    BerthPluginExport.entry(RuntimeEcho.self, info: PluginInfo(name: "kit-runtime-echo", version: "1.0.0",
                            description: "test fixture: the Swift kit's runtime glue"), hostMajor: major)
}
