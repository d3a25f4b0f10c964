// hello-swift — the hello plugin written with BerthPluginKit: no raw pointers, errors are thrown.
import BerthPluginKit

final class HelloSwift: BerthPlugin {
    let host: HostServices
    var greeting: String
    var calls = 0

    init(host: HostServices, config: [UInt8]) throws {
        self.host = host
        self.greeting = HelloSwift.greeting(in: config)
        host.log(.info, "hello-swift created with greeting \"\(greeting)\"")
    }

    func reconfigure(config: [UInt8]) throws { greeting = HelloSwift.greeting(in: config) }

    func call(method: String, request: [UInt8]) throws -> [UInt8] {
        calls += 1
        switch method {
        case "echo":
            return request
        case "info":
            return Array("{\"greeting\":\"\(greeting)\",\"calls\":\(calls)}".utf8)
        case "count":
            // Persists a counter in the plugin's key-value namespace: committed only when the call succeeds.
            let n = Int(try host.getString("count") ?? "0") ?? 0
            try host.put("count", String(n + 1))
            return Array("{\"count\":\(n + 1)}".utf8)
        default:
            throw PluginError(.unimplemented, "unknown method \"\(method)\" (hello-swift knows echo, info and count)")
        }
    }

    /// The configuration is schema-validated by the host; this reads its one string field.
    static func greeting(in config: [UInt8]) -> String {
        let key = Array("\"greeting\"".utf8)
        guard config.count > key.count,
              let at = (0...(config.count - key.count)).first(where: { Array(config[$0..<($0 + key.count)]) == key }) else { return "hello" }
        let rest = config[(at + key.count)...].drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: ":") }
        guard rest.first == UInt8(ascii: "\"") else { return "hello" }
        return String(decoding: rest.dropFirst().prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self)
    }
}

@_cdecl("berth_plugin_entry_v1")
public func berthPluginEntry(_ hostMajor: UInt16, _ hostMinor: UInt16) -> UnsafeRawPointer? {
    BerthPluginExport.entry(HelloSwift.self, info: PluginInfo(
        name: "hello-swift", version: "1.0.0",
        description: "The hello plugin in Swift, written with BerthPluginKit",
        configSchema: #"{"type":"object","additionalProperties":false,"properties":{"greeting":{"type":"string","maxLength":120}}}"#),
        hostMajor: hostMajor)
}
