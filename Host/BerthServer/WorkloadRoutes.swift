// Workload routes: nodes, objects of every kind (served generically by kind), instances.
//
//   GET    /v1/nodes                         PUT/GET/DELETE /v1/nodes/{name}
//   POST   /v1/nodes/{name}/down | drain | up
//   GET    /v1/kinds                         the built-in App and the kinds of loaded scheduler plugins, with schemas
//   GET    /v1/kinds/{kind}                  objects of a kind
//   GET/PUT/DELETE /v1/kinds/{kind}/{name}   one object ({spec} or {kind, name, spec}); 404 names the known kinds
//   GET    /v1/instances?kind=&app=&node=&state=
//   GET/DELETE /v1/instances/{kind}/{app}/{ordinal}   (DELETE: it terminates and comes back while wanted)
//   POST   /v1/instances/{kind}/{app}/{ordinal}/running
//   GET    /v1/instances/{kind}/{app}/{ordinal}/logs?offset=&maxBytes=   (the node agent's runtime log)
//   POST   /v1/instances/{kind}/{app}/{ordinal}/exec   {command, args, timeoutSeconds}: run a command inside it
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Hummingbird

extension APIServer {
    func registerWorkloadRoutes(_ router: Router<Ctx>) {
        let w = runtime.workloads
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/v1/nodes") { _, _ in Reply(try await w.listNodes()) }
        route(router, .get, "/v1/nodes/{name}") { _, ctx in Reply(try await w.getNode(try param(ctx, "name"))) }
        route(router, .put, "/v1/nodes/{name}") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["name", "kind", "capacity", "labels", "state"])
            let (node, created) = try await w.putNode(try param(ctx, "name"), body)
            return Reply(node, status: created ? 201 : 200)
        }
        route(router, .delete, "/v1/nodes/{name}") { _, ctx in
            try await w.deleteNode(try param(ctx, "name"))
            return Reply(["deleted": true])
        }
        for (verb, state) in [("down", NodeState.down), ("drain", .draining), ("up", .up)] {
            route(router, .post, RouterPath("/v1/nodes/{name}/\(verb)")) { _, ctx in
                Reply(try await w.setNodeState(try param(ctx, "name"), state))
            }
        }

        route(router, .get, "/v1/kinds") { _, _ in Reply(w.kindsJSON()) }
        route(router, .get, "/v1/kinds/{kind}") { _, ctx in Reply(try await w.listObjects(kind: try param(ctx, "kind"))) }
        route(router, .get, "/v1/kinds/{kind}/{name}") { _, ctx in
            Reply(try await w.getObject(kind: try param(ctx, "kind"), name: try param(ctx, "name")))
        }
        route(router, .put, "/v1/kinds/{kind}/{name}") { req, ctx in
            let body = try await readObject(req, limit: limit)
            let (obj, created) = try await w.putObject(kind: try param(ctx, "kind"), name: try param(ctx, "name"), body: body)
            return Reply(obj, status: created ? 201 : 200)
        }
        route(router, .delete, "/v1/kinds/{kind}/{name}") { _, ctx in
            Reply(try await w.deleteObject(kind: try param(ctx, "kind"), name: try param(ctx, "name")))
        }

        route(router, .get, "/v1/instances") { req, _ in
            Reply(try await w.listInstances(kind: try query(req, "kind"), app: try query(req, "app"), node: try query(req, "node"), state: try query(req, "state")))
        }
        route(router, .get, "/v1/instances/{kind}/{app}/{ordinal}") { _, ctx in
            Reply(try await w.getInstance(kind: try param(ctx, "kind"), app: try param(ctx, "app"), ordinal: try param(ctx, "ordinal")))
        }
        route(router, .delete, "/v1/instances/{kind}/{app}/{ordinal}") { _, ctx in
            Reply(try await w.deleteInstance(kind: try param(ctx, "kind"), app: try param(ctx, "app"), ordinal: try param(ctx, "ordinal")))
        }
        let agent = runtime.agent
        route(router, .get, "/v1/instances/{kind}/{app}/{ordinal}/logs") { req, ctx in
            let (kind, app, ord) = (try param(ctx, "kind"), try param(ctx, "app"), try param(ctx, "ordinal"))
            let inst = try await w.getInstance(kind: kind, app: app, ordinal: ord)
            func number(_ name: String) throws -> Int? {
                guard let v = try query(req, name) else { return nil }
                guard let n = Int(v), n >= 0 else { throw BerthError(.invalidArgument, "query parameter \(name) must be a non-negative integer, got \"\(v)\"") }
                return n
            }
            guard let cid = inst["containerID"]?.string else { throw BerthError(.notFound, "instance \(kind)/\(app)/\(ord) is not placed: it has no log") }
            return Reply(try agent.logs(containerID: cid, subject: "\(kind)/\(app)/\(ord)", offset: try number("offset").map { Int64($0) },
                                        maxBytes: try number("maxBytes") ?? 65536))
        }
        route(router, .post, "/v1/instances/{kind}/{app}/{ordinal}/exec") { req, ctx in
            let (kind, app, ord) = (try param(ctx, "kind"), try param(ctx, "app"), try param(ctx, "ordinal"))
            let body = try await readObject(req, limit: limit, allowed: ["command", "args", "timeoutSeconds"])
            guard let command = body["command"]?.string else { throw BerthError(.invalidArgument, "command is required: a string, the program to run inside the instance") }
            var args: [String] = []
            if let a = body["args"] {
                guard let arr = a.array, arr.allSatisfy({ $0.string != nil }) else { throw BerthError(.invalidArgument, "args must be an array of strings, got \(a.serialized)") }
                args = arr.compactMap { $0.string }
            }
            let timeout = body["timeoutSeconds"]
            guard timeout == nil || timeout?.int != nil else { throw BerthError(.invalidArgument, "timeoutSeconds must be an integer, got \(timeout!.serialized)") }
            let inst = try await w.getInstance(kind: kind, app: app, ordinal: ord)
            guard let cid = inst["containerID"]?.string else { throw BerthError(.notFound, "instance \(kind)/\(app)/\(ord) is not placed: nothing to exec in") }
            return Reply(try await agent.exec(containerID: cid, subject: "\(kind)/\(app)/\(ord)", command: command, args: args,
                                              timeoutSeconds: timeout?.int ?? 30))
        }
        route(router, .post, "/v1/instances/{kind}/{app}/{ordinal}/running") { _, ctx in
            Reply(try await w.reportRunning(kind: try param(ctx, "kind"), app: try param(ctx, "app"), ordinal: try param(ctx, "ordinal")))
        }
    }
}
