// Online backup of the state store and the check a restore makes first. A backup is `VACUUM INTO` on a read-only
// connection of its own: it reads one snapshot of the database (WAL lets the executor go on committing meanwhile)
// and writes a compact, self-contained SQLite file (no log beside it), which a new host restores as its state.db.
import BerthWire
import CSQLite
import Foundation

public struct BackupSummary: Sendable {
    public let bytes: Int
    public let schemaVersion: Int
    public let attachments: Int
    public let events: Int
    public let lastRevision: Int64
}

extension Store {
    /// Writes a consistent copy of the database at `path` to `dest` (which must not exist yet), while others write.
    public static func backup(databaseAt path: String, to dest: String) throws {
        try withReadOnly(path) { db in
            var st: OpaquePointer?
            guard sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &st, nil) == SQLITE_OK, let st else {
                throw BerthError(.internal, "backup of \(path): \(String(cString: sqlite3_errmsg(db)))")
            }
            defer { sqlite3_finalize(st) }
            sqlite3_bind_text(st, 1, dest, -1, SQLITE_TRANSIENT_PTR)
            let rc = sqlite3_step(st)
            guard rc == SQLITE_DONE else { throw BerthError(.internal, "backup of \(path) into \(dest): \(String(cString: sqlite3_errmsg(db))) (code \(rc))") }
        }
    }

    /// Checks that `path` is a whole Berth state store this berthd can open (integrity, schema version) and
    /// summarises it.
    public static func inspectBackup(_ path: String) throws -> BackupSummary {
        try withReadOnly(path) { db in
            func value(_ sql: String) throws -> String {
                var st: OpaquePointer?
                guard sqlite3_prepare_v2(db, sql, -1, &st, nil) == SQLITE_OK, let st else {
                    throw BerthError(.internal, "\(path) is not a Berth state store backup: \(String(cString: sqlite3_errmsg(db)))")
                }
                defer { sqlite3_finalize(st) }
                guard sqlite3_step(st) == SQLITE_ROW else { throw BerthError(.internal, "\(path): \(String(cString: sqlite3_errmsg(db)))") }
                return sqlite3_column_text(st, 0).map { String(cString: $0) } ?? ""
            }
            let integrity = try value("PRAGMA integrity_check")
            guard integrity == "ok" else { throw BerthError(.internal, "\(path) fails SQLite's integrity check: \(integrity)") }
            let version = Int(try value("PRAGMA user_version")) ?? 0
            guard version >= 1 else { throw BerthError(.internal, "\(path) is an SQLite file but not a Berth state store (schema version 0)") }
            guard version <= migrations.count else {
                throw BerthError(.internal, "\(path) has schema version \(version), newer than this berthd understands (\(migrations.count)); use a newer berthd")
            }
            let attachments = version >= 2 ? Int(try value("SELECT count(*) FROM attachments")) ?? 0 : 0
            let events = Int(try value("SELECT count(*) FROM events")) ?? 0
            let last = Int64(try value("SELECT coalesce(max(rev), 0) FROM events")) ?? 0
            var st = stat()
            let bytes = stat(path, &st) == 0 ? Int(st.st_size) : 0
            return BackupSummary(bytes: bytes, schemaVersion: version, attachments: attachments, events: events, lastRevision: last)
        }
    }

    private static func withReadOnly<T>(_ path: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        _ = Store.configured
        var h: OpaquePointer?
        let rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let h else {
            let msg = h.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let h { sqlite3_close(h) }
            throw BerthError(.internal, "cannot open \(path): \(msg)")
        }
        defer { sqlite3_close_v2(h) }
        sqlite3_busy_timeout(h, 10_000)
        return try body(h)
    }
}
