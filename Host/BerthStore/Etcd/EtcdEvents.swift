// The etcd engine's event log: events under R + "ev/<20-digit revision>", the last revision in R + "evseq" (the key
// layout is in EtcdStore.swift). Revisions are given in the transaction and made durable by its Txn.
import BerthWire

extension EtcdStore {
    func eventKey(_ rev: Int64) -> [UInt8] {
        let digits = Array(String(rev).utf8)
        return evPrefix + [UInt8](repeating: UInt8(ascii: "0"), count: max(0, 20 - digits.count)) + digits
    }

    /// The last revision as this transaction sees it (a recorded point read of the counter inside one).
    func currentRevision() throws -> Int64 {
        guard let v = try get(seqKey) else { return 0 }
        guard let n = Int64(String(decoding: v, as: UTF8.self)) else {
            throw BerthError(.internal, "the event counter \(String(decoding: seqKey, as: UTF8.self)) in etcd holds \"\(String(decoding: v.prefix(40), as: UTF8.self))\", not a number")
        }
        return n
    }

    public func appendEvent(type: String, subject: String, actor: String, data: JSON) throws -> Int64 {
        if txn == nil {
            try begin()
            do {
                let rev = try appendEvent(type: type, subject: subject, actor: actor, data: data)
                try commit()
                return rev
            } catch {
                rollback()
                throw error
            }
        }
        let rev = try currentRevision() + 1
        let value: JSON = ["time": .number(wallClock()), "type": .string(type), "subject": .string(subject),
                           "actor": .string(actor), "data": data]
        txn!.write(eventKey(rev), value.bytes)
        txn!.write(seqKey, Array(String(rev).utf8))
        return rev
    }

    public func lastRevision() throws -> Int64 { try currentRevision() }

    /// Events after `since`, oldest first, at most `limit`; `type` keeps that type or types under it (`network` keeps
    /// `network.attached`), `subject` that subject or subjects under it (`App/web` keeps `App/web/0`), as Store.events.
    /// Inside a transaction: at its snapshot, with its own appended events. Not recorded in the read set.
    public func events(since: Int64, limit: Int, type: String?, subject: String?) throws -> [Event] {
        guard limit > 0 else { return [] }
        let hi = Keys.prefixEnd(evPrefix)
        var lo = eventKey(max(since, 0) + 1)
        var out: [Event] = []
        let page = min(max(limit, 64), 1000)
        while out.count < limit {
            let r = try client.range(lo, hi, revision: txn?.snapshot ?? 0, limit: page)
            if let t = txn, t.snapshot == 0 { t.snapshot = r.revision }
            for kv in r.kvs where out.count < limit {
                if let e = try decode(kv.key, kv.value), keeps(e, type, subject) { out.append(e) }
            }
            guard r.more, let last = r.kvs.last else { break }
            lo = last.key + [0]
        }
        if let t = txn, out.count < limit {
            let mine = t.writes.compactMap { k, v -> Event? in
                guard let v, Keys.within(k, eventKey(max(since, 0) + 1), hi) else { return nil }
                return (try? decode(k, v)) ?? nil
            }
            out += mine.filter { e in keeps(e, type, subject) && !out.contains { $0.rev == e.rev } }.sorted { $0.rev < $1.rev }.prefix(limit - out.count)
        }
        return out
    }

    private func keeps(_ e: Event, _ type: String?, _ subject: String?) -> Bool {
        if let type, e.type != type, !e.type.hasPrefix(type + ".") { return false }
        if let subject, e.subject != subject, !e.subject.hasPrefix(subject + "/") { return false }
        return true
    }

    private func decode(_ key: [UInt8], _ value: [UInt8]) throws -> Event? {
        guard let rev = Int64(String(decoding: key[evPrefix.count...], as: UTF8.self)) else { return nil }
        let j = try JSON.parse(value)
        return Event(rev: rev, time: j["time"]?.double ?? 0, type: j["type"]?.string ?? "", subject: j["subject"]?.string ?? "",
                     actor: j["actor"]?.string ?? "", data: j["data"] ?? .null)
    }
}
