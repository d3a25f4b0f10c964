// Placement, the pipeline's last step: reserve → bind → wire → record, in one savepoint. Wiring goes through the
// kinds' coordinators: addresses from the network coordinator, volumes from the storage coordinator's templates.
// Any failure unwires what was taken, unreserves, rolls the savepoint back and leaves the instance pending.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire

/// What a placement took on a node, so that it can be given back.
struct Wiring {
    var network: (String, String)? = nil   // (network, containerID)
    var volumes: [AttachedVolume] = []
}

extension Scheduler {
    /// Places `r` on node index `i`; false (and the instance left pending with the reason) when it failed.
    func commit(_ r: InstanceRec, _ o: ObjectRec, _ i: Int, _ plugin: SchedulerPlugin?) -> Bool {
        let node = state.nodes[i].name
        let before = Snapshot(r)
        // The plugin's binding document, made only for a custom kind (an App's placement has no plugin to tell).
        let binding = plugin == nil ? [] : SchedulerPlugin.binding(kind: o.kind, app: o.name, ordinal: r.key.ordinal, node: node)
        do {
            try store.savepoint("place") {
                var wired = Wiring()
                var reserved = false
                do {
                    if let p = plugin {
                        reserved = true
                        try p.reserve(binding)
                        try p.bind(binding)
                    }
                    r.incarnation += 1
                    r.containerID = "\(r.key.app)-\(r.key.ordinal)-\(r.incarnation)"
                    r.node = node
                    r.cpu = o.model.cpu; r.memory = o.model.memory; r.disk = o.model.disk; r.ports = o.model.ports
                    try wire(r, o, node, &wired)
                    try state.transition(r, to: .placed)
                } catch {
                    // Give back what was taken (for plugins with effects outside the store); the savepoint rolls the records back.
                    try? unwire(wired, node: node, final: false, bestEffort: true)
                    if reserved, let p = plugin { try? p.unreserve(binding) }
                    if let n = o.model.network, wired.network == nil, settings.wireNetworks { capacityCache(n.name).at[i] = 0 }
                    throw error
                }
            }
        } catch {
            before.restore(r)
            r.penaltyNodes.insert(node)
            let delay = min(retrySeconds, 0.1 * Double(1 << min(r.penaltyNodes.count, 6)))
            return fail(r, "placing on node \(node) failed: \((error as? BerthError)?.message ?? "\(error)")", retryIn: delay)
        }
        state.occupy(r)
        r.penaltyNodes = []
        if let n = o.model.network, settings.wireNetworks {
            let c = capacityCache(n.name)
            if c.free[i] > 0 { c.free[i] -= 1 }
        }
        return true
    }

    /// Network ADD with the instance's identity, then each volume template: create (idempotent by name) and
    /// publish on the node. Records what it took in `w` as it goes.
    func wire(_ r: InstanceRec, _ o: ObjectRec, _ node: String, _ w: inout Wiring) throws {
        if settings.wireNetworks, let n = o.model.network {
            var identity: JSON = ["app": .string(o.name), "ordinal": JSON(Int64(r.key.ordinal)), "releasePolicy": .string(n.releasePolicy)]
            if let k = n.keepSeconds { identity = identity.setting("keepSeconds", JSON(Int64(k))) }
            var req: JSON = ["containerID": .string(r.containerID), "ifname": "eth0", "node": .string(node), "identity": identity]
            if let p = n.pool { req = req.setting("pool", .string(p)) }
            let result = try network.attachInTransaction(network: n.name, request: req)
            w.network = (n.name, r.containerID)
            r.network = n.name
            r.addresses = result["ips"]?.array ?? []
        }
        for t in o.model.volumes {
            let (v, localTo) = try storage.publishTemplate(t.volume(app: r.key.app, ordinal: r.key.ordinal), node: node)
            w.volumes.append(v)
            if let localTo { r.volumeNode = localTo }
        }
        r.volumes = w.volumes
    }

    /// Gives back what `wire` took: volumes unpublished (kept: they outlive instances), then network DEL. With
    /// `bestEffort` (a failed placement, a lost node) failures are logged and the rest goes on; otherwise the
    /// first failure is thrown (the teardown is retried).
    func unwire(_ w: Wiring, node: String, final: Bool, bestEffort: Bool) throws {
        var first: Error?
        for v in w.volumes.reversed() {
            do { try storage.unpublishTemplate(v) } catch {
                host.logger.warning("unpublishing volume \(v.volumeID) (\(v.plugin)) at \(v.target) on node \(node): \(error)")
                first = first ?? error
            }
        }
        if let (net, cid) = w.network {
            do { try network.detachInTransaction(network: net, containerID: cid, ifname: "eth0", final: final) } catch {
                host.logger.warning("releasing the addresses of \(cid) on network \(net): \(error)")
                first = first ?? error
            }
        }
        if let first, !bestEffort { throw first }
    }
}
