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

/// The completion callbacks of an engine's open savepoints: one frame per savepoint, and those of operations released
/// into the transaction that is about to commit. Every engine keeps one and drives it from its `savepoint`, so that a
/// plugin's callbacks follow the fate of the savepoint they were registered in, whatever the engine.
public final class CompletionStack {
    var frames: [Completions] = []
    var completed = Completions()
    public init() {}

    /// Registers callbacks with the innermost open savepoint; false when none is open (outside an operation).
    package func register(commit: (() -> Void)?, rollback: (() -> Void)?) -> Bool {
        guard !frames.isEmpty else { return false }
        frames[frames.count - 1].entries.append(.init(commit: commit, rollback: rollback))
        return true
    }

    /// Runs `body` as one savepoint's frame: on success its callbacks go to the enclosing frame (or the transaction);
    /// when it throws they are rolled back, after `undo` (the engine's own rollback of the savepoint) has run.
    package func frame<T>(_ body: () throws -> T, undo: () throws -> Void) throws -> T {
        frames.append(Completions())
        let out: T
        do { out = try body() } catch {
            let f = frames.removeLast()
            try undo()
            f.rollBack()
            throw error
        }
        let f = frames.removeLast()
        if frames.isEmpty { completed.append(f) } else { frames[frames.count - 1].append(f) }
        return out
    }

    /// The callbacks of the operations released into the transaction that is about to commit; empties the list.
    func take() -> Completions {
        defer { completed = Completions() }
        return completed
    }
}

extension Store {
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
