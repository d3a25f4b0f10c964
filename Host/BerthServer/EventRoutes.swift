// GET /v1/events: the event log after a revision, filtered by type and subject; long-polled with `wait`, or streamed
// as NDJSON with `watch=true`.
import BerthCore
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension APIServer {
    func registerEventRoutes(_ router: Router<Ctx>) {
        let rt = runtime

        routes.add(.get, "/v1/events")
        router.get("/v1/events") { req, _ -> Response in
            do {
                // A revision (>= 0); at most 10,000 events per answer (a limit outside 1...10000 is refused, not
                // clamped, so that a client learns its request was not what it got); wait at most 60 s.
                let since = try intQuery(req, "since", default: 0, range: 0...Int64.max)
                let limit = Int(try intQuery(req, "limit", default: 1000, range: 1...10000))
                let type = try query(req, "type").flatMap { $0.isEmpty ? nil : $0 }, subject = try query(req, "subject").flatMap { $0.isEmpty ? nil : $0 }
                let watch = try query(req, "watch")
                if watch == "true" || watch == "1" {
                    try rt.store.checkRetained(since: since)  // a cursor older than the log: 410 before the stream starts
                    return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
                        var cursor = since
                        while true {
                            // A keep-alive at least every 5 s: a closed client (and berthd's graceful shutdown,
                            // which waits for this handler) is noticed at the next write.
                            let evs: [Event]
                            do { evs = try await rt.events(since: cursor, limit: limit, wait: 5, type: type, subject: subject) } catch let e as EventsCompacted {
                                // Compaction overtook a slow reader: say so in the stream and end it.
                                try await writer.write(ByteBuffer(string: (["error": .string(e.description), "oldestRevision": .number(Double(e.oldestRevision))] as JSON).serialized + "\n"))
                                try await writer.finish(nil)
                                return
                            }
                            if evs.isEmpty {
                                try await writer.write(ByteBuffer(string: "\n"))  // keep-alive; readers skip blank lines
                                continue
                            }
                            var s = ""
                            for e in evs { s += e.json.serialized + "\n" }
                            cursor = evs.last!.rev
                            try await writer.write(ByteBuffer(string: s))
                        }
                    })
                }
                let wait = try secondsQuery(req, "wait", default: 0, range: 0...60)
                let evs = try await rt.events(since: since, limit: limit, wait: wait, type: type, subject: subject)
                return render(200, ["events": .array(evs.map { $0.json }), "rev": .number(Double(evs.last?.rev ?? since))])
            } catch { return errorResponse(error) }
        }
    }
}
