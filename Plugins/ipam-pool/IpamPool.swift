// ipam-pool — the reference network plugin: IP and MAC allocation from pools (ranges and explicit lists,
// reserved addresses, gateways, routes, DNS, VLANs, node restrictions) with fixed addresses for stateful apps
// (release policies onDelete / immutable / never, optional keepSeconds). CNI semantics as host-local has them,
// without its linear scans; BCS netservice / Galaxy semantics for states and fixed addresses.
//
// The plugin keeps no state of its own: every operation reads and writes its key-value namespace through the
// host, in the operation's transaction (see State.swift for the key layout). Nothing is cached across calls
// except the configuration and the network name (for messages).
//
// Behaviour worth knowing (beyond the operation list in the network guide):
//  - Pool choice for ADD: the `pool` field; else, with `ips`, the pool that holds the first requested address;
//    else the configured defaultPool; else the first pool by name usable from `node` with free addresses.
//  - pool.import on an existing pool merges: the fields given replace the stored ones, the others are kept.
//    Addresses leaving the pool must not be active or held. "reserved" is declarative: newly listed addresses
//    become reserved, addresses dropped from the list since the last import become available (addresses moved
//    with address.move are left alone).
//  - capacity / pool.list: for a dual-stack pool, `free` is how many more attachments it can serve (its
//    scarcest family); reserved, active and held count addresses over all families. Counts are 128-bit and
//    saturating (never wrap). As JSON numbers they are capped at 2^50 (an IPv6 /64 reads as 1125899906842624), so
//    every JSON reader gets an exact integer; a count above the cap also comes exactly, as a decimal string, in
//    "<name>Exact" next to it (a /64 range: "freeExact": "18446744073709551614"). Past 2^127-1 it saturates.
//  - One interface has one MAC: every entry of an ADD result carries the same one — a MAC the pool binds to one
//    of the addresses, else the request's "mac", else derived from the first address (IPv4 when present).
//  - An identity (app, ordinal) re-added while its addresses are still active for another container is refused
//    (FAILED_PRECONDITION naming that container): no two live attachments ever share an address. The addresses
//    move once the old attachment is released (DEL, gc, node.release); the new holder's ADD emits identity.moved.
//  - A requested address in state reserved goes only to a request with an identity, or with "useReserved": true.
//  - Expired holds (keepSeconds) are released lazily at the start of every operation.

import BerthPluginKit

final class IpamPool: NetworkPlugin {
    let host: HostServices
    var defaultPool: String?
    /// The network's name as the host last sent it; used in messages only.
    var network = ""
    /// Pool definitions parsed in earlier calls (validated against the stored bytes on every use).
    let parsedDefs = DefCache()
    /// The document of a staged import, parsed once for all its steps (Staged.swift).
    let stagedSpecs = StagedSpecCache()
    /// Large pool documents being parsed off the transaction thread (Prepare.swift).
    let preparations = Preparations()
    /// The addresses a pool being deleted listed, for the steps of its deletion (Staged.swift).
    let explicitLists = LastDerived<[IP]>()

    init(host: HostServices, config: [UInt8]) throws {
        self.host = host
        try apply(config: config)
    }

    deinit { preparations.finishAll() }  // no thread of this plugin may outlive its instance

    func reconfigure(config: [UInt8]) throws { try apply(config: config) }

    /// Reads the configuration and imports the pools it lists that do not exist yet.
    private func apply(config: [UInt8]) throws {
        let cfg: JV
        do { cfg = config.isEmpty ? .object([]) : try JV.parse(config) } catch {
            throw PluginError(.invalidArgument, "configuration is not valid JSON")
        }
        defaultPool = cfg["defaultPool"]?.string
        let op = Op(host: host, network: networkLabel, parsed: parsedDefs)
        try op.stampPools()
        for (i, p) in (cfg["pools"]?.array ?? []).enumerated() {
            guard let name = p["name"]?.string else { throw PluginError(.invalidArgument, "configuration pools[\(i)]: \"name\" is required") }
            if try op.def(name) == nil {
                do { _ = try importPool(op, p, inSteps: false) } catch let e as PluginError {
                    throw PluginError(e.status, "configuration pools[\(i)]: \(e.message)")
                }
            }
        }
        try op.flush()
        if let d = defaultPool, try op.def(d) == nil {
            host.log(.warn, "defaultPool \"\(d)\" does not exist yet; import it with pool.import")
        }
    }

    var networkLabel: String { network.isEmpty ? "(unnamed)" : network }

    /// Emits an event (committed with the operation), naming the network when it is known.
    func emit(_ type: String, _ data: JV) {
        var d: JV = network.isEmpty ? .object([]) : ["network": .string(network)]
        for (k, v) in data.object ?? [] { d[k] = v }
        host.emit(type, json: d.serialized)
    }

    // MARK: request helpers

    /// Parses a request object and starts an operation: notes the network name and releases expired holds.
    private func begin(_ request: [UInt8]) throws -> (JV, Op) {
        let req: JV
        do { req = request.isEmpty ? .object([]) : try JV.parse(request) } catch let e as JV.ParseError {
            throw PluginError(.invalidArgument, "request is not valid JSON (at byte \(e.offset): \(e.reason))")
        }
        guard case .object = req else { throw PluginError(.invalidArgument, "request must be a JSON object, got \(req.typeName)") }
        if let n = req["network"]?.string, !n.isEmpty { network = n }
        let op = Op(host: host, network: networkLabel, parsed: parsedDefs)
        try op.sweep()
        return (req, op)
    }

    func finish(_ op: Op, _ out: JV) throws -> [UInt8] {
        try op.flush()
        return out.bytes
    }

    private func str(_ req: JV, _ key: String, required: Bool = false, max: Int = 512) throws -> String? {
        guard let v = req[key], !v.isNull else {
            if required { throw PluginError(.invalidArgument, "\"\(key)\" is required (a non-empty string)") }
            return nil
        }
        guard let s = v.string else { throw PluginError(.invalidArgument, "\"\(key)\" must be a string, got \(v.typeName)") }
        let t = s.trimmingSpaces
        if t.isEmpty {
            if required { throw PluginError(.invalidArgument, "\"\(key)\" is required (a non-empty string)") }
            return nil
        }
        if t.utf8.count > max { throw PluginError(.invalidArgument, "\"\(key)\" is too long (\(t.utf8.count) bytes, at most \(max))") }
        return t
    }

    private func flag(_ req: JV, _ key: String) throws -> Bool {
        guard let v = req[key], !v.isNull else { return false }
        guard let b = v.bool else { throw PluginError(.invalidArgument, "\"\(key)\" must be true or false, got \(v.serialized)") }
        return b
    }

    /// The attachment key; `ifname` defaults to eth0 as the host's does.
    private func attachmentKey(_ req: JV) throws -> (String, String) {
        (try str(req, "containerID", required: true)!, try str(req, "ifname", max: 64) ?? "eth0")
    }

    private func loadAttachment(_ op: Op, _ cid: String, _ ifname: String) throws -> Attachment? {
        try op.getJSON(Key.att(cid, ifname)).flatMap { Attachment($0) }
    }

    // MARK: add

    struct IdentityReq {
        var app: String
        var ord: String
        var policy: String
        var keep: Int64
        var prefersReserved: Bool { policy != "onDelete" }
    }

    private func parseIdentity(_ req: JV) throws -> IdentityReq? {
        guard let v = req["identity"], !v.isNull else { return nil }
        guard case .object = v else { throw PluginError(.invalidArgument, "\"identity\" must be an object {app, ordinal, releasePolicy}, got \(v.typeName)") }
        guard let app = try str(v, "app", max: 253) else { throw PluginError(.invalidArgument, "identity.app is required (a non-empty string)") }
        let ord: String
        switch v["ordinal"] {
        case .some(.int(let n)) where n >= 0: ord = String(n)
        case .some(.double(let d)) where d >= 0 && d.rounded() == d && d < 1e15: ord = String(Int64(d))
        case .some(.string(let s)) where !s.trimmingSpaces.isEmpty && s.utf8.count <= 253: ord = s.trimmingSpaces
        case nil, .some(.null): throw PluginError(.invalidArgument, "identity.ordinal is required (a non-negative integer)")
        case .some(let o): throw PluginError(.invalidArgument, "identity.ordinal must be a non-negative integer, got \(o.serialized)")
        }
        let policy = try str(v, "releasePolicy") ?? "onDelete"
        guard ["onDelete", "immutable", "never"].contains(policy) else {
            throw PluginError(.invalidArgument, "identity.releasePolicy \"\(policy)\" is unknown (use onDelete, immutable or never)")
        }
        var keep: Int64 = 0
        if let k = v["keepSeconds"], !k.isNull {
            guard let n = k.int64, n >= 0 else { throw PluginError(.invalidArgument, "identity.keepSeconds must be a non-negative integer, got \(k.serialized)") }
            keep = n
        }
        return IdentityReq(app: app, ord: ord, policy: policy, keep: keep)
    }

    /// Requested addresses ("ips"), at most one per family.
    private func parseRequested(_ req: JV) throws -> [Int: IP] {
        guard let v = req["ips"], !v.isNull else { return [:] }
        guard let a = v.array else { throw PluginError(.invalidArgument, "\"ips\" must be an array of addresses, got \(v.typeName)") }
        var out: [Int: IP] = [:]
        for (i, e) in a.enumerated() {
            guard let s = e.string else { throw PluginError(.invalidArgument, "ips[\(i)] must be a string, got \(e.typeName)") }
            let t = s.trimmingSpaces
            guard let ip = IP.parse(t) ?? CIDR.parse(t)?.ip else {
                throw PluginError(.invalidArgument, "ips[\(i)] \"\(s)\" is not a valid IP address")
            }
            if let other = out[ip.family], other != ip {
                throw PluginError(.invalidArgument, "ips: \(other) and \(ip) are both \(familyName(ip.family)); request at most one address per family")
            }
            out[ip.family] = ip
        }
        return out
    }

    func add(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        return try finish(op, try add(op, req))
    }

    static let addsInBatches = true

    /// add_batch (ABI 1.1): every item through one `Op`, so pool definitions, counters, high-water marks and cursors
    /// are read once and written once for the whole batch. All or nothing: the first item that fails fails the call
    /// (naming the item), and the host re-runs the items one at a time.
    func addBatch(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        guard let items = req["items"]?.array else {
            throw PluginError(.invalidArgument, "\"items\" must be an array of add requests, got \(req["items"]?.typeName ?? "nothing")")
        }
        var results: [JV] = []
        results.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard case .object = item else { throw PluginError(.invalidArgument, "items[\(i)] must be a JSON object, got \(item.typeName)") }
            do { results.append(try add(op, item)) } catch let e as PluginError {
                throw PluginError(e.status, "items[\(i)]: \(e.message)")
            }
        }
        return try finish(op, ["results": .array(results)])
    }

    /// One ADD inside `op`; the caller flushes.
    private func add(_ op: Op, _ req: JV) throws -> JV {
        let (cid, ifname) = try attachmentKey(req)
        if let existing = try loadAttachment(op, cid, ifname) {
            return existing.result  // idempotent
        }
        let node = try str(req, "node", max: 253)
        op.node = node
        let ident = try parseIdentity(req)
        let requested = try parseRequested(req)
        let poolField = try str(req, "pool", max: 63)
        let useReserved = try flag(req, "useReserved")
        var requestedMAC: String? = nil
        if let m = try str(req, "mac", max: 64) {
            guard let c = MAC.canonical(m) else {
                throw PluginError(.invalidArgument, "\"mac\" \"\(m)\" is not a MAC address (expected like 0a:58:0a:01:00:05)")
            }
            requestedMAC = c
        }

        var held: Identity? = nil
        if let ident, let j = try op.getJSON(Key.ident(ident.app, ident.ord)), let id = Identity(j), !id.addrs.isEmpty,
           try op.def(id.pool) != nil {
            held = id
        }

        let pool: PoolDef
        var taken: [IP] = []
        let owner: AddrRec = {
            var r = AddrRec(state: .active)
            r.cid = cid
            r.ifname = ifname
            r.app = ident?.app
            r.ord = ident?.ord
            return r
        }()

        if let id = held, let ident {
            // The identity already holds addresses: reuse exactly those (and their MACs).
            pool = try op.requireDef(id.pool)
            let who = "identity \(ident.app) ordinal \(ident.ord)"
            if let pf = poolField, pf != pool.name {
                throw PluginError(.failedPrecondition, "\(who) holds addresses in pool \(pool.name), not \(pf); release them with identity.release first")
            }
            if !pool.usable(from: node) {
                throw PluginError(.failedPrecondition, "\(who) holds addresses in pool \(pool.name), which is not usable from node \(node!) (nodes: \(pool.nodes.joined(separator: ", ")))")
            }
            for (_, ip) in requested where !id.addrs.contains(ip) {
                throw PluginError(.alreadyExists, "\(who) holds \(id.addrs.map { $0.description }.joined(separator: ", ")), not the requested \(ip); release it with identity.release first")
            }
            for ip in id.addrs {
                let r = try op.rec(pool.name, ip)
                if let r, r.app == ident.app, r.ord == ident.ord, r.state == .held || r.state == .active {
                    if r.state == .active {
                        if r.cid == cid {
                            throw PluginError(.failedPrecondition, "\(who) is already attached to container \(cid) on interface \(r.ifname ?? "?")")
                        }
                        // Another live attachment holds the address: it moves only once that one is released, never
                        // by a second ADD (two live attachments would share it).
                        let old = try loadAttachment(op, r.cid ?? "", r.ifname ?? "eth0")
                        let on = old?.node.map { ", node \($0)" } ?? ""
                        throw PluginError(.failedPrecondition, "\(who): \(ip) is in use by container \(r.cid ?? "?") (interface \(r.ifname ?? "?")\(on)); "
                            + "an address moves to a new container only after the old attachment is released: delete it (CNI DEL, or berth attachments del --container \(r.cid ?? "?")"
                            + (old?.node.map { ", or release node \($0) if it is gone" } ?? "") + ")")
                    } else {
                        try op.bump(pool.name, ip.family, Counts.held, -1)
                        try op.bump(pool.name, ip.family, Counts.active, 1)
                    }
                    var n = owner
                    n.prevReserved = r.prevReserved
                    try op.putRec(pool.name, ip, n)
                } else if r == nil, try op.membership(pool, ip) == nil {
                    try op.takeAvailable(pool, ip, owner)  // lost its hold somehow: take it back
                } else if let r, r.state == .reserved {
                    try op.takeReserved(pool, ip, owner)
                } else {
                    throw PluginError(.alreadyExists, "\(who) holds \(ip), but it is \(r?.ownerText ?? "not in pool \(pool.name)")")
                }
                taken.append(ip)
            }
            if let e = id.exp { try op.delete(Key.exp(e, id.app, id.ord)) }
            if let from = id.prev, from != cid {
                emit("identity.moved", ["app": .string(ident.app), "ordinal": .string(ident.ord), "pool": .string(pool.name),
                                        "addresses": .array(id.addrs.map { .string($0.description) }), "from": .string(from), "to": .string(cid)])
            }
            // A family the pool gained since: allocate it now.
            for fam in pool.families where !taken.contains(where: { $0.family == fam }) {
                taken.append(try allocate(op, pool, fam, requested[fam], ident, owner))
            }
        } else {
            pool = try choosePool(op, poolField: poolField, requested: requested, node: node, ident: ident)
            for (_, ip) in requested where !pool.families.contains(ip.family) {
                throw PluginError(.invalidArgument, "\(ip) cannot be requested: pool \(pool.name) has no \(familyName(ip.family)) addresses")
            }
            for fam in pool.families {
                taken.append(try allocate(op, pool, fam, requested[fam], ident, owner, useReserved: useReserved))
            }
        }

        // The result, stored with the attachment so that a repeated ADD returns it unchanged. One interface has one
        // MAC: a MAC the pool binds to one of its addresses, else the requested one, else derived from the first.
        taken.sort()
        var mac: String? = nil
        for ip in taken where mac == nil { mac = try op.boundMAC(pool.name, ip) }
        if mac == nil { mac = requestedMAC ?? MAC.derived(taken[0]) }
        var ips: [JV] = []
        for ip in taken {
            let (prefix, gw) = try op.addressing(pool, ip)
            var o: JV = ["address": .string("\(ip)/\(prefix)")]
            if let gw { o["gateway"] = .string(gw.description) }
            o["family"] = JV(ip.family)
            o["pool"] = .string(pool.name)
            o["mac"] = .string(mac!)
            if let v = pool.vlan { o["vlan"] = JV(v) }
            ips.append(o)
        }
        var result: JV = ["ips": .array(ips), "routes": pool.routes]
        if let dns = pool.dns { result["dns"] = dns }
        if let link = pool.link { result["link"] = link }

        let att = Attachment(cid: cid, ifname: ifname, node: node, pool: pool.name, addrs: taken, app: ident?.app, ord: ident?.ord,
                             policy: ident?.policy ?? "onDelete", result: result)
        try op.put(att.key, att.json)
        if let node { try op.put(Key.node(node, cid, ifname), text: "") }
        if let ident {
            var id = Identity(app: ident.app, ord: ident.ord, policy: ident.policy, keep: ident.keep, pool: pool.name, addrs: taken)
            id.cid = cid
            id.ifname = ifname
            try op.put(id.key, id.json)
        }
        return result
    }

    /// One address of family `fam` from pool `p`: the requested one, else (stateful identities) the lowest
    /// reserved one, else the next available one in round-robin order.
    private func allocate(_ op: Op, _ p: PoolDef, _ fam: Int, _ want: IP?, _ ident: IdentityReq?, _ owner: AddrRec,
                          useReserved: Bool = false) throws -> IP {
        if let ip = want {
            if let r = try op.rec(p.name, ip) {
                switch r.state {
                case .reserved:
                    // Reserved means reserved: a request without a stateful identity takes it only when it says so.
                    guard ident != nil || useReserved else {
                        throw PluginError(.failedPrecondition, "requested address \(ip) is reserved (pool \(p.name), network \(networkLabel)): reserved addresses "
                            + "go to stateful identities; send an identity, or set \"useReserved\": true (berth attachments add --use-reserved) to take it anyway")
                    }
                    try op.takeReserved(p, ip, owner)
                    return ip
                case .active, .held:
                    throw PluginError(.alreadyExists, "requested address \(ip) is already \(r.ownerText) (pool \(p.name), network \(networkLabel))")
                }
            }
            if let why = try op.membership(p, ip) {
                throw PluginError(.invalidArgument, "requested address \(why) (network \(networkLabel))")
            }
            try op.takeAvailable(p, ip, owner)
            return ip
        }
        if let ident, ident.prefersReserved, let ip = try op.lowestReserved(p, fam) {
            try op.takeReserved(p, ip, owner)
            return ip
        }
        guard let ip = try op.pickAvailable(p, fam) else {
            let dual = p.families.count > 1 ? "; all its \(familyName(fam)) addresses are in use" : ""
            throw PluginError(.resourceExhausted, "no IP addresses available in pool \(p.name) (network \(networkLabel))\(dual)")
        }
        try op.takeAvailable(p, ip, owner)
        return ip
    }

    /// Pool choice: the `pool` field; else the pool holding the requested address; else the configured default;
    /// else the first pool by name usable from the node with addresses to give.
    private func choosePool(_ op: Op, poolField: String?, requested: [Int: IP], node: String?, ident: IdentityReq?) throws -> PoolDef {
        func usable(_ p: PoolDef, _ why: String) throws -> PoolDef {
            guard p.usable(from: node) else {
                throw PluginError(.failedPrecondition, "\(why) pool \(p.name) is not usable from node \(node!) (it serves nodes \(p.nodes.joined(separator: ", ")))")
            }
            return p
        }
        // An unknown pool is a bad request (INVALID_ARGUMENT): NOT_FOUND would reach CNI callers as "unknown container".
        func named(_ name: String, _ what: String) throws -> PoolDef {
            guard let p = try op.def(name) else {
                let known = try op.allDefs().map { $0.name }
                throw PluginError(.invalidArgument, "\(what) pool \(name) does not exist in network \(networkLabel)"
                    + (known.isEmpty ? "; import one with pool.import" : " (pools: \(known.joined(separator: ", ")))"))
            }
            return p
        }
        if let name = poolField { return try usable(try named(name, "the requested"), "the requested") }
        if let ip = requested.values.sorted().first {
            if let o = try op.getJSON(Key.owner(ip)), let name = o["pool"]?.string, let p = try op.def(name) {
                return try usable(p, "the requested address's")
            }
            for p in try op.allDefs() where p.range(containing: ip) != nil || p.ranges.contains(where: { $0.subnet.contains(ip) }) {
                return try usable(p, "the requested address's")
            }
            if let d = defaultPool, let p = try op.def(d) { return try usable(p, "the default") }
            throw PluginError(.invalidArgument, "requested address \(ip) is not in any pool of network \(networkLabel)")
        }
        if let d = defaultPool { return try usable(try named(d, "the default (configured defaultPool)"), "the default") }
        let all = try op.allDefs()
        if all.isEmpty {
            throw PluginError(.failedPrecondition, "network \(networkLabel) has no pools; import one with pool.import")
        }
        let candidates = all.filter { $0.usable(from: node) }
        if candidates.isEmpty {
            throw PluginError(.failedPrecondition, "no pool of network \(networkLabel) is usable from node \(node ?? "?")")
        }
        // One pool: allocation says when it is exhausted. Its counters are every node's summed, a read that any ADD
        // on another host would invalidate.
        if candidates.count == 1 { return candidates[0] }
        for p in candidates {
            let c = try op.counts(p.name)
            if p.families.allSatisfy({ c.free($0) > 0 || (ident?.prefersReserved == true && c.get($0, Counts.reserved) > 0) }) { return p }
        }
        if candidates.count == 1 {
            throw PluginError(.resourceExhausted, "no IP addresses available in pool \(candidates[0].name) (network \(networkLabel))")
        }
        throw PluginError(.resourceExhausted, "no IP addresses available in any pool of network \(networkLabel)"
            + (node.map { " usable from node \($0)" } ?? "") + " (pools \(candidates.map { $0.name }.joined(separator: ", ")))")
    }

    // MARK: del, check, gc, status, capacity

    func del(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        let (cid, ifname) = try attachmentKey(req)
        let final = try flag(req, "final")
        if let a = try loadAttachment(op, cid, ifname) {
            try op.releaseAttachment(a, final: final)
        }
        return try finish(op, .object([]))
    }

    func check(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        let (cid, ifname) = try attachmentKey(req)
        guard let a = try loadAttachment(op, cid, ifname) else {
            throw PluginError(.notFound, "no addresses are allocated to container \(cid) interface \(ifname) in network \(networkLabel)")
        }
        for ip in a.addrs {
            let r = try op.rec(a.pool, ip)
            guard let r, r.state == .active, r.cid == cid, r.ifname == ifname else {
                throw PluginError(.notFound, "address \(ip) of container \(cid) interface \(ifname) is no longer active for it (it is \(r?.ownerText ?? "available") in pool \(a.pool))")
            }
        }
        return try finish(op, .object([]))
    }

    func gc(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        guard let v = req["valid"], let list = v.array else {
            throw PluginError(.invalidArgument, "\"valid\" is required: an array of {containerID, ifname} to keep")
        }
        var valid = Set<String>()
        for (i, e) in list.enumerated() {
            guard let c = e["containerID"]?.string else {
                throw PluginError(.invalidArgument, "valid[\(i)] must be an object {containerID, ifname} (ifname defaults to eth0)")
            }
            let f = e["ifname"]?.string?.trimmingSpaces ?? ""
            valid.insert(Key.att(c.trimmingSpaces, f.isEmpty ? "eth0" : f))
        }
        var released: [JV] = []
        try op.each("att/") { key, value in
            guard !valid.contains(key), let j = try? JV.parse(value), let a = Attachment(j) else { return }
            try op.releaseAttachment(a, final: false)
            released.append(["containerID": .string(a.cid), "ifname": .string(a.ifname)])
        }
        return try finish(op, ["released": .array(released)])
    }

    func status(_ request: [UInt8]) throws -> [UInt8] {
        let (_, op) = try begin(request)
        let all = try op.allDefs()
        if all.isEmpty {
            throw PluginError(.resourceExhausted, "network \(networkLabel) has no pools; import one with pool.import")
        }
        for p in all {
            let c = try op.counts(p.name)
            if p.families.allSatisfy({ c.free($0) > 0 }) { return try finish(op, .object([])) }
        }
        throw PluginError(.resourceExhausted, "no IP addresses available in any pool of network \(networkLabel) (\(all.map { $0.name }.joined(separator: ", ")))")
    }

    func capacity(_ request: [UInt8]) throws -> [UInt8] {
        let (req, op) = try begin(request)
        let node = try str(req, "node", max: 253)
        var tf: Int128 = 0, tr: Int128 = 0, ta: Int128 = 0, th: Int128 = 0
        var pools: [JV] = []
        for p in try op.allDefs() where p.usable(from: node) {
            let s = try op.counts(p.name).summary(p.families)
            tf = Counts.plus(tf, s.free); tr = Counts.plus(tr, s.reserved); ta = Counts.plus(ta, s.active); th = Counts.plus(th, s.held)
            var o: JV = ["name": .string(p.name)]
            Counts.set(&o, "free", s.free); Counts.set(&o, "reserved", s.reserved)
            Counts.set(&o, "active", s.active); Counts.set(&o, "held", s.held)
            pools.append(o)
        }
        var out: JV = .object([])
        Counts.set(&out, "free", tf); Counts.set(&out, "reserved", tr); Counts.set(&out, "active", ta); Counts.set(&out, "held", th)
        out["pools"] = .array(pools)
        return try finish(op, out)
    }

    // MARK: admin

    func admin(op name: String, _ request: [UInt8]) throws -> [UInt8] {
        let known = ["pool.import", "pool.list", "pool.show", "pool.delete", "address.move", "node.release", "identity.release"]
        guard known.contains(name) else {
            throw PluginError(.unimplemented, "unknown admin operation \"\(name)\" (ipam-pool knows \(known.joined(separator: ", ")))")
        }
        if name == "pool.import", let out = try importFast(request) { return out }
        let (req, op) = try begin(request)
        let out: JV
        switch name {
        case "pool.import": out = try importPool(op, req)
        case "pool.list":
            out = ["pools": .array(try op.allDefs().map { try summary(op, $0) })]
        case "pool.show": out = try showPool(op, req)
        case "pool.delete": out = try deletePool(op, try str(req, "name", required: true, max: 63)!)
        case "address.move": out = try moveAddresses(op, req)
        case "node.release":
            let node = try str(req, "node", required: true, max: 253)!
            var released: [JV] = []
            try op.each(Key.nodePrefix(node)) { key, _ in
                let parts = key.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 4 else { return }
                let attKey = "att/\(parts[2])/\(parts[3])"
                if let j = try op.getJSON(attKey), let a = Attachment(j) {
                    try op.releaseAttachment(a, final: false)
                    released.append(["containerID": .string(a.cid), "ifname": .string(a.ifname)])
                } else {
                    try op.delete(key)
                }
            }
            out = ["node": .string(node), "released": .array(released)]
        default: out = try releaseIdentities(op, req)
        }
        return try finish(op, out)
    }

    func summary(_ op: Op, _ p: PoolDef) throws -> JV {
        let c = try op.counts(p.name)
        let s = c.summary(p.families)
        var subnets: [String] = [], seen = Set<String>()  // a set: 8,192 ranges made this quadratic (150 ms)
        for r in p.ranges { let d = r.subnet.description; if seen.insert(d).inserted { subnets.append(d) } }
        var o: JV = ["name": .string(p.name), "families": .array(p.families.map { JV($0) }),
                     "subnets": .array(subnets.map { .string($0) }),
                     "ranges": .array(p.ranges.map { .string("\($0.start)-\($0.end)") })]
        if let v = p.vlan { o["vlan"] = JV(v) }
        if !p.nodes.isEmpty { o["nodes"] = .array(p.nodes.map { .string($0) }) }
        if let v = p.parent { o["parent"] = .string(v) }
        if let v = p.delegate { o["delegate"] = .string(v) }
        Counts.set(&o, "free", s.free)
        Counts.set(&o, "reserved", s.reserved)
        Counts.set(&o, "active", s.active)
        Counts.set(&o, "held", s.held)
        o["byFamily"] = .object(p.families.map { f in
            var b: JV = .object([])
            Counts.set(&b, "size", c.get(f, Counts.size))
            Counts.set(&b, "free", c.free(f))
            for (n, k) in [("reserved", Counts.reserved), ("active", Counts.active), ("held", Counts.held)] { Counts.set(&b, n, c.get(f, k)) }
            return (String(f), b)
        })
        return o
    }

    private func showPool(_ op: Op, _ req: JV) throws -> JV {
        let name = try str(req, "name", required: true, max: 63)!
        let p = try op.requireDef(name)
        var addrs: [JV] = []
        try op.each("addr/\(name)/") { key, value in
            guard let ip = IP(ref: String(key.dropFirst("addr/\(name)/".count))), let j = try? JV.parse(value), let r = AddrRec(j) else { return }
            addrs.append(r.show(ip))
        }
        return ["pool": try op.getJSON(Key.spec(name)) ?? p.json, "counts": try summary(op, p), "addresses": .array(addrs)]
    }

    private func moveAddresses(_ op: Op, _ req: JV) throws -> JV {
        let name = try str(req, "pool", required: true, max: 63)!
        let p = try op.requireDef(name)
        let to = try str(req, "to", required: true)!
        guard to == "reserved" || to == "available" else {
            throw PluginError(.invalidArgument, "\"to\" must be \"reserved\" or \"available\", got \"\(to)\"")
        }
        guard let list = req["addresses"]?.array, !list.isEmpty else {
            throw PluginError(.invalidArgument, "\"addresses\" is required: a non-empty array of addresses or ranges \"a-b\"")
        }
        var ips: [IP] = []
        for (i, e) in list.enumerated() {
            guard let s = e.string, let iv = PoolSpec.parseSpan(s.trimmingSpaces) else {
                throw PluginError(.invalidArgument, "addresses[\(i)] \(e.serialized) is not an address or a range \"a-b\"")
            }
            if iv.lo.count(through: iv.hi) > PoolSpec.maxExpansion {
                throw PluginError(.invalidArgument, "addresses[\(i)] \"\(s)\" spans more than \(PoolSpec.maxExpansion) addresses; move it in parts")
            }
            var ip = iv.lo
            while true {
                if let why = try op.membership(p, ip) { throw PluginError(.invalidArgument, "addresses[\(i)]: \(why)") }
                ips.append(ip)
                if ip == iv.hi { break }
                ip = ip.successor!
            }
        }
        var moved: [JV] = [], unchanged: [JV] = [], skipped: [JV] = []
        for ip in ips {
            let r = try op.rec(name, ip)
            switch (r?.state, to) {
            case (nil, "reserved"):
                try op.reserve(p, ip)
                moved.append(.string(ip.description))
            case (.some(.reserved), "available"):
                try op.unreserve(p, ip)
                moved.append(.string(ip.description))
            case (nil, _), (.some(.reserved), _):
                unchanged.append(.string(ip.description))
            default:
                skipped.append(["address": .string(ip.description), "state": .string(r!.state.rawValue), "reason": .string("\(ip) is \(r!.ownerText)")])
            }
        }
        if !moved.isEmpty {
            emit("address.moved", ["pool": .string(name), "to": .string(to), "addresses": .array(moved)])
        }
        return ["pool": .string(name), "to": .string(to), "moved": .array(moved), "unchanged": .array(unchanged), "skipped": .array(skipped)]
    }

    private func releaseIdentities(_ op: Op, _ req: JV) throws -> JV {
        let app = try str(req, "app", required: true, max: 253)!
        let force = try flag(req, "force")
        var ords: [String]? = nil
        switch req["ordinal"] {
        case nil, .some(.null): break
        case .some(.int(let n)): ords = [String(n)]
        case .some(.string(let s)): ords = [s.trimmingSpaces]
        case .some(let o): throw PluginError(.invalidArgument, "\"ordinal\" must be a non-negative integer, got \(o.serialized)")
        }
        var ids: [Identity] = []
        if let ords {
            for o in ords { if let j = try op.getJSON(Key.ident(app, o)), let id = Identity(j) { ids.append(id) } }
        } else {
            try op.each(Key.identPrefix(app)) { _, value in
                if let j = try? JV.parse(value), let id = Identity(j) { ids.append(id) }
            }
        }
        var released: [JV] = [], skipped: [JV] = []
        for id in ids {
            let who: JV = ["app": .string(id.app), "ordinal": .string(id.ord)]
            if let cid = id.cid {
                skipped.append(who.with("reason", .string("attached to container \(cid) interface \(id.ifname ?? "?"); delete it first")))
                continue
            }
            if id.policy == "never" && !force {
                skipped.append(who.with("reason", .string("release policy is never; pass force to release it")))
                continue
            }
            let ips = try op.releaseHeld(id)
            if let e = id.exp { try op.delete(Key.exp(e, id.app, id.ord)) }
            try op.delete(id.key)
            released.append(who.with("addresses", .array(ips.map { .string($0.description) })))
        }
        return ["released": .array(released), "skipped": .array(skipped)]
    }

    // MARK: pool.import

    /// Creates a pool, or updates one: the fields given replace the stored ones, the others are kept.
    /// Addresses that leave the pool must not be active or held; reservations follow the "reserved" list
    /// (addresses newly listed become reserved, addresses dropped from it since the last import become available).
    @discardableResult
    func importPool(_ op: Op, _ doc: JV, inSteps: Bool = true, prepared: PreparedImport? = nil) throws -> JV {
        guard case .object(let fields) = doc else { throw PluginError(.invalidArgument, "a pool must be a JSON object, got \(doc.typeName)") }
        guard let name = doc["name"]?.string else { throw PluginError(.invalidArgument, "pool: \"name\" is required (a string)") }
        if let c = doc["continue"], !c.isNull { return try importStep(op, name) }  // the host calling a staged import again
        // The host adds "network" to every request; anything else outside the POOL fields is a mistake (a typo would
        // otherwise silently change nothing).
        try PoolSpec.refuseUnknown(doc, PoolSpec.fieldOrder, at: "the pool document", pool: name, unlisted: ["network"])

        let oldSpecJSON = PoolSpec.validName(name) ? try op.getJSON(Key.spec(name)) : nil
        let old = oldSpecJSON.flatMap { try? PoolSpec.parse($0) }
        var merged: JV = oldSpecJSON ?? .object([])
        for (k, v) in fields where PoolSpec.fields.contains(k) { merged[k] = v }
        // A document prepared off the transaction thread (Prepare.swift) was validated as a new pool: used only if it is.
        let pre = oldSpecJSON == nil ? prepared : nil
        if inSteps, PoolSpec.validName(name), try checkStaged(op, name, merged, mergedBytes: pre?.mergedBytes) { return try importStep(op, name) }
        let spec = try pre?.spec?.get() ?? PoolSpec.parse(merged)
        let p = spec.def
        let isNew = old == nil

        // No address may belong to two pools of the network. Ranges are sorted and disjoint within a pool, so each
        // of this pool's ranges is checked against another pool's by binary search (n log m, not n x m).
        for o in try op.allDefs() where o.name != name {
            let theirs = o.ranges.map { $0.interval }
            for r in p.ranges {
                if let r2 = Interval.clip(theirs, to: r.interval).first.flatMap({ o.range(containing: $0.lo) }) {
                    throw PluginError(.invalidArgument, "pool \(name): range \(r.start)-\(r.end) overlaps range \(r2.start)-\(r2.end) of pool \(o.name)")
                }
            }
            for e in spec.explicit where o.range(containing: e.ip) != nil {
                throw PluginError(.invalidArgument, "pool \(name): address \(e.ip) is already in a range of pool \(o.name)")
            }
        }
        // One interface per MAC in the network: a MAC another pool binds cannot be bound here too.
        if !spec.macs.isEmpty {
            let mine = Dictionary(spec.macs.map { ($0.1, $0.0) }, uniquingKeysWith: { a, _ in a })
            try op.each("mac/") { key, value in
                let parts = key.split(separator: "/", maxSplits: 2)
                guard parts.count == 3, parts[1] != name, let ip = mine[String(decoding: value, as: UTF8.self)] else { return }
                let otherIP = IP(ref: String(parts[2])).map { "\($0)" } ?? String(parts[2])
                throw PluginError(.invalidArgument, "pool \(name): macs: \(String(decoding: value, as: UTF8.self)) (for \(ip)) is already bound to \(otherIP) in pool \(parts[1]); a MAC can be bound once per network")
            }
        }
        // Explicit addresses another pool owns. Leapfrog over the sorted list and the owner/ keys: seek the first owner
        // entry at or after an address, then jump to the first listed address at or after it (seeks: at most
        // min(listed, owned) + 1, where one read per address was 65,536 reads in one transaction).
        var ei = 0
        while ei < spec.explicit.count {
            let ip = spec.explicit[ei].ip
            let prefix = "owner/\(ip.family)/"
            guard let e = try op.host.next(prefix: prefix, after: ip.predecessor.map { prefix + $0.hex } ?? ""),
                  let owned = IP(hex: e.key.dropFirst(prefix.count)) else {
                ei = spec.explicit.firstIndex(where: { $0.ip.family > ip.family }) ?? spec.explicit.count
                continue
            }
            if owned == ip {
                if let j = try? JV.parse(e.value), let other = j["pool"]?.string, other != name {
                    throw PluginError(.invalidArgument, "pool \(name): address \(ip) already belongs to pool \(other)")
                }
                ei += 1
                continue
            }
            var lo = ei + 1, hi = spec.explicit.count
            while lo < hi {  // the first listed address at or after `owned`
                let mid = (lo + hi) / 2
                if spec.explicit[mid].ip < owned { lo = mid + 1 } else { hi = mid }
            }
            ei = lo
        }
        // Explicit addresses of other pools inside this pool's ranges. Leapfrog: seek the first explicit address at or
        // after a range's start; one inside it of another pool is a conflict, else skip to the range that could hold
        // it. Seeks: at most min(ranges, explicit addresses) + 1.
        var ri = 0
        var from = p.ranges.first?.start
        while ri < p.ranges.count, let f = from {
            let r = p.ranges[ri]
            let prefix = "owner/\(r.family)/"
            let start = max(f, r.start)
            guard let e = try op.host.next(prefix: prefix, after: start.predecessor.map { prefix + $0.hex } ?? ""),
                  let ip = IP(hex: e.key.dropFirst(prefix.count)) else {
                ri = p.ranges.firstIndex(where: { $0.family > r.family }) ?? p.ranges.count  // none left in this family
                continue
            }
            if ip <= r.end {
                if let j = try? JV.parse(e.value), let other = j["pool"]?.string, other != name {
                    throw PluginError(.invalidArgument, "pool \(name): range \(r.start)-\(r.end) holds \(ip), an explicit address of pool \(other)")
                }
                from = ip.successor
                if let n = from, n > r.end { ri += 1 }
            } else {
                guard let nr = Self.firstRange(p.ranges, endingAtOrAfter: ip, from: ri) else { break }
                ri = nr
                from = ip
            }
        }

        // A new pool with many addresses to write is imported in steps (Staged.swift); the checks above are done.
        if isNew && inSteps && Self.importWork(spec) > Self.stagedAbove { return try startStagedImport(op, name, merged, spec, pre) }

        let explicitSet = Set(spec.explicit.map { $0.ip })
        let newReserved = Set(spec.reserved)
        let oldReserved = Set(old?.reserved ?? [])
        var toAvailable: [IP] = []

        if let old {
            let oldDef = try op.def(name) ?? old.def
            let oldExplicit = Set(old.explicit.map { $0.ip })
            // Recorded addresses: removals (refused while in use), un-reservations, previous states.
            try op.each("addr/\(name)/") { key, value in
                guard let ip = IP(ref: String(key.dropFirst("addr/\(name)/".count))), let j = try? JV.parse(value), var r = AddrRec(j) else { return }
                if !spec.isMember(ip, explicitSet: explicitSet) {
                    if r.state != .reserved {
                        throw PluginError(.failedPrecondition, "pool \(name): cannot remove \(ip) from the pool: it is \(r.ownerText); release it first")
                    }
                    try op.delete(key)
                    try op.delete(Key.rsv(name, ip))
                } else if r.state == .reserved {
                    if oldReserved.contains(ip) && !newReserved.contains(ip) { toAvailable.append(ip) }
                } else {
                    let was = r.prevReserved
                    if newReserved.contains(ip) { r.prevReserved = true } else if oldReserved.contains(ip) { r.prevReserved = false }
                    if r.prevReserved != was { try op.putRec(name, ip, r) }
                }
            }
            try op.each("free/\(name)/") { key, _ in
                guard let ip = IP(ref: String(key.dropFirst("free/\(name)/".count))) else { return }
                if !spec.isMember(ip, explicitSet: explicitSet) { try op.delete(key) }
            }
            // Per key, not one prefix delete: the bindings are put again below, and on etcd each put inside a prefix
            // deleted in the same transaction splits the delete (twice the operations).
            try op.each("mac/\(name)/") { key, _ in try op.delete(key) }
            for ip in oldExplicit where !explicitSet.contains(ip) { try op.delete(Key.owner(ip)) }

            // High-water marks: kept for ranges that start where they did. Addresses that joined such a range
            // below its mark (an exclusion lifted, a new gateway) must be put in free/ to be found.
            func members(_ d: PoolDef) -> [Interval] { Interval.normalise(d.ranges.flatMap { d.memberIntervals($0) }) }
            let oldMembers = members(oldDef)
            let oldStarts = Set(oldDef.ranges.map { $0.start })
            let newStarts = Set(p.ranges.map { $0.start })
            for r in oldDef.ranges where !newStarts.contains(r.start) {
                try op.delete(Key.hwm(name, r))
            }
            try op.setDef(p)
            // Blocks: the pieces' marks fall back to their ranges' hwm/ (kept right just below; a lower mark is always
            // safe, allocation skips recorded addresses), and a new block size drops the claims (affinity only).
            try op.forgetHwms()
            let resized = oldDef.block4 != p.block4 || oldDef.block6 != p.block6
            // One prefix delete each (the marks were flushed just above): a pool with many blocks stays one operation.
            // The claim mark stays right while the blocks and their claims do (same ranges, same size).
            let sameBlocks = !resized && oldDef.ranges.map { [$0.start, $0.end] } == p.ranges.map { [$0.start, $0.end] }
            for prefix in resized ? ["hwmb", "bclm", "blk", "nblk"] : sameBlocks ? ["hwmb"] : ["hwmb", "bclm"] { _ = try op.host.delete(prefix: "\(prefix)/\(name)/") }
            op.forgetBlocks()
            // No free/ entry may lie at or above a piece's mark (it would be found twice): those are found lazily now.
            try op.each("free/\(name)/") { key, _ in
                if let ip = IP(ref: String(key.dropFirst("free/\(name)/".count))), try op.isLazy(p, ip) { try op.delete(key) }
            }
            for r in p.ranges where oldStarts.contains(r.start) {
                guard let h = try op.hwm(p, r) ?? r.end.successor, h > r.start, let below = h.predecessor else { continue }
                let window = Interval(lo: r.start, hi: below)
                let joined = Interval.subtract(Interval.clip(p.memberIntervals(r), to: window), Interval.clip(oldMembers, to: window))
                let total = joined.reduce(Int64(0)) { $0 &+ $1.count }
                if total > PoolSpec.maxExpansion {
                    try op.delete(Key.hwm(name, r))  // cheaper to let allocation walk the range again
                    try op.forgetHwms()
                    continue
                }
                for iv in joined {
                    var ip = iv.lo
                    while true {
                        if !oldExplicit.contains(ip), try op.rec(name, ip) == nil { try op.put(Key.free(name, ip), text: "") }
                        if ip == iv.hi { break }
                        ip = ip.successor!
                    }
                }
            }
        } else {
            try op.setDef(p, bytes: pre?.defBytes)
        }

        for e in spec.explicit {
            var o = e.json
            o["pool"] = .string(name)
            try op.put(Key.owner(e.ip), o)
            if try op.rec(name, e.ip) == nil { try op.put(Key.free(name, e.ip), text: "") }
        }
        // Recount before the reservation transitions below adjust the counters.
        try recount(op, spec)
        for ip in toAvailable { try op.unreserve(p, ip) }
        for ip in spec.reserved where !oldReserved.contains(ip) || isNew {
            if try op.rec(name, ip) == nil { try op.reserve(p, ip) }
        }
        for (ip, mac) in spec.macs { try op.put(Key.mac(name, ip), text: mac) }
        try op.host.put(Key.spec(name), pre.map { $0.canonicalBytes } ?? spec.canonical.bytes)

        emit("pool.imported", ["pool": .string(name), "created": .bool(isNew)])
        return try summary(op, p).with("created", .bool(isNew))
    }

    /// The index of the first range of `sorted` (from `from` on) whose end is at or after `ip` (binary search).
    static func firstRange(_ sorted: [AddrRange], endingAtOrAfter ip: IP, from: Int) -> Int? {
        var lo = from, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid].end < ip { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count ? lo : nil
    }

    /// Sets a pool's counters from its definition and its address records (administrative operations only).
    private func recount(_ op: Op, _ spec: PoolSpec) throws {
        var c = Counts()
        let p = spec.def
        for f in p.families { c.add(f, Counts.size, 0) }
        for r in p.ranges { c.add(r.family, Counts.size, p.memberCount(r)) }
        for e in spec.explicit { c.add(e.ip.family, Counts.size, 1) }
        try op.each("addr/\(p.name)/") { key, value in
            guard let ip = IP(ref: String(key.dropFirst("addr/\(p.name)/".count))), let j = try? JV.parse(value), let r = AddrRec(j) else { return }
            switch r.state {
            case .reserved: c.add(ip.family, Counts.reserved, 1)
            case .active: c.add(ip.family, Counts.active, 1)
            case .held: c.add(ip.family, Counts.held, 1)
            }
        }
        try op.setCounts(p.name, c)
    }
}

extension JV {
    func with(_ key: String, _ value: JV) -> JV {
        var o = self
        o[key] = value
        return o
    }
}

// MARK: - export

/// The configuration schema. The host validates the configuration against it before create() sees it.
let poolSchema = #"""
{"type":"object","additionalProperties":false,"required":["name"],"properties":{
 "name":{"type":"string","minLength":1,"maxLength":63,"pattern":"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
 "ranges":{"type":"array","items":{"type":"object","additionalProperties":false,"required":["subnet"],"properties":{
   "subnet":{"type":"string","minLength":3,"maxLength":64,"pattern":"^[0-9A-Fa-f.:]+/[0-9]+$"},
   "start":{"type":"string","minLength":2,"maxLength":64,"pattern":"^[0-9A-Fa-f.:]+$"},
   "end":{"type":"string","minLength":2,"maxLength":64,"pattern":"^[0-9A-Fa-f.:]+$"},
   "gateway":{"type":"string","minLength":2,"maxLength":64,"pattern":"^[0-9A-Fa-f.:]+$"}}}},
 "ips":{"type":"array","items":{"type":"string","minLength":2,"maxLength":130,"pattern":"^[0-9A-Fa-f.:/-]+$"}},
 "exclude":{"type":"array","items":{"type":"string","minLength":2,"maxLength":130,"pattern":"^[0-9A-Fa-f.:/-]+$"}},
 "reserved":{"type":"array","items":{"type":"string","minLength":2,"maxLength":130,"pattern":"^[0-9A-Fa-f.:-]+$"}},
 "macs":{"type":"object","additionalProperties":{"type":"string","minLength":17,"maxLength":17,"pattern":"^[0-9A-Fa-f:-]+$"}},
 "routes":{"type":"array","items":{"type":"object","additionalProperties":false,"required":["dst"],"properties":{
   "dst":{"type":"string","pattern":"^[0-9A-Fa-f.:]+/[0-9]+$"},"gw":{"type":"string","pattern":"^[0-9A-Fa-f.:]+$"}}}},
 "dns":{"type":"object","additionalProperties":false,"properties":{
   "nameservers":{"type":"array","items":{"type":"string","pattern":"^[0-9A-Fa-f.:]+$"}},
   "domain":{"type":"string","maxLength":253},
   "search":{"type":"array","items":{"type":"string","maxLength":253}},
   "options":{"type":"array","items":{"type":"string","maxLength":253}}}},
 "vlan":{"type":"integer","minimum":0,"maximum":4094},
 "nodes":{"type":"array","items":{"type":"string","minLength":1,"maxLength":253}},
 "parent":{"type":"string","minLength":1,"maxLength":15,"pattern":"^[^/: ]+$"},
 "delegate":{"enum":["macvlan","ipvlan","bridge","vlan"]},
 "blockSize":{"type":"integer","minimum":16,"maximum":30},
 "blockSize6":{"type":"integer","minimum":96,"maximum":126},
 "nodeCounters":{"type":"boolean"}}}
"""#

let configSchema = #"""
{"type":"object","additionalProperties":false,"properties":{
 "defaultPool":{"type":"string","minLength":1,"maxLength":63,"pattern":"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
 "pools":{"type":"array","items":
"""# + poolSchema + "}}}"

@_cdecl("berth_plugin_entry_v1")
public func berthPluginEntry(_ hostMajor: UInt16, _ hostMinor: UInt16) -> UnsafeRawPointer? {
    BerthPluginExport.entry(IpamPool.self, info: PluginInfo(
        name: "ipam-pool", version: "1.0.0",
        description: "IP and MAC allocation from pools: ranges, explicit lists, reserved addresses, VLANs, fixed addresses for stateful apps",
        configSchema: configSchema),
        hostMajor: hostMajor)
}
