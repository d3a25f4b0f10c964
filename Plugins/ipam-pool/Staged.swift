// Large pool imports and deletions in steps: each step is one admin call in its own transaction (the host calls
// again with the request plus "continue" while an answer carries one), so allocations run between the steps. A marker
// key records where a staged operation is, so that berthd stopping halfway leaves a pool that is not live yet (an
// import: its definition is written by the last step) or no longer live (a deletion: its definition goes first), and
// the same request resumes it.
//
//   importing/<P>   {"phase": 0 explicit | 1 reserved | 2 MACs, "pos", "total", "done"}: an import in steps
//   importdoc/<P>   the POOL document being imported (validated by the first step)
//   deleting/<P>    {"phase": 0 owner entries | 1... per-pool prefixes, "at"}: a deletion in steps
//   deletedoc/<P>   {"ips": [...]} of the deleted pool's document (for its explicit addresses' owner entries)

import BerthPluginKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Key {
    static func importing(_ p: String) -> String { "importing/\(p)" }
    static func importDoc(_ p: String) -> String { "importdoc/\(p)" }
    static func deleting(_ p: String) -> String { "deleting/\(p)" }
    static func deleteDoc(_ p: String) -> String { "deletedoc/\(p)" }
}

/// The last staged document parsed, with its bytes: every step of a staged import reads the document again (a step
/// must not trust anything but the store) but parses it only once. A document prepared off the transaction thread
/// also brings its definition and canonical document serialised, for the last step to write as they are.
final class StagedSpecCache: @unchecked Sendable {
    struct Entry {
        var raw: [UInt8]
        var spec: PoolSpec
        var defBytes: [UInt8]? = nil
        var canonicalBytes: [UInt8]? = nil
    }
    private var last: Entry?
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }

    /// Remembers a document already parsed (the first step validated it) under the bytes it is stored as.
    func prime(_ e: Entry) {
        pthread_mutex_lock(&lock)
        last = e
        pthread_mutex_unlock(&lock)
    }

    func entry(_ raw: [UInt8]) throws -> Entry {
        pthread_mutex_lock(&lock)
        let hit = last
        pthread_mutex_unlock(&lock)
        if let hit, hit.raw == raw { return hit }
        let doc: JV
        do { doc = try JV.parse(raw) } catch { throw PluginError(.internal, "a staged pool document is not valid JSON; the namespace is damaged") }
        let e = Entry(raw: raw, spec: try PoolSpec.parse(doc))
        prime(e)
        return e
    }
}

/// The last value derived from some stored bytes, kept with them (the bytes are read again at every use; the value is
/// derived again only when they differ).
final class LastDerived<T>: @unchecked Sendable {
    private var last: (raw: [UInt8], value: T)?
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }

    func get(_ raw: [UInt8], _ derive: ([UInt8]) throws -> T) throws -> T {
        pthread_mutex_lock(&lock)
        let hit = last
        pthread_mutex_unlock(&lock)
        if let hit, hit.raw == raw { return hit.value }
        let v = try derive(raw)
        pthread_mutex_lock(&lock)
        last = (raw, v)
        pthread_mutex_unlock(&lock)
        return v
    }
}

extension IpamPool {
    /// A new pool with more addresses than this to write (explicit, reserved, MAC bindings) is imported in steps.
    static let stagedAbove = 1024
    /// Addresses one step of an import writes at most: up to 2,048 key writes and 512 reads, a few milliseconds (every
    /// ADD that arrives meanwhile waits for the step, so it is kept well under the ADD's own latency budget).
    static let stepAddresses = 512
    /// Keys one step of a deletion removes at most (the commit that holds them, and the ADDs in it, write every page
    /// they touched).
    static let stepKeys = 1024
    static let deletePrefixes = ["addr", "free", "rsv", "hwm", "last", "mac", "cnt", "blk", "nblk", "hwmb", "bclm"]

    /// The work a new pool's import writes per address.
    static func importWork(_ spec: PoolSpec) -> Int { spec.explicit.count + spec.reserved.count + spec.macs.count }

    /// Refuses an import while a staged one (of another pool, or of this one with another document) is unfinished,
    /// and while this pool's deletion is. Returns true when `merged` resumes the unfinished import of `name`.
    func checkStaged(_ op: Op, _ name: String, _ merged: JV, mergedBytes: [UInt8]? = nil) throws -> Bool {
        if try op.exists(Key.deleting(name)) {
            throw PluginError(.failedPrecondition, "pool \(name) is still being deleted (a pool.delete that did not finish); run pool.delete \(name) again to finish it, then import")
        }
        guard let busy = try op.host.next(prefix: "importing/") else { return false }
        let other = String(busy.key.dropFirst("importing/".count))
        if other == name, let mb = mergedBytes, try op.host.get(Key.importDoc(name)) == mb { return true }  // no parse of a large one
        if other == name, let doc = try op.getJSON(Key.importDoc(name)), doc == merged { return true }
        if other == name {
            throw PluginError(.failedPrecondition, "an import of pool \(name) with another document did not finish; send that document again to finish it, or pool.delete \(name) to roll it back")
        }
        throw PluginError(.failedPrecondition, "pool \(other) is being imported in steps; import \(name) when it has finished (if berthd stopped during it, send pool \(other)'s document again, or pool.delete \(other))")
    }

    /// Starts a staged import of a new pool (already validated): records the marker and the document, and answers
    /// "continue". Nothing of the pool is live until the last step.
    func startStagedImport(_ op: Op, _ name: String, _ merged: JV, _ spec: PoolSpec, _ pre: PreparedImport?) throws -> JV {
        let raw = pre?.mergedBytes ?? merged.bytes
        try op.host.put(Key.importDoc(name), raw)
        stagedSpecs.prime(.init(raw: raw, spec: spec, defBytes: pre?.defBytes, canonicalBytes: pre?.canonicalBytes))
        try op.put(Key.importing(name), ["phase": 0, "pos": 0, "done": 0, "total": JV(Self.importWork(spec))])
        return ["continue": ["pool": .string(name)], "pool": .string(name), "done": 0, "total": JV(Self.importWork(spec))]
    }

    /// One step of a staged import: the next `stepAddresses` addresses; the last step writes the definition, the
    /// counters and the document, and answers the pool's summary.
    func importStep(_ op: Op, _ name: String) throws -> JV {
        guard let m = try op.getJSON(Key.importing(name)), let raw = try op.host.get(Key.importDoc(name)) else {
            throw PluginError(.failedPrecondition, "no import of pool \(name) is in progress (it finished, or pool.delete rolled it back)")
        }
        let staged = try stagedSpecs.entry(raw)
        let spec = staged.spec
        let p = spec.def
        var phase = m["phase"]?.int ?? 0, pos = m["pos"]?.int ?? 0, done = m["done"]?.int ?? 0
        var budget = Self.stepAddresses
        while budget > 0 && phase < 3 {
            let count = [spec.explicit.count, spec.reserved.count, spec.macs.count][phase]
            let end = min(count, pos + budget)
            for i in pos..<end {
                switch phase {
                case 0:
                    let e = spec.explicit[i]
                    var o = e.json
                    o["pool"] = .string(name)
                    try op.put(Key.owner(e.ip), o)
                    try op.put(Key.free(name, e.ip), text: "")
                case 1:
                    if try op.rec(name, spec.reserved[i]) == nil { try op.reserve(p, spec.reserved[i]) }
                default:
                    try op.put(Key.mac(name, spec.macs[i].0), text: spec.macs[i].1)
                }
            }
            budget -= end - pos
            done += end - pos
            pos = end
            if pos == count { phase += 1; pos = 0 }
        }
        let total = Self.importWork(spec)
        if phase < 3 {
            try op.put(Key.importing(name), ["phase": JV(phase), "pos": JV(pos), "done": JV(done), "total": JV(total)])
            return ["continue": ["pool": .string(name)], "pool": .string(name), "done": JV(done), "total": JV(total)]
        }
        try op.setDef(p, bytes: staged.defBytes)
        var c = Counts()
        for f in p.families { c.add(f, Counts.size, 0) }
        for r in p.ranges { c.add(r.family, Counts.size, p.memberCount(r)) }
        for e in spec.explicit { c.add(e.ip.family, Counts.size, 1) }
        for ip in spec.reserved { c.add(ip.family, Counts.reserved, 1) }  // a new pool: all of them became reserved here
        try op.setCounts(name, c)
        try op.host.put(Key.spec(name), staged.canonicalBytes ?? spec.canonical.bytes)
        try op.delete(Key.importing(name))
        try op.delete(Key.importDoc(name))
        emit("pool.imported", ["pool": .string(name), "created": .bool(true), "steps": .bool(true)])
        return try summary(op, p).with("created", .bool(true))
    }

    /// pool.delete: the definition goes at once (the pool stops serving), its keys in steps of `stepKeys`. An
    /// unfinished staged import of the pool is rolled back the same way.
    func deletePool(_ op: Op, _ name: String) throws -> JV {
        if try op.exists(Key.deleting(name)) { return try deleteStep(op, name) }
        // The definition is not parsed (a megabyte for the largest pool): only whether it is there, and the counters.
        let stored = try op.exists(Key.pool(name))
        if !stored, try op.exists(Key.importing(name)) {
            if let doc = try op.host.get(Key.importDoc(name)) { try op.host.put(Key.deleteDoc(name), Self.explicitDoc(doc)) }
            try op.delete(Key.importing(name))
            try op.delete(Key.importDoc(name))
            try op.put(Key.deleting(name), ["phase": 0, "at": 0])
            return try deleteStep(op, name)
        }
        guard stored else { _ = try op.requireDef(name); return .object([]) }  // throws: no such pool
        let s = try op.counts(name).summary([])  // every family it counts
        if s.active + s.held > 0 {
            throw PluginError(.failedPrecondition, "pool \(name) has \(s.active + s.held) active addresses (\(s.active) attached, \(s.held) held for stateful identities); release them before deleting the pool")
        }
        if let spec = try op.host.get(Key.spec(name)) { try op.host.put(Key.deleteDoc(name), Self.explicitDoc(spec)) }
        try op.delete(Key.pool(name))
        try op.delete(Key.poolStamp(name))
        try op.delete(Key.spec(name))
        try op.delete(Key.count(name))
        op.forgetDef(name)
        try op.put(Key.deleting(name), ["phase": 0, "at": 0])
        return try deleteStep(op, name)
    }

    /// What a deletion keeps of a pool document: its "ips", the only field that leads to keys outside the pool's own
    /// prefixes (owner/ entries). Found by skipping over the rest; the whole document if it cannot be.
    static func explicitDoc(_ doc: [UInt8]) -> [UInt8] {
        guard let s = TopLevel.slices(doc, ["ips"]) else { return doc }
        guard let ips = s["ips"] else { return Array("{}".utf8) }
        return Array("{\"ips\":".utf8) + ips + [UInt8(ascii: "}")]
    }

    /// Every address a pool document's "ips" names (ranges expanded), in document order: the addresses whose owner/
    /// entries may be the pool's. Parsed once per document (`explicitLists`), not at every step.
    static func listedAddresses(_ raw: [UInt8]) throws -> [IP] {
        guard let ips = TopLevel.values(raw, ["ips"]) else {
            throw PluginError(.internal, "a staged pool document is not valid JSON; the namespace is damaged")
        }
        var out: [IP] = []
        for e in ips["ips"]?.array ?? [] {
            guard let t = e.string?.trimmingSpaces else { continue }
            let span = t.contains("/") ? CIDR.parse(t).map { Interval(lo: $0.ip, hi: $0.ip) } : PoolSpec.parseSpan(t)
            guard let span, span.lo.count(through: span.hi) <= PoolSpec.maxExpansion else { continue }  // validated at import
            var ip = span.lo
            while true {
                out.append(ip)
                if ip == span.hi { break }
                ip = ip.successor!
            }
            if out.count > 2 * PoolSpec.maxAddresses { break }
        }
        return out
    }

    /// One step of a deletion: owner entries of the pool's explicit addresses, then every per-pool prefix.
    func deleteStep(_ op: Op, _ name: String) throws -> JV {
        let m = try op.getJSON(Key.deleting(name)) ?? .object([])
        // Phase 0 walks the addresses the document lists ("at": its position there). A marker of an earlier version
        // counted "pos" in another list: that walk starts over (deleting an owner entry is idempotent).
        var phase = m["phase"]?.int ?? 0, pos = m["at"]?.int ?? 0
        var budget = Self.stepKeys
        if phase == 0 {
            let listed = try op.host.get(Key.deleteDoc(name)).map { raw in try explicitLists.get(raw) { try Self.listedAddresses($0) } } ?? []
            let end = min(listed.count, pos + budget)
            for ip in listed[min(pos, end)..<end] {
                if let o = try op.getJSON(Key.owner(ip)), o["pool"]?.string == name { try op.delete(Key.owner(ip)) }
            }
            budget -= end - min(pos, end)
            pos = end
            if pos == listed.count { phase = 1; pos = 0 }
        }
        while budget > 0 && phase >= 1 && phase <= Self.deletePrefixes.count {
            let prefix = "\(Self.deletePrefixes[phase - 1])/\(name)/"
            var emptied = false
            while budget > 0 {
                guard let e = try op.host.next(prefix: prefix) else { emptied = true; break }
                try op.delete(e.key)
                budget -= 1
            }
            if emptied { phase += 1 }
        }
        op.forgetDef(name)
        if phase <= Self.deletePrefixes.count {
            try op.put(Key.deleting(name), ["phase": JV(phase), "at": JV(pos)])
            return ["continue": ["pool": .string(name)], "deleting": .string(name)]
        }
        try op.delete(Key.count(name))  // a rolled-back import may have left its counters
        try op.delete(Key.poolStamp(name))  // and an earlier version its stamp
        try op.delete(Key.deleting(name))
        try op.delete(Key.deleteDoc(name))
        emit("pool.deleted", ["pool": .string(name)])
        return ["deleted": .string(name)]
    }
}
