// Routes of the network kind: attachments (ADD, batch ADD, CHECK, DEL, list, GC), status and capacity, pool and
// address administration, node and identity release, and the CNI adapter's endpoint (POST /v1/cni, used by berth-cni).
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
    func registerNetworkRoutes(_ router: Router<Ctx>) {
        let rt = runtime
        let net = network
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/v1/networks") { _, _ in
            Reply(["networks": .array(rt.plugins.filter { $0.instance?.plugin.kinds.contains(.network) ?? false }.map { $0.json })])
        }
        route(router, .post, "/v1/networks/{net}/attachments") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: addFields)
            return Reply(try await net.add(network: try param(ctx, "net"), request: body), status: 200)
        }
        // Batch ADD: {"attachments": [ADD request, ...]} (at most NetworkService.maxBatch). One round trip and one commit;
        // each item succeeds or fails alone. A malformed batch (not an array, an item with an unknown field) is refused
        // whole, before anything runs.
        route(router, .post, "/v1/networks/{net}/attachments/batch") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["attachments"])
            guard let items = body["attachments"]?.array else { throw BerthError(.invalidArgument, "\"attachments\" must be an array of ADD requests") }
            guard items.count <= NetworkService.maxBatch else {
                throw HTTPRefusal(413, "a batch holds at most \(NetworkService.maxBatch) attachments, got \(items.count)")
            }
            for (i, item) in items.enumerated() {
                guard case .object(let kv) = item else { throw BerthError(.invalidArgument, "attachments[\(i)] must be an object, got \(item.typeName)") }
                if let bad = kv.first(where: { !addFields.contains($0.0) }) {
                    throw BerthError(.invalidArgument, "attachments[\(i)]: unknown field \"\(bad.0)\" (allowed: \(addFields.sorted().joined(separator: ", ")))")
                }
            }
            let results = try await net.addBatch(network: try param(ctx, "net"), requests: items)
            var ok = 0
            let out: [JSON] = results.map {
                switch $0 {
                case .success(let r): ok += 1; return ["result": r]
                case .failure(let e):
                    var j: JSON = ["error": .string(e.plugin != nil ? e.description : e.message), "status": .number(Double(httpStatus(e)))]
                    if let d = e.details { j = j.setting("details", d) }
                    return j
                }
            }
            return Reply(["results": .array(out), "succeeded": .number(Double(ok)), "failed": .number(Double(results.count - ok))])
        }
        route(router, .get, "/v1/networks/{net}/attachments") { _, ctx in Reply(try await net.list(network: try param(ctx, "net"))) }
        route(router, .get, "/v1/networks/{net}/attachments/{cid}/{ifname}") { _, ctx in
            Reply(try await net.check(network: try param(ctx, "net"), containerID: try param(ctx, "cid"), ifname: try param(ctx, "ifname")))
        }
        route(router, .delete, "/v1/networks/{net}/attachments/{cid}/{ifname}") { req, ctx in
            try await net.del(network: try param(ctx, "net"), containerID: try param(ctx, "cid"), ifname: try param(ctx, "ifname"),
                              final: try query(req, "final") == "true")
            return Reply(["deleted": true])
        }
        route(router, .post, "/v1/networks/{net}/gc") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["valid"])
            guard let list = body["valid"] else { throw BerthError(.invalidArgument, "\"valid\" is required: an array of {containerID, ifname} to keep") }
            let valid = try NetworkService.validList(list, field: "valid", ifnameRequired: false)
            return Reply(try await net.gc(network: try param(ctx, "net"), valid: valid))
        }
        registerNetworkAdminRoutes(router)
    }

    /// Status and capacity, pool and address administration, node and identity release, and the CNI adapter.
    private func registerNetworkAdminRoutes(_ router: Router<Ctx>) {
        let net = network
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/v1/networks/{net}/status") { _, ctx in Reply(try await net.status(network: try param(ctx, "net"))) }
        route(router, .get, "/v1/networks/{net}/capacity") { req, ctx in
            Reply(try await net.capacity(network: try param(ctx, "net"), node: try query(req, "node")))
        }
        route(router, .post, "/v1/networks/{net}/pools") { req, ctx in
            let body = try await readObject(req, limit: limit)
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.import", request: body), status: 201)
        }
        route(router, .get, "/v1/networks/{net}/pools") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.list", request: .object([])))
        }
        route(router, .get, "/v1/networks/{net}/pools/{pool}") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.show", request: ["name": .string(try param(ctx, "pool"))]))
        }
        route(router, .delete, "/v1/networks/{net}/pools/{pool}") { _, ctx in
            Reply(try await net.admin(network: try param(ctx, "net"), op: "pool.delete", request: ["name": .string(try param(ctx, "pool"))]))
        }
        route(router, .post, "/v1/networks/{net}/addresses/move") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["pool", "addresses", "to"])
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "address.move", request: body))
        }
        route(router, .post, "/v1/networks/{net}/nodes/{node}/release") { _, ctx in
            Reply(try await net.releaseNode(network: try param(ctx, "net"), node: try param(ctx, "node")))
        }
        route(router, .post, "/v1/networks/{net}/identities/release") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["app", "ordinal", "force"])
            return Reply(try await net.admin(network: try param(ctx, "net"), op: "identity.release", request: body))
        }
        route(router, .post, "/v1/cni") { req, _ in
            let body = try await readObject(req, limit: limit, allowed: ["command", "containerID", "netns", "ifname", "args", "path", "config", "main", "release"])
            let (code, out) = await CNI.handle(body, network: net)
            return Reply(["exitCode": .number(Double(code)), "stdout": out ?? .null])
        }
    }
}
