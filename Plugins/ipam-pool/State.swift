// The ipam-pool plugin's state: key layout, records, and the address state machine. Everything is in the
// plugin's key-value namespace; one `Op` lives for one host call and caches what it reads for that call only.
//
// KEY LAYOUT (values are JSON unless noted; <ref> is "4/<8 hex>" or "6/<32 hex>", fixed-width so that keys sort
// in address order; <P> is a pool name, which cannot contain '/'; <x> is a free-form string with '%' and '/'
// percent-escaped)
//
//   pool/<P>              PoolDef: ranges (defaults filled in), holes (gateways + exclusions), families, routes,
//                         dns, vlan, nodes. Small: no per-address data. Read by every allocation.
//   poolv/<P>             (text) the stamp of pool/<P>: its length and two 64-bit hashes of its bytes, written with
//                         it. A call finds the definition it parsed before by the stamp, without reading pool/<P>
//                         (a megabyte for the largest pool). create() stamps pools stored by an earlier version.
//   spec/<P>              the canonical POOL document as imported (pool.show, merging on re-import)
//   count/<P>             per-family counters {"4":[size,reserved,active,held],...}, updated incrementally;
//                         free = size - reserved - active - held. capacity/status read only these. A count past
//                         2^63 (several IPv6 /64s) is stored as a decimal string.
//   cnt/<P>/<node>        the same shape: what operations on behalf of <node> changed (signed deltas). The pool's
//                         counts are count/<P> plus every cnt/<P>/ entry, summed on read, so that an ADD on one
//                         host never writes a key another host's ADD writes. A new import replaces them all.
//   addr/<P>/<ref>        record of every address that is NOT available: {"s":"reserved"} or
//                         {"s":"active"|"held","p":"available"|"reserved" (the state to return to), "cid","if",
//                         "app","ord"}. Available addresses never have a record.
//   free/<P>/<ref>        "" — available addresses that allocation cannot find lazily: explicit addresses and
//                         released or un-reserved range addresses below their range's high-water mark.
//   rsv/<P>/<ref>         "" — addresses in state reserved (lowest first for stateful identities).
//   hwm/<P>/<startref>    (text) per range: the hex of the lowest never-handed-out address, or "end". Every
//                         range address at or above it that has no record is available, so a /64 needs no
//                         enumeration; below it, available addresses are exactly the free/ entries.
//   last/<P>/<family>     (text) hex of the last address handed out from available (round-robin cursor), for
//                         requests without a node; last/<P>/<family>/<node>: the cursor of one node.
//
// BLOCKS (cluster mode: several hosts allocating from one pool must not all write one cursor). A pool's ranges are
// cut into blocks: aligned networks of the pool's blockSize (IPv4, default /26) or blockSize6 (IPv6, default /122),
// each clipped to the ranges (a range smaller than a block is one block). A node allocates from the blocks it
// claimed, round robin with its own cursor; when they are full it claims the lowest block nobody claimed that has an
// available address (the only write two nodes may race on); when no such block is left it borrows an available
// address from another node's block (or an explicit address). Claims are affinity only: an address is taken only
// when it has no addr/ record, so a claim never decides who holds an address. Requested addresses, fixed addresses
// of identities and reserved addresses ignore blocks.
//   blk/<P>/<baseref>     (text) the node that claimed the block starting at <baseref>.
//   nblk/<P>/<node>/<baseref> "" — the blocks of a node.
//   bclm/<P>/<family>     (text) hex of the lowest block that may be unclaimed ("end": none is): every block below it
//                         is claimed, so a claim reads the blocks from there, not every claimed one (claims are not
//                         given back; an import drops the mark). Absent: claims look from the lowest block.
//   hwmb/<P>/<startref>   (text) like hwm/, per piece of a block (a block's part in one range, by its first
//                         address). A piece without one starts from its range's hwm/ (the layout before blocks,
//                         never written since), so a pool created by an earlier version keeps its state as it is.
//   mac/<P>/<ref>         (text) MAC bound to the address by the pool's "macs".
//   owner/<ref>           explicit address -> {"pool","prefix","gateway"}: its addressing, and one owner per
//                         network (overlap checks across pools).
//   att/<cid>/<if>        attachment: {"cid","if","node","pool","addrs":[ref],"app","ord","policy","result"}.
//   node/<node>/<cid>/<if> "" — attachments by node (node.release).
//   id/<app>/<ord>        identity of a stateful instance: {"app","ord","policy","keep","pool","addrs":[ref],
//                         "cid","if" (while attached), "exp" (ms, while held with keepSeconds), "prev" (while held:
//                         the container it was attached to)}.
//   exp/<ms16>/<app>/<ord> "" — holds that expire, ordered by time (ms since the epoch, 16 digits).
//
// Allocation from available, round robin: the smallest available address after the cursor is the smaller of
// the next free/ key after it (one kv_next) and, per range, the first address at or above max(hwm, cursor+1)
// that is neither a hole nor recorded (skipping forward; skips at the frontier advance the hwm for good). No
// step depends on how many addresses are in use.

import BerthPluginKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum Key {
    static func esc(_ s: String) -> String {
        guard s.contains("%") || s.contains("/") else { return s }
        var out = ""
        for c in s.unicodeScalars {
            if c == "%" { out += "%25" } else if c == "/" { out += "%2F" } else { out.unicodeScalars.append(c) }
        }
        return out
    }
    static func pool(_ p: String) -> String { "pool/\(p)" }
    static func poolStamp(_ p: String) -> String { "poolv/\(p)" }
    static func spec(_ p: String) -> String { "spec/\(p)" }
    static func count(_ p: String) -> String { "count/\(p)" }
    static func addr(_ p: String, _ ip: IP) -> String { "addr/\(p)/\(ip.ref)" }
    static func free(_ p: String, _ ip: IP) -> String { "free/\(p)/\(ip.ref)" }
    static func freePrefix(_ p: String, _ fam: Int) -> String { "free/\(p)/\(fam)/" }
    static func rsv(_ p: String, _ ip: IP) -> String { "rsv/\(p)/\(ip.ref)" }
    static func rsvPrefix(_ p: String, _ fam: Int) -> String { "rsv/\(p)/\(fam)/" }
    static func hwm(_ p: String, _ r: AddrRange) -> String { "hwm/\(p)/\(r.start.ref)" }
    static func last(_ p: String, _ fam: Int) -> String { "last/\(p)/\(fam)" }
    static func last(_ p: String, _ fam: Int, node: String?) -> String { node.map { "last/\(p)/\(fam)/\(esc($0))" } ?? last(p, fam) }
    static func hwmPiece(_ p: String, _ r: AddrRange) -> String { "hwmb/\(p)/\(r.start.ref)" }
    static func block(_ p: String, _ base: IP) -> String { "blk/\(p)/\(base.ref)" }
    static func nodeBlock(_ p: String, _ node: String, _ base: IP) -> String { "nblk/\(p)/\(esc(node))/\(base.ref)" }
    static func nodeBlockPrefix(_ p: String, _ node: String, _ fam: Int) -> String { "nblk/\(p)/\(esc(node))/\(fam)/" }
    static func claimMark(_ p: String, _ fam: Int) -> String { "bclm/\(p)/\(fam)" }
    static func nodeCount(_ p: String, _ node: String) -> String { "cnt/\(p)/\(esc(node))" }
    static func mac(_ p: String, _ ip: IP) -> String { "mac/\(p)/\(ip.ref)" }
    static func owner(_ ip: IP) -> String { "owner/\(ip.ref)" }
    static func att(_ cid: String, _ ifname: String) -> String { "att/\(esc(cid))/\(esc(ifname))" }
    static func node(_ node: String, _ cid: String, _ ifname: String) -> String { "node/\(esc(node))/\(esc(cid))/\(esc(ifname))" }
    static func nodePrefix(_ node: String) -> String { "node/\(esc(node))/" }
    static func ident(_ app: String, _ ord: String) -> String { "id/\(esc(app))/\(esc(ord))" }
    static func identPrefix(_ app: String) -> String { "id/\(esc(app))/" }
    static func exp(_ ms: Int64, _ app: String, _ ord: String) -> String {
        let d = String(ms)
        return "exp/" + String(repeating: "0", count: max(0, 16 - d.count)) + d + "/\(esc(app))/\(esc(ord))"
    }
}

/// The state of an address that has a record.
enum AddrState: String { case reserved, active, held }

/// addr/<P>/<ref>
struct AddrRec {
    var state: AddrState
    var prevReserved = false   // for active/held: return to reserved (else available) on release
    var cid: String? = nil
    var ifname: String? = nil
    var app: String? = nil
    var ord: String? = nil

    init(state: AddrState) { self.state = state }

    init?(_ j: JV) {
        guard let s = j["s"]?.string.flatMap(AddrState.init(rawValue:)) else { return nil }
        state = s
        prevReserved = j["p"]?.string == "reserved"
        cid = j["cid"]?.string
        ifname = j["if"]?.string
        app = j["app"]?.string
        ord = j["ord"]?.string
    }

    var json: JV {
        var o: JV = ["s": .string(state.rawValue)]
        if state != .reserved { o["p"] = .string(prevReserved ? "reserved" : "available") }
        if let cid { o["cid"] = .string(cid) }
        if let ifname { o["if"] = .string(ifname) }
        if let app { o["app"] = .string(app) }
        if let ord { o["ord"] = .string(ord) }
        return o
    }

    /// For messages: who has the address.
    var ownerText: String {
        switch state {
        case .reserved: return "reserved"
        case .active:
            var s = "in use by container \(cid ?? "?") (interface \(ifname ?? "?"))"
            if let app { s += " for \(app) ordinal \(ord ?? "?")" }
            return s
        case .held: return "held for \(app ?? "?") ordinal \(ord ?? "?")"
        }
    }

    /// For pool.show.
    func show(_ ip: IP) -> JV {
        var o: JV = ["address": .string(ip.description), "state": .string(state.rawValue)]
        if state != .reserved { o["previous"] = .string(prevReserved ? "reserved" : "available") }
        if let cid { o["containerID"] = .string(cid) }
        if let ifname { o["ifname"] = .string(ifname) }
        if let app { o["app"] = .string(app) }
        if let ord { o["ordinal"] = .string(ord) }
        return o
    }
}

/// Per-family counters of one pool. 128-bit and saturating: a pool of several IPv6 /64s holds more than 2^64
/// addresses, and sums over pools and families must never wrap (they once did: "free": -9223372036853445000).
struct Counts {
    // family -> [size, reserved, active, held]
    var byFamily: [Int: [Int128]] = [:]

    init() {}
    init(_ j: JV) {
        for (k, v) in j.object ?? [] {
            if let f = Int(k), let a = v.array, a.count == 4 { byFamily[f] = a.map { Counts.decode($0) } }
        }
    }
    /// Stored as JSON integers, or as decimal strings when they do not fit in 64 bits.
    var json: JV { .object(byFamily.keys.sorted().map { f in (String(f), .array(byFamily[f]!.map { Counts.encode($0) })) }) }
    static func encode(_ n: Int128) -> JV { n <= Int128(Int64.max) && n >= Int128(Int64.min) ? JV(Int64(n)) : .string(String(n)) }
    static func decode(_ v: JV) -> Int128 { v.int64.map { Int128($0) } ?? v.string.flatMap { Int128($0) } ?? 0 }

    static let size = 0, reserved = 1, active = 2, held = 3

    /// Largest count reported as a JSON number: 2^50, exactly representable in every JSON reader (doubles included).
    /// A larger count reads as 2^50, and the exact decimal value is given next to it as a string, in `<name>Exact`.
    static let reportCap: Int128 = 1 << 50
    static func report(_ n: Int128) -> JV { JV(Int64(max(0, min(n, reportCap)))) }
    /// Sets `name` in `o` to `n` as reported: the number (capped), plus `<name>Exact` when the cap applies.
    static func set(_ o: inout JV, _ name: String, _ n: Int128) {
        o[name] = report(n)
        if n > reportCap { o[name + "Exact"] = .string(String(n)) }
    }

    /// a + b, saturating at Int128.max / min (a pool covering more than half the IPv6 space).
    static func plus(_ a: Int128, _ b: Int128) -> Int128 {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? (b > 0 ? .max : .min) : r
    }

    /// Adds every counter of `o` (a node's deltas) to these.
    mutating func merge(_ o: Counts) {
        for (f, a) in o.byFamily { for i in 0..<4 where a[i] != 0 { add(f, i, a[i]) } }
    }

    mutating func add(_ fam: Int, _ field: Int, _ delta: Int128) {
        var a = byFamily[fam] ?? [0, 0, 0, 0]
        a[field] = Counts.plus(a[field], delta)
        byFamily[fam] = a
    }
    func free(_ fam: Int) -> Int128 {
        guard let a = byFamily[fam] else { return 0 }
        return max(0, a[0] - a[1] - a[2] - a[3])  // the in-use counts are real records: far below the size
    }
    func get(_ fam: Int, _ field: Int) -> Int128 { byFamily[fam]?[field] ?? 0 }

    /// Pool-level numbers: free is what the pool can still serve from available addresses (one address per
    /// family, so the scarcest family); reserved, active and held are address counts over all families.
    func summary(_ families: [Int]) -> (free: Int128, reserved: Int128, active: Int128, held: Int128) {
        let fams = families.isEmpty ? Array(byFamily.keys) : families
        let free = fams.map { self.free($0) }.min() ?? 0
        var r: Int128 = 0, a: Int128 = 0, h: Int128 = 0
        for f in fams {
            r = Counts.plus(r, get(f, Counts.reserved)); a = Counts.plus(a, get(f, Counts.active)); h = Counts.plus(h, get(f, Counts.held))
        }
        return (free, r, a, h)
    }
}

/// att/<cid>/<if>
struct Attachment {
    var cid: String
    var ifname: String
    var node: String?
    var pool: String
    var addrs: [IP]
    var app: String?
    var ord: String?
    var policy: String
    var result: JV

    var key: String { Key.att(cid, ifname) }

    var json: JV {
        var o: JV = ["cid": .string(cid), "if": .string(ifname), "pool": .string(pool), "addrs": .array(addrs.map { .string($0.ref) })]
        if let node { o["node"] = .string(node) }
        if let app { o["app"] = .string(app) }
        if let ord { o["ord"] = .string(ord) }
        o["policy"] = .string(policy)
        o["result"] = result
        return o
    }
}

extension Attachment {
    /// Decodes a stored record (the memberwise initializer stays synthesised).
    init?(_ j: JV) {
        guard let c = j["cid"]?.string, let i = j["if"]?.string, let p = j["pool"]?.string else { return nil }
        cid = c
        ifname = i
        node = j["node"]?.string
        pool = p
        addrs = (j["addrs"]?.array ?? []).compactMap { $0.string.flatMap(IP.init(ref:)) }
        app = j["app"]?.string
        ord = j["ord"]?.string
        policy = j["policy"]?.string ?? "onDelete"
        result = j["result"] ?? .object([])
    }
}

/// id/<app>/<ord>
struct Identity {
    var app: String
    var ord: String
    var policy: String
    var keep: Int64
    var pool: String
    var addrs: [IP]
    var cid: String?
    var ifname: String?
    var exp: Int64?
    /// The container it was last attached to, while held (for the identity.moved event).
    var prev: String? = nil

    var key: String { Key.ident(app, ord) }

    var json: JV {
        var o: JV = ["app": .string(app), "ord": .string(ord), "policy": .string(policy), "keep": JV(keep), "pool": .string(pool),
                     "addrs": .array(addrs.map { .string($0.ref) })]
        if let cid { o["cid"] = .string(cid) }
        if let ifname { o["if"] = .string(ifname) }
        if let exp { o["exp"] = JV(exp) }
        if let prev { o["prev"] = .string(prev) }
        return o
    }
}

extension Identity {
    /// Decodes a stored record (the memberwise initializer stays synthesised).
    init?(_ j: JV) {
        guard let a = j["app"]?.string, let o = j["ord"]?.string, let p = j["pool"]?.string else { return nil }
        app = a
        ord = o
        policy = j["policy"]?.string ?? "onDelete"
        keep = j["keep"]?.int64 ?? 0
        pool = p
        addrs = (j["addrs"]?.array ?? []).compactMap { $0.string.flatMap(IP.init(ref:)) }
        cid = j["cid"]?.string
        ifname = j["if"]?.string
        exp = j["exp"]?.int64
        prev = j["prev"]?.string
    }
}

func nowMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

func familyName(_ f: Int) -> String { f == 6 ? "IPv6" : "IPv4" }

/// Parsed pool definitions kept across calls, each with the exact bytes it was parsed from. A call still reads the
/// stored value (so a change, a rolled-back import or another instance's write is always seen) but parses it only
/// when the bytes differ: an allocation reads every pool definition, and parsing them was a fifth of its cost.
final class DefCache: @unchecked Sendable {
    private var byName: [String: (raw: [UInt8], def: PoolDef?, stamp: String?)] = [:]
    private var lock = pthread_mutex_t()

    init() { pthread_mutex_init(&lock, nil) }

    /// Remembers a definition just stored as `raw` (its serialisation), so that no later call parses it.
    func prime(_ name: String, _ raw: [UInt8], _ def: PoolDef, stamp: String) {
        pthread_mutex_lock(&lock)
        if byName.count >= 4096 { byName.removeAll() }
        byName[name] = (raw, def, stamp)
        pthread_mutex_unlock(&lock)
    }

    /// The stamp of a stored definition: its length and two 64-bit hashes of its bytes (FNV-1a, and a multiply-xorshift
    /// over 8-byte words), so that two definitions of one pool never share a stamp by accident.
    static func stamp(_ b: [UInt8]) -> String {
        var h1: UInt64 = 0xcbf29ce484222325, h2: UInt64 = 0x9e3779b97f4a7c15 ^ UInt64(b.count)
        b.withUnsafeBytes { raw in
            for x in raw { h1 = (h1 ^ UInt64(x)) &* 0x100000001b3 }
            var i = 0
            while i < raw.count {
                var w: UInt64 = 0
                for k in 0..<min(8, raw.count - i) { w |= UInt64(raw[i + k]) << (8 * UInt64(k)) }
                h2 = (h2 ^ w) &* 0xff51afd7ed558ccd
                h2 ^= h2 >> 33
                i += 8
            }
        }
        return "\(b.count)-" + String(h1, radix: 16) + "-" + String(h2, radix: 16)
    }

    /// The definition parsed under `stamp` (the stored poolv/ value), if this is the one cached.
    func cached(_ name: String, stamp: String) -> PoolDef?? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard let hit = byName[name], hit.stamp == stamp else { return nil }
        return .some(hit.def)
    }

    /// The definition stored as `raw` (nil when it is not a valid definition); throws when it is not JSON.
    /// `stamp`: the poolv/ value read with `raw` in the same call, remembered with it.
    func parse(_ name: String, _ raw: [UInt8], stamp: String? = nil) throws -> PoolDef? {
        pthread_mutex_lock(&lock)
        let hit = byName[name]
        pthread_mutex_unlock(&lock)
        if let hit, hit.raw == raw {
            if let stamp, hit.stamp != stamp {
                pthread_mutex_lock(&lock)
                byName[name] = (raw, hit.def, stamp)
                pthread_mutex_unlock(&lock)
            }
            return hit.def
        }
        let j: JV
        do { j = try JV.parse(raw) } catch {
            throw PluginError(.internal, "stored value at \(Key.pool(name)) is not valid JSON; the namespace is damaged")
        }
        let d = PoolDef(stored: j)
        pthread_mutex_lock(&lock)
        if byName.count >= 4096 { byName.removeAll() }  // pools come and go; never let the cache grow without bound
        byName[name] = (raw, d, stamp)
        pthread_mutex_unlock(&lock)
        return d
    }
}

/// One host call's view of the namespace: typed reads and writes, per-call caches of pool definitions, counters,
/// high-water marks and round-robin cursors (the last three written once, by `flush`, however often they move: an
/// add_batch of 1024 allocations writes each once), and the address state machine.
final class Op {
    let host: HostServices
    let network: String
    let now: Int64
    let parsed: DefCache
    private var defs: [String: PoolDef?] = [:]
    private var counts: [String: Counts] = [:]
    private var dirty: Set<String> = []
    /// The node the operation acts for (the ADD's node, the released attachment's): its counter deltas (cnt/) and
    /// cursor; nil: the pool's own counters and cursor.
    var node: String? = nil
    /// cnt/<P>/<node> entries as this call changed them, by key; written by flush.
    private var deltas: [String: Counts] = [:]
    /// nblk/ keys known to exist in this call (an add_batch asks for the same block again and again).
    var ownBlocks: Set<String> = []  // read by Find.swift
    private var hwms: [String: IP?] = [:]
    /// Values of hwm/ and last/ keys not written yet (key -> text); `flush` writes them.
    private var pending: [String: String] = [:]
    /// Round-robin cursors read or moved in this call (last/ key -> address).
    private var cursors: [String: IP?] = [:]
    /// free/ prefixes known to hold no entry after an address (nil: no entry at all). Allocation only removes free/
    /// entries, so "none after x" stays true for every later cursor; any free/ write forgets it.
    var noFreeAfter: [String: IP?] = [:]  // read by Find.swift
    /// Pools known to bind no MAC (no mac/ key): their addresses need no lookup. Any mac/ write forgets it.
    private var macless: Set<String> = []

    init(host: HostServices, network: String, parsed: DefCache) {
        self.host = host
        self.network = network
        self.parsed = parsed
        now = nowMillis()
    }

    // MARK: raw helpers

    func getJSON(_ key: String) throws -> JV? {
        guard let b = try host.get(key) else { return nil }
        do { return try JV.parse(b) } catch {
            throw PluginError(.internal, "stored value at \(key) is not valid JSON; the namespace is damaged")
        }
    }
    func put(_ key: String, _ v: JV) throws { try host.put(key, v.bytes) }
    func put(_ key: String, text: String) throws {
        switch key.utf8.first {
        case UInt8(ascii: "f"): noFreeAfter = [:]  // a free/ entry appears
        case UInt8(ascii: "m"): macless = []       // a MAC binding appears
        default: break
        }
        try host.put(key, text)
    }
    func delete(_ key: String) throws {
        if let c = key.utf8.first, c == UInt8(ascii: "h") || c == UInt8(ascii: "l") {  // hwm/, last/: drop what is pending
            pending[key] = nil
            hwms[key] = nil
            cursors[key] = nil
        }
        try host.delete(key)
    }
    func exists(_ key: String) throws -> Bool { try host.get(key) != nil }

    /// Visits every key under `prefix` in order; the body may delete the key it is given.
    func each(_ prefix: String, _ body: (String, [UInt8]) throws -> Void) throws {
        var after = ""
        while let e = try host.next(prefix: prefix, after: after) {
            try body(e.key, e.value)
            after = e.key
        }
    }

    // MARK: pools and counters

    func def(_ name: String) throws -> PoolDef? {
        if let d = defs[name] { return d }
        let stamp = try host.getString(Key.poolStamp(name))
        if let stamp, let hit = parsed.cached(name, stamp: stamp) {  // the definition itself is not read
            defs[name] = hit
            return hit
        }
        let d = try host.get(Key.pool(name)).flatMap { try parsed.parse(name, $0, stamp: stamp) }
        defs[name] = d
        return d
    }

    func requireDef(_ name: String) throws -> PoolDef {
        guard let d = try def(name) else {
            throw PluginError(.notFound, "pool \(name) does not exist in network \(network) (see pool.list)")
        }
        return d
    }

    /// Stores a definition; `bytes`, when given, are `d.json.bytes` serialised beforehand (off the transaction thread).
    func setDef(_ d: PoolDef, bytes: [UInt8]? = nil) throws {
        defs[d.name] = d
        try forgetHwms()
        let b = bytes ?? d.json.bytes
        let stamp = DefCache.stamp(b)
        try host.put(Key.pool(d.name), b)
        try host.put(Key.poolStamp(d.name), stamp)
        parsed.prime(d.name, b, d, stamp: stamp)  // later calls find it by the stamp: neither read nor parsed again
    }

    /// Gives every stored pool the stamp of its bytes (pools stored or changed by an earlier version have none, or an
    /// old one) and drops stamps of pools that are gone, so `allDefs` can list pools by their stamps. Run by create()
    /// and reconfigure(): one pass over the definitions.
    func stampPools() throws {
        var fix: [(String, String?)] = []
        try each("pool/") { key, value in
            let name = String(key.dropFirst(5))
            let want = DefCache.stamp(value)
            if try host.getString(Key.poolStamp(name)) != want { fix.append((name, want)) }
        }
        try each("poolv/") { key, _ in
            let name = String(key.dropFirst(6))
            if try host.get(Key.pool(name)) == nil { fix.append((name, nil)) }
        }
        for (name, stamp) in fix {
            if let stamp { try host.put(Key.poolStamp(name), stamp) } else { try host.delete(Key.poolStamp(name)) }
        }
    }

    /// Forgets which blocks the call saw claimed (their keys were just removed).
    func forgetBlocks() { ownBlocks = [] }

    func forgetDef(_ name: String) {
        defs[name] = .some(nil)
        counts[name] = nil
        deltas = deltas.filter { !$0.key.hasPrefix("cnt/\(name)/") }
        ownBlocks = []
        dirty.remove(name)
        // The pool's keys are gone: forget its marks and cursors, and a pending one must not bring them back. Other
        // pools' cached and pending values stay (clearing their caches would let a read see the stale stored value).
        func mine(_ k: String) -> Bool { k.hasPrefix("hwm/\(name)/") || k.hasPrefix("last/\(name)/") || k.hasPrefix("hwmb/\(name)/") }
        hwms = hwms.filter { !mine($0.key) }
        cursors = cursors.filter { !mine($0.key) }
        pending = pending.filter { !mine($0.key) }
        noFreeAfter = [:]
    }

    /// Every pool, by name: listed by their stamps (small), each definition read only when not cached under it.
    func allDefs() throws -> [PoolDef] {
        var out: [PoolDef] = []
        try each("poolv/") { key, value in
            let name = String(key.dropFirst(6))
            if let d = defs[name] { if let d { out.append(d) }; return }
            let stamp = String(decoding: value, as: UTF8.self)
            if let hit = parsed.cached(name, stamp: stamp) {
                defs[name] = hit
                if let hit { out.append(hit) }
                return
            }
            if let raw = try host.get(Key.pool(name)), let d = try? parsed.parse(name, raw, stamp: stamp) {
                defs[name] = d
                out.append(d)
            }
        }
        return out
    }

    /// The pool's counters: count/<P> plus every node's deltas (cnt/<P>/), with this call's own changes.
    func counts(_ pool: String) throws -> Counts {
        var c = try baseCounts(pool)
        let prefix = "cnt/\(pool)/"
        try each(prefix) { key, value in
            if deltas[key] == nil, let j = try? JV.parse(value) { c.merge(Counts(j)) }
        }
        for (k, d) in deltas where k.hasPrefix(prefix) { c.merge(d) }
        return c
    }

    private func baseCounts(_ pool: String) throws -> Counts {
        if let c = counts[pool] { return c }
        let c = try getJSON(Key.count(pool)).map { Counts($0) } ?? Counts()
        counts[pool] = c
        return c
    }

    /// Changes one counter: the node's deltas when the operation acts for a node and the pool keeps per-node counters
    /// (no key another host writes), else the pool's own counters.
    func bump(_ pool: String, _ fam: Int, _ field: Int, _ delta: Int128) throws {
        if let node, try def(pool)?.nodeCounters == true {
            let k = Key.nodeCount(pool, node)
            var d = try deltas[k] ?? (getJSON(k).map { Counts($0) } ?? Counts())
            d.add(fam, field, delta)
            deltas[k] = d
            return
        }
        var c = try baseCounts(pool)
        c.add(fam, field, delta)
        counts[pool] = c
        dirty.insert(pool)
    }

    /// Sets the pool's counters outright (an import counted them): every node's deltas go.
    func setCounts(_ pool: String, _ c: Counts) throws {
        counts[pool] = c
        dirty.insert(pool)
        deltas = deltas.filter { !$0.key.hasPrefix("cnt/\(pool)/") }
        _ = try host.delete(prefix: "cnt/\(pool)/")  // one operation however many nodes counted
    }

    /// Writes what the call changed in the caches. Call last, before returning OK.
    func flush() throws {
        for p in dirty.sorted() { if let c = counts[p] { try put(Key.count(p), c.json) } }
        dirty = []
        for k in deltas.keys.sorted() { try put(k, deltas[k]!.json) }
        deltas = [:]
        try flushPending()
    }

    private func flushPending() throws {
        for (k, v) in pending.sorted(by: { $0.key < $1.key }) { try host.put(k, v) }
        pending = [:]
    }

    /// The MAC the pool binds to `ip`, if any.
    func boundMAC(_ pool: String, _ ip: IP) throws -> String? {
        if macless.contains(pool) { return nil }
        if try host.next(prefix: "mac/\(pool)/") == nil {
            macless.insert(pool)
            return nil
        }
        return try host.getString(Key.mac(pool, ip))
    }

    // MARK: address records

    func rec(_ pool: String, _ ip: IP) throws -> AddrRec? {
        try getJSON(Key.addr(pool, ip)).flatMap { AddrRec($0) }
    }
    func putRec(_ pool: String, _ ip: IP, _ r: AddrRec) throws { try put(Key.addr(pool, ip), r.json) }

    /// The high-water mark of a range: the lowest address never handed out, or nil when every address of the
    /// range has been handed out once. Stored unclamped (end+1 once the range is used up), so a range that later
    /// grows continues where it stopped.
    func hwm(_ p: PoolDef, _ r: AddrRange) throws -> IP? {
        let k = r.legacyStart == nil ? Key.hwm(p.name, r) : Key.hwmPiece(p.name, r)
        if let cached = hwms[k] { return cached }
        var v: IP? = r.start
        if let t = try host.getString(k) {
            v = t == "end" ? nil : IP(hex: t)
        } else if let ls = r.legacyStart, let t = try host.getString("hwm/\(p.name)/\(ls.ref)") {
            v = t == "end" ? nil : IP(hex: t)  // the range's mark from before blocks: the piece's until it has its own
        }
        if let x = v, x < r.start { v = r.start }
        if let x = v, x > r.end { v = nil }
        hwms[k] = v
        return v
    }

    /// Moves a range's high-water mark to `next` (nil: past the end of the address space).
    func setHwm(_ p: PoolDef, _ r: AddrRange, _ next: IP?) throws {
        let k = r.legacyStart == nil ? Key.hwm(p.name, r) : Key.hwmPiece(p.name, r)
        var stored = next
        if let x = next, x > r.end { stored = r.end.successor }
        hwms[k] = stored.flatMap { $0 > r.end ? nil : $0 }
        pending[k] = stored?.hex ?? "end"
    }

    /// Forgets cached high-water marks (before their keys change behind the cache); writes pending ones first.
    func forgetHwms() throws {
        try flushPending()
        hwms = [:]
        cursors = [:]
    }

    /// The round-robin cursor of a family: the last address handed out from available.
    func cursor(_ p: PoolDef, _ fam: Int) throws -> IP? {
        let k = Key.last(p.name, fam, node: node)
        if let c = cursors[k] { return c }
        let c = try host.getString(k).flatMap { IP(hex: $0) }
        cursors[k] = c
        return c
    }

    /// True when `ip` (a member without a record) is found lazily, at or above its range's high-water mark.
    func isLazy(_ p: PoolDef, _ ip: IP) throws -> Bool {
        guard let r = p.piece(containing: ip), let h = try hwm(p, r) else { return false }
        return ip >= h
    }

    /// Where an address is handed out from: prefix length and gateway.
    func addressing(_ p: PoolDef, _ ip: IP) throws -> (prefix: Int, gateway: IP?) {
        if let r = p.range(containing: ip) { return (r.subnet.prefix, r.gateway) }
        if let o = try getJSON(Key.owner(ip)), o["pool"]?.string == p.name, let len = o["prefix"]?.int {
            return (len, o["gateway"]?.string.flatMap(IP.parse))
        }
        let bits = ip.bits
        return (bits, nil)
    }

    /// Is `ip` an address of pool `p` (whatever its state)? Also the reason when it is not.
    func membership(_ p: PoolDef, _ ip: IP) throws -> String? {
        for r in p.ranges where r.gateway == ip { return "\(ip) is the gateway of \(r.subnet) in pool \(p.name)" }
        if p.hole(containing: ip) != nil { return "\(ip) is excluded from pool \(p.name)" }
        if p.range(containing: ip) != nil { return nil }
        if let o = try getJSON(Key.owner(ip)), o["pool"]?.string == p.name { return nil }
        if let r = p.ranges.first(where: { $0.subnet.contains(ip) }) {
            return "\(ip) is outside the range \(r.start)-\(r.end) of pool \(p.name)"
        }
        let where_ = p.ranges.map { "\($0.start)-\($0.end)" }.joined(separator: ", ")
        return "\(ip) is not in pool \(p.name)" + (where_.isEmpty ? "" : " (ranges \(where_))")
    }

    // MARK: state transitions (each keeps the indexes and counters right)

    /// available -> active.
    func takeAvailable(_ p: PoolDef, _ ip: IP, _ r: AddrRec) throws {
        if let piece = p.piece(containing: ip), let h = try hwm(p, piece), h == ip {
            try setHwm(p, piece, ip.successor)  // the frontier: addresses at or above the hwm have no free/ entry
        } else {
            try delete(Key.free(p.name, ip))
        }
        try putRec(p.name, ip, r)
        try bump(p.name, ip.family, Counts.active, 1)
        let k = Key.last(p.name, ip.family, node: node)
        cursors[k] = ip
        pending[k] = ip.hex
    }

    /// reserved -> active.
    func takeReserved(_ p: PoolDef, _ ip: IP, _ r: AddrRec) throws {
        try delete(Key.rsv(p.name, ip))
        var r = r
        r.prevReserved = true
        try putRec(p.name, ip, r)
        try bump(p.name, ip.family, Counts.reserved, -1)
        try bump(p.name, ip.family, Counts.active, 1)
    }

    /// active/held -> its previous state (available or reserved).
    func release(_ p: PoolDef, _ ip: IP, _ r: AddrRec) throws {
        try bump(p.name, ip.family, r.state == .held ? Counts.held : Counts.active, -1)
        if r.prevReserved {
            try putRec(p.name, ip, AddrRec(state: .reserved))
            try put(Key.rsv(p.name, ip), text: "")
            try bump(p.name, ip.family, Counts.reserved, 1)
        } else {
            try delete(Key.addr(p.name, ip))
            if try !isLazy(p, ip) { try put(Key.free(p.name, ip), text: "") }
        }
    }

    /// reserved -> available.
    func unreserve(_ p: PoolDef, _ ip: IP) throws {
        try delete(Key.addr(p.name, ip))
        try delete(Key.rsv(p.name, ip))
        try bump(p.name, ip.family, Counts.reserved, -1)
        if try !isLazy(p, ip) { try put(Key.free(p.name, ip), text: "") }
    }

    /// available -> reserved.
    func reserve(_ p: PoolDef, _ ip: IP) throws {
        try delete(Key.free(p.name, ip))
        try putRec(p.name, ip, AddrRec(state: .reserved))
        try put(Key.rsv(p.name, ip), text: "")
        try bump(p.name, ip.family, Counts.reserved, 1)
    }

    // MARK: expiry

    /// Releases holds whose keepSeconds have run out. Reads the time-ordered index from its start and stops at
    /// the first entry in the future: the cost is the number of expired holds.
    func sweep() throws {
        while let e = try host.next(prefix: "exp/") {
            let parts = e.key.split(separator: "/", maxSplits: 2)
            guard parts.count == 3, let ms = Int64(parts[1]) else { try delete(e.key); continue }
            if ms > now { break }
            let idKey = "id/" + parts[2]
            if let j = try getJSON(idKey), let id = Identity(j), id.cid == nil, id.exp == ms {
                try releaseHeld(id)
                try delete(idKey)
                host.log(.info, "hold of \(id.app) ordinal \(id.ord) expired after \(id.keep)s: released \(id.addrs.map { $0.description }.joined(separator: ", "))")
            }
            try delete(e.key)
        }
    }

    /// Returns an identity's held addresses to their previous state. Returns those released.
    @discardableResult
    func releaseHeld(_ id: Identity) throws -> [IP] {
        guard let p = try def(id.pool) else { return [] }
        var out: [IP] = []
        for ip in id.addrs {
            guard let r = try rec(p.name, ip), r.state == .held, r.app == id.app, r.ord == id.ord else { continue }
            try release(p, ip, r)
            out.append(ip)
        }
        return out
    }

    // MARK: attachments

    /// Releases an attachment by its release policy. `final` marks scale-down or deletion of the app.
    func releaseAttachment(_ a: Attachment, final: Bool) throws {
        let acting = node
        node = a.node ?? node  // its node's counters: a release on any host writes no key the others' ADDs write
        defer { node = acting }
        var id: Identity? = nil
        if let app = a.app, let ord = a.ord, let j = try getJSON(Key.ident(app, ord)), let i = Identity(j),
           i.cid == a.cid, i.ifname == a.ifname {
            id = i  // the identity is still attached here (not taken over by a newer attachment)
        }
        let keep = id != nil && (a.policy == "never" || (a.policy == "immutable" && !final))
        if let p = try def(a.pool) {
            for ip in a.addrs {
                guard var r = try rec(p.name, ip), r.state == .active, r.cid == a.cid, r.ifname == a.ifname else { continue }
                if keep {
                    r.state = .held
                    r.cid = nil
                    r.ifname = nil
                    try putRec(p.name, ip, r)
                    try bump(p.name, ip.family, Counts.active, -1)
                    try bump(p.name, ip.family, Counts.held, 1)
                } else {
                    try release(p, ip, r)
                }
            }
        }
        if var id {
            if keep {
                id.prev = id.cid
                id.cid = nil
                id.ifname = nil
                if id.keep > 0 {
                    let ms = now + id.keep * 1000
                    id.exp = ms
                    try put(Key.exp(ms, id.app, id.ord), text: "")
                }
                try put(id.key, id.json)
            } else {
                if let e = id.exp { try delete(Key.exp(e, id.app, id.ord)) }
                try delete(id.key)
            }
        }
        try delete(a.key)
        if let n = a.node, !n.isEmpty { try delete(Key.node(n, a.cid, a.ifname)) }
    }
}
