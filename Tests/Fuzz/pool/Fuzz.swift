// libFuzzer entry for ipam-pool's pool documents (Plugins/ipam-pool/Pool.swift) and address syntax
// (Address.swift). Oracles: a pool that parses has a canonical document that parses again to the same canonical
// document (the plugin stores the canonical form and re-reads it); every address and CIDR that parses prints
// back to text that parses to the same value.
import BerthPluginKit
@testable import BerthIpamPoolPlugin

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPool(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let doc = try? PluginJSON.parse(bytes) {
        if let spec = try? PoolSpec.parse(doc) {
            let again: PoolSpec
            do { again = try PoolSpec.parse(spec.canonical) } catch {
                fatalError("the canonical form of an accepted pool is refused: \(error) \(spec.canonical.serialized)")
            }
            if again.canonical != spec.canonical { fatalError("canonical form not stable: \(spec.canonical.serialized) -> \(again.canonical.serialized)") }
        }
        return 0
    }
    // Not JSON: each line as an address, a CIDR or a span.
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
        if let ip = IP.parse(line) {
            if IP.parse(ip.description) != ip { fatalError("\(ip) does not parse back (from \(line.debugDescription))") }
            if IP(ref: ip.ref) != ip { fatalError("\(ip) does not survive its ref \(ip.ref)") }
        }
        if let c = CIDR.parse(String(line)) {
            guard let back = CIDR.parse(c.description), back.ip == c.ip, back.prefix == c.prefix else { fatalError("CIDR \(c) does not parse back") }
        }
        if let iv = PoolSpec.parseSpan(String(line)) {
            if iv.lo > iv.hi || iv.lo.v6 != iv.hi.v6 { fatalError("span \(line.debugDescription) parsed to \(iv.description)") }
            _ = iv.count
        }
    }
    return 0
}
