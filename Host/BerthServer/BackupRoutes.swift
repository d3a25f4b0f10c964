// GET /v1/backup: an online backup of the state store as the response body (application/vnd.sqlite3): one consistent
// snapshot, made while berthd goes on serving. `berth backup FILE` saves it; `berthd --restore FILE` restores it.
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Dispatch
import HTTPTypes
import Hummingbird
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

extension APIServer {
    func registerBackupRoutes(_ router: Router<Ctx>) {
        let rt = runtime
        routes.add(.get, "/v1/backup")  // for the 405 of another method (Routes.swift)
        router.get("/v1/backup") { _, _ -> Response in
            guard let sqlite = rt.store as? Store else {
                return errorResponse(BerthError(.failedPrecondition, "berth backup copies the SQLite store of one host; this site keeps its state in etcd (store.engine \"etcd\"): back it up with `etcdctl snapshot save FILE` (docs/cluster.md)"))
            }
            let tmp = "\(rt.site.stateDir)/backup-\(getpid())-\(monotonicNanos()).db"
            defer { unlink(tmp) }
            do {
                // VACUUM INTO and the integrity check block their thread: run them off the server's event loops.
                let (summary, bytes) = try await withCheckedThrowingContinuation { (c: CheckedContinuation<(BackupSummary, [UInt8]), Error>) in
                    DispatchQueue.global().async {
                        c.resume(with: Result {
                            try Store.backup(databaseAt: sqlite.path, to: tmp)
                            return (try Store.inspectBackup(tmp), try readFile(tmp))
                        })
                    }
                }
                var headers: HTTPFields = [.contentType: "application/vnd.sqlite3"]
                headers[HTTPField.Name("X-Berth-Backup-Revision")!] = String(summary.lastRevision)
                headers[HTTPField.Name("X-Berth-Backup-Attachments")!] = String(summary.attachments)
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            } catch {
                return errorResponse(BerthError(.internal, "backup failed: \(error)"))
            }
        }
    }
}
