// The etcd engine's event log, with no shared counter: each event is its own key R + "ev/" + writer + "/" + seq (the
// layout is in EtcdStore.swift), and its revision comes from the commit: etcd's revision of the Txn that created it
// x 1024 + its index among that Txn's events. Reads order events by creation (etcd sorts the range).
import BerthWire

extension EtcdStore {
    /// A Txn holds at most --max-txn-ops operations (128 by default, at most this many on any sane etcd).
    static let eventsPerTxn: Int64 = 1024

    public func appendEvent(type: String, subject: String, actor: String, data: JSON) throws -> Int64 {
        if txn == nil {
            try begin()
            do {
                _ = try appendEvent(type: type, subject: subject, actor: actor, data: data)
                try commit()
                return committedEventRevision ?? 0
            } catch {
                rollback()
                throw error
            }
        }
        let t = txn!
        eventSeq += 1
        if t.eventBase < 0 { t.eventBase = eventSeq }
        let i = eventSeq - t.eventBase
        guard i < Self.eventsPerTxn else {
            throw BerthError(.resourceExhausted, "more than \(Self.eventsPerTxn) events in one transaction; etcd's Txn cannot hold them: split the work")
        }
        // "i" and "type" first: every berthd's watch reads them from each event without parsing it (indexAndType).
        let value: JSON = ["i": .number(Double(i)), "type": .string(type), "time": .number(wallClock()), "subject": .string(subject),
                           "actor": .string(actor), "data": data]
        t.write(eventWriter + Self.hex16(eventSeq), value.bytes)
        return 0  // known at commit: committedEventRevision
    }

    /// The highest index among the events `t` appended and kept (savepoints rolled back may have dropped some).
    func lastEventIndex(_ t: EtcdTxn) -> Int64? {
        guard t.eventBase >= 0 else { return nil }
        return t.writes.compactMap { k, v -> Int64? in
            guard v != nil, k.count == eventWriter.count + 16, k.starts(with: eventWriter),
                  let seq = Int64(String(decoding: k[eventWriter.count...], as: UTF8.self), radix: 16) else { return nil }
            return seq - t.eventBase
        }.max()
    }

    static func hex16(_ n: Int64) -> [UInt8] {
        let digits = Array(String(n, radix: 16).utf8)
        return [UInt8](repeating: UInt8(ascii: "0"), count: max(0, 16 - digits.count)) + digits
    }

    /// The newest committed event's revision (0 when the log is empty); inside a transaction, at its snapshot.
    public func lastRevision() throws -> Int64 {
        let hi = Keys.prefixEnd(evPrefix)
        let top = try client.rangeByCreation(evPrefix, hi, revision: txn?.snapshot ?? 0, minCreate: 0, limit: 1, descending: true)
        if let t = txn, t.snapshot == 0 { t.snapshot = top.revision }
        // An empty log after compaction still answers with the mark: revisions never go back.
        guard let newest = top.kvs.first else { return compactedThrough }
        // The other events of that Txn were created at the same revision: the last is the one with the highest index.
        let group = try client.rangeByCreation(evPrefix, hi, revision: txn?.snapshot ?? top.revision, minCreate: newest.createRevision, limit: 0)
        return try group.kvs.compactMap { try decode($0) }.map(\.rev).max() ?? 0
    }

    /// Events after `since`, oldest first, at most `limit`; `type` keeps that type or types under it (`network` keeps
    /// `network.attached`), `subject` that subject or subjects under it (`App/web` keeps `App/web/0`), as Store.events.
    /// Committed events only (inside a transaction: at its snapshot; its own appended events have no revision yet).
    /// Not recorded in the read set.
    public func events(since: Int64, limit: Int, type: String?, subject: String?) throws -> [Event] {
        guard limit > 0 else { return [] }
        let hi = Keys.prefixEnd(evPrefix), page = 1000
        var from = max(since, 0) / Self.eventsPerTxn  // the Txn of `since` may hold events after it
        var out: [Event] = []
        while out.count < limit {
            let r = try client.rangeByCreation(evPrefix, hi, revision: txn?.snapshot ?? 0, minCreate: from, limit: page)
            if let t = txn, t.snapshot == 0 { t.snapshot = r.revision }
            var kvs = r.kvs
            // A page can end inside one Txn's events (etcd orders ties arbitrarily): that Txn is read by the next page.
            if r.more, let cut = kvs.last?.createRevision, kvs.contains(where: { $0.createRevision != cut }) {
                kvs.removeAll { $0.createRevision == cut }
                from = cut
            } else if let last = kvs.last {
                from = last.createRevision + 1
            }
            let evs = try kvs.compactMap { try decode($0) }.filter { $0.rev > since }.sorted { $0.rev < $1.rev }
            for e in evs where out.count < limit && keeps(e, type, subject) { out.append(e) }
            guard r.more else { break }
        }
        return out
    }

    private func keeps(_ e: Event, _ type: String?, _ subject: String?) -> Bool {
        if let type, e.type != type, !e.type.hasPrefix(type + ".") { return false }
        if let subject, e.subject != subject, !e.subject.hasPrefix(subject + "/") { return false }
        return true
    }

    /// An event value's index in its Txn and its type, read from its start when it begins `{"i":N,"type":"T"`
    /// (appendEvent writes them first, T without escapes); nil otherwise (the caller parses the JSON).
    static func indexAndType(_ v: [UInt8]) -> (i: Int64, type: String)? {
        let head: [UInt8] = Array(#"{"i":"#.utf8), mid: [UInt8] = Array(#","type":""#.utf8)
        guard v.count > head.count + mid.count + 2, v.starts(with: head) else { return nil }
        var p = head.count, i: Int64 = 0
        while p < v.count, v[p] >= 0x30, v[p] <= 0x39, p - head.count < 5 { i = i * 10 + Int64(v[p] - 0x30); p += 1 }
        guard p > head.count, v[p...].starts(with: mid) else { return nil }
        p += mid.count
        let start = p
        while p < v.count, v[p] != 0x22 { if v[p] == 0x5C || v[p] < 0x20 { return nil }; p += 1 }
        guard p < v.count else { return nil }
        return (i, String(decoding: v[start..<p], as: UTF8.self))
    }

    private func decode(_ kv: EtcdKV) throws -> Event? {
        let j = try JSON.parse(kv.value)
        guard let i = j["i"]?.int, i >= 0, Int64(i) < Self.eventsPerTxn, kv.createRevision > 0 else { return nil }
        return Event(rev: kv.createRevision * Self.eventsPerTxn + Int64(i), time: j["time"]?.double ?? 0, type: j["type"]?.string ?? "",
                     subject: j["subject"]?.string ?? "", actor: j["actor"]?.string ?? "", data: j["data"] ?? .null)
    }
}
