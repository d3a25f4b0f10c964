// The store interface: what an engine of the state store implements. SQLite (Store.swift) is the engine of one host;
// an engine with optimistic transactions (etcd: a read set checked at commit) implements the same, and gets the same
// tests (Tests/BerthTests/StoreInterfaceTests.swift runs them against every engine).
import BerthWire

/// Transactions, ordered key spaces and the event log, as one engine provides them. All calls are made by one thread
/// at a time (the executor's), inside a transaction unless said otherwise.
///
/// **Transactions.** `begin` opens a write transaction; `commit` makes it durable as one unit (or throws, and then
/// nothing of it happened); `rollback` discards it. Inside one, `savepoint` nests: its body's writes land with the
/// enclosing transaction or vanish alone when the body throws. An optimistic engine records what each read saw and
/// compares it at `commit`; on a conflict `commit` throws `BerthError(.aborted)` with nothing applied, and the caller
/// (the executor) runs the transaction's operations again from the start. Operations must therefore be re-runnable:
/// they read what they need inside the transaction and keep no effect outside it until it commits.
///
/// **Key spaces.** Each namespace (a plugin instance's name, the host's own tables) is an ordered map of byte keys to
/// byte values. Keys compare as unsigned bytes, shorter first on a common prefix. `kvNext` is the ordered read: an
/// engine with optimistic transactions records the range it scanned, so a key inserted into it by another writer
/// (a phantom) is a conflict too.
///
/// **Event log.** Every committed event has a revision, strictly increasing in commit order and never reused;
/// `events(since:)` reads after a revision in order. An engine gives it at `appendEvent` (SQLite: dense, 1, 2, 3…) or
/// at the commit (etcd: from the Txn's revision, not dense; its `appendEvent` answers 0 and `committedEventRevision`
/// says it after the commit), so that writers on many hosts share no counter. Readers are told of new events through
/// the executor's commit notification.
public protocol StateStore: AnyObject {
    func begin() throws
    func commit() throws
    func rollback()
    func savepoint<T>(_ name: StaticString, _ body: () throws -> T) throws -> T

    /// Calls `body` with the value of `key` (nil when there is none); the bytes are valid during the call only.
    func kvRead<R>(_ ns: String, _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R
    func kvPut(_ ns: String, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws
    func kvDelete(_ ns: String, _ key: UnsafeRawBufferPointer) throws
    /// Calls `body` with the smallest key that starts with `prefix` and is strictly after `after` (from the prefix
    /// itself when `after` is empty or before it), and its value; nil when there is none.
    func kvScanNext<R>(_ ns: String, prefix: UnsafeRawBufferPointer, after: UnsafeRawBufferPointer,
                       _ body: ((key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)?) throws -> R) throws -> R
    /// Every key under `prefix` and its value, in key order, as the transaction sees them (its own writes included),
    /// WITHOUT recording the range in an optimistic engine's read set: for tables guarded another way (the workload
    /// tables' version key, Tables/Keyed.swift), so that reading thousands of rows costs no compare each.
    func kvScanUnrecorded(_ ns: String, prefix: [UInt8]) throws -> [(key: [UInt8], value: [UInt8])]
    func kvCountPrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64
    /// Deletes every key with the prefix; returns how many.
    func kvDeletePrefix(_ ns: String, _ prefix: UnsafeRawBufferPointer) throws -> Int64

    /// Appends an event; returns its revision, or 0 when the engine gives revisions at commit.
    func appendEvent(type: String, subject: String, actor: String, data: JSON) throws -> Int64
    /// After a commit: the revision of the last event it appended, for an engine that gives revisions at commit
    /// (nil otherwise, and when it appended none).
    var committedEventRevision: Int64? { get }
    /// Events after `since`, oldest first, at most `limit`; `type` and `subject` keep that value or those under it.
    func events(since: Int64, limit: Int, type: String?, subject: String?) throws -> [Event]
    /// The newest revision (0 when the log is empty).
    func lastRevision() throws -> Int64

    /// The plugins' completion callbacks of the open savepoints; `savepoint` drives it (CompletionStack.frame).
    var completions: CompletionStack { get }

    // What the executor asks of an engine around its transactions; the defaults suit an engine whose commit is durable
    // when it returns and that has no limits on a transaction's size.

    /// True when a commit is durable only after `syncLog()` (the executor then answers callers from its syncer thread).
    var durableCommits: Bool { get }
    /// Makes every commit so far durable; an error message on failure.
    func syncLog() -> String?
    /// True when the engine has housekeeping to do while the executor is idle (SQLite: a checkpoint of its log).
    var idleWorkDue: Bool { get }
    func doIdleWork()
    /// Inside a transaction: false once it no longer fits in one commit (etcd: --max-txn-ops, --max-request-bytes). The
    /// executor then commits the operations before the last one and runs that one in the next commit.
    var fitsOneCommit: Bool { get }
    /// Inside a transaction: true once an operation marked it as the scheduling leader's (HostStore.fenceTransaction;
    /// undone with that operation's savepoint). The executor commits such an operation alone.
    var transactionFenced: Bool { get }
}

extension StateStore {
    public var durableCommits: Bool { false }
    public func syncLog() -> String? { nil }
    public var idleWorkDue: Bool { false }
    public func doIdleWork() {}
    public var fitsOneCommit: Bool { true }
    public var transactionFenced: Bool { false }
    public var committedEventRevision: Int64? { nil }

    public func kvScanUnrecorded(_ ns: String, prefix: [UInt8]) throws -> [(key: [UInt8], value: [UInt8])] {
        var out: [(key: [UInt8], value: [UInt8])] = []
        var after = prefix
        while let kv = try prefix.withUnsafeBytes({ p in
            try after.withUnsafeBytes { a in try kvScanNext(ns, prefix: p, after: a) { $0.map { (key: Array($0.key), value: Array($0.value)) } } }
        }) {
            out.append(kv)
            after = kv.key
        }
        return out
    }

    /// Appends an event by berthd itself (or `actor`), with the usual defaults.
    @discardableResult
    public func appendEvent(type: String, subject: String, actor: String = "berthd", data: JSON = .object([])) throws -> Int64 {
        try appendEvent(type: type, subject: subject, actor: actor, data: data)
    }

    /// Events after `since`, every type and subject, at most `limit`.
    public func events(since: Int64, limit: Int = 1000) throws -> [Event] {
        try events(since: since, limit: limit, type: nil, subject: nil)
    }

    /// The length of a value (nil when there is none).
    public func kvLen(_ ns: String, _ key: UnsafeRawBufferPointer) throws -> Int64? {
        try kvRead(ns, key) { $0.map { Int64($0.count) } }
    }

    /// The value of a key given as text (nil when there is none).
    public func kvGet(_ ns: String, _ key: String) throws -> [UInt8]? {
        try Array(key.utf8).withUnsafeBytes { kb in try kvRead(ns, kb) { $0.map { Array($0) } } }
    }

    /// Every key and value of a namespace, in key order.
    public func kvEntries(_ ns: String) throws -> [(key: [UInt8], value: [UInt8])] {
        var out: [(key: [UInt8], value: [UInt8])] = []
        var after: [UInt8] = []
        while let kv = try after.withUnsafeBytes({ a in
            try [UInt8]().withUnsafeBytes { p in try kvScanNext(ns, prefix: p, after: a) { $0.map { (key: Array($0.key), value: Array($0.value)) } } }
        }) {
            out.append(kv)
            after = kv.key
        }
        return out
    }
}

extension Store: StateStore {
    public func begin() throws { try exec("BEGIN IMMEDIATE") }
    public func commit() throws { try exec("COMMIT") }
    public func rollback() { try? exec("ROLLBACK") }
    public var idleWorkDue: Bool { checkpointDue }
    public func doIdleWork() { checkpoint() }

    public func kvRead<R>(_ ns: String, _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        try body(try kvGet(ns, key)?.blob(0))
    }

    public func kvScanNext<R>(_ ns: String, prefix: UnsafeRawBufferPointer, after: UnsafeRawBufferPointer,
                              _ body: ((key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)?) throws -> R) throws -> R {
        guard let s = try kvNext(ns, prefix: prefix, after: after) else { return try body(nil) }
        return try body((s.blob(0), s.blob(1)))
    }
}
