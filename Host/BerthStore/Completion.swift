// ABI 1.2 host side: plugins' completion callbacks (on_complete: after_commit / after_rollback per operation) and
// the small key-value additions (kv_len, kv_count_prefix, kv_delete_prefix).
import BerthWire
import CSQLite

#if canImport(Glibc)
import Glibc
#endif

/// One operation's (or one savepoint's) completion callbacks, in registration order.
struct Completions {
    struct Entry {
        let commit: (() -> Void)?
        let rollback: (() -> Void)?
    }
    var entries: [Entry] = []
    var isEmpty: Bool { entries.isEmpty }
    mutating func append(_ other: Completions) { entries += other.entries }
    /// After the writes are durable: in registration order.
    func commit() { for e in entries { e.commit?() } }
    /// After the writes are discarded: in reverse registration order (undo the last thing first).
    func rollBack() { for e in entries.reversed() { e.rollback?() } }
}

extension Store {
    /// Registers callbacks with the innermost open savepoint; false when none is open (outside an operation).
    package func onComplete(commit: (() -> Void)?, rollback: (() -> Void)?) -> Bool {
        guard !completionFrames.isEmpty else { return false }
        completionFrames[completionFrames.count - 1].entries.append(.init(commit: commit, rollback: rollback))
        return true
    }

    /// The callbacks of the operations released into the transaction that is about to commit; empties the list.
    func takeCompleted() -> Completions {
        defer { completed = Completions() }
        return completed
    }

    /// The first key after every key that starts with `prefix` (nil: no bound, the prefix is all 0xFF).
    static func prefixEnd(_ prefix: UnsafeRawBufferPointer) -> [UInt8]? {
        var b = Array(prefix)
        while let last = b.last {
            if last < 0xFF { b[b.count - 1] = last + 1; return b }
            b.removeLast()
        }
        return nil
    }

    /// The length of a value, without reading it out.
    public func kvLen(_ ns: String, _ key: UnsafeRawBufferPointer) throws -> Int64? {
        let s = try prepare("SELECT length(value) FROM kv WHERE ns=?1 AND key=?2")
        s.bind(1, ns)
        s.bind(2, blob: key.baseAddress, key.count)
        return try s.step() ? s.int(0) : nil
    }

    /// Runs `sql` (a statement over `kv` with ?1 ns, ?2 lower bound and, in `bounded`, ?3 upper bound) on a prefix range.
    private func prefixRange(_ ns: String, _ prefix: UnsafeRawBufferPointer, _ open: String, _ bounded: String) throws -> Statement {
        let end = Store.prefixEnd(prefix)
        let s = try prepare(end == nil ? open : bounded)
        s.bind(1, ns)
        s.bind(2, blob: prefix.baseAddress ?? UnsafeRawPointer(bitPattern: 1), prefix.count)
        if let end { s.bind(3, blob: end) }
        return s
    }

    public func kvCountPrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64 {
        let s = try prefixRange(ns, prefix, "SELECT count(*) FROM kv WHERE ns=?1 AND key>=?2",
                                "SELECT count(*) FROM kv WHERE ns=?1 AND key>=?2 AND key<?3")
        _ = try s.step()
        return s.int(0)
    }

    public func kvDeletePrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64 {
        let s = try prefixRange(ns, prefix, "DELETE FROM kv WHERE ns=?1 AND key>=?2",
                                "DELETE FROM kv WHERE ns=?1 AND key>=?2 AND key<?3")
        try s.run()
        return Int64(sqlite3_changes(db))
    }
}
