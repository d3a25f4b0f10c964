// The state store: SQLite (the system libsqlite3) in WAL mode, a versioned schema with migrations, the plugins'
// key-value namespaces and the append-only event log. Everything else in the host reaches SQLite only through
// this file and Executor.swift, so the store can later move to another engine behind the same small surface.
import BerthWire
import CSQLite
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


let SQLITE_TRANSIENT_PTR = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One prepared statement, cached by the store.
public final class Statement {
    let stmt: OpaquePointer
    let db: OpaquePointer
    init(_ stmt: OpaquePointer, _ db: OpaquePointer) { self.stmt = stmt; self.db = db }
    deinit { sqlite3_finalize(stmt) }

    @discardableResult
    public func reset() -> Statement {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        return self
    }
    public func bind(_ i: Int32, _ v: String) { sqlite3_bind_text(stmt, i, v, -1, SQLITE_TRANSIENT_PTR) }
    public func bind(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
    public func bind(_ i: Int32, _ v: Double) { sqlite3_bind_double(stmt, i, v) }
    public func bindNull(_ i: Int32) { sqlite3_bind_null(stmt, i) }
    public func bind(_ i: Int32, blob p: UnsafeRawPointer?, _ n: Int) {
        if n == 0 { sqlite3_bind_zeroblob(stmt, i, 0) } else { sqlite3_bind_blob(stmt, i, p, Int32(n), SQLITE_TRANSIENT_PTR) }
    }
    public func bind(_ i: Int32, blob: [UInt8]) { blob.withUnsafeBytes { bind(i, blob: $0.baseAddress, $0.count) } }

    /// Steps once; true when a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw BerthError(.internal, "sqlite: \(String(cString: sqlite3_errmsg(db))) (code \(rc))")
    }
    public func run() throws { while try step() {} }

    public func int(_ c: Int32) -> Int64 { sqlite3_column_int64(stmt, c) }
    public func double(_ c: Int32) -> Double { sqlite3_column_double(stmt, c) }
    public func isNull(_ c: Int32) -> Bool { sqlite3_column_type(stmt, c) == SQLITE_NULL }
    public func text(_ c: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, c) else { return "" }
        return String(cString: p)
    }
    public func blob(_ c: Int32) -> UnsafeRawBufferPointer {
        let n = Int(sqlite3_column_bytes(stmt, c))
        return UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, c), count: n)
    }
    public func bytes(_ c: Int32) -> [UInt8] { Array(blob(c)) }
}

public struct Event: Sendable {
    public var rev: Int64
    public var time: Double
    public var type: String
    public var subject: String
    public var actor: String
    public var data: JSON
    public var json: JSON {
        ["rev": .number(Double(rev)), "time": .number(time), "type": .string(type), "subject": .string(subject),
         "actor": .string(actor), "data": data]
    }
}

public final class Store {
    public let path: String
    let db: OpaquePointer
    /// Log pages (4 KiB) at which a commit checkpoints the write-ahead log into the database file, and the lower mark
    /// at which an idle executor does it. SQLite appends every commit to the log and reads must search it; a
    /// checkpoint copies the log into the database file, after which the next commit starts the log over. SQLite's
    /// own automatic checkpoint (at 1000 pages, on every commit past it) cost a quarter of the ADD rate here, mostly
    /// in its two fsyncs; at 4000 pages it costs nothing measurable, and an executor idle for 50 ms checkpoints from
    /// 1000.
    static let checkpointPages: Int32 = 4000
    static let idleCheckpointPages: Int64 = 1000
    /// Checkpoints made and failed, and the pages in the log after the last commit (read by /metrics).
    let checkpoints = Atomic<UInt64>(0)
    let checkpointFailures = Atomic<UInt64>(0)
    let logPages = Atomic<Int64>(0)
    /// The highest event revision compacted away (Retention.swift; 0 when none): readers asking for events after an
    /// older revision are told those are gone.
    public let eventsCompactedThrough = Atomic<Int64>(0)
    private var cache: [String: Statement] = [:]
    /// Plugins' completion callbacks (ABI 1.2 on_complete), one frame per open savepoint, and those of operations
    /// released into the current transaction, run by the executor once it commits or rolls back.
    public let completions = CompletionStack()
    /// The statements of the plugin key-value calls, which run a dozen times per network ADD: held directly so
    /// they skip the cache's lookup by SQL text (they are in `cache` too, so BEGIN resets them like the rest).
    private var hot: [Statement?] = [nil, nil, nil, nil, nil]
    private enum Hot: Int { case get, put, delete, next, nextStrict }
    private func prepare(_ h: Hot, _ sql: String) throws -> Statement {
        if let s = hot[h.rawValue] { return s.reset() }
        let s = try prepare(sql)
        hot[h.rawValue] = s
        return s
    }
    public private(set) var schemaVersion: Int = 0

    /// Schema migrations, applied in order; the index + 1 is the schema version. Append only.
    static let migrations: [String] = [
        // 1: plugin namespaces and the event log
        """
        CREATE TABLE kv (ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
        CREATE TABLE events (rev INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, type TEXT NOT NULL,
                             subject TEXT NOT NULL, actor TEXT NOT NULL, data TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
        // 2: network attachments kept by the host (the plugin keeps its pools and addresses in its namespace)
        """
        CREATE TABLE attachments (network TEXT NOT NULL, container_id TEXT NOT NULL, ifname TEXT NOT NULL,
                                  node TEXT NOT NULL, result TEXT NOT NULL, created REAL NOT NULL,
                                  PRIMARY KEY (network, container_id, ifname)) WITHOUT ROWID;
        """,
        // 3: storage: volumes, their per-node state (controller publish, stage) and targets (the reference counts), snapshots
        """
        CREATE TABLE volumes (plugin TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, capacity INTEGER NOT NULL,
                              access_mode TEXT NOT NULL, volume_mode TEXT NOT NULL, volume TEXT NOT NULL, created REAL NOT NULL,
                              PRIMARY KEY (plugin, id)) WITHOUT ROWID;
        CREATE UNIQUE INDEX volumes_by_name ON volumes(plugin, name);
        CREATE TABLE volume_nodes (plugin TEXT NOT NULL, volume_id TEXT NOT NULL, node TEXT NOT NULL, readonly INTEGER NOT NULL,
                                   publish_context TEXT NOT NULL, staged INTEGER NOT NULL DEFAULT 0, staging_path TEXT NOT NULL,
                                   created REAL NOT NULL, PRIMARY KEY (plugin, volume_id, node)) WITHOUT ROWID;
        CREATE TABLE volume_targets (plugin TEXT NOT NULL, volume_id TEXT NOT NULL, node TEXT NOT NULL, target TEXT NOT NULL,
                                     readonly INTEGER NOT NULL, created REAL NOT NULL,
                                     PRIMARY KEY (plugin, volume_id, target)) WITHOUT ROWID;
        CREATE UNIQUE INDEX volume_targets_by_target ON volume_targets(plugin, target);
        CREATE TABLE snapshots (plugin TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, source_volume TEXT NOT NULL,
                                size INTEGER NOT NULL, snapshot TEXT NOT NULL, created REAL NOT NULL,
                                PRIMARY KEY (plugin, id)) WITHOUT ROWID;
        CREATE UNIQUE INDEX snapshots_by_name ON snapshots(plugin, name);
        """,
        // 4: discovery delivery: the durable cursor of each discovery plugin (last acknowledged revision, last resync)
        """
        CREATE TABLE discovery_cursors (plugin TEXT PRIMARY KEY, rev INTEGER NOT NULL, resync_rev INTEGER NOT NULL,
                                        updated REAL NOT NULL) WITHOUT ROWID;
        """,
        // 5: workloads: nodes, apps of every kind (the spec as JSON), instances (Workloads.swift)
        """
        CREATE TABLE nodes (name TEXT PRIMARY KEY, state TEXT NOT NULL, cpu INTEGER NOT NULL, memory INTEGER NOT NULL,
                            disk INTEGER NOT NULL, ports INTEGER NOT NULL, labels TEXT NOT NULL, created REAL NOT NULL,
                            updated REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE objects (kind TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL, generation INTEGER NOT NULL,
                              created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY (kind, name)) WITHOUT ROWID;
        CREATE TABLE instances (kind TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL, state TEXT NOT NULL,
                                node TEXT NOT NULL, prev_node TEXT NOT NULL, volume_node TEXT NOT NULL, incarnation INTEGER NOT NULL,
                                container_id TEXT NOT NULL, network TEXT NOT NULL, addresses TEXT NOT NULL, volumes TEXT NOT NULL,
                                cpu INTEGER NOT NULL, memory INTEGER NOT NULL, disk INTEGER NOT NULL, ports TEXT NOT NULL,
                                reason TEXT NOT NULL, final INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
                                PRIMARY KEY (kind, app, ordinal)) WITHOUT ROWID;
        """,
    ]

    /// true when commits must reach the disk before anyone is told (store.sync "full"). SQLite itself then runs with
    /// synchronous=NORMAL (no fsync inside COMMIT) and the executor makes each batch durable with `syncLog()` on a
    /// thread of its own before it answers the batch's callers: the next batch runs while the disk catches up.
    public let durableCommits: Bool
    private var walFD: Int32 = -1
    private let syncFile: @Sendable (Int32) -> Int32

    /// Process-wide SQLite settings, made once before the first connection (see Host/CSQLite/shim.h).
    static let configured: Int32 = berth_sqlite_configure()

    /// Opens (creating if needed) the store at `path` and migrates it to the current schema.
    /// `synchronous` is "full" (every commit reaches the disk before it is acknowledged: survives power loss) or
    /// "normal" (survives a crash or kill of the daemon; the OS may lose the last commits on power loss).
    /// `syncFile` makes a file's data durable (fdatasync(2); returns 0 or -1 with errno set): a caller may pass one
    /// that fails, to see how the store behaves when the disk does (EIO cannot be caused on purpose).
    public init(path: String, synchronous: String = "full", syncFile: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) }) throws {
        self.syncFile = syncFile
        durableCommits = synchronous != "normal"
        _ = Store.configured
        self.path = path
        var h: OpaquePointer?
        let rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let h else {
            let msg = h.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let h { sqlite3_close(h) }
            throw BerthError(.internal, "cannot open the state store \(path): \(msg)")
        }
        db = h
        sqlite3_busy_timeout(db, 5000)
        _ = berth_sqlite_lookaside(db, 512, 1024)
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=NORMAL")  // "full" is made by syncLog() after each batch, off the executor thread
        try exec("PRAGMA foreign_keys=ON")
        // Every operation runs in a savepoint inside the group commit: keep the statement journal that backs the
        // savepoints in memory (on disk it was ~20 page writes per network ADD), and give the page cache room for
        // the working set of a batch (64 MiB; SQLite's default is 2 MiB).
        try exec("PRAGMA temp_store=MEMORY")
        try exec("PRAGMA cache_size=-65536")
        // Checkpoints: see checkpointPages. The hook replaces SQLite's automatic checkpoint. A log that a burst
        // grew past 64 MiB is truncated back when it starts over.
        try exec("PRAGMA journal_size_limit=67108864")
        sqlite3_wal_hook(db, { ctx, _, _, pages in
            let store = Unmanaged<Store>.fromOpaque(ctx!).takeUnretainedValue()
            store.logPages.store(Int64(pages), ordering: .relaxed)
            if pages >= Store.checkpointPages { store.checkpoint() }
            return SQLITE_OK
        }, Unmanaged.passUnretained(self).toOpaque())
        try migrate()
        eventsCompactedThrough.store(try loadCompactedThrough(), ordering: .relaxed)
        if let e = syncLog() { throw BerthError(.internal, e) }
    }

    /// Makes every commit so far durable: fdatasync of the write-ahead log (the file SQLite appends each commit
    /// to; syncing any descriptor of it flushes the file). Safe to call from any thread while the executor keeps
    /// writing: it flushes at least everything committed before the call. Returns an error message on failure.
    public func syncLog() -> String? {
        if walFD < 0 {
            walFD = open(path + "-wal", O_RDONLY | O_CLOEXEC)
            // No log: nothing was committed since SQLite checkpointed the log away, and a checkpoint syncs the database
            // file. (Opening and closing the database file here would drop the POSIX locks SQLite holds on it.)
            if walFD < 0 { return errno == ENOENT ? nil : "cannot open \(path)-wal to sync it: \(String(cString: strerror(errno)))" }
        }
        return syncFile(walFD) == 0 ? nil : "fdatasync \(path)-wal: \(String(cString: strerror(errno)))"
    }

    deinit {
        hot = []
        cache.removeAll()
        sqlite3_close_v2(db)
        if walFD >= 0 { close(walFD) }
    }

    func exec(_ sql: String) throws {
        // A cached statement left on a row keeps a read transaction open past COMMIT, and a connection in a read
        // transaction cannot checkpoint: the log then never starts over. Reset them all before COMMIT too.
        // A cached statement left on a row keeps a read snapshot open between transactions; once another
        // connection (a second process) has written, BEGIN IMMEDIATE on that stale snapshot fails with
        // SQLITE_BUSY_SNAPSHOT at once, and for good. Release every snapshot before a transaction starts.
        if sql.hasPrefix("BEGIN") || sql == "COMMIT" { for s in cache.values { sqlite3_reset(s.stmt) } }
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(err)
            throw BerthError(.internal, "sqlite: \(msg) in: \(sql.prefix(80))")
        }
    }

    /// Copies the write-ahead log into the database file (PASSIVE: what no reader still needs; here there is no other
    /// reader, so all of it), after which the next commit starts the log over. On the executor thread, between
    /// transactions: from the log hook after a commit, or when the executor has been idle (`checkpointDue`).
    func checkpoint() {
        var log: Int32 = -1, copied: Int32 = -1
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &copied)
        if rc == SQLITE_OK && log >= 0 {
            checkpoints.add(1, ordering: .relaxed)
            logPages.store(Int64(log - max(copied, 0)), ordering: .relaxed)  // what a reader still holds back
        } else {
            checkpointFailures.add(1, ordering: .relaxed)
            logPages.store(0, ordering: .relaxed)  // retried at the next commit past the threshold, not in a loop
        }
    }

    /// True when the log holds `idleCheckpointPages` or more: an executor with nothing to do checkpoints then.
    var checkpointDue: Bool { logPages.load(ordering: .relaxed) >= Store.idleCheckpointPages }

    /// Runs `body` inside savepoint `name` (inside the current transaction): released when it returns, rolled back
    /// when it throws, so its writes land or vanish together and the error is rethrown. The savepoint statements are
    /// prepared once (every operation on the executor goes through here).
    /// Completion callbacks registered inside it follow its fate: rolled back here, or handed to the enclosing one.
    public func savepoint<T>(_ name: StaticString, _ body: () throws -> T) throws -> T {
        try prepare("SAVEPOINT \(name)").run()
        return try completions.frame({
            let out = try body()
            try prepare("RELEASE \(name)").run()
            return out
        }, undo: {
            try prepare("ROLLBACK TO \(name)").run()
            try prepare("RELEASE \(name)").run()
        })
    }

    /// A cached prepared statement, reset and ready to bind.
    func prepare(_ sql: String) throws -> Statement {
        if let s = cache[sql] { return s.reset() }
        var st: OpaquePointer?
        guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &st, nil) == SQLITE_OK, let st else {
            throw BerthError(.internal, "sqlite: \(String(cString: sqlite3_errmsg(db))) in: \(sql)")
        }
        let s = Statement(st, db)
        cache[sql] = s
        return s
    }

    func migrate() throws {
        let v = try prepare("PRAGMA user_version")
        _ = try v.step()
        let current = Int(v.int(0))
        v.reset()
        if current > Store.migrations.count {
            throw BerthError(.internal, "the state store \(path) has schema version \(current), newer than this berthd understands (\(Store.migrations.count)); use a newer berthd")
        }
        for (i, sql) in Store.migrations.enumerated() where i >= current {
            try exec("BEGIN IMMEDIATE")
            do {
                try exec(sql)
                try exec("PRAGMA user_version=\(i + 1)")
                try exec("COMMIT")
            } catch {
                try? exec("ROLLBACK")
                throw BerthError(.internal, "migrating the state store to schema \(i + 1) failed: \(error)")
            }
        }
        schemaVersion = Store.migrations.count
    }

    // MARK: key-value namespaces

    public func kvGet(_ ns: String, _ key: UnsafeRawBufferPointer) throws -> Statement? {
        let s = try prepare(.get, "SELECT value FROM kv WHERE ns=?1 AND key=?2")
        s.bind(1, ns)
        s.bind(2, blob: key.baseAddress, key.count)
        return try s.step() ? s : nil
    }

    public func kvGet(_ ns: String, _ key: String) throws -> [UInt8]? {
        try Array(key.utf8).withUnsafeBytes { try kvGet(ns, $0)?.bytes(0) }
    }

    public func kvPut(_ ns: String, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws {
        let s = try prepare(.put, "INSERT OR REPLACE INTO kv(ns, key, value) VALUES(?1, ?2, ?3)")
        s.bind(1, ns)
        s.bind(2, blob: key.baseAddress, key.count)
        s.bind(3, blob: value.baseAddress, value.count)
        try s.run()
    }

    public func kvDelete(_ ns: String, _ key: UnsafeRawBufferPointer) throws {
        let s = try prepare(.delete, "DELETE FROM kv WHERE ns=?1 AND key=?2")
        s.bind(1, ns)
        s.bind(2, blob: key.baseAddress, key.count)
        try s.run()
    }

    /// The smallest key with `prefix` strictly after `after` (or from the prefix when `after` is empty).
    /// Returns the statement positioned on the row (key = column 0, value = column 1), or nil.
    public func kvNext(_ ns: String, prefix: UnsafeRawBufferPointer, after: UnsafeRawBufferPointer) throws -> Statement? {
        let strict = after.count > 0 && compareBytes(after, prefix) >= 0
        let s = try strict ? prepare(.nextStrict, "SELECT key, value FROM kv WHERE ns=?1 AND key>?2 ORDER BY key LIMIT 1")
                           : prepare(.next, "SELECT key, value FROM kv WHERE ns=?1 AND key>=?2 ORDER BY key LIMIT 1")
        s.bind(1, ns)
        if strict { s.bind(2, blob: after.baseAddress, after.count) } else { s.bind(2, blob: prefix.baseAddress, prefix.count) }
        guard try s.step() else { return nil }
        let k = s.blob(0)
        if prefix.count > 0 {
            guard k.count >= prefix.count, memcmp(k.baseAddress!, prefix.baseAddress!, prefix.count) == 0 else { return nil }
        }
        return s
    }

    public func kvCount(_ ns: String) throws -> Int {
        let s = try prepare("SELECT count(*) FROM kv WHERE ns=?1")
        s.bind(1, ns)
        _ = try s.step()
        return Int(s.int(0))
    }

    // MARK: events

    @discardableResult
    public func appendEvent(type: String, subject: String, actor: String = "berthd", data: JSON = .object([])) throws -> Int64 {
        let s = try prepare("INSERT INTO events(time, type, subject, actor, data) VALUES(?1, ?2, ?3, ?4, ?5)")
        s.bind(1, wallClock())
        s.bind(2, type)
        s.bind(3, subject)
        s.bind(4, actor)
        s.bind(5, data.serialized)
        try s.run()
        return sqlite3_last_insert_rowid(db)
    }

    /// Events after `since`, oldest first. `type` keeps events of that type or of types under it (`network` keeps
    /// `network.attached`); `subject` keeps that subject or subjects under it (`StatefulApp/db` keeps `StatefulApp/db/0`).
    public func events(since: Int64, limit: Int = 1000, type: String? = nil, subject: String? = nil) throws -> [Event] {
        var sql = "SELECT rev, time, type, subject, actor, data FROM events WHERE rev > ?1"
        if type != nil { sql += " AND (type = ?3 OR substr(type, 1, length(?3) + 1) = ?3 || '.')" }
        if subject != nil { sql += " AND (subject = ?4 OR substr(subject, 1, length(?4) + 1) = ?4 || '/')" }
        let s = try prepare(sql + " ORDER BY rev LIMIT ?2")
        s.bind(1, since)
        s.bind(2, Int64(limit))
        if let type { s.bind(3, type) }
        if let subject { s.bind(4, subject) }
        var out: [Event] = []
        while try s.step() {
            let data = (try? JSON.parse(s.text(5))) ?? .null
            out.append(Event(rev: s.int(0), time: s.double(1), type: s.text(2), subject: s.text(3), actor: s.text(4), data: data))
        }
        return out
    }

    /// Rows changed by the last statement (internal to the store's tables).
    package var changes: Int32 { sqlite3_changes(db) }

    public func lastRevision() throws -> Int64 {
        let s = try prepare("SELECT coalesce(max(rev), 0) FROM events")
        _ = try s.step()
        return max(s.int(0), eventsCompactedThrough.load(ordering: .relaxed))  // a log compacted empty keeps its revision
    }
}

func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = min(a.count, b.count)
    if n > 0 {
        let c = memcmp(a.baseAddress!, b.baseAddress!, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}

public func wallClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
