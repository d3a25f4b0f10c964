// `berth backup FILE`: saves an online backup of berthd's state (GET /v1/backup: one consistent snapshot, taken while
// berthd serves) to FILE, mode 0600. Restore it on a new host with `berthd --restore FILE`.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import ArgumentParser
import BerthCore
import BerthWire
import Foundation

struct BackupCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Save an online backup of berthd's state to FILE (consistent while berthd serves); restore it with `berthd --restore FILE`.")
    @OptionGroup var conn: Connection
    @Argument(help: "The file to write (refused if it exists, unless --force).") var file: String
    @Flag(name: .long, help: "Replace FILE if it exists.") var force = false

    func run() throws {
        if fileExists(file) && !force { throw CLIError("\(file) exists; give another file or --force") }
        let resp: HTTPResponse
        // Through the invocation's transport: the local socket, or --server with its token.
        let (t, headers) = try conn.transport(timeoutSeconds: 600)  // berthd makes the whole copy before answering
        do { resp = try t.request("GET", "/v1/backup", body: nil, headers: headers) } catch let e as WireError {
            throw CLIError("\(e.message)\n(\(conn.hint))")
        }
        guard resp.status == 200 else {
            throw CLIError("berthd: \(((try? resp.json())?["error"]?.string) ?? resp.text) (HTTP \(resp.status))")
        }
        do { try writeFileAtomically(file, resp.body, mode: 0o600) } catch { throw CLIError("cannot write \(file): \(error)") }
        func header(_ n: String) -> String { resp.headers.first { $0.0.lowercased() == n.lowercased() }?.1 ?? "?" }
        let summary: JSON = ["file": .string(file), "bytes": .number(Double(resp.body.count)),
                             "revision": .string(header("X-Berth-Backup-Revision")), "attachments": .string(header("X-Berth-Backup-Attachments"))]
        emit(summary, conn.output) {
            print("backup \(file): \(resp.body.count) bytes, events up to revision \(header("X-Berth-Backup-Revision")), \(header("X-Berth-Backup-Attachments")) attachment(s)")
        }
    }
}
