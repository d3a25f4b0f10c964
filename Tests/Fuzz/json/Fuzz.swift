// libFuzzer entry for the JSON scanner (PluginABI/JSONText) through both of its builders: the host's JSON
// (Host/BerthWire/JSON.swift) and the plugin kit's PluginJSON. Oracles beyond "no crash": the two parsers accept
// the same documents (at the kit's nesting limit; a repeated key is refused by the host and kept last by the kit,
// and a \u0000 escape is refused by the host, where names and ids are read, and kept by the kit: both by design), and what either accepts survives serialize -> parse (compact and pretty) unchanged.
import BerthPluginKit
import BerthWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var host: JSON? = nil, hostError = ""
    do { host = try JSON.parse(bytes, maxDepth: 64) } catch { hostError = "\(error)" }
    let kit = try? PluginJSON.parse(bytes)
    if (host == nil) != (kit == nil), !(host == nil && (hostError.contains("duplicate key") || hostError.contains("NUL character"))) {
        fatalError("the host's JSON \(host == nil ? "refuses" : "accepts") a document the kit \(kit == nil ? "refuses" : "accepts"): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
    }
    if let v = host {
        guard let again = try? JSON.parse(v.bytes), again == v else { fatalError("host JSON does not round-trip: \(v.serialized.debugDescription)") }
        guard let pretty = try? JSON.parse(v.pretty), pretty == v else { fatalError("host JSON pretty form does not round-trip: \(v.pretty.debugDescription)") }
    }
    if let v = kit {
        guard let again = try? PluginJSON.parse(v.bytes), again == v else { fatalError("kit JSON does not round-trip: \(v.serialized.debugDescription)") }
    }
    return 0
}
