// Finding addresses for an operation (Op): the lowest reserved one, the next free one after a cursor (free/ entries,
// then the lazily handed-out part of each range), round robin in a node's own blocks ("Blocks" in docs/networks.md)
// and borrowing outside them. Split from State.swift, which keeps the records, counters and transitions.
import BerthPluginKit

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

extension Op {
    // MARK: finding addresses

    /// The lowest reserved address of a family.
    func lowestReserved(_ p: PoolDef, _ fam: Int) throws -> IP? {
        let prefix = Key.rsvPrefix(p.name, fam)
        guard let e = try host.next(prefix: prefix) else { return nil }
        return IP(hex: e.key.dropFirst(prefix.count))
    }

    /// The smallest free/ entry after `after` (or the smallest of all).
    func nextFree(_ p: PoolDef, _ fam: Int, after: IP?) throws -> IP? {
        let prefix = Key.freePrefix(p.name, fam)
        if let known = noFreeAfter[prefix] {
            guard let k = known else { return nil }         // no entry at all
            if let after, after >= k { return nil }           // none after k, so none after a later address
        }
        guard let e = try host.next(prefix: prefix, after: after.map { prefix + $0.hex } ?? "") else {
            noFreeAfter[prefix] = .some(after)
            return nil
        }
        return IP(hex: e.key.dropFirst(prefix.count))
    }

    /// The smallest lazily available address of range `r` after `after`. Walking forward from the high-water
    /// mark over holes and recorded addresses advances the mark for good, so each is skipped there only once.
    func lazyNext(_ p: PoolDef, _ r: AddrRange, after: IP?) throws -> IP? {
        guard let h = try hwm(p, r) else { return nil }
        var c = h
        if let a = after, a >= h {
            guard let s = a.successor else { return nil }
            c = s
        }
        let atFrontier = c == h
        while true {
            if c > r.end {
                if atFrontier { try setHwm(p, r, c) }
                return nil
            }
            if let hole = p.hole(containing: c) {
                guard let s = hole.hi.successor else { return nil }
                c = s
                continue
            }
            if try exists(Key.addr(p.name, c)) {
                guard let s = c.successor else { return nil }
                c = s
                continue
            }
            break
        }
        if atFrontier && c != h { try setHwm(p, r, c) }
        return c
    }

    /// The smallest free/ entry after `after` that lies in one of `view`'s ranges (pieces of blocks).
    func nextFree(_ p: PoolDef, _ fam: Int, after: IP?, in view: PoolDef) throws -> IP? {
        for r in view.ranges where r.family == fam {
            if let a = after, r.end <= a { continue }
            if let ip = try nextFree(p, in: r, after: after) { return ip }
        }
        return nil
    }

    /// The smallest free/ entry of range `r` after `after`. The scan covers only keys sharing the leading hex digits
    /// of r's first and last address: it records no read of other blocks' entries, which other nodes write.
    private func nextFree(_ p: PoolDef, in r: AddrRange, after: IP?) throws -> IP? {
        let base = Key.freePrefix(p.name, r.family)
        let common = String(zip(r.start.hex, r.end.hex).prefix { $0.0 == $0.1 }.map { $0.0 })
        var from = r.start.predecessor
        if let a = after, from.map({ a > $0 }) ?? true { from = a }
        guard let e = try host.next(prefix: base + common, after: from.map { base + $0.hex } ?? ""),
              let ip = IP(hex: e.key.dropFirst(base.count)), r.contains(ip) else { return nil }
        return ip
    }

    /// The smallest available address of a family after `after` (or from the start when nil); with `view`, only
    /// in its ranges (the pieces of some blocks of `p`), free/ entries elsewhere (other blocks, explicit addresses)
    /// are skipped.
    func firstAvailable(_ p: PoolDef, _ fam: Int, after: IP?, view: PoolDef? = nil) throws -> IP? {
        var best = try view.map { try nextFree(p, fam, after: after, in: $0) } ?? nextFree(p, fam, after: after)
        let p = view ?? p
        for r in p.ranges where r.family == fam {
            if let a = after, r.end <= a { continue }
            if let b = best, r.start >= b { break }
            if let c = try lazyNext(p, r, after: after) {
                if best == nil || c < best! { best = c }
                break
            }
        }
        return best
    }

    /// The next available address: round robin in the node's blocks (after its cursor, wrapping around); else in a
    /// block it claims now; else, when no block is left to claim, borrowed from any block (or explicit address).
    func pickAvailable(_ p: PoolDef, _ fam: Int) throws -> IP? {
        guard p.ranges.contains(where: { $0.family == fam }) else { return try roundRobin(p, fam, view: nil) }
        let me = node ?? ""
        // Most often the next address is in the block of the node's cursor: found without listing the node's blocks.
        if let c = try cursor(p, fam), c.family == fam, p.range(containing: c) != nil, try ownsBlock(p, me, p.blockBase(c)),
           let ip = try firstAvailable(p, fam, after: c, view: blockView(p, [p.blockBase(c)])) {
            return ip
        }
        var own: [IP] = []
        try each(Key.nodeBlockPrefix(p.name, me, fam)) { key, _ in
            if let b = IP(ref: String(key.dropFirst(Key.nodeBlockPrefix(p.name, me, fam).count - 2))) { own.append(b) }
        }
        if !own.isEmpty, let ip = try roundRobin(p, fam, view: blockView(p, own)) { return ip }
        if let ip = try claimBlock(p, fam, me) { return ip }
        var all: [IP] = []
        try each("blk/\(p.name)/\(fam)/") { key, _ in
            if let b = IP(ref: String(key.dropFirst("blk/\(p.name)/".count))) { all.append(b) }
        }
        let view = blockView(p, all)
        // Borrowing: free/ entries anywhere (other blocks, explicit addresses), and other blocks' lazy addresses.
        if let c = try cursor(p, fam), c.family == fam, let ip = try firstAvailable(view, fam, after: c) { return ip }
        return try firstAvailable(view, fam, after: nil)
    }

    private func ownsBlock(_ p: PoolDef, _ me: String, _ base: IP) throws -> Bool {
        let k = Key.nodeBlock(p.name, me, base)
        if ownBlocks.contains(k) { return true }
        guard try exists(k) else { return false }
        ownBlocks.insert(k)
        return true
    }

    /// `p` with its ranges replaced by the pieces of the blocks at `bases`.
    func blockView(_ p: PoolDef, _ bases: [IP]) -> PoolDef {
        var v = p
        v.ranges = bases.sorted().flatMap { p.pieces($0) }
        return v
    }

    /// Round robin after the operation's cursor, wrapping around; in `view` only when given.
    private func roundRobin(_ p: PoolDef, _ fam: Int, view: PoolDef?) throws -> IP? {
        if let c = try cursor(p, fam), c.family == fam, let ip = try firstAvailable(p, fam, after: c, view: view) { return ip }
        return try firstAvailable(p, fam, after: nil, view: view)
    }

    /// Claims for node `me` the lowest block of family `fam` that no node claimed and that has an available address,
    /// and returns that address. Nil when no such block is left.
    /// First the block of the node's cursor, after the cursor (a requested address moved it there: round robin
    /// continues after the last address handed out, as it did before blocks).
    private func claimBlock(_ p: PoolDef, _ fam: Int, _ me: String) throws -> IP? {
        func claim(_ base: IP, after: IP?) throws -> IP? {
            if try exists(Key.block(p.name, base)) { return nil }
            guard let ip = try firstAvailable(p, fam, after: after, view: blockView(p, [base])) else { return nil }
            try put(Key.block(p.name, base), text: me)
            try put(Key.nodeBlock(p.name, me, base), text: "")
            ownBlocks.insert(Key.nodeBlock(p.name, me, base))
            return ip
        }
        if let c = try cursor(p, fam), c.family == fam, p.range(containing: c) != nil, let ip = try claim(p.blockBase(c), after: c) { return ip }
        // From the claim mark (bclm/): the blocks below it are all claimed. The mark moves up to the lowest block left
        // unclaimed (one without an available address stays unclaimed: an address may come free in it).
        let markKey = Key.claimMark(p.name, fam)
        let stored = try host.getString(markKey)
        if stored == "end" { return nil }
        let mark = stored.flatMap { IP(hex: $0) }
        var lowestUnclaimed: String?, found: IP?
        for base in p.blockBases(fam, from: mark) {
            if try exists(Key.block(p.name, base)) { continue }
            if let ip = try claim(base, after: nil) {
                found = ip
                if lowestUnclaimed == nil {
                    var after = p.blockBases(fam, from: base).makeIterator()
                    _ = after.next()
                    lowestUnclaimed = after.next()?.hex ?? "end"
                }
                break
            }
            if lowestUnclaimed == nil { lowestUnclaimed = base.hex }
        }
        if (lowestUnclaimed ?? "end") != stored { try put(markKey, text: lowestUnclaimed ?? "end") }
        return found
    }
}
