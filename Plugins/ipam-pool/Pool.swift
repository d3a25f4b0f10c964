// Pool documents: parsing and validating a POOL (pool.import / configuration), and the compact runtime
// definition that allocation reads on every operation (PoolDef). Per-address data — explicit addresses,
// reservations, MAC bindings — is never kept in PoolDef: it lives in per-address keys (see IpamPool.swift), so
// reading a pool costs the same however many addresses it has.

import BerthPluginKit

/// A closed interval of addresses of one family.
struct Interval: Equatable {
    var lo: IP
    var hi: IP
    func contains(_ ip: IP) -> Bool { lo <= ip && ip <= hi }
    func overlaps(_ o: Interval) -> Bool { lo.v6 == o.lo.v6 && lo <= o.hi && o.lo <= hi }
    var count: Int64 { lo.count(through: hi) }
    var description: String { lo == hi ? "\(lo)" : "\(lo)-\(hi)" }

    /// Sorts and merges overlapping or adjacent intervals (per family).
    static func normalise(_ list: [Interval]) -> [Interval] {
        let sorted = list.sorted { $0.lo < $1.lo }
        var out: [Interval] = []
        for iv in sorted {
            if var last = out.last, last.lo.v6 == iv.lo.v6, (last.hi.successor.map { iv.lo <= $0 } ?? true) {
                if iv.hi > last.hi { last.hi = iv.hi }
                out[out.count - 1] = last
            } else {
                out.append(iv)
            }
        }
        return out
    }

    /// `a` minus `b` (both normalised): the parts of `a` not covered by `b`.
    static func subtract(_ a: [Interval], _ b: [Interval]) -> [Interval] {
        var out: [Interval] = []
        for iv in a {
            var pieces = [iv]
            for cut in b where cut.overlaps(iv) {
                var next: [Interval] = []
                for p in pieces {
                    guard cut.overlaps(p) else { next.append(p); continue }
                    if cut.lo > p.lo, let e = cut.lo.predecessor { next.append(Interval(lo: p.lo, hi: e)) }
                    if cut.hi < p.hi, let s = cut.hi.successor { next.append(Interval(lo: s, hi: p.hi)) }
                }
                pieces = next
            }
            out += pieces
        }
        return out
    }

    /// `a` (sorted and disjoint, as `normalise` leaves it) intersected with one interval. Binary search to the
    /// first interval that can overlap, so clipping a list of n to each of n windows is n log n, not n^2.
    static func clip(_ a: [Interval], to w: Interval) -> [Interval] {
        var lo = 0, hi = a.count
        while lo < hi {  // first index whose hi >= w.lo (within w's family ordering)
            let mid = (lo + hi) / 2
            if a[mid].hi < w.lo { lo = mid + 1 } else { hi = mid }
        }
        var out: [Interval] = []
        var i = lo
        while i < a.count, a[i].lo <= w.hi {
            let iv = a[i]
            if iv.overlaps(w) { out.append(Interval(lo: max(iv.lo, w.lo), hi: min(iv.hi, w.hi))) }
            i += 1
        }
        return out
    }
}

/// One range of a pool, with host-local's defaults filled in.
struct AddrRange {
    let subnet: CIDR  // network form
    let start: IP
    let end: IP
    let gateway: IP?
    /// For a piece of a block (see PoolDef.pieces): the start of the range it was cut from, whose high-water mark of
    /// the layout before blocks is the piece's own until it has one (State.swift, hwmb/).
    var legacyStart: IP? = nil
    var family: Int { start.family }
    var interval: Interval { Interval(lo: start, hi: end) }
    func contains(_ ip: IP) -> Bool { start <= ip && ip <= end && ip.v6 == start.v6 }
    var label: String { "\(start)-\(end) (\(subnet))" }

    var json: JV {
        var o: JV = ["subnet": .string(subnet.description), "start": .string(start.description), "end": .string(end.description)]
        if let gateway { o["gateway"] = .string(gateway.description) }
        return o
    }

    init(subnet: CIDR, start: IP, end: IP, gateway: IP?) {
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway
    }

    /// Reads a range back from a stored PoolDef (already validated).
    init?(stored j: JV) {
        guard let s = j["subnet"]?.string.flatMap(CIDR.parse), let a = j["start"]?.string.flatMap(IP.parse),
              let b = j["end"]?.string.flatMap(IP.parse) else { return nil }
        subnet = s
        start = a
        end = b
        gateway = j["gateway"]?.string.flatMap(IP.parse)
    }
}

/// The runtime definition of a pool: everything allocation needs, small and cheap to parse.
struct PoolDef {
    var name: String
    var ranges: [AddrRange]      // sorted by start, disjoint
    var holes: [Interval]        // gateways inside ranges + exclusions, normalised
    var families: [Int]          // families the pool serves (ranges and explicit addresses), ascending
    var routes: JV               // array
    var dns: JV?                 // object
    var vlan: Int?
    var nodes: [String]
    /// How a CNI main plugin (berth-cni as `type`) makes the interface: the host interface the pool's VLAN rides on,
    /// and the real CNI plugin it delegates to (macvlan, ipvlan, bridge or vlan). Both optional.
    var parent: String? = nil
    var delegate: String? = nil
    /// Prefix lengths of the blocks a node claims (IPv4, IPv6): the POOL's "blockSize" and "blockSize6".
    var block4 = PoolDef.defaultBlock4
    var block6 = PoolDef.defaultBlock6
    static let defaultBlock4 = 26, defaultBlock6 = 122
    /// The POOL's "nodeCounters": an ADD or DEL for a node changes that node's counter delta (cnt/<P>/<node>) instead
    /// of the pool's counters, so hosts sharing the pool in cluster mode do not all write one key. Reading the counts
    /// then sums every node's delta (capacity costs one read per node), so it is off by default (one host).
    var nodeCounters = false

    func blockPrefix(_ fam: Int) -> Int { fam == 6 ? block6 : block4 }

    /// The block (aligned network of blockPrefix) holding `ip`, by its first address.
    func blockBase(_ ip: IP) -> IP { ip.network(blockPrefix(ip.family)) }

    /// The parts of the block at `base` that lie in ranges, one piece per range (a block is clipped to its ranges:
    /// a range smaller than a block is one block).
    func pieces(_ base: IP) -> [AddrRange] {
        let blk = Interval(lo: base, hi: base.lastAddress(blockPrefix(base.family)))
        var out: [AddrRange] = []
        var lo = 0, hi = ranges.count
        while lo < hi {  // first range ending at or after the block's start
            let mid = (lo + hi) / 2
            if ranges[mid].end < base { lo = mid + 1 } else { hi = mid }
        }
        var i = lo
        while i < ranges.count, ranges[i].start <= blk.hi {
            let r = ranges[i]
            if r.interval.overlaps(blk) {
                var p = AddrRange(subnet: r.subnet, start: max(r.start, blk.lo), end: min(r.end, blk.hi), gateway: r.gateway)
                p.legacyStart = r.start
                out.append(p)
            }
            i += 1
        }
        return out
    }

    /// The piece of its block that holds range address `ip`.
    func piece(containing ip: IP) -> AddrRange? {
        guard range(containing: ip) != nil else { return nil }
        return pieces(blockBase(ip)).first { $0.contains(ip) }
    }

    /// Every block of family `fam` in address order, by first address (lazily: an IPv6 range has very many); with
    /// `from`, only the blocks whose first address is at or above it (found without walking the ones below).
    func blockBases(_ fam: Int, from: IP? = nil) -> AnySequence<IP> {
        var rs = ranges.filter { $0.family == fam }
        let len = blockPrefix(fam)
        if let from { rs = rs.filter { $0.end >= from } }
        return AnySequence { () -> AnyIterator<IP> in
            var i = 0
            var next: IP? = rs.first.map { r in from.map { f in max(f, r.start) } ?? r.start }.map { $0.network(len) }
            if let f = from, let b = next, b < f { next = b.lastAddress(len).successor }
            var lastBase: IP? = nil
            return AnyIterator {
                while i < rs.count {
                    guard let b = next, b <= rs[i].end else {
                        i += 1
                        if i < rs.count { next = rs[i].start.network(len) }
                        continue
                    }
                    next = b.lastAddress(len).successor
                    if next == nil { i = rs.count }
                    if let l = lastBase, b <= l { continue }  // two ranges in one block: once
                    if let f = from, b < f { continue }       // a block that starts below `from`
                    lastBase = b
                    return b
                }
                return nil
            }
        }
    }

    func usable(from node: String?) -> Bool {
        guard let node, !node.isEmpty, !nodes.isEmpty else { return true }
        return nodes.contains(node)
    }

    func range(containing ip: IP) -> AddrRange? { PoolDef.search(ranges, ip) }

    /// The range of `sorted` (by start, disjoint) that holds `ip`: binary search (a pool may hold thousands).
    static func search(_ sorted: [AddrRange], _ ip: IP) -> AddrRange? {
        var lo = 0, hi = sorted.count
        while lo < hi {  // first range starting after ip
            let mid = (lo + hi) / 2
            if sorted[mid].start <= ip { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0, sorted[lo - 1].contains(ip) else { return nil }
        return sorted[lo - 1]
    }

    func hole(containing ip: IP) -> Interval? {
        var lo = 0, hi = holes.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            let h = holes[mid]
            if h.contains(ip) { return h }
            if ip < h.lo { hi = mid - 1 } else { lo = mid + 1 }
        }
        return nil
    }

    /// Addresses of `r` that can be handed out, as intervals (the range minus gateway and exclusions).
    func memberIntervals(_ r: AddrRange) -> [Interval] {
        Interval.subtract([r.interval], Interval.clip(holes, to: r.interval))
    }

    func memberCount(_ r: AddrRange) -> Int128 {
        var n = r.start.exactCount(through: r.end)
        for h in Interval.clip(holes, to: r.interval) { n -= min(n, h.lo.exactCount(through: h.hi)) }
        return n
    }

    var json: JV {
        var o: JV = ["name": .string(name), "ranges": .array(ranges.map { $0.json }),
                     "holes": .array(holes.map { .array([.string($0.lo.description), .string($0.hi.description)]) }),
                     "families": .array(families.map { JV($0) }), "routes": routes,
                     "nodes": .array(nodes.map { .string($0) })]
        if let dns { o["dns"] = dns }
        if let vlan { o["vlan"] = JV(vlan) }
        if let parent { o["parent"] = .string(parent) }
        if let delegate { o["delegate"] = .string(delegate) }
        if block4 != PoolDef.defaultBlock4 { o["block4"] = JV(block4) }
        if block6 != PoolDef.defaultBlock6 { o["block6"] = JV(block6) }
        if nodeCounters { o["nodeCounters"] = .bool(true) }
        return o
    }

    /// What the ADD result says about the interface to make (read by berthd for berth-cni's main-plugin mode).
    var link: JV? {
        guard vlan != nil || parent != nil || delegate != nil else { return nil }
        var o: JV = .object([])
        if let delegate { o["type"] = .string(delegate) }
        if let parent { o["parent"] = .string(parent) }
        if let vlan { o["vlan"] = JV(vlan) }
        return o
    }
}

extension PoolDef {
    /// Decodes a stored record (the memberwise initializer stays synthesised).
    init?(stored j: JV) {
        guard let n = j["name"]?.string else { return nil }
        name = n
        ranges = (j["ranges"]?.array ?? []).compactMap { AddrRange(stored: $0) }
        holes = (j["holes"]?.array ?? []).compactMap { h in
            guard let a = h[0]?.string.flatMap(IP.parse), let b = h[1]?.string.flatMap(IP.parse) else { return nil }
            return Interval(lo: a, hi: b)
        }
        families = (j["families"]?.array ?? []).compactMap { $0.int }
        routes = j["routes"] ?? .array([])
        dns = j["dns"]
        vlan = j["vlan"]?.int
        nodes = (j["nodes"]?.array ?? []).compactMap { $0.string }
        parent = j["parent"]?.string
        delegate = j["delegate"]?.string
        block4 = j["block4"]?.int ?? PoolDef.defaultBlock4
        block6 = j["block6"]?.int ?? PoolDef.defaultBlock6
        nodeCounters = j["nodeCounters"]?.bool ?? false
    }
}

extension JV {
    subscript(index: Int) -> JV? {
        if case .array(let a) = self, index >= 0, index < a.count { return a[index] }
        return nil
    }
}

/// An explicitly listed address (outside every range) with the prefix and gateway it is handed out with.
struct ExplicitAddr {
    let ip: IP
    let prefix: Int
    let gateway: IP?
    var json: JV {
        var o: JV = ["prefix": JV(prefix)]
        if let gateway { o["gateway"] = .string(gateway.description) }
        return o
    }
}

/// A validated POOL document.
struct PoolSpec {
    /// The fields of a POOL document, in the order messages list them; anything else is refused.
    static let fieldOrder = ["name", "ranges", "ips", "exclude", "reserved", "macs", "routes", "dns", "vlan", "nodes", "parent", "delegate", "blockSize", "blockSize6", "nodeCounters"]
    static let fields = Set(fieldOrder)
    /// The fields of the objects inside a POOL document (anything else is refused, as at the top level).
    static let rangeFields = ["subnet", "start", "end", "gateway"]
    static let routeFields = ["dst", "gw"]
    static let dnsFields = ["nameservers", "domain", "search", "options"]

    /// Refuses keys of `obj` outside `allowed`, naming them and the allowed ones. `at` says where (for messages).
    /// `unlisted` are accepted but not named (the "network" the host adds to every request).
    static func refuseUnknown(_ obj: JV, _ allowed: [String], at: String, pool: String, unlisted: [String] = []) throws {
        guard let kv = obj.object else { return }
        let unknown = kv.map { $0.0 }.filter { !allowed.contains($0) && !unlisted.contains($0) }
        guard !unknown.isEmpty else { return }
        let list = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
        throw PluginError(.invalidArgument, "pool \(pool): \(at) has unknown field\(unknown.count == 1 ? "" : "s") \(list); "
            + "allowed: \(allowed.joined(separator: ", "))")
    }
    /// The CNI plugins berth-cni's main-plugin mode can delegate a pool's interface to.
    static let delegates = ["macvlan", "ipvlan", "bridge", "vlan"]
    /// Largest number of addresses one "a-b" entry or exclusion CIDR may expand to where addresses are materialised.
    static let maxExpansion: Int64 = 65536
    /// What one pool may hold, so that one import (or deletion) costs a bounded amount: ranges, and addresses written
    /// one by one (the expansion of "ips", of "reserved", and the "macs" bindings, each). Ranges are never expanded.
    static let maxRanges = 8192
    static let maxAddresses = 65536

    var def: PoolDef
    var explicit: [ExplicitAddr]   // sorted, outside every range, not excluded
    var reserved: [IP]             // sorted, unique, all members
    var macs: [(IP, String)]
    var canonical: JV              // the document as stored and shown (range defaults filled in)

    func isMember(_ ip: IP, explicitSet: Set<IP>) -> Bool {
        if def.hole(containing: ip) != nil { return false }
        if def.range(containing: ip) != nil { return true }
        return explicitSet.contains(ip)
    }

    static func validName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 63 else { return false }
        return s.unicodeScalars.enumerated().allSatisfy { i, c in
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || (i > 0 && (c == "." || c == "_" || c == "-"))
        }
    }

    static func parse(_ doc: JV) throws -> PoolSpec {
        guard case .object = doc else { throw PluginError(.invalidArgument, "a pool must be a JSON object, got \(doc.typeName)") }
        guard let name = doc["name"]?.string else { throw PluginError(.invalidArgument, "pool: \"name\" is required (a string)") }
        guard validName(name) else {
            throw PluginError(.invalidArgument, "pool name \"\(name)\" is invalid: use 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit")
        }
        func bad(_ msg: String) -> PluginError { PluginError(.invalidArgument, "pool \(name): \(msg)") }
        func strings(_ key: String) throws -> [String] {
            guard let v = doc[key], !v.isNull else { return [] }
            guard let a = v.array else { throw bad("\"\(key)\" must be an array of strings, got \(v.typeName)") }
            return try a.enumerated().map { i, e in
                guard let s = e.string else { throw bad("\(key)[\(i)] must be a string, got \(e.typeName)") }
                return s.trimmingSpaces
            }
        }

        // Ranges, with host-local's defaults and checks.
        var ranges: [AddrRange] = []
        let rangeDocs: [JV]
        if let v = doc["ranges"], !v.isNull {
            guard let a = v.array else { throw bad("\"ranges\" must be an array, got \(v.typeName)") }
            rangeDocs = a
        } else {
            rangeDocs = []
        }
        if rangeDocs.count > maxRanges {
            throw bad("\"ranges\" has \(rangeDocs.count) entries; a pool holds at most \(maxRanges) ranges (use larger subnets, or split it into several pools)")
        }
        for (i, rd) in rangeDocs.enumerated() {
            let at = "ranges[\(i)]"
            guard case .object = rd else { throw bad("\(at) must be an object with \"subnet\"") }
            try refuseUnknown(rd, rangeFields, at: at, pool: name)
            func field(_ k: String) throws -> String? {
                guard let v = rd[k], !v.isNull else { return nil }
                guard let s = v.string else { throw bad("\(at).\(k) must be a string, got \(v.typeName)") }
                return s.trimmingSpaces
            }
            guard let subnetText = try field("subnet") else { throw bad("\(at).subnet is required (for example \"10.1.0.0/24\")") }
            guard let sn = CIDR.parse(subnetText) else { throw bad("\(at).subnet \"\(subnetText)\" is not a valid CIDR (expected like 10.1.0.0/24 or 2001:db8::/64)") }
            if sn.hasHostBits { throw bad("\(at).subnet \(subnetText) has host bits set (did you mean \(sn.network)/\(sn.prefix)?)") }
            if sn.prefix > sn.ip.bits - 2 {
                throw bad("\(at).subnet \(subnetText) is too small: an \(sn.ip.v6 ? "IPv6" : "IPv4") range needs a prefix of /\(sn.ip.bits - 2) or shorter")
            }
            let net = sn.network, last = sn.last
            let v4 = !sn.ip.v6
            func addr(_ k: String) throws -> IP? {
                guard let t = try field(k) else { return nil }
                guard let ip = IP.parse(t) else { throw bad("\(at).\(k) \"\(t)\" is not a valid IP address") }
                guard sn.contains(ip) else { throw bad("\(at).\(k) \(ip) is outside the subnet \(sn)") }
                if v4 && ip == net { throw bad("\(at).\(k) \(ip) is the network address of \(sn)") }
                if v4 && ip == last { throw bad("\(at).\(k) \(ip) is the broadcast address of \(sn)") }
                return ip
            }
            let start = try addr("start") ?? net.successor!
            let end = try addr("end") ?? (v4 ? last.predecessor! : last)
            let gateway = try addr("gateway") ?? net.successor!
            if start > end { throw bad("\(at) starts at \(start), after its end \(end)") }
            if start == end && start == gateway { throw bad("\(at) \(start)-\(end) holds only its gateway: no address can be handed out") }
            ranges.append(AddrRange(subnet: CIDR(ip: net, prefix: sn.prefix), start: start, end: end, gateway: gateway))
        }
        // Overlaps: sorted by start, a range can only overlap its predecessor (n log n; thousands of ranges are fine).
        let byStart = ranges.indices.sorted { ranges[$0].start < ranges[$1].start }
        for (a, b) in zip(byStart, byStart.dropFirst()) where ranges[a].interval.overlaps(ranges[b].interval) {
            let (j, i) = (min(a, b), max(a, b))
            throw bad("ranges[\(i)] \(ranges[i].start)-\(ranges[i].end) overlaps ranges[\(j)] \(ranges[j].start)-\(ranges[j].end)")
        }
        let sortedRanges = byStart.map { ranges[$0] }
        func inRange(_ ip: IP) -> Bool { PoolDef.search(sortedRanges, ip) != nil }
        // The first range (in document order) whose subnet holds an address: one dictionary probe per prefix length.
        var subnetHome: [CIDR: Int] = [:]
        for (i, r) in ranges.enumerated() where subnetHome[r.subnet] == nil { subnetHome[r.subnet] = i }
        let homePrefixes = Array(Set(ranges.map { $0.subnet.prefix })).sorted()
        func homeRange(_ ip: IP) -> AddrRange? {
            var best: Int? = nil
            for len in homePrefixes where len <= ip.bits {
                if let i = subnetHome[CIDR(ip: ip.network(len), prefix: len)], ranges[i].family == ip.family, best.map({ i < $0 }) ?? true { best = i }
            }
            return best.map { ranges[$0] }
        }
        var gatewayOf: [IP: CIDR] = [:]
        for r in ranges { if let g = r.gateway, gatewayOf[g] == nil { gatewayOf[g] = r.subnet } }

        // Exclusions: addresses, CIDRs or "a-b" spans; never handed out.
        var holes: [Interval] = []
        for (i, e) in try strings("exclude").enumerated() {
            guard let iv = parseSpan(e) else { throw bad("exclude[\(i)] \"\(e)\" is not an IP address, a CIDR or a range \"a-b\"") }
            holes.append(iv)
        }
        let exclusions = Interval.normalise(holes)
        for r in ranges {
            if let g = r.gateway, r.contains(g) { holes.append(Interval(lo: g, hi: g)) }
        }
        holes = Interval.normalise(holes)
        func holeReason(_ ip: IP) -> String? {
            if let sn = gatewayOf[ip] { return "is the gateway of \(sn)" }
            if !Interval.clip(exclusions, to: Interval(lo: ip, hi: ip)).isEmpty { return "is excluded" }
            return nil
        }

        // Explicit addresses: "ip" (prefix from the range whose subnet holds it), "ip/len", or "a-b".
        var explicit: [IP: ExplicitAddr] = [:]
        var expanded: Int64 = 0
        for (i, e) in try strings("ips").enumerated() {
            let at = "ips[\(i)] \"\(e)\""
            var prefix: Int? = nil
            var span: Interval
            if e.contains("/") {
                guard let c = CIDR.parse(e) else { throw bad("\(at) is not a valid address or address/prefix") }
                prefix = c.prefix
                span = Interval(lo: c.ip, hi: c.ip)
            } else if let iv = parseSpan(e) {
                span = iv
            } else {
                throw bad("\(at) is not a valid address, address/prefix or range \"a-b\"")
            }
            if span.lo.count(through: span.hi) > maxExpansion { throw bad("\(at) spans more than \(maxExpansion) addresses; use a range instead") }
            expanded += span.lo.count(through: span.hi)
            if expanded > Int64(maxAddresses) {
                throw bad("\"ips\" lists more than \(maxAddresses) addresses (at \(at)); a pool lists at most \(maxAddresses) explicit addresses: use ranges for more")
            }
            var ip = span.lo
            while true {
                if let reason = holeReason(ip) { throw bad("\(at): \(ip) \(reason)") }
                if inRange(ip) {
                    // Already part of a range.
                } else {
                    let home = homeRange(ip)
                    let len: Int
                    if let prefix { len = prefix } else if let home { len = home.subnet.prefix } else {
                        throw bad("\(at): \(ip) has no prefix length and lies in no range's subnet; write it as \(ip)/\(ip.v6 ? 64 : 24) (with the right prefix)")
                    }
                    let sub = CIDR(ip: ip.network(len), prefix: len)
                    var gw: IP? = nil
                    if let home, home.subnet == sub { gw = home.gateway } else if len <= ip.bits - 2 { gw = sub.network.successor }
                    if len <= ip.bits - 2 && !ip.v6 && (ip == sub.network || ip == sub.last) {
                        throw bad("\(at): \(ip) is the \(ip == sub.network ? "network" : "broadcast") address of \(sub)")
                    }
                    if gw == ip { throw bad("\(at): \(ip) is the gateway of \(sub)") }
                    if ip.v6 && len <= 126 && ip == sub.network { throw bad("\(at): \(ip) is the subnet-router anycast address of \(sub)") }
                    explicit[ip] = ExplicitAddr(ip: ip, prefix: len, gateway: gw)
                }
                if ip == span.hi { break }
                ip = ip.successor!
            }
        }
        let explicitSet = Set(explicit.keys)
        func member(_ ip: IP, _ what: String) throws {
            if let reason = holeReason(ip) { throw bad("\(what): \(ip) \(reason)") }
            if inRange(ip) || explicitSet.contains(ip) { return }
            throw bad("\(what): \(ip) is not in the pool (no range or explicit address holds it)")
        }

        var reserved = Set<IP>()
        for (i, e) in try strings("reserved").enumerated() {
            guard let iv = parseSpan(e) else { throw bad("reserved[\(i)] \"\(e)\" is not an IP address or a range \"a-b\"") }
            if iv.lo.count(through: iv.hi) > maxExpansion { throw bad("reserved[\(i)] \"\(e)\" spans more than \(maxExpansion) addresses") }
            if Int64(reserved.count) + iv.lo.count(through: iv.hi) > Int64(maxAddresses) {
                throw bad("\"reserved\" lists more than \(maxAddresses) addresses (at reserved[\(i)]); a pool reserves at most \(maxAddresses)")
            }
            var ip = iv.lo
            while true {
                try member(ip, "reserved[\(i)]")
                reserved.insert(ip)
                if ip == iv.hi { break }
                ip = ip.successor!
            }
        }

        var macs: [(IP, String)] = []
        var macJSON: [(String, JV)] = []
        if let v = doc["macs"], !v.isNull {
            guard let kv = v.object else { throw bad("\"macs\" must be an object mapping addresses to MACs, got \(v.typeName)") }
            if kv.count > maxAddresses { throw bad("\"macs\" binds \(kv.count) MACs; a pool binds at most \(maxAddresses)") }
            var seen: [String: IP] = [:]
            var macKeys: [IP: String] = [:]
            for (k, m) in kv {
                guard let ip = IP.parse(k.trimmingSpaces) else { throw bad("macs: key \"\(k)\" is not an IP address") }
                guard let ms = m.string, let mac = MAC.canonical(ms.trimmingSpaces) else {
                    throw bad("macs[\"\(k)\"]: \(m.serialized) is not a MAC address (expected like 52:54:00:00:00:10)")
                }
                if let why = MAC.unusable(mac) {
                    throw bad("macs[\"\(k)\"]: \(mac) \(why); bind a unicast MAC such as 52:54:00:00:00:10")
                }
                try member(ip, "macs[\"\(k)\"]")
                if let first = macKeys[ip] { throw bad("macs: \(ip) is given twice (as \"\(first)\" and \"\(k)\")") }
                if let other = seen[mac] { throw bad("macs: \(mac) is bound to both \(other) and \(ip)") }
                seen[mac] = ip
                macKeys[ip] = k
                macs.append((ip, mac))
                macJSON.append((ip.description, .string(mac)))
            }
        }

        var routes: [JV] = []
        if let v = doc["routes"], !v.isNull {
            guard let a = v.array else { throw bad("\"routes\" must be an array, got \(v.typeName)") }
            for (i, r) in a.enumerated() {
                guard case .object = r else { throw bad("routes[\(i)] must be an object {dst, gw}, got \(r.typeName)") }
                try refuseUnknown(r, routeFields, at: "routes[\(i)]", pool: name)
                guard let dstText = r["dst"]?.string else { throw bad("routes[\(i)].dst is required (a CIDR such as 0.0.0.0/0)") }
                guard let dst = CIDR.parse(dstText.trimmingSpaces) else { throw bad("routes[\(i)].dst \"\(dstText)\" is not a valid CIDR") }
                var o: JV = ["dst": .string("\(dst.network)/\(dst.prefix)")]
                if let g = r["gw"], !g.isNull {
                    guard let gs = g.string, let gw = IP.parse(gs.trimmingSpaces) else { throw bad("routes[\(i)].gw \(g.serialized) is not a valid IP address") }
                    if gw.v6 != dst.ip.v6 { throw bad("routes[\(i)]: gw \(gw) and dst \(dstText) are of different IP families") }
                    o["gw"] = .string(gw.description)
                }
                routes.append(o)
            }
        }

        var dns: JV? = nil
        if let v = doc["dns"], !v.isNull {
            guard case .object = v else { throw bad("\"dns\" must be an object {nameservers, domain, search, options}, got \(v.typeName)") }
            try refuseUnknown(v, dnsFields, at: "dns", pool: name)
            var o: JV = .object([])
            if let ns = v["nameservers"], !ns.isNull {
                guard let a = ns.array else { throw bad("dns.nameservers must be an array of IP addresses") }
                o["nameservers"] = .array(try a.enumerated().map { i, e in
                    guard let s = e.string, let ip = IP.parse(s.trimmingSpaces) else { throw bad("dns.nameservers[\(i)] \(e.serialized) is not an IP address") }
                    return .string(ip.description)
                })
            }
            if let d = v["domain"], !d.isNull {
                guard let s = d.string else { throw bad("dns.domain must be a string") }
                o["domain"] = .string(s)
            }
            for k in ["search", "options"] {
                if let l = v[k], !l.isNull {
                    guard let a = l.array, a.allSatisfy({ $0.string != nil }) else { throw bad("dns.\(k) must be an array of strings") }
                    o[k] = l
                }
            }
            dns = o
        }

        var vlan: Int? = nil
        if let v = doc["vlan"], !v.isNull {
            guard let n = v.int, n >= 0, n <= 4094 else { throw bad("vlan must be an integer from 0 to 4094, got \(v.serialized)") }
            vlan = n
        }
        let nodes = try strings("nodes")
        if let i = nodes.firstIndex(of: "") { throw bad("nodes[\(i)] is empty") }
        var parent: String? = nil
        if let v = doc["parent"], !v.isNull {
            guard let s = v.string?.trimmingSpaces, !s.isEmpty, s.utf8.count <= 15, s != ".", s != "..",
                  !s.unicodeScalars.contains(where: { $0 == "/" || $0 == ":" || $0.value <= 0x20 || $0.value >= 0x7f }) else {
                throw bad("parent \(v.serialized) is not an interface name (1-15 characters, no '/', ':' or spaces; for example \"eth1\")")
            }
            parent = s
        }
        var delegate: String? = nil
        if let v = doc["delegate"], !v.isNull {
            guard let s = v.string, delegates.contains(s) else {
                throw bad("delegate \(v.serialized) is unknown: use one of \(delegates.joined(separator: ", ")) (the CNI plugin that makes the interface)")
            }
            delegate = s
        }

        if ranges.isEmpty && explicit.isEmpty { throw bad("the pool has no addresses: give \"ranges\" or \"ips\"") }
        func blockSize(_ key: String, _ lo: Int, _ hi: Int, _ def: Int) throws -> Int {
            guard let v = doc[key], !v.isNull else { return def }
            guard let n = v.int, n >= lo, n <= hi else {
                throw bad("\(key) must be a prefix length from \(lo) to \(hi) (the size of the blocks each node claims; default /\(def)), got \(v.serialized)")
            }
            return n
        }
        let block4 = try blockSize("blockSize", 16, 30, PoolDef.defaultBlock4)
        let block6 = try blockSize("blockSize6", 96, 126, PoolDef.defaultBlock6)
        var nodeCounters = false
        if let v = doc["nodeCounters"], !v.isNull {
            guard let b = v.bool else { throw bad("nodeCounters must be true or false (per-node counters for cluster mode; default false), got \(v.serialized)") }
            nodeCounters = b
        }

        let families = Array(Set(ranges.map { $0.family } + explicit.keys.map { $0.family })).sorted()
        let def = PoolDef(name: name, ranges: ranges.sorted { $0.start < $1.start }, holes: holes, families: families,
                          routes: .array(routes), dns: dns, vlan: vlan, nodes: nodes, parent: parent, delegate: delegate,
                          block4: block4, block6: block6, nodeCounters: nodeCounters)

        // The canonical document: what pool.show returns and what a later import merges into.
        var canonical: JV = ["name": .string(name)]
        if !ranges.isEmpty { canonical["ranges"] = .array(ranges.map { $0.json }) }
        for k in ["ips", "exclude", "reserved"] {
            let l = try strings(k)
            if !l.isEmpty { canonical[k] = .array(l.map { .string($0) }) }
        }
        if !macJSON.isEmpty { canonical["macs"] = .object(macJSON) }
        if !routes.isEmpty { canonical["routes"] = .array(routes) }
        if let dns { canonical["dns"] = dns }
        if let vlan { canonical["vlan"] = JV(vlan) }
        if !nodes.isEmpty { canonical["nodes"] = .array(nodes.map { .string($0) }) }
        if let parent { canonical["parent"] = .string(parent) }
        if let delegate { canonical["delegate"] = .string(delegate) }
        if block4 != PoolDef.defaultBlock4 { canonical["blockSize"] = JV(block4) }
        if block6 != PoolDef.defaultBlock6 { canonical["blockSize6"] = JV(block6) }
        if nodeCounters { canonical["nodeCounters"] = .bool(true) }

        return PoolSpec(def: def, explicit: explicit.values.sorted { $0.ip < $1.ip }, reserved: reserved.sorted(),
                        macs: macs, canonical: canonical)
    }

    /// "10.1.0.5", "10.1.0.0/28" (the whole block) or "10.1.0.5-10.1.0.9".
    static func parseSpan(_ s: String) -> Interval? {
        if let ip = IP.parse(s) { return Interval(lo: ip, hi: ip) }
        if let c = CIDR.parse(s) { return Interval(lo: c.network, hi: c.last) }
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        if parts.count == 2, let a = IP.parse(parts[0].trimmingSpaces), let b = IP.parse(parts[1].trimmingSpaces), a.v6 == b.v6, a <= b {
            return Interval(lo: a, hi: b)
        }
        return nil
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let a = firstIndex(where: { !isSpace($0) }), let b = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[a...b])
    }
}
