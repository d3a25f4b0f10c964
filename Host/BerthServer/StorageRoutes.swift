// Storage routes: CSI-style volumes and snapshots of one storage plugin instance.
//
//   GET    /v1/storage                                         storage plugins and what each supports
//   GET    /v1/storage/{plugin}/capacity                       ?node=
//   POST   /v1/storage/{plugin}/volumes                        {name, capacityBytes, limitBytes, accessMode, volumeMode,
//                                                               parameters, topology, source: {snapshotId}|{volumeId}}
//                                                               201 created, 200 the existing volume (idempotent)
//   GET    /v1/storage/{plugin}/volumes                        ?limit=&pageToken=   (bad token: 400, status ABORTED)
//   GET    /v1/storage/{plugin}/volumes/{id}                   the volume with its nodes, targets and reference counts
//   DELETE /v1/storage/{plugin}/volumes/{id}                   unknown: 200; published: 409
//   POST   /v1/storage/{plugin}/volumes/{id}/publish           {node, target, readonly}: every step still to do
//   POST   /v1/storage/{plugin}/volumes/{id}/unpublish         {target?, node?}: the target, then the node when it was the last
//   POST   /v1/storage/{plugin}/volumes/{id}/controller-publish   {node, readonly}     one step each, for orchestrators
//   POST   /v1/storage/{plugin}/volumes/{id}/controller-unpublish {node}               that drive the steps themselves
//   POST   /v1/storage/{plugin}/volumes/{id}/stage             {node}
//   POST   /v1/storage/{plugin}/volumes/{id}/unstage           {node}
//   POST   /v1/storage/{plugin}/volumes/{id}/node-publish      {node, target, readonly}
//   POST   /v1/storage/{plugin}/volumes/{id}/node-unpublish    {target}
//   POST   /v1/storage/{plugin}/volumes/{id}/expand            {capacityBytes}
//   POST   /v1/storage/{plugin}/volumes/{id}/validate          {accessMode, volumeMode, parameters}
//   POST   /v1/storage/{plugin}/snapshots                      {name, sourceVolumeId, parameters}  201 / 200
//   GET    /v1/storage/{plugin}/snapshots                      ?sourceVolumeId=&limit=&pageToken=
//   GET    /v1/storage/{plugin}/snapshots/{id}
//   DELETE /v1/storage/{plugin}/snapshots/{id}                 unknown: 200
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Hummingbird

extension APIServer {
    func registerStorageRoutes(_ router: Router<Ctx>) {
        let st = runtime.storage
        let limit = runtime.site.maxBodyBytes

        route(router, .get, "/v1/storage") { _, _ in Reply(["plugins": st.plugins()]) }
        route(router, .get, "/v1/storage/{plugin}/capacity") { req, ctx in
            var body: JSON = .object([])
            if let n = try query(req, "node") { body = body.setting("topology", ["node": .string(n)]) }
            return Reply(try await st.capacity(plugin: try param(ctx, "plugin"), request: body))
        }

        // Volumes
        route(router, .post, "/v1/storage/{plugin}/volumes") { req, ctx in
            let body = try await readObject(req, limit: limit, allowed: ["name", "capacityBytes", "limitBytes", "accessMode", "volumeMode",
                                                                         "parameters", "topology", "source"])
            let (v, created) = try await st.createVolume(plugin: try param(ctx, "plugin"), request: body)
            return Reply(v, status: created ? 201 : 200)
        }
        route(router, .get, "/v1/storage/{plugin}/volumes") { req, ctx in
            Reply(try await st.listVolumes(plugin: try param(ctx, "plugin"), limit: try limitQuery(req), pageToken: try query(req, "pageToken")))
        }
        route(router, .get, "/v1/storage/{plugin}/volumes/{id}") { _, ctx in
            Reply(try await st.getVolume(plugin: try param(ctx, "plugin"), id: try param(ctx, "id")))
        }
        route(router, .delete, "/v1/storage/{plugin}/volumes/{id}") { _, ctx in
            let id = try param(ctx, "id")
            try await st.deleteVolume(plugin: try param(ctx, "plugin"), id: id)
            return Reply(["deleted": true, "volumeId": .string(id)])
        }
        route(router, .post, "/v1/storage/{plugin}/volumes/{id}/{action}") { req, ctx in
            let plugin = try param(ctx, "plugin"), id = try param(ctx, "id")
            let action = try param(ctx, "action")
            switch action {
            case "publish":
                let b = try await readObject(req, limit: limit, allowed: ["node", "target", "readonly"])
                return Reply(try await st.publish(plugin: plugin, id: id, node: try str(b, "node") ?? "", target: try str(b, "target") ?? "",
                                                  readonly: try bool(b, "readonly")))
            case "unpublish":
                let b = try await readObject(req, limit: limit, allowed: ["node", "target"])
                return Reply(try await st.unpublish(plugin: plugin, id: id, target: try str(b, "target"), node: try str(b, "node")))
            case "controller-publish":
                let b = try await readObject(req, limit: limit, allowed: ["node", "readonly"])
                return Reply(try await st.controllerPublish(plugin: plugin, id: id, node: try str(b, "node") ?? "", readonly: try bool(b, "readonly")))
            case "controller-unpublish":
                let b = try await readObject(req, limit: limit, allowed: ["node"])
                return Reply(try await st.controllerUnpublish(plugin: plugin, id: id, node: try str(b, "node") ?? ""))
            case "stage":
                let b = try await readObject(req, limit: limit, allowed: ["node"])
                return Reply(try await st.stage(plugin: plugin, id: id, node: try str(b, "node") ?? ""))
            case "unstage":
                let b = try await readObject(req, limit: limit, allowed: ["node"])
                return Reply(try await st.unstage(plugin: plugin, id: id, node: try str(b, "node") ?? ""))
            case "node-publish":
                let b = try await readObject(req, limit: limit, allowed: ["node", "target", "readonly"])
                return Reply(try await st.nodePublish(plugin: plugin, id: id, node: try str(b, "node") ?? "", target: try str(b, "target") ?? "",
                                                      readonly: try bool(b, "readonly")))
            case "node-unpublish":
                let b = try await readObject(req, limit: limit, allowed: ["target"])
                return Reply(try await st.nodeUnpublish(plugin: plugin, id: id, target: try str(b, "target") ?? ""))
            case "expand":
                let b = try await readObject(req, limit: limit, allowed: ["capacityBytes"])
                guard let c = try int(b, "capacityBytes") else { throw BerthError(.invalidArgument, "capacityBytes is required") }
                return Reply(try await st.expand(plugin: plugin, id: id, capacityBytes: c))
            case "validate":
                let b = try await readObject(req, limit: limit, allowed: ["accessMode", "volumeMode", "parameters", "volumeCapabilities"])
                return Reply(try await st.validate(plugin: plugin, id: id, request: b))
            default:
                throw BerthError(.notFound, "unknown volume action \"\(action)\" (publish, unpublish, controller-publish, controller-unpublish, stage, unstage, node-publish, node-unpublish, expand, validate)")
            }
        }
        registerSnapshotRoutes(router)
    }

    private func registerSnapshotRoutes(_ router: Router<Ctx>) {
        let st = runtime.storage
        let limit = runtime.site.maxBodyBytes

        // Snapshots
        route(router, .post, "/v1/storage/{plugin}/snapshots") { req, ctx in
            let b = try await readObject(req, limit: limit, allowed: ["name", "sourceVolumeId", "parameters"])
            let (s, created) = try await st.createSnapshot(plugin: try param(ctx, "plugin"), name: try str(b, "name"),
                                                           sourceVolumeId: try str(b, "sourceVolumeId"), parameters: b["parameters"])
            return Reply(s, status: created ? 201 : 200)
        }
        route(router, .get, "/v1/storage/{plugin}/snapshots") { req, ctx in
            Reply(try await st.listSnapshots(plugin: try param(ctx, "plugin"), sourceVolumeId: try query(req, "sourceVolumeId"),
                                             limit: try limitQuery(req), pageToken: try query(req, "pageToken")))
        }
        route(router, .get, "/v1/storage/{plugin}/snapshots/{id}") { _, ctx in
            Reply(try await st.getSnapshot(plugin: try param(ctx, "plugin"), id: try param(ctx, "id")))
        }
        route(router, .delete, "/v1/storage/{plugin}/snapshots/{id}") { _, ctx in
            let id = try param(ctx, "id")
            try await st.deleteSnapshot(plugin: try param(ctx, "plugin"), id: id)
            return Reply(["deleted": true, "snapshotId": .string(id)])
        }
    }
}

// Optional body fields and the page limit, each refused with a clear message when of the wrong type.
private func int(_ body: JSON, _ key: String) throws -> Int? {
    guard let v = body[key], !v.isNull else { return nil }
    guard let i = v.int, i >= 0 else { throw BerthError(.invalidArgument, "\(key) must be a non-negative integer") }
    return i
}
private func bool(_ body: JSON, _ key: String) throws -> Bool {
    guard let v = body[key], !v.isNull else { return false }
    guard let b = v.bool else { throw BerthError(.invalidArgument, "\(key) must be true or false") }
    return b
}
private func str(_ body: JSON, _ key: String) throws -> String? {
    guard let v = body[key], !v.isNull else { return nil }
    guard let s = v.string else { throw BerthError(.invalidArgument, "\(key) must be a string") }
    return s
}
private func limitQuery(_ req: Request) throws -> Int? {
    guard try query(req, "limit") != nil else { return nil }
    return Int(try intQuery(req, "limit", default: 100, range: 1...1000))  // as StorageService.pageLimit
}
