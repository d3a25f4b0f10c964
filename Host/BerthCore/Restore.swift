// `berthd --restore FILE`: puts a backup made by `berth backup` in place as the state store of an empty state
// directory (on a new host, or after a loss), after checking that it is a whole Berth store this berthd can open.
import BerthPlugins
import BerthStore
import Foundation

public enum Restore {
    public static func run(backup: String, stateDir: String) throws {
        let db = "\(stateDir)/state.db"
        for f in [db, db + "-wal"] where fileExists(f) {
            throw StateLockError(description: "the state directory \(stateDir) already holds a state store (\(f)); restore only into "
                + "an empty state directory: move the old one aside first, or give another --state-dir")
        }
        let summary: BackupSummary
        do { summary = try Store.inspectBackup(backup) } catch {
            throw StateLockError(description: "cannot restore \(backup): \(error); nothing was changed")
        }
        do {
            try writeFileAtomically(db, try readFile(backup), mode: 0o600)
            _ = try Store(path: db)  // migrates a backup of an older schema, and proves it opens
        } catch {
            unlink(db)
            throw StateLockError(description: "cannot restore \(backup) into \(db): \(error); nothing was kept")
        }
        print("restored \(backup) into \(db): schema \(summary.schemaVersion), \(summary.attachments) attachment(s), "
            + "\(summary.events) event(s) up to revision \(summary.lastRevision). Start berthd on this state directory.")
    }
}
