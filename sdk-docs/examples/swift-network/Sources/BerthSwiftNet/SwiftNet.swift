// swiftnet — the C example network plugin (../../c-network/netplug.c) in Swift, written with BerthPluginKit.
//
// It hands out IPv4 addresses from one configured subnet, with CNI semantics:
//   add      idempotent per (containerID, ifname); honours one requested address ("ips")
//   del      always OK, also for unknown or half-finished attachments
//   check    NOT_FOUND when the reservation is missing
//   gc       releases every attachment not in "valid"
//   status   RESOURCE_EXHAUSTED when no address is left
//   capacity (optional) free / reserved / active counts
//
// It does NOT implement identities or release policies (`identity` in add, `identity.release`): a request's
// "identity" is ignored, which is why `berth plugin check` reports "network: release policies" as skipped.
// Plugins/ipam-pool shows how a plugin supports them (sdk-docs/kinds/network.md, "Identities").
//
// ALL state lives in the host's key-value namespace, with the same key layout as the C and Rust examples (so a
// site can switch an instance between the three builds and keep its attachments):
//
//   cfg/subnet        the subnet this namespace was initialised for ("10.77.0.0/24")
//   next              decimal host offset of the next never-used address (starts at 1)
//   active            decimal count of addresses in use
//   free/<hex addr>   released addresses below `next`, found in O(log n) with kv_next
//   ip/<hex addr>     owner of an address: "<ifname>/<containerID>"
//   att/<ifname>/<containerID>   the attachment's address, 8 hex digits
//
// The instance only holds its parsed configuration (all `let`s), so it declares itself concurrent. Each
// operation runs inside a host transaction: when a function throws, every kv write it made is rolled back, so
// it can simply throw half-way through. The kit turns a thrown `PluginError` into its status and message, and
// any other error into INTERNAL.
//
// Build:  cd sdk-docs/examples/swift-network && swift build      (→ .build/debug/libberth-swiftnet.so)
// Check:  .build/debug/berth plugin check sdk-docs/examples/swift-network/.build/debug/libberth-swiftnet.so \
//           --config sdk-docs/examples/c-network/config.json
import BerthPluginKit

final class SwiftNet: NetworkPlugin {
    let host: HostServices
    let net: UInt32       // network address
    let prefix: UInt32    // prefix length
    let size: UInt32      // 2^(32-prefix)
    let gw: UInt32        // gateway address
    let subnet: String    // canonical text forms
    let gateway: String

    /// Addresses a subnet offers: all but the network and broadcast addresses and the gateway.
    var usable: UInt32 { size - 3 }

    // MARK: create

    /// create(): the host validated `config` against `configSchema` below; this checks what a schema cannot
    /// express. It runs inside a transaction, so it may read and initialise the namespace.
    init(host: HostServices, config: [UInt8]) throws {
        self.host = host
        guard let cfg = try? PluginJSON.parse(config), let text = cfg["subnet"]?.string, let slash = text.firstIndex(of: "/") else {
            throw PluginError(.invalidArgument, #"subnet is required, e.g. "10.77.0.0/24""#)
        }
        let addrText = String(text[..<slash]), prefixText = String(text[text.index(after: slash)...])
        guard let net = parseIPv4(addrText), let prefix = UInt32(prefixText), (8...30).contains(prefix) else {
            throw PluginError(.invalidArgument, "subnet \"\(text)\": expected an IPv4 subnet from /8 to /30")
        }
        let size: UInt32 = 1 << (32 - prefix)
        if net & (size - 1) != 0 {
            throw PluginError(.invalidArgument, "subnet \"\(text)\" has host bits set; did you mean \"\(formatIPv4(net & ~(size - 1)))/\(prefix)\"?")
        }
        self.net = net
        self.prefix = prefix
        self.size = size
        self.subnet = "\(formatIPv4(net))/\(prefix)"
        var gw = net + 1
        if let g = cfg["gateway"] {
            let gtext = g.string ?? g.serialized
            guard let a = parseIPv4(gtext), a & ~(size - 1) == net, a != net, a != net + (size - 1) else {
                throw PluginError(.invalidArgument, "gateway \"\(gtext)\" is not a host address of \(subnet)")
            }
            gw = a
        }
        self.gw = gw
        self.gateway = formatIPv4(gw)

        // Initialise the namespace, or refuse a changed subnet while addresses of the old one are still in use.
        let old = try host.getString("cfg/subnet")
        if let old, old != subnet {
            let active = try counter("active", default: 0)
            if active > 0 {
                throw PluginError(.failedPrecondition,
                                  "this instance's state holds \(active) addresses of subnet \(old), not \(subnet): release them first "
                                  + "(berth attachments gc) or give the new subnet a new instance name")
            }
            while let e = try host.next(prefix: "free/") { try host.delete(e.key) } // forget the old free index
            try host.delete("next")
            try host.put("cfg/subnet", subnet)
        } else if old == nil {
            try host.put("cfg/subnet", subnet)
        }
        host.log(.info, "swiftnet serving \(subnet) (\(usable) addresses, gateway \(gateway))")
    }

    // MARK: operations

    func add(_ request: [UInt8]) throws -> [UInt8] {
        let req = try parseRequest(request)
        let k = try AttKey(req)

        // Idempotent: the same key returns the same result.
        if let hex = try host.getString("att/\(k.owner)") {
            return result(UInt32(hex, radix: 16) ?? 0)
        }

        var addr: UInt32? = nil
        if let ips = req["ips"]?.array {
            // A requested address: must be usable, and free.
            for (i, e) in ips.enumerated() {
                if i > 0 { throw PluginError(.invalidArgument, "ips: swiftnet allocates one address per attachment; request at most one") }
                var text = e.string ?? ""
                if let slash = text.firstIndex(of: "/") { text = String(text[..<slash]) } // "10.77.0.9/24" is accepted too
                guard let a = parseIPv4(text) else {
                    throw PluginError(.invalidArgument, #"ips[0]: expected an IPv4 address such as "10.77.0.9""#)
                }
                addr = a
            }
            if let a = addr {
                let off = a &- net
                if a & ~(size - 1) != net || off == 0 || off == size - 1 || a == gw {
                    throw PluginError(.invalidArgument, "requested address \(formatIPv4(a)) is not an allocatable address of \(subnet)"
                                      + (a == gw ? " (it is the gateway)" : ""))
                }
                if let owner = try host.getString("ip/\(hex(a))") {
                    throw PluginError(.alreadyExists, "requested address \(formatIPv4(a)) is in use by \(owner)")
                }
                try host.delete("free/\(hex(a))")
            }
        }

        if addr == nil {
            if let e = try host.next(prefix: "free/") {
                // 1. the smallest released address: one O(log n) kv_next over the free index
                addr = UInt32(e.key.dropFirst("free/".count), radix: 16)
                try host.delete(e.key)
            } else {
                // 2. else the next never-used offset, skipping the gateway and requested addresses
                var off = try counter("next", default: 1)
                while off <= size - 2 {
                    if net + off != gw, try host.get("ip/\(hex(net + off))") == nil { break }
                    off += 1
                }
                if off > size - 2 {
                    let active = try counter("active", default: 0)
                    throw PluginError(.resourceExhausted, "no free address in \(subnet) (\(active) of \(usable) in use); "
                                      + "release some (del, gc) or use a larger subnet")
                }
                addr = net + off
                try host.put("next", String(off + 1))
            }
        }

        let a = addr!
        try host.put("ip/\(hex(a))", k.owner)
        try host.put("att/\(k.owner)", hex(a))
        try host.put("active", String(try counter("active", default: 0) + 1))
        emit("address.allocated", a, k) // committed with this operation, or not at all
        return result(a)
    }

    func del(_ request: [UInt8]) throws -> [UInt8] {
        try release(AttKey(parseRequest(request)))
        return []
    }

    func check(_ request: [UInt8]) throws -> [UInt8] {
        let k = try AttKey(parseRequest(request))
        guard let hex = try host.getString("att/\(k.owner)"), try host.getString("ip/\(hex)") == k.owner else {
            throw PluginError(.notFound, "no reservation for container \"\(k.containerID)\" interface \(k.ifname)")
        }
        return []
    }

    func gc(_ request: [UInt8]) throws -> [UInt8] {
        let req = try parseRequest(request)
        guard let valid = req["valid"]?.array else {
            throw PluginError(.invalidArgument, "valid is required: an array of {containerID, ifname}")
        }
        var keep = Set<String>()
        for (i, e) in valid.enumerated() {
            guard e.isObject else { throw PluginError(.invalidArgument, "valid[\(i)]: expected an object {containerID, ifname}") }
            keep.insert(try AttKey(e).owner)
        }
        // Walk every attachment in key order; release the ones not kept. Deleting the current key is safe:
        // `next` continues strictly after it.
        var released = 0
        var after = ""
        while let e = try host.next(prefix: "att/", after: after) {
            after = e.key
            let owner = String(e.key.dropFirst("att/".count))
            guard !keep.contains(owner), let slash = owner.firstIndex(of: "/") else { continue }
            try release(AttKey(ifname: String(owner[..<slash]), containerID: String(owner[owner.index(after: slash)...])))
            released += 1
        }
        return PluginJSON.object([("released", PluginJSON(released))]).bytes
    }

    func status(_ request: [UInt8]) throws -> [UInt8] {
        let (active, free) = try counts()
        if free == 0 { throw PluginError(.resourceExhausted, "no free address in \(subnet) (all \(active) in use)") }
        return PluginJSON.object([("subnet", PluginJSON(subnet)), ("active", PluginJSON(Int(active))), ("free", PluginJSON(Int(free)))]).bytes
    }

    /// Optional. One subnet for every node: "node" does not change the answer.
    func capacity(_ request: [UInt8]) throws -> [UInt8] {
        let (active, free) = try counts()
        let pool = PluginJSON.object([("name", "default"), ("subnet", PluginJSON(subnet)), ("free", PluginJSON(Int(free))),
                                      ("reserved", 0), ("active", PluginJSON(Int(active)))])
        return PluginJSON.object([("free", PluginJSON(Int(free))), ("reserved", 0), ("active", PluginJSON(Int(active))),
                                  ("pools", .array([pool]))]).bytes
    }

    // `admin` keeps the kit's default (UNIMPLEMENTED): no pool administration in this example.

    // MARK: helpers

    /// Releases one attachment (shared by del and gc). Missing pieces are fine: that is a half-finished one.
    private func release(_ k: AttKey) throws {
        guard let hexAddr = try host.getString("att/\(k.owner)") else { return } // unknown: nothing to do, success
        try host.delete("att/\(k.owner)")
        guard let addr = UInt32(hexAddr, radix: 16), try host.getString("ip/\(hex(addr))") == k.owner else { return }
        // only free what this attachment owns
        try host.delete("ip/\(hex(addr))")
        if addr &- net < (try counter("next", default: 1)) { try host.put("free/\(hex(addr))", "") }
        let active = try counter("active", default: 0)
        try host.put("active", String(active > 0 ? active - 1 : 0))
        emit("address.released", addr, k)
    }

    private func counts() throws -> (active: UInt32, free: UInt32) {
        let active = try counter("active", default: 0)
        return (active, active >= usable ? 0 : usable - active)
    }

    /// A decimal counter; a missing key reads as `default`.
    private func counter(_ key: String, default d: UInt32) throws -> UInt32 {
        guard let s = try host.getString(key) else { return d }
        return UInt32(s) ?? 0
    }

    /// The add result: a pure function of the address, so a repeated add returns identical bytes.
    private func result(_ a: UInt32) -> [UInt8] {
        let mac = "0a:58:" + [a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255].map { byteHex($0) }.joined(separator: ":")
        let ip = PluginJSON.object([("address", PluginJSON("\(formatIPv4(a))/\(prefix)")), ("gateway", PluginJSON(gateway)),
                                    ("mac", PluginJSON(mac))])
        return PluginJSON.object([("ips", .array([ip]))]).bytes
    }

    private func emit(_ type: String, _ a: UInt32, _ k: AttKey) {
        host.emit(type, json: PluginJSON.object([("address", PluginJSON(formatIPv4(a))), ("containerID", PluginJSON(k.containerID)),
                                                 ("ifname", PluginJSON(k.ifname))]).serialized)
    }
}

/// The request must be exactly one JSON object.
private func parseRequest(_ bytes: [UInt8]) throws -> PluginJSON {
    guard let v = try? PluginJSON.parse(bytes), v.isObject else {
        throw PluginError(.invalidArgument, "the request is not a well-formed JSON object")
    }
    return v
}

/// The attachment key of a request: containerID (required) and ifname (default "eth0").
struct AttKey {
    let ifname: String
    let containerID: String
    var owner: String { "\(ifname)/\(containerID)" } // "<ifname>/<containerID>"

    init(ifname: String, containerID: String) {
        self.ifname = ifname
        self.containerID = containerID
    }

    init(_ req: PluginJSON) throws {
        guard let cid = req["containerID"] else { throw PluginError(.invalidArgument, "containerID is required") }
        guard let c = cid.string, !c.isEmpty, c.utf8.count <= 256, !c.utf8.contains(0) else {
            throw PluginError(.invalidArgument, "containerID must be a non-empty string of at most 256 bytes without NUL")
        }
        var ifname = "eth0"
        if let v = req["ifname"] {
            guard let s = v.string, !s.isEmpty, s.utf8.count <= 15, !s.utf8.contains(0) else {
                throw PluginError(.invalidArgument, "ifname must be a string of 1-15 bytes")
            }
            ifname = s
        }
        if ifname.contains("/") { throw PluginError(.invalidArgument, "ifname \"\(ifname)\" must not contain '/'") }
        self.init(ifname: ifname, containerID: c)
    }
}

// MARK: IPv4 text

func parseIPv4(_ s: String) -> UInt32? {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4 else { return nil }
    var a: UInt32 = 0
    for p in parts {
        guard (1...3).contains(p.count), p.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt32(p), n <= 255 else { return nil }
        a = a << 8 | n
    }
    return a
}

func formatIPv4(_ a: UInt32) -> String { "\(a >> 24).\((a >> 16) & 255).\((a >> 8) & 255).\(a & 255)" }

/// 8 lower-case hex digits: the key form of an address.
func hex(_ a: UInt32) -> String {
    let s = String(a, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
}

private func byteHex(_ b: UInt32) -> String { b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16) }

// MARK: export

/// The configuration schema, the same as the C example's.
let configSchema = #"{"type":"object","additionalProperties":false,"required":["subnet"],"properties":{"#
    + #""subnet":{"type":"string","pattern":"^[0-9.]+/[0-9]+$","description":"IPv4 subnet, /8 to /30"},"#
    + #""gateway":{"type":"string","pattern":"^[0-9.]+$","description":"default: the subnet's first address"}}}"#

@_cdecl("berth_plugin_entry_v1")
public func berthPluginEntry(_ hostMajor: UInt16, _ hostMinor: UInt16) -> UnsafeRawPointer? {
    // The kit refuses a host whose major is not 1; the host checks its minor against ours itself.
    BerthPluginExport.entry(SwiftNet.self, info: PluginInfo(
        name: "swiftnet", version: "1.0.0",
        description: "Example network plugin in Swift (BerthPluginKit): IPv4 addresses from one subnet, state in the host kv",
        configSchema: configSchema,
        // The instance is immutable after create() and all state is in the host kv: concurrent calls are safe.
        concurrent: true),
        hostMajor: hostMajor)
}
