// IP addresses as 128-bit integers (IPv4 in the low 32 bits), prefixes, canonical text, the fixed-width hex
// used in keys, deterministic MACs and the small SHA-256 they need for IPv6.

/// An IPv4 or IPv6 address. Ordered by family (IPv4 first), then numerically.
struct IP: Hashable, Comparable, CustomStringConvertible {
    let v6: Bool
    let hi: UInt64  // IPv4: always 0
    let lo: UInt64  // IPv4: the 32-bit address

    init(v6: Bool, hi: UInt64, lo: UInt64) {
        self.v6 = v6
        self.hi = v6 ? hi : 0
        self.lo = v6 ? lo : lo & 0xFFFF_FFFF
    }

    var family: Int { v6 ? 6 : 4 }
    var bits: Int { v6 ? 128 : 32 }

    static func < (a: IP, b: IP) -> Bool {
        if a.v6 != b.v6 { return !a.v6 }
        if a.hi != b.hi { return a.hi < b.hi }
        return a.lo < b.lo
    }

    /// The next address, or nil past the end of the family's space.
    var successor: IP? {
        if !v6 { return lo == 0xFFFF_FFFF ? nil : IP(v6: false, hi: 0, lo: lo + 1) }
        if lo == .max { return hi == .max ? nil : IP(v6: true, hi: hi + 1, lo: 0) }
        return IP(v6: true, hi: hi, lo: lo + 1)
    }

    /// The previous address, or nil before the start of the family's space.
    var predecessor: IP? {
        if !v6 { return lo == 0 ? nil : IP(v6: false, hi: 0, lo: lo - 1) }
        if lo == 0 { return hi == 0 ? nil : IP(v6: true, hi: hi - 1, lo: .max) }
        return IP(v6: true, hi: hi, lo: lo - 1)
    }

    /// The mask of a prefix length, as (hi, lo) words.
    static func mask(v6: Bool, prefix: Int) -> (UInt64, UInt64) {
        if !v6 { return (0, prefix == 0 ? 0 : (UInt64(0xFFFF_FFFF) << UInt64(32 - prefix)) & 0xFFFF_FFFF) }
        if prefix >= 64 { return (.max, prefix == 64 ? 0 : UInt64.max << UInt64(128 - prefix)) }
        return (prefix == 0 ? 0 : UInt64.max << UInt64(64 - prefix), 0)
    }

    /// The network address of this address under `prefix`.
    func network(_ prefix: Int) -> IP {
        let (mh, ml) = IP.mask(v6: v6, prefix: prefix)
        return IP(v6: v6, hi: hi & mh, lo: lo & ml)
    }

    /// The last address (all host bits set) of this address's network under `prefix`.
    func lastAddress(_ prefix: Int) -> IP {
        let (mh, ml) = IP.mask(v6: v6, prefix: prefix)
        return IP(v6: v6, hi: hi | ~mh, lo: lo | (v6 ? ~ml : ~ml & 0xFFFF_FFFF))
    }

    /// Number of addresses in [self, end] (self <= end), exactly; saturating at Int128.max (only [::, ::1...]
    /// spans of more than half the IPv6 space reach it).
    func exactCount(through end: IP) -> Int128 {
        let d = (UInt128(end.hi) << 64 | UInt128(end.lo)) &- (UInt128(hi) << 64 | UInt128(lo))
        return d >= UInt128(Int128.max) ? .max : Int128(d) + 1
    }

    /// Number of addresses in [self, end] (self <= end), saturating at Int64.max.
    func count(through end: IP) -> Int64 {
        let dlo = end.lo &- lo
        let borrow: UInt64 = end.lo < lo ? 1 : 0
        let dhi = end.hi &- hi &- borrow
        if dhi != 0 || dlo >= UInt64(Int64.max) { return .max }
        return Int64(dlo) + 1
    }

    // MARK: text

    /// Parses dotted-quad IPv4 (no leading zeros) or IPv6 (with "::" and an optional trailing dotted quad).
    static func parse<S: StringProtocol>(_ text: S) -> IP? {
        let s = String(text)
        if s.contains(":") { return parse6(s) }
        return parse4(Substring(s)).map { IP(v6: false, hi: 0, lo: UInt64($0)) }
    }

    private static func parse4(_ s: Substring) -> UInt32? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
            if p.count > 1 && p.first == "0" { return nil }
            guard let n = UInt32(p), n <= 255 else { return nil }
            v = v << 8 | n
        }
        return v
    }

    private static func parse6(_ s: String) -> IP? {
        if s.contains("%") { return nil }
        func groups(_ part: Substring, allowV4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, g) in items.enumerated() {
                if allowV4Tail && i == items.count - 1 && g.contains(".") {
                    guard let v4 = parse4(g) else { return nil }
                    out.append(UInt16(v4 >> 16))
                    out.append(UInt16(v4 & 0xFFFF))
                    continue
                }
                guard !g.isEmpty, g.count <= 4, let n = UInt16(g, radix: 16) else { return nil }
                out.append(n)
            }
            return out
        }
        var words: [UInt16]
        let halves = s.components(separatedByString: "::")
        if halves.count > 2 { return nil }
        if halves.count == 2 {
            guard let a = groups(Substring(halves[0]), allowV4Tail: false),
                  let b = groups(Substring(halves[1]), allowV4Tail: true), a.count + b.count <= 7 else { return nil }
            words = a + [UInt16](repeating: 0, count: 8 - a.count - b.count) + b
        } else {
            guard let a = groups(Substring(s), allowV4Tail: true), a.count == 8 else { return nil }
            words = a
        }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(words[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(words[i]) }
        return IP(v6: true, hi: hi, lo: lo)
    }

    /// Canonical text: dotted quad, or RFC 5952 IPv6 (lowercase, longest run of two or more zero groups as "::").
    var description: String {
        if !v6 {
            return "\(lo >> 24 & 0xFF).\(lo >> 16 & 0xFF).\(lo >> 8 & 0xFF).\(lo & 0xFF)"
        }
        var w = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 { w[i] = UInt16(truncatingIfNeeded: hi >> UInt64(48 - 16 * i)) }
        for i in 0..<4 { w[4 + i] = UInt16(truncatingIfNeeded: lo >> UInt64(48 - 16 * i)) }
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if w[i] == 0 {
                var j = i
                while j < 8 && w[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        var out = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLen
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(w[i], radix: 16)
            i += 1
        }
        return out
    }

    // MARK: keys

    /// Fixed-width lowercase hex (8 digits for IPv4, 32 for IPv6): sorts bytewise in address order.
    var hex: String {
        v6 ? IP.hex64(hi) + IP.hex64(lo) : IP.hexN(lo, 8)
    }

    private static func hex64(_ v: UInt64) -> String { hexN(v, 16) }
    private static func hexN(_ v: UInt64, _ n: Int) -> String {
        let h = String(v, radix: 16)
        return h.count >= n ? h : String(repeating: "0", count: n - h.count) + h
    }

    /// The inverse of `hex`.
    init?<S: StringProtocol>(hex s: S) {
        if s.count == 8, let v = UInt64(s, radix: 16) {
            self.init(v6: false, hi: 0, lo: v)
        } else if s.count == 32, let h = UInt64(s.prefix(16), radix: 16), let l = UInt64(s.suffix(16), radix: 16) {
            self.init(v6: true, hi: h, lo: l)
        } else {
            return nil
        }
    }

    /// "4/<hex>" or "6/<hex>": how an address is named inside keys and records.
    var ref: String { "\(family)/\(hex)" }

    init?(ref: String) {
        guard ref.count > 2 else { return nil }
        self.init(hex: ref.dropFirst(2))
    }

    /// Network-order bytes (4 or 16).
    var bytes: [UInt8] {
        if !v6 { return (0..<4).map { UInt8(truncatingIfNeeded: lo >> UInt64(24 - 8 * $0)) } }
        return (0..<8).map { UInt8(truncatingIfNeeded: hi >> UInt64(56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: lo >> UInt64(56 - 8 * $0)) }
    }
}

/// An address with a prefix length: "10.1.0.0/24".
struct CIDR: Hashable, CustomStringConvertible {
    let ip: IP
    let prefix: Int

    static func parse(_ s: String) -> CIDR? {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let ip = IP.parse(parts[0]), !parts[1].isEmpty, parts[1].allSatisfy({ $0 >= "0" && $0 <= "9" }),
              parts[1].count <= 3, let p = Int(parts[1]), p <= ip.bits else { return nil }
        return CIDR(ip: ip, prefix: p)
    }

    var network: IP { ip.network(prefix) }
    var last: IP { ip.lastAddress(prefix) }
    var hasHostBits: Bool { ip != network }
    func contains(_ a: IP) -> Bool { a.v6 == ip.v6 && a.network(prefix) == network }
    var description: String { "\(ip)/\(prefix)" }
}

extension String {
    /// Splits on a multi-character separator (Foundation-free).
    func components(separatedByString sep: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.range(of: sep) {
            out.append(String(rest[rest.startIndex..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
}

extension Substring {
    func range(of sep: String) -> Range<Substring.Index>? {
        let s = Array(sep.utf8)
        guard !s.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            var j = i, k = 0
            let u = self.utf8
            var matched = true
            while k < s.count {
                guard j < endIndex, u[j] == s[k] else { matched = false; break }
                j = u.index(after: j)
                k += 1
            }
            if matched { return i..<j }
            i = index(after: i)
        }
        return nil
    }
}

// MARK: - MACs

enum MAC {
    /// The deterministic MAC of an address: 0a:58 (locally administered, unicast) + the IPv4 address, or + the
    /// first four bytes of SHA-256 of the 16 IPv6 address bytes (as OVN-Kubernetes does).
    static func derived(_ ip: IP) -> String {
        let tail = ip.v6 ? Array(SHA256.hash(ip.bytes).prefix(4)) : ip.bytes
        return format([0x0A, 0x58] + tail)
    }

    static func format(_ b: [UInt8]) -> String {
        b.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }

    /// Why a MAC (canonical form) cannot be bound to an interface, or nil when it can: the broadcast address, a
    /// multicast address (least significant bit of the first octet set) or all zeros.
    static func unusable(_ mac: String) -> String? {
        if mac == "ff:ff:ff:ff:ff:ff" { return "is the broadcast address" }
        if mac == "00:00:00:00:00:00" { return "is all zeros" }
        if let first = UInt8(mac.prefix(2), radix: 16), first & 1 == 1 { return "is a multicast address (the first octet is odd)" }
        return nil
    }

    /// Parses "52:54:00:00:00:10" (or with '-') into its canonical lowercase colon form.
    static func canonical(_ s: String) -> String? {
        let parts = s.split(separator: s.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        return format(b)
    }
}

// MARK: - SHA-256 (FIPS 180-4), for IPv6 MACs: the plugin depends on nothing but the kit.

enum SHA256 {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        var m = message
        let bitLength = UInt64(message.count) * 8
        m.append(0x80)
        while m.count % 64 != 56 { m.append(0) }
        for i in (0..<8).reversed() { m.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(i * 8))) }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: m.count, by: 64) {
            for t in 0..<16 {
                w[t] = UInt32(m[chunk + 4 * t]) << 24 | UInt32(m[chunk + 4 * t + 1]) << 16
                    | UInt32(m[chunk + 4 * t + 2]) << 8 | UInt32(m[chunk + 4 * t + 3])
            }
            for t in 16..<64 {
                let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
                let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
                w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
            }
            var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
            for t in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ maj
                hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
            }
            h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
            h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
        }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for v in h { for s in [24, 16, 8, 0] { out.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
        return out
    }
}
