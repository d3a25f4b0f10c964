// Routes of the daemon itself: health, the running site (read and apply), the plugins (list, show, enable, disable,
// reload) and /metrics.
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
    func registerSiteRoutes(_ router: Router<Ctx>) {
        let rt = runtime
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/healthz") { _, _ in
            let ps = rt.plugins
            var body: JSON = ["status": "ok", "site": .string(rt.site.site), "node": .string(rt.site.nodeName),
                              "plugins": ["loaded": .number(Double(ps.filter { $0.stateName == "loaded" }.count)),
                                          "failed": .number(Double(ps.filter { $0.stateName == "failed" }.count))],
                              "store": rt.storeStatusWithCluster()]
            // A store that takes no more changes (a failed fsync of its log) needs a restart: say so with 503, so
            // that a supervisor's health check restarts berthd.
            if let why = rt.executor.stoppedReason {
                body = body.setting("status", "store stopped").setting("error", .string("the state store takes no more changes: \(why); restart berthd"))
                return Reply(body, status: 503)
            }
            return Reply(body)
        }
        route(router, .get, "/v1/site") { _, _ in Reply(rt.site.json) }
        route(router, .put, "/v1/site") { req, _ in
            let body = try await readObject(req, limit: limit)
            let site = try SiteConfig.parse(body.bytes, baseDir: try query(req, "baseDir") ?? rt.site.baseDir)
            let changes = try rt.apply(site, actor: actor(req), force: try query(req, "force") == "true", dryRun: try query(req, "dryRun") == "true")
            return Reply(["changes": .array(changes.map { $0.json })])
        }
        route(router, .post, "/v1/plugins/{name}/{action}") { req, ctx in
            let name = try param(ctx, "name")
            let changes: [PlannedChange]
            switch try param(ctx, "action") {
            case "enable": changes = try rt.setEnabled(name, true, actor: actor(req), force: false)
            case "disable": changes = try rt.setEnabled(name, false, actor: actor(req), force: try query(req, "force") == "true")
            case "reload": changes = try rt.reload(name, actor: actor(req))
            case let a: throw BerthError(.notFound, "unknown plugin action \"\(a)\" (enable, disable, reload)")
            }
            return Reply(["changes": .array(changes.map { $0.json })])
        }
        route(router, .get, "/v1/plugins") { _, _ in Reply(["plugins": .array(rt.plugins.map { $0.json })]) }
        route(router, .get, "/v1/plugins/{name}") { _, ctx in
            let name = try param(ctx, "name")
            guard let e = rt.entry(name) else { throw BerthError(.notFound, "no plugin named \"\(name)\"") }
            var j = e.json
            if let s = e.instance?.plugin.configSchema { j = j.setting("configSchema", s) }
            return Reply(j.setting("config", e.spec.config))
        }
        routes.add(.get, "/metrics")
        router.get("/metrics") { _, _ -> Response in
            let text = rt.metricsText() + (await rt.utilisationMetrics())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }
}
